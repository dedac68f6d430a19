"""The `keras-adp` command line: train with ADP, export to TFLite, report.

Three subcommands, each a thin layer over the library (`keras_adp.commands`
holds their parsers and handlers):

- `keras-adp train`: build a reference model (`keras_adp.models`), train it
  from scratch with activation-density driven pruning (`ADPTrainer`) on a
  dataset (`keras_adp.data`), validating on a split held out from the
  training data; train the same model without pruning as the dense
  baseline; evaluate both on the test split, export both to TFLite in
  float32 and int8 (`keras_adp.export`), and write the run report
  (`keras_adp.report`). With no options it runs the whole job on the
  bundled Fashion-MNIST subset in a few minutes on a laptop CPU.
- `keras-adp export MODEL.keras`: convert a saved model to TFLite and print
  its size, its parity with the Keras model and its latency.
- `keras-adp report RUN_DIR`: redraw a run's report.md and plots.

`main(argv)` returns the exit status: 0 on success, 2 for usage errors, 1
for errors the library explains (the message is printed as one
`error: ...` line), 130 when interrupted.

TensorFlow's own output is hidden unless a command gets `--tf-logs`.
TensorFlow and the TFLite converter and interpreter write log lines from
C++ straight to the process's standard error ("WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR", "I0000 ...
cudart_stub.cc:31] Could not find cuda drivers ...", CPU-feature and oneDNN
notices, converter and XNNPACK messages), and `TF_CPP_MIN_LOG_LEVEL=3` does
not silence all of them: not the lines written while TensorFlow loads,
before absl's logging is initialised, nor the converter's and the TFLite
runtime's. So while a command runs, `main` sets `TF_CPP_MIN_LOG_LEVEL=3`,
raises the `tensorflow` Python logger to ERROR, and points file descriptor
2 at a temporary file, while Python's `sys.stderr` keeps writing where
standard error went: the command's own messages, Python warnings and
tracebacks still appear. If the command fails with an unexpected exception,
the hidden lines are printed before its traceback. Everything is restored
when `main` returns. This only works because neither this module nor
`import keras_adp` imports TensorFlow: it loads inside `main`, after the
settings. Importing `keras_adp` as a library changes none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import sys
import tempfile

__all__ = [
    "main",
    "hidden_tensorflow_output",
    "TF_LOGS_OPTION",
]

# The option that leaves TensorFlow's output alone; every subcommand
# accepts it (`keras_adp.commands.build_parser`).
TF_LOGS_OPTION = "--tf-logs"

_LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


def main(argv: list[str] | None = None) -> int:
    """Run the `keras-adp` command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    hide = contextlib.nullcontext() if _tf_logs_requested(argv) else (
        hidden_tensorflow_output()
    )
    with hide:
        # TensorFlow loads here, after its output is redirected.
        commands = importlib.import_module("keras_adp.commands")
        return commands.run(argv)


@contextlib.contextmanager
def hidden_tensorflow_output():
    """Hides TensorFlow's log lines, native and Python, while it is open.

    Sets `TF_CPP_MIN_LOG_LEVEL=3` (read when TensorFlow loads), raises the
    `tensorflow` logger to ERROR and sends what C/C++ code writes to file
    descriptor 2 into a temporary file; Python's `sys.stderr` keeps writing
    to the original standard error. An exception leaving the block prints
    the hidden text first. Everything is restored on exit.
    """
    previous_level = os.environ.get(_LOG_LEVEL_VARIABLE)
    os.environ[_LOG_LEVEL_VARIABLE] = "3"
    logger = logging.getLogger("tensorflow")
    previous_logger_level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with _native_stderr_captured():
            yield
    finally:
        logger.setLevel(previous_logger_level)
        if previous_level is None:
            os.environ.pop(_LOG_LEVEL_VARIABLE, None)
        else:
            os.environ[_LOG_LEVEL_VARIABLE] = previous_level


@contextlib.contextmanager
def _native_stderr_captured():
    """File descriptor 2 into a temporary file; `sys.stderr` unchanged.

    When `sys.stderr` writes to descriptor 2 itself (a terminal or a
    redirected file), it is replaced, for the duration, by a stream on a
    duplicate of the original descriptor.
    """
    _flush(sys.stderr)
    python_stderr = sys.stderr
    try:
        python_writes_to_fd_2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        python_writes_to_fd_2 = False
    original_fd = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        if python_writes_to_fd_2:
            # Not closed on exit: loggers created meanwhile (TensorFlow's,
            # when it is imported in the block) keep a reference to it.
            sys.stderr = open(  # noqa: SIM115
                os.dup(original_fd),
                "w",
                encoding=getattr(python_stderr, "encoding", None) or "utf-8",
                errors="backslashreplace",
                buffering=1,
            )
        try:
            yield
        except BaseException:
            os.dup2(original_fd, 2)
            _replay(captured, sys.stderr)
            raise
        finally:
            _flush(sys.stderr)
            sys.stderr = python_stderr
            os.dup2(original_fd, 2)
            os.close(original_fd)


def _replay(captured, stream) -> None:
    """Writes what was captured to `stream` (on an unexpected failure)."""
    captured.flush()
    captured.seek(0)
    text = captured.read().decode("utf-8", errors="replace")
    if text:
        stream.write(text)
        _flush(stream)


def _flush(stream) -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.flush()


def _tf_logs_requested(argv: list[str]) -> bool:
    """Whether `argv` holds `--tf-logs` (parsed as the subcommands parse it)."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument(TF_LOGS_OPTION, action="store_true")
    try:
        known, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError:
        return False  # The full parser reports the mistake.
    return known.tf_logs


if __name__ == "__main__":
    sys.exit(main())
