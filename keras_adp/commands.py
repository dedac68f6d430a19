"""The `keras-adp` subcommands: parse, run the handler, report errors.

`keras_adp.cli.main(argv)` (the console script) hides TensorFlow's log
lines, then calls `run(argv)` here. Each handler parses, checks what only
the command line knows, calls the library and prints:

- `train` (`keras_adp.command_train`): checks the run directory
  (`--resume`, `--overwrite`, the options a resumed run was started with),
  then `keras_adp.experiment.run_training` trains and prunes, trains the
  dense baseline, evaluates, exports and writes the report; the handler
  prints the summary.
- `export` (`keras_adp.command_export`): `keras_adp.export` converts,
  checks parity and times a model.
- `report` (`keras_adp.command_report`):
  `keras_adp.report.regenerate_report`.

The parsers are `keras_adp.command_parsers`', their option types
`keras_adp.command_options`'.
"""

from __future__ import annotations

import sys

from keras_adp import training
from keras_adp.command_export import EXPORT_SAMPLES
from keras_adp.command_export import RANDOM_PARITY_SAMPLES
from keras_adp.command_parsers import build_parser
from keras_adp.command_train import OPTIONS_FILE
from keras_adp.litert_interpreter import one_line

__all__ = [
    "run",
    "build_parser",
    "OPTIONS_FILE",
    "EXPORT_SAMPLES",
    "RANDOM_PARITY_SAMPLES",
]

# Exceptions whose message says what went wrong and how to fix it: printed
# as one line, without a traceback.
_USER_ERRORS = (
    ValueError, OSError, ImportError, training.TrainingDivergedError
)


def run(argv: list[str]) -> int:
    """Parse `argv` and run the command; return the exit status.

    Args:
        argv: the command line after the program name.

    Returns:
        0 on success, 2 for usage errors (argparse prints them), 1 for
        errors the library explains (printed as one `error: ...` line), 130
        when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error.
        return exit_request.code if isinstance(exit_request.code, int) else 2
    args.command_line = list(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as error:
        print(f"error: {one_line(error, keep_period=True)}", file=sys.stderr)
        return 1
