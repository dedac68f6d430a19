"""The accuracy guard's decisions: which metric, its reference, whether a
pruning step kept it within budget, and the gentler retry.

Pure functions over numbers and index lists; the trainer (`training.py`)
keeps the pre-step model and carries the decisions out. See `policy.py`'s
module docstring for the rule.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "resolve_monitor",
    "is_worse_than_budget",
    "better",
    "reference_at",
    "gentler_keep",
    "holdout_indices",
    "shortfall",
]

_ACCURACY_KEYS = (
    "val_accuracy",
    "val_sparse_categorical_accuracy",
    "val_categorical_accuracy",
    "val_binary_accuracy",
)


def resolve_monitor(monitor: str, logs: dict) -> str:
    """The log key the guard judges.

    Args:
        monitor: `"auto"` or a key of the epoch logs.
        logs: one epoch's logs.

    Returns:
        For `"auto"`: the first validation accuracy in `logs`, else
        `"val_loss"`; otherwise `monitor` itself.

    Raises:
        ValueError: the key is not in `logs`.
    """
    if monitor == "auto":
        monitor = next(
            (key for key in _ACCURACY_KEYS if key in logs), "val_loss"
        )
    if monitor not in logs:
        raise ValueError(
            f"The accuracy guard monitors '{monitor}', which the epoch logs "
            f"do not hold. Received log keys: {sorted(logs)}. Fix: pass "
            "`validation_data` (or let the trainer hold out "
            "`ADPPolicy.validation_split`), compile with the metric, set "
            "`ADPPolicy(monitor=...)` to a logged key, or turn the guard off "
            "with `ADPPolicy(max_accuracy_drop=None)`."
        )
    return monitor


def _lower_is_better(monitor: str) -> bool:
    """Losses and errors are minimised; everything else is maximised."""
    return monitor.endswith("loss") or monitor.endswith("error")


def better(monitor: str, first: float | None, second: float) -> float:
    """The better of two values of `monitor` (`first` may be None)."""
    if first is None or not math.isfinite(first):
        return second
    if _lower_is_better(monitor):
        return min(first, second)
    return max(first, second)


def reference_at(
    monitor: str,
    best: float | None,
    dense_reference: tuple[float, ...] | None,
    epoch: int,
) -> float | None:
    """What a step judged at the end of (0-based) `epoch` is held to.

    Args:
        monitor: the monitored log key (losses are minimised).
        best: the best value the run reached so far with accepted models,
            or None.
        dense_reference: a dense run's value per epoch, or None.
        epoch: the epoch just trained.

    Returns:
        The stricter of `best` and the dense run's value at `epoch` (its
        last value for later epochs); `best` without a dense reference.
    """
    if not dense_reference:
        return best
    dense = float(dense_reference[min(epoch, len(dense_reference) - 1)])
    return better(monitor, best, dense)


def is_worse_than_budget(
    monitor: str, value: float, reference: float, budget: float
) -> bool:
    """Whether `value` is more than `budget` worse than `reference`.

    A non-finite `value` is always worse.
    """
    return shortfall(monitor, value, reference) > budget + 1e-12


def shortfall(monitor: str, value: float, reference: float) -> float:
    """How much worse `value` is than `reference` (negative when better),
    in the metric's units: `reference - value` for accuracies, `value -
    reference` for losses. A non-finite `value` falls infinitely short."""
    if not math.isfinite(value):
        return math.inf
    if _lower_is_better(monitor):
        return value - reference
    return reference - value


def budget_verdict(
    monitor: str, value: float, dense_value: float, budget: float
) -> dict:
    """How a finished run's final model stands against a dense run's, in
    the guard's budget.

    The guard judges each step at its trial epoch; whether the model that
    training ends with is within `budget` of a dense model trained the same
    way is only known when such a dense run exists (`keras-adp train`
    trains one by default). This is that final check.

    Args:
        monitor: the monitored log key (losses are minimised).
        value: the pruned run's final value of `monitor`.
        dense_value: the dense run's final value of `monitor`.
        budget: the allowed shortfall (`ADPPolicy.max_accuracy_drop`).

    Returns:
        `{"monitor", "value", "dense", "shortfall", "budget", "met"}`:
        `shortfall` as `shortfall(monitor, value, dense_value)`, `met`
        whether it is within `budget`.
    """
    gap = shortfall(monitor, value, dense_value)
    return {
        "monitor": monitor,
        "value": float(value),
        "dense": float(dense_value),
        "shortfall": gap,
        "budget": float(budget),
        "met": not is_worse_than_budget(monitor, value, dense_value, budget),
    }


def gentler_keep(
    order: dict[str, list[int]],
    before: dict[str, int],
    after: dict[str, int],
) -> dict[str, np.ndarray]:
    """Half the removal of a step, keeping channels in the same priority.

    Args:
        order: group name -> channel indices, most important first (the
            ranking the step used).
        before: group name -> width before the step.
        after: group name -> width the step cut it to.

    Returns:
        group name -> sorted indices to keep, for groups that still shrink
        (a group that lost one channel is left whole).
    """
    keep = {}
    for name, width in before.items():
        removed = width - after[name]
        new_width = width - removed // 2
        if new_width < width:
            keep[name] = np.sort(np.asarray(order[name][:new_width]))
    return keep


def holdout_indices(
    samples: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of `samples` indices: (train, held out).

    At least one sample on each side; both sorted, disjoint, covering
    `range(samples)`.

    Raises:
        ValueError: fewer than 2 samples.
    """
    if samples < 2:
        raise ValueError(
            f"Received {samples} training sample(s): the accuracy guard "
            "holds out part of the training data and needs at least 2. Fix: "
            "pass `validation_data`, more data, or "
            "`ADPPolicy(max_accuracy_drop=None)`."
        )
    held = min(samples - 1, max(1, int(round(samples * fraction))))
    permutation = np.random.default_rng(seed).permutation(samples)
    return np.sort(permutation[held:]), np.sort(permutation[:held])
