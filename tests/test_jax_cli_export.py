"""`keras-adp train` and TFLite export on the JAX backend (issue 13).

The command line runs with `KERAS_BACKEND=jax` and TensorFlow blocked
(`sys.modules["tensorflow"] = None`, as if it were not installed): the
embedded Fashion-MNIST subset is trained on as NumPy arrays, and the
options that need TensorFlow fail with a message saying what to install.
`export_tflite` on a model trained on JAX converts in a TensorFlow-backend
subprocess; its parity with the JAX model is checked in LiteRT (skipped
with the reason when TensorFlow is not installed). `export_onnx` of a
max-pooling model pruned on JAX converts the same way (tf2onnx), its parity
checked in ONNX Runtime (skipped with the reason without the `onnx` extra).
Skipped with the reason when JAX is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from tests import processes

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="JAX is not installed (pip install -e '.[jax]')",
)

requires_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="TFLite conversion needs TensorFlow, which is not installed",
)

requires_onnx = pytest.mark.skipif(
    any(
        importlib.util.find_spec(name) is None
        for name in ("tensorflow", "tf2onnx", "onnx", "onnxruntime")
    ),
    reason='ONNX export on JAX needs TensorFlow and the onnx extra '
    '(pip install -e ".[onnx]")',
)

_BLOCK_TF = 'import sys; sys.modules["tensorflow"] = None\n'

_CLI = "import sys\nfrom keras_adp import cli\nsys.exit(cli.main(sys.argv[1:]))\n"

TINY_RUN = [
    "train", "--limit", "128", "--epochs", "2", "--warmup-epochs", "1",
    "--width", "0.25", "--batch-size", "32", "--calibration-samples", "64",
    "--max-accuracy-drop", "none", "--width-rule", "density",
    "--recovery-updates", "none", "--verbose", "2",
]


def _environment():
    return dict(
        os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=_REPO, CUDA_VISIBLE_DEVICES="",
        # Compiles shared between the subprocesses; no result changes.
        JAX_COMPILATION_CACHE_DIR=os.environ.get(
            "JAX_COMPILATION_CACHE_DIR",
            os.path.join(tempfile.gettempdir(), "keras_adp_tests_jax_cache"),
        ),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def _python(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True,
        env=_environment(), timeout=600, cwd=cwd,
    )


def _cli_without_tensorflow(*args: str, cwd=None):
    return _python(_BLOCK_TF + _CLI, *args, cwd=cwd)


# ------------------------------------------------------------- the CLI
def test_train_runs_on_jax_without_tensorflow(tmp_path):
    run_dir = tmp_path / "run"
    completed = _cli_without_tensorflow(
        *TINY_RUN, "--no-export", "--run-dir", str(run_dir)
    )
    assert completed.returncode == 0, (
        completed.stdout[-3000:] + completed.stderr[-3000:]
    )
    out = completed.stdout
    assert "data: embedded, 115 train / 13 validation" in out
    assert "epoch 1: pruned" in out  # A step after the warm-up epoch.
    assert "| Test accuracy |" in out
    for name in ("LATEST", "model.keras", "report.json", "report.md",
                 "train_options.json"):
        assert (run_dir / name).exists(), name
    assert not list(run_dir.glob("*.tflite"))
    with open(run_dir / "report.json") as handle:
        report = json.load(handle)
    history = report["history"]
    assert [record["epoch"] for record in history] == [0, 1]
    first, last = history[0]["widths"], history[-1]["widths"]
    assert all(last[name] <= first[name] for name in first)
    assert last != first
    assert report["extra"]["config"]["num_train"] == 115
    assert report["environment"]["keras_backend"] == "jax"
    # The pruned model saved on JAX loads with the widths of the last epoch.
    check = _python(
        _BLOCK_TF + textwrap.dedent(
            """
            import json, sys, keras
            model = keras.saving.load_model(sys.argv[1])
            print(json.dumps({layer.name: layer.filters
                              for layer in model.layers
                              if hasattr(layer, "filters")}))
            """
        ),
        str(run_dir / "model.keras"),
    )
    assert check.returncode == 0, check.stderr[-3000:]
    saved = json.loads(check.stdout.strip().splitlines()[-1])
    for name, width in last.items():
        assert saved[name] == width, (name, saved)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--augment", "--no-export"],
         "Augmentation (`augment=True`, keras-adp train's --augment: random "
         "crops and flips in tf.data) needs TensorFlow"),
        (["--dataset", "mnist", "--no-export"],
         "Loading 'mnist' through tensorflow_datasets (pip install "
         "tensorflow-datasets) needs TensorFlow"),
        ([],  # TFLite export is on by default.
         "exports the models to TFLite at the end, which needs TensorFlow"),
    ],
)
def test_tensorflow_only_options_say_what_to_install(tmp_path, args, expected):
    completed = _cli_without_tensorflow(
        *TINY_RUN, *args, "--run-dir", str(tmp_path / "run")
    )
    assert completed.returncode == 1, completed.stderr[-3000:]
    error = completed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: "), completed.stderr[-3000:]
    assert expected in error
    assert "pip install tensorflow" in error
    if not args:
        assert "--no-export" in error
    # Nothing was trained.
    assert not (tmp_path / "run" / "LATEST").exists()


# -------------------------------------------------------------- export
_EXPORT = (
    "import json, sys\nFOLDER = sys.argv[1]\n"
    + processes.TFLITE_TRAINED_EXPORT_CHECK
    + "print(json.dumps(RESULT))\n"
)


@requires_tensorflow
def test_export_tflite_of_a_model_trained_on_jax(tmp_path):
    completed = _python(_EXPORT, str(tmp_path))
    assert completed.returncode == 0, (
        completed.stdout[-3000:] + completed.stderr[-3000:]
    )
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    processes.assert_tflite_trained_export_check(seen, "jax")


_ONNX = (
    "import json, sys\nFOLDER = sys.argv[1]\n"
    + processes.ONNX_MAX_POOL_CHECK
    + "print(json.dumps(RESULT))\n"
)


@requires_onnx
def test_export_onnx_of_a_max_pooling_model_pruned_on_jax(tmp_path):
    # Keras' own JAX exporter (jax2onnx) writes a MaxPool that ONNX Runtime
    # refuses; export_onnx converts on TensorFlow instead.
    completed = _python(_ONNX, str(tmp_path))
    assert completed.returncode == 0, (
        completed.stdout[-3000:] + completed.stderr[-3000:]
    )
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    processes.assert_onnx_max_pool_check(seen, "jax")
