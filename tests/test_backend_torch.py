"""keras-adp on the PyTorch backend (issue 13).

PyTorch need not live in the environment that runs the tests: PyPI's Linux
`torch` wheel pulls several GB of CUDA libraries, so CI may keep it in a
virtual environment of its own. Each check runs a script in a subprocess of
the interpreter named by `KERAS_ADP_TORCH_PYTHON` (e.g.
`/opt/venv-torch/bin/python`, an environment with torch, keras and numpy and
no TensorFlow), with `KERAS_BACKEND=torch`, TensorFlow blocked
(`sys.modules["tensorflow"] = None`) and this repository first on
`PYTHONPATH`. Every check is skipped, with the reason, when the variable is
unset or its interpreter cannot import torch and keras; with
`KERAS_ADP_REQUIRE_TORCH=1` (for CI, where a skip would hide a broken
install) they fail instead. The TensorFlow reference of the cross-backend
comparison runs in this interpreter, and so does the TFLite conversion of a
model trained on torch (`KERAS_ADP_TENSORFLOW_PYTHON`). The export checks
also need LiteRT (`ai-edge-litert`) or `onnx` and `onnxruntime` in the torch
interpreter, none of which imports TensorFlow; they are skipped, with the
reason, where it lacks them.
"""

import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import processes
from tests import test_backends

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_PYTHON_VARIABLE = "KERAS_ADP_TORCH_PYTHON"
REQUIRE_VARIABLE = "KERAS_ADP_REQUIRE_TORCH"
_BLOCK_TENSORFLOW = 'import sys; sys.modules["tensorflow"] = None\n'


@functools.lru_cache(maxsize=None)
def _torch_python_or_reason(path: str | None) -> tuple[str | None, str]:
    """`(interpreter, "")` if `path` imports torch and keras, else
    `(None, why not)`."""
    setup = (
        f"set {TORCH_PYTHON_VARIABLE} to a Python with torch and keras, e.g. "
        "python3 -m venv /opt/venv-torch && /opt/venv-torch/bin/pip install "
        "torch keras numpy"
    )
    if not path:
        return None, f"{TORCH_PYTHON_VARIABLE} is not set ({setup})"
    if not os.access(path, os.X_OK):
        return None, f"{TORCH_PYTHON_VARIABLE}={path} is not executable"
    probe = subprocess.run(
        [path, "-c", "import torch, keras"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, KERAS_BACKEND="torch"),
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return None, (
            f"{TORCH_PYTHON_VARIABLE}={path} cannot import torch and keras "
            f"({last})"
        )
    return path, ""


@pytest.fixture(scope="module")
def torch_python():
    path, reason = _torch_python_or_reason(
        os.environ.get(TORCH_PYTHON_VARIABLE)
    )
    if path is None:
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}")
        pytest.skip(reason)
    return path


def _run(python: str, code: str, backend: str, *, block_tf: bool) -> str:
    """Runs `code` in `python` on `backend`; returns its standard output."""
    environment = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join(
            [_REPO, *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    prefix = _BLOCK_TENSORFLOW if block_tf else ""
    result = subprocess.run(
        [python, "-c", prefix + code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=900,
        cwd=_REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def _run_torch(python: str, code: str) -> dict:
    """Runs `code` on torch without TensorFlow; returns its last JSON line,
    after checking that TensorFlow stayed blocked and the backend was
    torch."""
    check = textwrap.dedent(
        """
        import json as _json, sys as _sys
        import keras as _keras
        assert _sys.modules["tensorflow"] is None, "TensorFlow was imported"
        print(_json.dumps({"backend": _keras.backend.backend(),
                           "result": RESULT}))
        """
    )
    output = _run(
        python, textwrap.dedent(code) + check, "torch", block_tf=True
    )
    answer = _last_json(output)
    assert answer["backend"] == "torch"
    return answer["result"]


_IMPORT = """
import keras_adp
from keras_adp import callbacks, checkpoints, density, graph, guard
from keras_adp import metrics, optimizers, policy, rebuild, scoring
from keras_adp import training
names = ["ADPTrainer", "ADPPolicy", "ActivationDensity", "channel_groups",
         "measure_density", "prune_channels"]
RESULT = {
    "missing": [name for name in names if not hasattr(keras_adp, name)]
    + [name for name in ["inference_cost"] if not hasattr(metrics, name)],
    "tensorflow_modules": sorted(
        name for name, module in sys.modules.items()
        if name.split(".")[0] == "tensorflow" and module is not None
    ),
}
"""


def test_torch_imports_keras_adp_without_tensorflow(torch_python):
    result = _run_torch(torch_python, _IMPORT)
    assert result == {"missing": [], "tensorflow_modules": []}


def test_same_densities_and_decisions_on_torch_as_on_tensorflow(torch_python):
    # The script of the JAX comparison: a small CNN with weights set from
    # NumPy, densities, the plans of two width rules, the pruned output.
    pytest.importorskip(
        "tensorflow", reason="the TensorFlow reference needs TensorFlow here"
    )
    tf_side = _last_json(
        _run(sys.executable, test_backends._DECISIONS, "tensorflow",
             block_tf=False)
    )
    torch_side = _last_json(
        _run(torch_python, test_backends._DECISIONS, "torch", block_tf=True)
    )
    assert (tf_side["backend"], torch_side["backend"]) == (
        "tensorflow", "torch"
    )
    assert tf_side["samples"] == torch_side["samples"]
    assert tf_side["channels"] == torch_side["channels"]
    assert tf_side["overall"] == torch_side["overall"]
    assert tf_side["keep"] == torch_side["keep"]
    assert tf_side["keep"]["density"], "the policy should prune something"
    np.testing.assert_allclose(
        tf_side["pruned_output"], torch_side["pruned_output"], atol=1e-5
    )


_SURGERY = """
import numpy as np
import keras
import keras_adp
from tests import surgery

L = keras.layers
rng = np.random.default_rng(3)
inputs = keras.Input((10, 10, 3))
h = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
h = L.BatchNormalization(name="bn1")(h)
h = L.ReLU(name="relu1")(h)
h = L.MaxPooling2D(name="pool")(h)
h = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
h = L.Conv2D(5, 1, activation="relu", name="c3")(h)
h = L.GlobalAveragePooling2D(name="gap")(h)
outputs = L.Dense(4, name="head")(h)
model = keras.Model(inputs, outputs)
model.set_weights([
    rng.normal(0.0, 0.5, size=w.shape).astype("float32")
    if "variance" not in w.path else np.ones(w.shape, "float32")
    for w in model.weights
])
x = rng.normal(size=(16, 10, 10, 3)).astype("float32")
keep = {"c1": np.array([0, 3, 4, 7]), "c2": np.array([1, 2, 5]),
        "c3": np.array([0, 4])}
before = [np.array(w.numpy()) for w in model.weights]
pruned = keras_adp.prune_channels(model, keep)
groups = keras_adp.channel_groups(model)
reference = surgery.zeroed_copy(model, groups, keep)
old = {w.path: np.array(w.numpy()) for w in model.weights}
new = {w.path: np.array(w.numpy()) for w in pruned.weights}
expected = {
    "c1/kernel": np.take(old["c1/kernel"], keep["c1"], axis=3),
    "bn1/gamma": old["bn1/gamma"][keep["c1"]],
    "c2/kernel": np.take(
        np.take(old["c2/kernel"], keep["c1"], axis=2), keep["c2"], axis=3),
    "c3/kernel": np.take(
        np.take(old["c3/kernel"], keep["c2"], axis=2), keep["c3"], axis=3),
    "head/kernel": old["head/kernel"][keep["c3"]],
}
RESULT = {
    "pruned": pruned.predict(x, verbose=0).tolist(),
    "reference": reference.predict(x, verbose=0).tolist(),
    "original": model.predict(x, verbose=0).tolist(),
    "widths": [pruned.get_layer(n).filters for n in ("c1", "c2", "c3")],
    "weights_sliced": {
        path: bool(np.array_equal(new[path], value))
        for path, value in expected.items()
    },
    "source_untouched": all(
        np.array_equal(a, np.array(w.numpy()))
        for a, w in zip(before, model.weights)
    ),
}
"""


def test_surgery_on_torch_equals_zeroing_the_removed_inputs(torch_python):
    result = _run_torch(torch_python, _SURGERY)
    assert result["widths"] == [4, 3, 2]
    assert all(result["weights_sliced"].values()), result["weights_sliced"]
    assert result["source_untouched"]
    np.testing.assert_allclose(
        result["pruned"], result["reference"], rtol=0, atol=1e-5
    )
    # Guards the comparison: the removed channels did matter.
    assert np.abs(
        np.array(result["original"]) - np.array(result["reference"])
    ).max() > 1e-3


_OPTIMIZER = """
import numpy as np
import keras
from keras_adp import optimizers, rebuild

L = keras.layers
keras.utils.set_random_seed(0)
inputs = keras.Input((8, 8, 1))
h = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
h = L.BatchNormalization(name="bn1")(h)
h = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
h = L.GlobalAveragePooling2D(name="gap")(h)
model = keras.Model(inputs, L.Dense(3, name="logits")(h))
model.compile(
    optimizer=keras.optimizers.Adam(0.01, amsgrad=True),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
rng = np.random.default_rng(1)
x = rng.normal(size=(48, 8, 8, 1)).astype("float32")
y = rng.integers(0, 3, 48)
model.fit(x, y, batch_size=16, epochs=1, verbose=0)
keep_c1, keep_c2 = np.array([0, 2, 5]), np.array([1, 3, 4, 7])
surgery = rebuild.rebuild(model, {"c1": keep_c1, "c2": keep_c2})
optimizers.carry_over(model, surgery.model, surgery)
removed_c1 = np.setdiff1d(np.arange(8), keep_c1)
slices = {
    "c1_kernel": lambda a: np.take(a, keep_c1, axis=3),
    "c1_bias": lambda a: np.delete(a, removed_c1),
    "bn1_gamma": lambda a: a[keep_c1],
    "bn1_beta": lambda a: a[keep_c1],
    "c2_kernel": lambda a: np.take(np.take(a, keep_c1, axis=2), keep_c2, 3),
    "c2_bias": lambda a: a[keep_c2],
    "logits_kernel": lambda a: a[keep_c2],
    "logits_bias": lambda a: a,
}
old = {v.name: np.array(v.numpy()) for v in model.optimizer.variables}
new = {v.name: np.array(v.numpy())
       for v in surgery.model.optimizer.variables}
checked, wrong = [], []
for name, value in old.items():
    owner = next((p for p in slices if name.startswith(p + "_")), None)
    expected = value if owner is None else slices[owner](value)
    checked.append(name)
    if name not in new or not np.array_equal(new[name], expected):
        wrong.append(name)
nonzero = bool(np.abs(new["c2_kernel_momentum"]).sum() > 0)
history = surgery.model.fit(x, y, batch_size=16, epochs=1, verbose=0)
RESULT = {
    "same_names": sorted(old) == sorted(new),
    "checked": len(checked),
    "wrong": wrong,
    "iterations": [int(old["iteration"]), int(new["iteration"])],
    "nonzero": nonzero,
    "iterations_after_fit": int(surgery.model.optimizer.iterations.numpy()),
    "loss_finite": bool(np.isfinite(history.history["loss"][-1])),
}
"""


def test_optimizer_slots_are_sliced_like_their_weights_on_torch(
    torch_python,
):
    result = _run_torch(torch_python, _OPTIMIZER)
    assert result["same_names"]
    assert result["wrong"] == []
    # 8 weights x (momentum, velocity, velocity_hat) + iteration + rate.
    assert result["checked"] >= 8 * 3 + 1
    assert result["nonzero"], "slots after one epoch should not be all zero"
    assert result["iterations"] == [3, 3]
    # The rebuilt model trains on (a new train function), from step 3.
    assert result["iterations_after_fit"] == 6
    assert result["loss_finite"]


_DENSITY = """
import numpy as np
import keras
import keras_adp

L = keras.layers
keras.utils.set_random_seed(2)
inputs = keras.Input((8, 8, 2))
h = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
h = L.Conv2D(5, 3, padding="same", name="c2")(h)
h = L.ReLU(name="relu2")(h)
h = L.GlobalAveragePooling2D()(h)
model = keras.Model(inputs, L.Dense(3, name="head")(h))
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(5)
x = rng.normal(size=(40, 8, 8, 2)).astype("float32")
y = rng.integers(0, 3, 40)
maps = keras.Model(
    inputs, [model.get_layer("c1").output, model.get_layer("relu2").output]
)
activations = maps.predict(x, verbose=0)
reference = {
    name: (a > 0).mean(axis=(0, 1, 2)).tolist()
    for name, a in zip(("c1", "c2"), activations)
}
measured = keras_adp.measure_density(model, x, batch_size=16)
callback = keras_adp.ActivationDensity(x[:24], batch_size=8)
history = model.fit(
    x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback]
)
after = keras_adp.measure_density(model, x[:24])
RESULT = {
    "reference": reference,
    "measured": {k: v.channels.tolist() for k, v in measured.items()},
    "sites": {k: v.measured_at for k, v in measured.items()},
    "samples": measured["c1"].samples,
    "callback_epochs": [record["epoch"] for record in callback.history],
    "callback_last": callback.history[-1]["density"],
    "after": {k: v.overall for k, v in after.items()},
    "logged": {k: v[-1] for k, v in history.history.items()
               if k.startswith("density/")},
}
"""


def test_density_on_torch_matches_numpy_and_the_callback(torch_python):
    result = _run_torch(torch_python, _DENSITY)
    assert result["sites"] == {"c1": "c1", "c2": "relu2"}
    assert result["samples"] == 40
    for name, channels in result["reference"].items():
        np.testing.assert_allclose(
            result["measured"][name], channels, rtol=0, atol=1e-12
        )
    assert result["callback_epochs"] == [0, 1]
    assert result["callback_last"] == result["after"]
    assert result["logged"] == {
        f"density/{name}": value for name, value in result["after"].items()
    }


_TRAINER = """
import json, os, tempfile
import numpy as np
import keras
import keras_adp

L = keras.layers


def make_model():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 1), name="image")
    h = L.Conv2D(12, 3, padding="same", activation="relu", name="c1")(inputs)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Conv2D(12, 3, padding="same", name="c2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.Dropout(0.2, name="drop")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(inputs, L.Dense(3, name="logits")(h), name="tiny")
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


rng = np.random.default_rng(0)
y = rng.integers(0, 3, 96)
x = (rng.normal(size=(96, 8, 8, 1)) + y[:, None, None, None]).astype(
    "float32")
policy = keras_adp.ADPPolicy(
    warmup_epochs=1, min_channels=2, calibration_samples=64,
    max_accuracy_drop=None, width_rule="density", recovery_updates=None,
)


class Interrupt(keras.callbacks.Callback):
    # Ends the run as a crash would, before epoch 2 trains.

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt


def fit(run_dir, resume=False, callbacks=()):
    trainer = keras_adp.ADPTrainer(policy, run_dir=run_dir, seed=0, verbose=0)
    return trainer.fit(make_model(), x, y, epochs=3, batch_size=32,
                       resume=resume, callbacks=list(callbacks))


def widths(model):
    return [model.get_layer(n).filters for n in ("c1", "c2")]


root = tempfile.mkdtemp()
full = fit(os.path.join(root, "full"))
try:
    fit(os.path.join(root, "split"), callbacks=[Interrupt()])
    raise AssertionError("the run was not interrupted")
except KeyboardInterrupt:
    pass
with open(os.path.join(root, "split", "LATEST")) as handle:
    latest = handle.read()
with open(os.path.join(root, "split", latest, "state.json")) as handle:
    saved = json.load(handle)
resumed = fit(os.path.join(root, "split"), resume=True)
weights_equal = all(
    np.allclose(a.numpy(), b.numpy(), atol=1e-6)
    for a, b in zip(full.model.weights, resumed.model.weights, strict=True)
)
slots_equal = all(
    np.allclose(a.numpy(), b.numpy(), atol=1e-6)
    for a, b in zip(full.model.optimizer.variables,
                    resumed.model.optimizer.variables, strict=True)
)
RESULT = {
    "steps_before_resume": [s["epoch"] for s in saved["steps"]],
    "latest": latest,
    "epochs": [r["epoch"] for r in resumed.history],
    "widths": [r["widths"] for r in resumed.history],
    "full_widths": [r["widths"] for r in full.history],
    "final_widths": [widths(resumed.model), widths(full.model)],
    "weights_equal": weights_equal,
    "slots_equal": slots_equal,
    "iterations": int(resumed.model.optimizer.iterations.numpy()),
    "cost": keras_adp.metrics.inference_cost(resumed.model).params,
    "dense_cost": keras_adp.metrics.inference_cost(make_model()).params,
}
"""


def test_trainer_on_torch_resumes_after_a_step_to_the_same_result(
    torch_python,
):
    result = _run_torch(torch_python, _TRAINER)
    # Pruning steps were taken before the run was interrupted, so the
    # resume starts from a rebuilt model's checkpoint.
    assert result["steps_before_resume"] == [0, 1]
    assert result["latest"] == "checkpoint-0002"
    assert result["epochs"] == [0, 1, 2]
    assert result["widths"] == result["full_widths"]
    first, second = result["final_widths"]
    assert first == second and first[0] < 12
    assert result["weights_equal"] and result["slots_equal"]
    assert result["iterations"] == 3 * 3  # 96 samples, batch 32.
    assert result["cost"] < result["dense_cost"]


_ROLLBACK = """
import numpy as np
import keras
import keras_adp

L = keras.layers
keras.utils.set_random_seed(11)
inputs = keras.Input((8, 8, 1))
h = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
h = L.GlobalAveragePooling2D()(h)
model = keras.Model(inputs, L.Dense(2, name="out")(h), name="teacher")
model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
x = np.random.default_rng(4).normal(size=(64, 8, 8, 1)).astype("float32")
targets = model.predict(x, verbose=0)
policy = keras_adp.ADPPolicy(
    warmup_epochs=1, min_channels=1, calibration_samples=32,
    monitor="val_loss", max_accuracy_drop=0.0, width_rule="density",
    removal_scale=1.0, max_prune_steps=None, recovery_updates=None,
)
result = keras_adp.ADPTrainer(policy, verbose=0).fit(
    model, x, targets, epochs=5, batch_size=16,
    validation_data=(x[:32], targets[:32]),
)
RESULT = {
    "actions": [r["guard"]["action"] for r in result.history if r["guard"]],
    "outcomes": [step["outcome"] for step in result.steps],
    "final_widths": result.history[-1]["widths"],
    "final_filters": result.model.get_layer("c1").filters,
}
"""


def test_guard_on_torch_rolls_back_steps_that_break_the_budget(torch_python):
    # The targets are the model's own outputs: any cut of a live channel
    # raises the validation loss above the dense model's, so every step is
    # rolled back (the same run as test_guard's TensorFlow test).
    result = _run_torch(torch_python, _ROLLBACK)
    assert result["actions"] == [
        "rolled back; retrying half the removal",
        "rolled back; pruning stops",
    ]
    assert result["outcomes"] == ["rolled back"] * 2
    assert result["final_widths"] == {"c1": 8}
    assert result["final_filters"] == 8


# ------------------------------------------------- export and distribution
def _missing_modules(python: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` `python` cannot find (without importing them)."""
    probe = subprocess.run(
        [python, "-c", "import importlib.util, json, sys; print(json.dumps("
         "[m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))",
         *modules],
        capture_output=True, text=True, timeout=300,
    )
    return json.loads(probe.stdout.strip().splitlines()[-1])


def _skip_unless_installed(python: str, packages: dict[str, str]) -> None:
    """Skips unless `python` has each module of `packages` (module name ->
    pip package)."""
    missing = _missing_modules(python, tuple(packages))
    if missing:
        pytest.skip(
            f"{TORCH_PYTHON_VARIABLE}={python} lacks {', '.join(missing)} "
            f"(pip install {' '.join(packages[name] for name in missing)} "
            "there)"
        )


def test_export_tflite_of_a_model_trained_on_torch(
    torch_python, tmp_path, monkeypatch
):
    # The torch Python has no TensorFlow: it converts in this one.
    pytest.importorskip(
        "tensorflow", reason="the TFLite converter needs TensorFlow here"
    )
    _skip_unless_installed(torch_python, {"ai_edge_litert": "ai-edge-litert"})
    monkeypatch.setenv("KERAS_ADP_TENSORFLOW_PYTHON", sys.executable)
    result = _run_torch(
        torch_python,
        f"FOLDER = {str(tmp_path)!r}\n" + processes.TFLITE_TRAINED_EXPORT_CHECK,
    )
    processes.assert_tflite_trained_export_check(result, "torch")


def test_export_onnx_of_a_pruned_max_pooling_model_on_torch(
    torch_python, tmp_path
):
    # torch.onnx: the torch Python needs onnx (and ONNX Runtime to verify),
    # not TensorFlow.
    _skip_unless_installed(
        torch_python, {"onnx": "onnx", "onnxruntime": "onnxruntime"}
    )
    result = _run_torch(
        torch_python,
        f"FOLDER = {str(tmp_path)!r}\n" + processes.ONNX_MAX_POOL_CHECK,
    )
    processes.assert_onnx_max_pool_check(result, "torch")


_DISTRIBUTION = """
import os, tempfile
import numpy as np
import keras
import keras_adp

try:
    keras.distribution.list_devices()
    keras_lists_devices = True
except AttributeError:  # keras.src.backend.distribution_lib is None.
    keras_lists_devices = False
keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=["cpu:0", "cpu:1"]))
L = keras.layers
inputs = keras.Input((8, 8, 1))
h = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
h = L.GlobalAveragePooling2D()(h)
model = keras.Model(inputs, L.Dense(2, name="out")(h))
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
y = rng.integers(0, 2, 32)
policy = keras_adp.ADPPolicy(warmup_epochs=0, calibration_samples=16,
                             max_accuracy_drop=None)
run_dir = os.path.join(tempfile.mkdtemp(), "run")
errors = {}
try:
    keras_adp.ADPTrainer(policy, run_dir=run_dir, verbose=0).fit(
        model, x, y, epochs=1, batch_size=16)
except ValueError as error:
    errors["fit"] = str(error)
try:
    keras_adp.measure_density(model, x)
except ValueError as error:
    errors["measure_density"] = str(error)
keras.distribution.set_distribution(None)
history = keras_adp.ADPTrainer(policy, verbose=0).fit(
    model, x, y, epochs=1, batch_size=16).history
RESULT = {
    "keras_lists_devices": keras_lists_devices,
    "errors": errors,
    "run_dir_written": os.path.exists(run_dir),
    "epochs_without_distribution": len(history),
}
"""


def test_trainer_on_torch_refuses_a_keras_distribution(torch_python):
    result = _run_torch(torch_python, _DISTRIBUTION)
    # Keras 3.15 has no torch implementation of keras.distribution (its
    # `keras.src.backend.distribution_lib` is None there, and `fit` ignores
    # a distribution). When a Keras release adds one, this fails: make
    # ADPTrainer distribute on torch then, instead of refusing.
    assert result["keras_lists_devices"] is False
    assert set(result["errors"]) == {"fit", "measure_density"}
    for message in result["errors"].values():
        assert "Expected no `keras.distribution` on the 'torch' backend" in (
            message
        )
        assert "set_distribution(None)" in message
        assert "KERAS_BACKEND=jax" in message
    assert not result["run_dir_written"]
    assert result["epochs_without_distribution"] == 1
