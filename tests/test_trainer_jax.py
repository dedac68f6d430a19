"""`ADPTrainer`'s own behaviour on the JAX backend, with TensorFlow blocked:
checkpoints, resume after a kill, seeding, the accuracy guard's exact
rollback, and user callbacks (issue 13).

Each check runs in a subprocess with `KERAS_BACKEND=jax` and
`sys.modules["tensorflow"] = None` (Keras picks its backend once per
process), prints what it saw as JSON, and is judged here. Skipped with the
reason when JAX is not installed. The same behaviours on TensorFlow are
tested in test_training.py, test_guard.py and test_callbacks.py.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import processes

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_KILL_SCRIPT = os.path.join(_REPO, "tests", "scripts", "train_for_kill.py")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="JAX is not installed (pip install -e '.[jax]')",
)

_BLOCK_TF = 'import sys; sys.modules["tensorflow"] = None\n'

# The model and data of every check: two ReLU convolutions (12 channels) on
# 8x8 images, Dropout (so a seed must reset its random state), 3 logits.
_COMMON = textwrap.dedent(
    """
    import collections, csv, json, os, sys
    import keras
    import numpy as np
    import keras_adp
    from keras_adp import guard

    L = keras.layers
    assert keras.backend.backend() == "jax"

    def build(filters=12):
        keras.utils.set_random_seed(7)
        inputs = keras.Input((8, 8, 1), name="image")
        x = L.Conv2D(filters, 3, padding="same", activation="relu",
                     name="c1")(inputs)
        x = L.BatchNormalization(name="bn1")(x)
        x = L.Conv2D(filters, 3, padding="same", name="c2")(x)
        x = L.ReLU(name="relu2")(x)
        x = L.Dropout(0.2, name="drop")(x)
        x = L.GlobalAveragePooling2D(name="gap")(x)
        model = keras.Model(inputs, L.Dense(3, name="logits")(x))
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    def data(samples=128, seed=0):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, samples)
        x = rng.normal(size=(samples, 8, 8, 1)) + y[:, None, None, None]
        return x.astype("float32"), y

    POLICY = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, min_channels=2, calibration_samples=64,
        max_accuracy_drop=None, width_rule="density",
    )
    """
)


def _environment():
    return dict(
        os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=_REPO, CUDA_VISIBLE_DEVICES="", **processes.JAX_CACHE,
    )


def _run_jax(code: str, tmp_path) -> dict:
    """Runs `_COMMON + code` on JAX without TensorFlow in `tmp_path`;
    returns the JSON object printed on its last line."""
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_TF + _COMMON + textwrap.dedent(code)],
        capture_output=True, text=True, env=_environment(), timeout=600,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------- checkpoints and callbacks
_FULL_RUN = """
class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()
        self.epochs, self.widths, self.log_keys = [], [], []
        self.batches = collections.Counter()
        self.models, self.arrivals, self.last_kernel = [], [], None

    def set_model(self, model):
        super().set_model(model)
        if self.models and self.models[-1] is model:
            return
        self.models.append(model)
        kernel = np.array(model.get_layer("c1").kernel.numpy())
        self.arrivals.append(
            (kernel, int(model.optimizer.iterations.numpy()),
             self.last_kernel)
        )

    def on_train_begin(self, logs=None):
        self.calls["train_begin"] += 1

    def on_train_end(self, logs=None):
        self.calls["train_end"] += 1

    def on_train_batch_end(self, batch, logs=None):
        self.batches[len(self.epochs)] += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.widths.append({n: self.model.get_layer(n).filters
                            for n in ("c1", "c2")})
        self.log_keys.append(sorted(logs))
        self.last_kernel = np.array(self.model.get_layer("c1").kernel.numpy())

def subset(kernel, old):
    # Every kept filter is one of the old model's filters, unchanged.
    old = [old[..., j].ravel() for j in range(old.shape[-1])]
    return all(any(np.array_equal(kernel[..., j].ravel(), o) for o in old)
               for j in range(kernel.shape[-1]))

model = build()
recorder = Recorder()
result = keras_adp.ADPTrainer(POLICY, run_dir="run", seed=0, verbose=0).fit(
    model, *data(), epochs=4, batch_size=32,
    validation_data=data(32, seed=1),
    callbacks=[recorder, keras.callbacks.CSVLogger("log.csv")],
)
with open("log.csv") as handle:
    rows = list(csv.DictReader(handle))
saved = keras.saving.load_model("run/checkpoint-0004/model.keras")
with open("run/checkpoint-0004/state.json") as handle:
    state = json.load(handle)
print(json.dumps({
    "calls": dict(recorder.calls),
    "epochs": recorder.epochs,
    "batches": [recorder.batches[e] for e in range(4)],
    "callback_widths": recorder.widths,
    "history_widths": [r["widths"] for r in result.history],
    "history_density": [r["density"] for r in result.history],
    "history_loss": [r["logs"]["loss"] for r in result.history],
    "log_keys": recorder.log_keys,
    "models": len(recorder.models),
    "first_is_user_model": recorder.models[0] is model,
    "last_is_result": recorder.models[-1] is result.model,
    "user_widths": [model.get_layer(n).filters for n in ("c1", "c2")],
    "steps": [s["epoch"] for s in result.steps],
    "arrivals": [
        {"width": int(k.shape[-1]), "iterations": i, "subset": subset(k, o)}
        for k, i, o in recorder.arrivals[1:]
    ],
    "csv": [{k: row[k] for k in ("epoch", "loss", "density/c1")}
            for row in rows],
    "run_dir": sorted(os.listdir("run")),
    "latest": open("run/LATEST").read(),
    "state_next_epoch": state["next_epoch"],
    "state_seed": state["seed"],
    "checkpoint_equal": all(
        np.array_equal(a, b) for a, b in zip(
            saved.get_weights(), result.model.get_weights(), strict=True)
    ),
    "checkpoint_optimizer": int(saved.optimizer.iterations.numpy()),
}))
"""


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One 4-epoch run on JAX with a recording callback, a CSVLogger and a
    run directory."""
    return _run_jax(_FULL_RUN, tmp_path_factory.mktemp("jax_full_run"))


def test_user_callback_sees_one_run_and_each_new_model(full_run):
    assert full_run["calls"] == {"train_begin": 1, "train_end": 1}
    assert full_run["epochs"] == [0, 1, 2, 3]
    assert full_run["batches"] == [4, 4, 4, 4]  # 128 samples, 32 a batch
    # At each epoch end the callback's model is the one trained that epoch.
    assert full_run["callback_widths"] == full_run["history_widths"]
    assert full_run["models"] == len(full_run["steps"]) + 1 > 1
    assert full_run["first_is_user_model"] and full_run["last_is_result"]
    assert all(
        "density/c1" in keys and "val_loss" in keys
        for keys in full_run["log_keys"]
    )
    # The model passed in is trained, never pruned.
    assert full_run["user_widths"] == [12, 12]


def test_rebuilt_model_keeps_trained_weights_and_optimizer_step(full_run):
    assert full_run["arrivals"]
    for step_epoch, arrival in zip(full_run["steps"], full_run["arrivals"]):
        after = full_run["history_widths"][step_epoch + 1]["c1"]
        assert arrival["width"] == after < 12
        assert arrival["subset"]
        assert arrival["iterations"] == (step_epoch + 1) * 4


def test_csv_logger_gets_one_row_per_epoch_with_density_columns(full_run):
    rows = full_run["csv"]
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    for row, density, loss in zip(
        rows, full_run["history_density"], full_run["history_loss"],
        strict=True,
    ):
        assert float(row["density/c1"]) == pytest.approx(density["c1"])
        assert float(row["loss"]) == pytest.approx(loss)


def test_checkpoints_keep_the_last_two_and_hold_the_final_model(full_run):
    assert full_run["run_dir"] == [
        "LATEST", "checkpoint-0003", "checkpoint-0004"
    ]
    assert full_run["latest"] == "checkpoint-0004"
    assert (full_run["state_next_epoch"], full_run["state_seed"]) == (4, 0)
    assert full_run["checkpoint_equal"]
    assert full_run["checkpoint_optimizer"] == 16


# ------------------------------------------------------------- seeding
_SEEDED = """
def run(seed):
    result = keras_adp.ADPTrainer(POLICY, seed=seed, verbose=0).fit(
        build(), *data(), epochs=3, batch_size=32
    )
    return result

first, again, other = run(3), run(3), run(4)
print(json.dumps({
    "widths": [[r["widths"] for r in x.history] for x in (first, again)],
    "same_weights": all(
        np.array_equal(a, b) for a, b in zip(
            first.model.get_weights(), again.model.get_weights(),
            strict=True)
    ),
    "same_loss": [r["logs"]["loss"] for r in first.history]
        == [r["logs"]["loss"] for r in again.history],
    "other_loss_differs": [r["logs"]["loss"] for r in first.history]
        != [r["logs"]["loss"] for r in other.history],
}))
"""


def test_same_seed_gives_the_same_run(tmp_path):
    seen = _run_jax(_SEEDED, tmp_path)
    first, again = seen["widths"]
    assert first == again and first[-1] != first[0]
    assert seen["same_weights"] and seen["same_loss"]
    # Dropout and shuffling follow the seed: another seed trains otherwise.
    assert seen["other_loss_differs"]


# ------------------------------------------------------ guard rollback
_ROLLBACK = """
guard.is_worse_than_budget = lambda *args: True

class Snapshot(keras.callbacks.Callback):
    # Weights and optimizer slots at the end of epoch 0 (before the step)
    # and at the start of epoch 2 (the restored model, before it trains).
    def take(self):
        optimizer = self.model.optimizer
        return (
            [np.array(w.numpy()) for w in self.model.weights],
            [np.array(v.numpy()) for v in optimizer.variables
             if v is not optimizer.iterations],
            int(optimizer.iterations.numpy()),
            self.model,
        )

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.before = self.take()

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            self.after = self.take()

policy = keras_adp.ADPPolicy(
    recovery_updates=None,
    warmup_epochs=1, min_channels=2, calibration_samples=32, max_retries=0,
    width_rule="density",
)
snapshot = Snapshot()
x, y = data(96, seed=2)
result = keras_adp.ADPTrainer(policy, verbose=0).fit(
    build(8), x, y, epochs=3, batch_size=16,
    validation_data=(x[:24], y[:24]), callbacks=[snapshot],
)
weights, slots, iterations, model = snapshot.after
saved_weights, saved_slots, saved_iterations, saved_model = snapshot.before
print(json.dumps({
    "outcomes": [s["outcome"] for s in result.steps],
    "cut_to": result.steps[0]["after"]["c1"],
    "action": result.history[1]["guard"]["action"],
    "same_model": model is saved_model and result.model is model,
    "filters": [model.get_layer(n).filters for n in ("c1", "c2")],
    "weights_identical": len(weights) == len(saved_weights) and all(
        np.array_equal(a, b) for a, b in zip(saved_weights, weights)),
    "slots": len(slots),
    "slots_identical": len(slots) == len(saved_slots) and all(
        np.array_equal(a, b) for a, b in zip(saved_slots, slots)),
    "iterations": [saved_iterations, iterations],
}))
"""


def test_rolled_back_step_restores_weights_and_optimizer_state_exactly(
    tmp_path,
):
    seen = _run_jax(_ROLLBACK, tmp_path)
    assert seen["outcomes"] == ["rolled back"] and seen["cut_to"] < 8
    assert seen["action"] == "rolled back; pruning stops"
    # The pre-step model itself comes back, bit for bit, slots included.
    assert seen["same_model"] and seen["filters"] == [8, 8]
    assert seen["weights_identical"]
    assert seen["slots"] > 0 and seen["slots_identical"]
    # The iteration count goes on: 6 steps before the step, 6 in the trial.
    assert seen["iterations"] == [6, 12]


# ------------------------------------------------ resume after a kill
def _kill_command(run_dir, output, mode):
    runner = (
        _BLOCK_TF + "import runpy; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return [sys.executable, "-c", runner, _KILL_SCRIPT, str(run_dir), "6",
            str(output), mode]


@pytest.mark.parametrize("mode", ["default", "rollback"])
def test_killed_run_resumes_to_the_same_result(tmp_path, mode):
    """SIGKILL a JAX training process after its second checkpoint, rerun
    it, and compare with a run that was never killed (see
    tests/scripts/train_for_kill.py; `rollback`: the kill lands while a
    step is on trial and the resumed run rolls it back from the pre-step
    model in the run directory)."""
    env = _environment()
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    killed_out = tmp_path / "killed.npz"
    process = subprocess.Popen(
        _kill_command(killed_dir, killed_out, mode), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    killed_at = processes.kill_after_checkpoint(process, killed_dir)
    assert not killed_out.exists()
    assert "checkpoint-0006" not in os.listdir(killed_dir)
    for run_dir, output in (
        (killed_dir, killed_out),
        (reference_dir, tmp_path / "reference.npz"),
    ):
        completed = subprocess.run(
            _kill_command(run_dir, output, mode), env=env,
            capture_output=True, text=True, timeout=600,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
    resumed, reference = processes.resumed_and_reference(tmp_path)
    assert resumed["epochs"] == list(range(6)), killed_at
    assert resumed == reference
    if mode == "rollback":
        actions = [entry["action"] for entry in resumed["guard"] if entry]
        assert actions == ["rolled back; pruning stops"]
        assert resumed["widths"][-1] == resumed["widths"][0]
    else:
        assert resumed["widths"][-1] != resumed["widths"][0]
    with np.load(killed_out) as a, np.load(tmp_path / "reference.npz") as b:
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_allclose(a[name], b[name], atol=1e-6)
