"""The option types and help formatter of the `keras-adp` parsers.

Each option type is an argparse `type=` function. It raises
`argparse.ArgumentTypeError`, whose message argparse prints as is
("argument --epochs: expected an integer >= 1, received 'abc'"); any other
exception would make it print the function's name.
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "HelpFormatter",
    "MAX_SEED",
    "positive_int",
    "non_negative_int",
    "optional_count",
    "integer",
    "seed",
    "fraction",
    "optional_fraction",
    "positive_float",
]

MAX_SEED = 2**31 - 1


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and examples as written; shows set defaults."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default is not None
            and default is not False
            and default is not argparse.SUPPRESS
            and "(default" not in help_text
        ):
            help_text += " (default: %(default)s)"
        return help_text


def _integer_at_least(
    text: str, minimum: int, expected: str, maximum: int | None = None
) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if (
        value is None
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise argparse.ArgumentTypeError(f"expected {expected}, received {text!r}")
    return value


def _float_or_nan(text: str) -> float:
    """`text` as a float; NaN (which no range accepts) if it is none."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _is_none(text: str) -> bool:
    """Whether an optional value's `text` says 'none'."""
    return text.strip().lower() == "none"


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _integer_at_least(text, 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _integer_at_least(text, 0, "an integer >= 0")


def optional_count(text: str) -> int | None:
    """An integer >= 0, or 'none' (None)."""
    if _is_none(text):
        return None
    return _integer_at_least(text, 0, "an integer >= 0 or 'none'")


def optional_positive_int(text: str) -> int | None:
    """An integer >= 1, or 'none' (None)."""
    if _is_none(text):
        return None
    return _integer_at_least(text, 1, "an integer >= 1 or 'none'")


def integer(text: str) -> int:
    """Any integer."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer, received {text!r}"
        ) from None


def seed(text: str) -> int:
    """A seed from 0 to `MAX_SEED`."""
    # NumPy seeds are < 2**32, and each epoch uses seed + epoch.
    return _integer_at_least(
        text, 0, f"an integer from 0 to {MAX_SEED}", maximum=MAX_SEED
    )


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _float_or_nan(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number between 0 and 1 (exclusive), received {text!r}"
        )
    return value


def optional_fraction(text: str) -> float | None:
    """A number in [0, 1), or 'none' (None)."""
    if _is_none(text):
        return None
    value = _float_or_nan(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number from 0 to 1 (exclusive) or 'none', received "
            f"{text!r}"
        )
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float_or_nan(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"expected a finite number > 0, received {text!r}"
        )
    return value
