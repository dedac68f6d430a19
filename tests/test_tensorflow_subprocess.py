"""Tests for keras_adp.tensorflow_subprocess: which Python converts on the
TensorFlow backend, what it lacks, and how its failures read.

A stand-in for "a Python without TensorFlow" is this interpreter behind a
wrapper script whose `sitecustomize` blocks `tensorflow`, so the tests need
no second environment.
"""

from __future__ import annotations

import os
import stat
import sys

import keras
import pytest

from keras_adp import distribution
from keras_adp import export
from keras_adp import tensorflow_subprocess

VARIABLE = tensorflow_subprocess.PYTHON_VARIABLE


@pytest.fixture
def python_without_tensorflow(tmp_path):
    """An executable that runs this Python with `tensorflow` blocked."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        'import sys\nsys.modules["tensorflow"] = None\n'
    )
    wrapper = tmp_path / "python-without-tf"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH="{block}${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def test_python_is_this_one_unless_the_variable_names_another(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert tensorflow_subprocess.python() == sys.executable
    monkeypatch.setenv(VARIABLE, "/opt/tf/bin/python")
    assert tensorflow_subprocess.python() == "/opt/tf/bin/python"


def test_missing_asks_the_named_python(monkeypatch, python_without_tensorflow):
    monkeypatch.setenv(VARIABLE, python_without_tensorflow)

    missing = tensorflow_subprocess.missing(
        ["tensorflow", "json", "no_such_module_for_keras_adp"]
    )

    assert missing == ["tensorflow", "no_such_module_for_keras_adp"]


def test_missing_in_this_python_checks_without_importing(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert tensorflow_subprocess.missing(
        ["json", "no_such_module_for_keras_adp"]
    ) == ["no_such_module_for_keras_adp"]


def test_missing_reports_everything_when_the_python_cannot_run(
    monkeypatch, tmp_path
):
    monkeypatch.setenv(VARIABLE, str(tmp_path / "no-python-here"))
    assert tensorflow_subprocess.missing(["json", "numpy"]) == [
        "json", "numpy"
    ]


def test_run_uses_the_tensorflow_backend_and_this_keras_adp(
    monkeypatch, tmp_path
):
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    out = tmp_path / "seen.txt"
    script = (
        "import os, sys\n"
        "import keras_adp\n"
        "open(sys.argv[1], 'w').write(os.environ['KERAS_BACKEND'] + ' ' + "
        "os.path.dirname(os.path.dirname(keras_adp.__file__)))\n"
    )

    tensorflow_subprocess.run(script, [str(out)], "Writing a file")

    backend, package_root = out.read_text().split(" ")
    assert backend == "tensorflow"
    assert package_root == os.path.dirname(
        os.path.dirname(os.path.abspath(tensorflow_subprocess.__file__))
    )


def test_run_failure_names_the_purpose_python_and_last_error_line(
    monkeypatch, python_without_tensorflow
):
    monkeypatch.setenv(VARIABLE, python_without_tensorflow)

    with pytest.raises(ValueError) as caught:
        tensorflow_subprocess.run(
            "import tensorflow", [], "Converting the torch model to TFLite"
        )

    message = str(caught.value)
    assert message.startswith(
        "Converting the torch model to TFLite in a TensorFlow-backend "
        f"subprocess (KERAS_BACKEND=tensorflow, {python_without_tensorflow}) "
        "failed: ModuleNotFoundError: import of tensorflow halted"
    )
    assert "register_keras_serializable" in message


def test_export_tflite_from_another_backend_names_the_python_without_tf(
    monkeypatch, tmp_path, python_without_tensorflow
):
    # As on JAX or PyTorch, with the converting Python lacking TensorFlow.
    monkeypatch.setattr(distribution, "is_tensorflow", lambda: False)
    monkeypatch.setenv(VARIABLE, python_without_tensorflow)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))

    assert not export.tensorflow_installed()
    with pytest.raises(ImportError) as caught:
        export.export_tflite(model, tmp_path / "m.tflite")

    message = str(caught.value)
    assert f"{VARIABLE}={python_without_tensorflow}" in message
    assert "needs TensorFlow" in message
    assert sorted(os.listdir(tmp_path)) == ["block", "python-without-tf"]
