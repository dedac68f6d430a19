"""Converting a model on the TensorFlow backend from another backend.

TFLite conversion (`export_tflite`) and ONNX conversion through tf2onnx
(`export_onnx` on JAX) need TensorFlow. On JAX or PyTorch the model is
saved as a `.keras` file (`saved_model_file`) and a conversion script
loads and converts it in a subprocess (`run`) with
`KERAS_BACKEND=tensorflow` and this keras_adp first on `PYTHONPATH`.

The subprocess's interpreter (`python`) is this process's, unless the
environment variable `KERAS_ADP_TENSORFLOW_PYTHON` names another one: a
Python with TensorFlow, Keras and keras-adp's dependencies, for a
PyTorch or JAX environment that keeps TensorFlow out. Both must have the
same Keras version (the `.keras` file is read there). `missing` checks
which modules that interpreter lacks without importing them.

TensorFlow is never imported in this process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence

import keras

__all__ = [
    "PYTHON_VARIABLE",
    "python",
    "missing",
    "saved_model_file",
    "run",
]

PYTHON_VARIABLE = "KERAS_ADP_TENSORFLOW_PYTHON"

# Prints, as JSON, which of the modules named in argv cannot be found.
_FIND_MODULES = """
import importlib.util, json, sys
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
print(json.dumps([name for name in sys.argv[1:] if not found(name)]))
"""


def python() -> str:
    """The interpreter that converts on the TensorFlow backend:
    `$KERAS_ADP_TENSORFLOW_PYTHON` when set, else this process's."""
    return os.environ.get(PYTHON_VARIABLE) or sys.executable


def missing(modules: Sequence[str]) -> list[str]:
    """Which of `modules` the converting interpreter (`python()`) cannot
    import, checked without importing them.

    Args:
        modules: top-level module names, e.g. `("tensorflow", "tf2onnx")`.

    Returns:
        The names not found, in the order given; all of them when the
        interpreter named by `KERAS_ADP_TENSORFLOW_PYTHON` cannot be run.
    """
    interpreter = python()
    if interpreter == sys.executable:
        return [name for name in modules if not _find_spec(name)]
    try:
        completed = subprocess.run(
            [interpreter, "-c", _FIND_MODULES, *modules],
            capture_output=True, text=True, timeout=120,
        )
        return list(json.loads(completed.stdout.strip().splitlines()[-1]))
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return list(modules)


def _find_spec(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # e.g. sys.modules[name] = None
        return False


@contextlib.contextmanager
def saved_model_file(model: keras.Model) -> Iterator[tuple[str, str]]:
    """`model` saved as a `.keras` file in a new temporary folder.

    Args:
        model: the model to save (not modified).

    Yields:
        `(folder, keras_file)`; the folder (where callers may put other
        inputs of the script) is deleted on exit.
    """
    with tempfile.TemporaryDirectory(prefix="keras_adp_convert_") as folder:
        keras_file = os.path.join(folder, "model.keras")
        model.save(keras_file)
        yield folder, keras_file


def run(script: str, args: Sequence[str], purpose: str) -> None:
    """Run `script` (Python source) with `args` on the TensorFlow backend.

    Args:
        script: the code, given `args` as `sys.argv[1:]`.
        args: its arguments (file names and options, as strings).
        purpose: what it does, for the error message (e.g. `"Converting the
            jax model to TFLite"`).

    Raises:
        ValueError: if the script fails; the message gives the last line of
            its standard error and how to fix a model that does not load.
    """
    interpreter = python()
    completed = subprocess.run(
        [interpreter, "-c", script, *args],
        env=_environment(), capture_output=True, text=True,
    )
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines() or ["no output"]
        raise ValueError(
            f"{purpose} in a TensorFlow-backend subprocess "
            f"(KERAS_BACKEND=tensorflow, {interpreter}) failed: {lines[-1]} "
            "Expected the saved `.keras` model to load and convert there: "
            "register custom layers with "
            "`keras.saving.register_keras_serializable` in an imported "
            "module, or convert on the TensorFlow backend."
        )


def _environment() -> dict[str, str]:
    """This process's environment on the TensorFlow backend, with this
    keras_adp importable first."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(
        os.environ, KERAS_BACKEND="tensorflow",
        PYTHONPATH=os.pathsep.join(paths),
        TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
    )
