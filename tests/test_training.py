import collections
import csv
import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import shutil
import subprocess
import sys
import types
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_adp
from keras_adp.training import TrainingDivergedError
from tests import processes

L = keras.layers

SAMPLES = 128
BATCH_SIZE = 32
# The accuracy guard is off here: these tests are about the loop's
# mechanics (test_guard.py tests the guard).
POLICY = keras_adp.ADPPolicy(
    recovery_updates=None,
    warmup_epochs=1, min_channels=2, calibration_samples=64,
    max_accuracy_drop=None,
)
RECORD_KEYS = {
    "guard",
    "epoch",
    "logs",
    "widths",
    "density",
    "params",
    "macs",
    "flops",
    "train_macs",
    "measure_macs",
    "cumulative_macs",
    "pruning",
    "updates",
}
SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "train_for_kill.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(optimizer=None, compile=True):
    """Two ReLU convolutions (12 channels each) on 8x8 images, 3 logits.

    Dropout makes a resumed run repeat the uninterrupted one only if its
    random state is reset each epoch (`model.save` does not store it).
    """
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(12, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Conv2D(12, 3, padding="same", name="c2")(x)
    x = L.ReLU(name="relu2")(x)
    x = L.Dropout(0.2, name="drop")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    if compile:
        model.compile(
            optimizer=optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy", max_logit],
        )
    return model


@keras.saving.register_keras_serializable(package="keras_adp_tests")
def max_logit(y_true, y_pred):
    """A custom metric function."""
    return keras.ops.max(y_pred, axis=-1)


def mean_logit(y_true, y_pred):
    """A custom metric that Keras cannot deserialize (not registered)."""
    return keras.ops.mean(y_pred, axis=-1)


def _data(samples=SAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, samples)
    x = rng.normal(size=(samples, 8, 8, 1)) + y[:, None, None, None]
    return x.astype("float32"), y


def _columns(kernel):
    """The output filters of a conv kernel, as a list of flat arrays."""
    return [kernel[..., j].ravel() for j in range(kernel.shape[-1])]


def _is_subset_of_filters(kernel, old_kernel):
    old = _columns(old_kernel)
    return all(
        any(np.array_equal(column, candidate) for candidate in old)
        for column in _columns(kernel)
    )


def _widths(model):
    return {
        "c1": model.get_layer("c1").filters,
        "c2": model.get_layer("c2").filters,
    }


class Recorder(keras.callbacks.Callback):
    """Records what a user callback sees during an ADP run."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()
        self.epochs = []
        self.widths = []
        self.log_keys = []
        self.total_epochs = []
        self.batches = collections.Counter()
        self.models = []
        # Per model received: (c1 kernel, optimizer iterations) on arrival,
        # and the c1 kernel of the model it replaced, at its last epoch end.
        self.arrivals = []
        self.last_kernel = None

    def set_model(self, model):
        super().set_model(model)
        if self.models and self.models[-1] is model:
            return
        self.models.append(model)
        self.arrivals.append(
            (
                np.array(model.get_layer("c1").kernel.numpy()),
                int(model.optimizer.iterations),
                self.last_kernel,
            )
        )

    def on_train_begin(self, logs=None):
        self.calls["train_begin"] += 1

    def on_train_end(self, logs=None):
        self.calls["train_end"] += 1

    def on_epoch_begin(self, epoch, logs=None):
        self.total_epochs.append(self.params["epochs"])

    def on_train_batch_end(self, batch, logs=None):
        self.batches[len(self.epochs)] += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.widths.append(_widths(self.model))
        self.log_keys.append(sorted(logs))
        self.last_kernel = np.array(self.model.get_layer("c1").kernel.numpy())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One 4-epoch ADP run with user callbacks and checkpoints."""
    root = tmp_path_factory.mktemp("full_run")
    recorder = Recorder()
    csv_path = str(root / "log.csv")
    model = _model()
    x, y = _data()
    trainer = keras_adp.ADPTrainer(
        POLICY, run_dir=str(root / "run"), seed=0, verbose=0
    )
    result = trainer.fit(
        model,
        x,
        y,
        epochs=4,
        batch_size=BATCH_SIZE,
        validation_data=_data(32, seed=1),
        callbacks=[recorder, keras.callbacks.CSVLogger(csv_path)],
    )
    return types.SimpleNamespace(
        result=result,
        user_model=model,
        recorder=recorder,
        csv_path=csv_path,
        run_dir=str(root / "run"),
    )


# ------------------------------------------------------------- a full run
def test_fit_prunes_channels_while_training(full_run):
    result = full_run.result
    widths = [record["widths"] for record in result.history]
    assert widths[0] == {"c1": 12, "c2": 12}
    assert result.steps, "tiny ReLU model at AD ~0.5 must be pruned"
    for before, after in zip(widths, widths[1:]):
        assert all(after[name] <= before[name] for name in before)
    assert sum(widths[-1].values()) < sum(widths[0].values())
    assert _widths(result.model) == widths[-1]
    params = [record["params"] for record in result.history]
    macs = [record["macs"] for record in result.history]
    assert params == sorted(params, reverse=True) and params[-1] < params[0]
    assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0]
    assert result.model.count_params() == params[-1]
    assert result.dense["params"] == params[0]
    assert params[0] == full_run.user_model.count_params()


def test_history_entries_have_documented_keys(full_run):
    history = full_run.result.history
    assert [record["epoch"] for record in history] == [0, 1, 2, 3]
    total = 0.0
    for record in history:
        assert set(record) == RECORD_KEYS
        assert {
            "loss",
            "accuracy",
            "max_logit",
            "val_loss",
            "val_accuracy",
        } <= set(record["logs"])
        assert set(record["density"]) == set(record["widths"]) == {"c1", "c2"}
        for name, density in record["density"].items():
            assert 0.0 <= density <= 1.0
            assert record["logs"][f"density/{name}"] == density
        assert record["train_macs"] == 3.0 * record["macs"] * SAMPLES
        assert record["measure_macs"] == record["macs"] * 64.0
        total += record["train_macs"] + record["measure_macs"]
        assert record["cumulative_macs"] == pytest.approx(total)
        assert record["flops"] >= 2 * record["macs"]
        # Optimizer updates: ceil(training samples / batch) per epoch.
        assert record["updates"] == math.ceil(SAMPLES / BATCH_SIZE)
    assert history[-1]["pruning"] is None  # never prune after the last epoch


def test_steps_record_widths_params_and_macs_before_and_after(full_run):
    history = full_run.result.history
    steps = full_run.result.steps
    pruning = [record["pruning"] for record in history if record["pruning"]]
    assert [step for step in pruning if "stopped" not in step] == steps
    for stop in (step for step in pruning if "stopped" in step):
        assert stop == {"epoch": stop["epoch"], "stopped": True}
        assert all(step["epoch"] < stop["epoch"] for step in steps)
    for step in steps:
        before, after = history[step["epoch"]], history[step["epoch"] + 1]
        assert set(step) == {
            "epoch",
            "before",
            "after",
            "params_before",
            "params_after",
            "macs_before",
            "macs_after",
            "attempt",
            "outcome",
            "updates_left",
            "cut_fraction",
        }
        assert step["attempt"] == 0 and step["outcome"] == "taken"
        assert step["updates_left"] == (4 - step["epoch"] - 1) * 4
        assert step["cut_fraction"] == 1.0  # `recovery_updates=None`.
        assert step["before"] == {
            name: before["widths"][name] for name in step["after"]
        }
        assert step["after"] == {
            name: after["widths"][name] for name in step["after"]
        }
        assert any(step["after"][n] < step["before"][n] for n in step["after"])
        assert step["params_before"] == before["params"]
        assert step["params_after"] == after["params"]
        assert step["macs_before"] == before["macs"]
        assert step["macs_after"] == after["macs"]


def test_summary_compares_dense_and_final_model(full_run):
    result = full_run.result
    summary = result.summary()
    assert summary["epochs"] == 4
    assert summary["prune_steps"] == len(result.steps)
    assert summary["final_params"] == result.model.count_params()
    assert summary["param_reduction"] == pytest.approx(
        summary["dense_params"] / summary["final_params"]
    )
    assert summary["mac_reduction"] > 1.0
    assert summary["training_macs"] == result.history[-1]["cumulative_macs"]


def test_fit_trains_but_never_prunes_the_model_passed_in(full_run):
    assert _widths(full_run.user_model) == {"c1": 12, "c2": 12}
    assert full_run.recorder.models[0] is full_run.user_model
    assert int(full_run.user_model.optimizer.iterations) > 0


def test_user_callback_sees_one_run_and_each_new_model(full_run):
    recorder = full_run.recorder
    history = full_run.result.history
    assert recorder.calls == {"train_begin": 1, "train_end": 1}
    assert recorder.epochs == [0, 1, 2, 3]
    assert recorder.total_epochs == [4, 4, 4, 4]
    # Batch hooks reach the user callback: 128 samples / 32 per batch.
    assert dict(recorder.batches) == {0: 4, 1: 4, 2: 4, 3: 4}
    # At each epoch end, the callback's model is the one trained that epoch.
    assert recorder.widths == [record["widths"] for record in history]
    assert len(recorder.models) == len(full_run.result.steps) + 1
    assert recorder.models[-1] is full_run.result.model
    assert all(
        "density/c1" in keys and "val_loss" in keys
        for keys in recorder.log_keys
    )


def test_rebuilt_model_keeps_trained_weights_and_optimizer_step(full_run):
    arrivals = full_run.recorder.arrivals[1:]
    assert arrivals
    for step, (kernel, iterations, old_kernel) in zip(
        full_run.result.steps, arrivals
    ):
        after = full_run.result.history[step["epoch"] + 1]["widths"]
        assert kernel.shape[-1] == after["c1"]
        assert _is_subset_of_filters(kernel, old_kernel)
        assert iterations == (step["epoch"] + 1) * SAMPLES // BATCH_SIZE


def test_csv_logger_gets_one_row_per_epoch_with_density_columns(full_run):
    with open(full_run.csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    for row, record in zip(rows, full_run.result.history):
        assert float(row["density/c1"]) == pytest.approx(
            record["density"]["c1"]
        )
        assert float(row["loss"]) == pytest.approx(record["logs"]["loss"])
        assert "val_accuracy" in row


def test_checkpoints_keep_the_last_two_and_latest_names_the_newest(full_run):
    run_dir = full_run.run_dir
    assert sorted(os.listdir(run_dir)) == [
        "LATEST",
        "checkpoint-0003",
        "checkpoint-0004",
    ]
    with open(os.path.join(run_dir, "LATEST")) as handle:
        assert handle.read() == "checkpoint-0004"
    with open(os.path.join(run_dir, "checkpoint-0004", "state.json")) as f:
        state = json.load(f)
    assert state["next_epoch"] == 4
    assert len(state["history"]) == 4
    assert state["policy"] == POLICY.get_config()
    assert state["seed"] == 0
    saved = keras.saving.load_model(
        os.path.join(run_dir, "checkpoint-0004", "model.keras"), compile=False
    )
    for a, b in zip(saved.weights, full_run.result.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------------ resume
def test_resume_falls_back_to_previous_checkpoint_when_latest_is_corrupt(
    full_run, tmp_path, capsys
):
    run_dir = str(tmp_path / "run")
    shutil.copytree(full_run.run_dir, run_dir)
    model_file = os.path.join(run_dir, "checkpoint-0004", "model.keras")
    with open(model_file, "r+b") as handle:
        handle.truncate(os.path.getsize(model_file) // 2)
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, seed=0, verbose=1)
    x, y = _data()
    result = trainer.fit(
        _model(),
        x,
        y,
        epochs=4,
        batch_size=BATCH_SIZE,
        validation_data=_data(32, seed=1),
        resume=True,
    )
    out = capsys.readouterr().out
    assert "checkpoint-0004' is unreadable" in out
    assert "resuming from" in out and "checkpoint-0003" in out
    # Epoch 3 was trained again, once; the history is not duplicated.
    assert [record["epoch"] for record in result.history] == [0, 1, 2, 3]
    assert "Epoch 4/4" in out and "Epoch 3/" not in out
    # Same seed: the resumed run repeats the uninterrupted one.
    assert _widths(result.model) == _widths(full_run.result.model)
    for a, b in zip(result.model.weights, full_run.result.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    for a, b in zip(
        result.model.optimizer.variables,
        full_run.result.model.optimizer.variables,
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    with open(os.path.join(run_dir, "LATEST")) as handle:
        assert handle.read() == "checkpoint-0004"
    # Rewritten and readable again.
    keras.saving.load_model(model_file, compile=False)


def test_resume_of_a_finished_run_returns_it_without_training(
    full_run, tmp_path
):
    run_dir = str(tmp_path / "run")
    shutil.copytree(full_run.run_dir, run_dir)
    recorder = Recorder()
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, seed=0, verbose=0)
    result = trainer.fit(
        _model(), *_data(), epochs=4, callbacks=[recorder], resume=True
    )
    assert recorder.epochs == []
    assert result.history == full_run.result.history
    assert result.steps == full_run.result.steps
    assert _widths(result.model) == _widths(full_run.result.model)
    assert int(result.model.optimizer.iterations) == 16


def test_resume_without_readable_checkpoint_raises(full_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(full_run.run_dir, run_dir)
    for name in ("checkpoint-0003", "checkpoint-0004"):
        with open(os.path.join(run_dir, name, "model.keras"), "w") as f:
            f.write("not a zip file")
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, verbose=0)
    with pytest.raises(ValueError, match="No readable checkpoint"):
        trainer.fit(_model(), *_data(), epochs=4, resume=True)


def test_fresh_run_refuses_a_run_dir_that_holds_a_previous_run(
    full_run, tmp_path
):
    run_dir = str(tmp_path / "run")
    shutil.copytree(full_run.run_dir, run_dir)
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, verbose=0)
    with pytest.raises(ValueError, match="holds a previous run") as info:
        trainer.fit(_model(), *_data(16), epochs=3)
    assert "resume=True" in str(info.value)
    assert "empty `run_dir`" in str(info.value)
    assert sorted(os.listdir(run_dir)) == sorted(os.listdir(full_run.run_dir))


def _lambda_model():
    """A prunable convolution before a `Lambda` layer (code in the file)."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(12, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(3, name="logits")(x)
    outputs = L.Lambda(lambda logits: 0.5 * logits, name="halve")(x)
    model = keras.Model(inputs, outputs, name="with_lambda")
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_resume_of_a_lambda_model_needs_safe_mode_off(tmp_path):
    run_dir = str(tmp_path / "run")
    first = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, verbose=0).fit(
        _lambda_model(), *_data(), epochs=2, batch_size=BATCH_SIZE
    )
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras_adp.ADPTrainer(POLICY, run_dir=run_dir, verbose=0).fit(
            _lambda_model(), *_data(), epochs=2, resume=True
        )
    resumed = keras_adp.ADPTrainer(
        POLICY, run_dir=run_dir, verbose=0, safe_mode=False
    ).fit(_lambda_model(), *_data(), epochs=2, resume=True)
    assert resumed.history == first.history
    assert resumed.model.get_layer("halve")(np.float32(4.0)) == 2.0


def test_fit_on_a_tf_data_pipeline_counts_its_samples_without_warnings():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH_SIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = keras_adp.ADPTrainer(POLICY, seed=0, verbose=0).fit(
            _model(), dataset, epochs=2
        )
    assert not [w for w in caught if "shuffle" in str(w.message)]
    for record in result.history:
        assert record["train_macs"] == 3.0 * record["macs"] * SAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "rollback"])
def test_killed_run_resumes_to_the_same_result(tmp_path, mode):
    """SIGKILL a training process, rerun it, compare with an unkilled run.

    `rollback`: the kill lands while a pruning step is on trial (epochs 2-4)
    and the step is rolled back after the resume, from the pre-step model
    in the run directory (the unkilled run rolls back from memory).
    """
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    epochs = "6"

    def command(run_dir, output):
        return [sys.executable, SCRIPT, str(run_dir), epochs, str(output),
                mode]

    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    process = subprocess.Popen(
        command(killed_dir, tmp_path / "killed.npz"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_at = processes.kill_after_checkpoint(process, killed_dir)
    assert not (tmp_path / "killed.npz").exists()
    assert "checkpoint-0006" not in os.listdir(killed_dir)

    subprocess.run(
        command(killed_dir, tmp_path / "killed.npz"), env=env, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    subprocess.run(
        command(reference_dir, tmp_path / "reference.npz"), env=env,
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    resumed, reference = processes.resumed_and_reference(tmp_path)
    assert resumed["epochs"] == list(range(6)), killed_at
    assert resumed == reference
    if mode == "default":
        assert resumed["widths"][-1] != resumed["widths"][0]  # It pruned.
    if mode == "rollback":
        decisions = [entry for entry in resumed["guard"] if entry]
        assert [entry["action"] for entry in decisions] == [
            "rolled back; pruning stops"
        ]
        assert resumed["widths"][-1] == resumed["widths"][0]
    with np.load(tmp_path / "killed.npz") as a, np.load(
        tmp_path / "reference.npz"
    ) as b:
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_allclose(a[name], b[name], atol=1e-6)


# ---------------------------------------------------- callbacks and policy
def test_early_stopping_ends_the_run_and_restores_sliced_best_weights(
    tmp_path,
):
    model = _model()
    stopper = keras.callbacks.EarlyStopping(
        monitor="loss", min_delta=10.0, patience=1, restore_best_weights=True
    )
    trainer = keras_adp.ADPTrainer(
        POLICY, run_dir=str(tmp_path), seed=0, verbose=0
    )
    result = trainer.fit(
        model, *_data(), epochs=6, batch_size=BATCH_SIZE, callbacks=[stopper]
    )
    # Epoch 0 is the best (min_delta is never reached); epoch 1 stops.
    assert [record["epoch"] for record in result.history] == [0, 1]
    assert len(result.steps) == 1 and result.history[1]["pruning"] is None
    # The best weights are those of the dense model after epoch 0 (the
    # user's model, trained once), sliced like the rebuilt model.
    assert _widths(result.model) == result.history[1]["widths"]
    assert result.model.count_params() < model.count_params()
    final = result.model.get_layer("c1").kernel.numpy()
    assert _is_subset_of_filters(final, model.get_layer("c1").kernel.numpy())
    # A stopped run is finished: resuming it trains no further.
    resumed = trainer.fit(_model(), *_data(), epochs=6, resume=True)
    assert resumed.history == result.history


def test_reinitialize_rebuilds_with_fresh_weights_and_optimizer(tmp_path):
    recorder = Recorder()
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1,
        min_channels=2,
        calibration_samples=64,
        reinitialize=True,
        max_accuracy_drop=None,
    )
    trainer = keras_adp.ADPTrainer(
        policy, run_dir=str(tmp_path), seed=0, verbose=0
    )
    result = trainer.fit(
        _model(), *_data(), epochs=2, batch_size=BATCH_SIZE,
        callbacks=[recorder],
    )
    (step,) = result.steps
    assert step["epoch"] == 0
    widths = result.history[1]["widths"]
    assert {name: widths[name] for name in step["after"]} == step["after"]
    assert result.history[1]["params"] < result.history[0]["params"]
    kernel, iterations, old_kernel = recorder.arrivals[1]
    assert iterations == 0
    assert kernel.shape[-1] == widths["c1"]
    assert not any(
        np.array_equal(column, old)
        for column in _columns(kernel)
        for old in _columns(old_kernel)
    )
    bn = recorder.models[1].get_layer("bn1")
    assert int(result.model.optimizer.iterations) == SAMPLES // BATCH_SIZE
    assert bn is result.model.get_layer("bn1")
    # The checkpoint of a re-initialised run resumes with its optimizer.
    resumed = keras_adp.ADPTrainer(
        policy, run_dir=str(tmp_path), verbose=0
    ).fit(_model(), *_data(), epochs=2, resume=True)
    assert int(resumed.model.optimizer.iterations) == SAMPLES // BATCH_SIZE


def test_fit_with_unregistered_custom_metric():
    model = _model()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[mean_logit],
    )
    result = keras_adp.ADPTrainer(POLICY, verbose=0).fit(
        model, *_data(), epochs=2, batch_size=BATCH_SIZE
    )
    assert "mean_logit" in result.history[-1]["logs"]


def test_dict_policy_is_accepted():
    trainer = keras_adp.ADPTrainer({"warmup_epochs": 3, "selection": "l1"})
    assert trainer.policy == keras_adp.ADPPolicy(
        warmup_epochs=3, selection="l1"
    )


def test_channel_scores_use_bn_gamma_or_fall_back_to_l1():
    from keras_adp import graph as graph_lib
    from keras_adp.pruning_steps import channel_scores

    model = _model(compile=False)
    gamma = np.linspace(-2.0, 1.0, 12).astype("float32")
    bn = model.get_layer("bn1")
    bn.set_weights([gamma] + bn.get_weights()[1:])
    groups = graph_lib.channel_groups(model)
    scores = channel_scores(model, groups, "bn_gamma")
    np.testing.assert_allclose(scores["c1"], np.abs(gamma))
    # c2 has no BatchNormalization: L1 norm of each output filter.
    kernel = model.get_layer("c2").kernel.numpy()
    np.testing.assert_allclose(
        scores["c2"], np.abs(kernel).sum(axis=(0, 1, 2)), rtol=1e-6
    )
    l1 = channel_scores(model, groups, "l1")
    np.testing.assert_allclose(
        l1["c1"],
        np.abs(model.get_layer("c1").kernel.numpy()).sum(axis=(0, 1, 2)),
        rtol=1e-6,
    )


# ---------------------------------------------------------------- divergence
def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    run_dir = str(tmp_path / "run")
    recorder = Recorder()
    explode = keras.callbacks.LearningRateScheduler(
        lambda epoch, rate: 0.05 if epoch == 0 else 1e30
    )
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, seed=0, verbose=0)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit(
            _model(), *_data(), epochs=4, batch_size=BATCH_SIZE,
            callbacks=[explode, recorder],
        )
    message = str(info.value)
    assert "epoch 2" in message and run_dir in message
    assert recorder.calls == {"train_begin": 1, "train_end": 1}
    with open(os.path.join(run_dir, "LATEST")) as handle:
        assert handle.read() == "checkpoint-0001"
    assert sorted(os.listdir(run_dir)) == ["LATEST", "checkpoint-0001"]
    saved = keras.saving.load_model(
        os.path.join(run_dir, "checkpoint-0001", "model.keras"), compile=False
    )
    assert all(np.all(np.isfinite(w.numpy())) for w in saved.weights)


def test_nan_input_arrays_raise_before_training():
    x, y = _data()
    x[5, 2, 2, 0] = np.nan
    recorder = Recorder()
    trainer = keras_adp.ADPTrainer(POLICY, verbose=0)
    with pytest.raises(ValueError, match=r"x\[5, 2, 2, 0\] is NaN"):
        trainer.fit(_model(), x, y, epochs=3, batch_size=BATCH_SIZE,
                    callbacks=[recorder])
    assert recorder.calls == {}


def _regression_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(1, name="out")(x))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_nan_targets_in_a_dataset_raise_training_diverged_error():
    # A NaN target reaches the loss through no ReLU or pooling kernel, so
    # the loss is NaN on every kernel path (oneDNN's included).
    x, _ = _data()
    targets = np.ones((len(x), 1), "float32")
    targets[40] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((x, targets)).batch(32)
    trainer = keras_adp.ADPTrainer(POLICY, verbose=0)
    with pytest.raises(TrainingDivergedError, match="loss is nan at epoch 1"):
        trainer.fit(_regression_model(), dataset, epochs=3)


class _PoisonKernel(keras.callbacks.Callback):
    """Sets one kernel entry to NaN at the end of `epoch`: the loss of that
    epoch stays finite, only the weights show the divergence."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.get_layer("c2").kernel
            value = kernel.numpy()
            value[0, 0, 0, 0] = np.nan
            kernel.assign(value)


def test_non_finite_weights_with_a_finite_loss_raise(tmp_path):
    run_dir = str(tmp_path / "run")
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, verbose=0)
    with pytest.raises(
        TrainingDivergedError, match="Weight '.*c2/kernel' holds NaN or inf "
        "at epoch 2"
    ):
        trainer.fit(_model(), *_data(), epochs=3, batch_size=BATCH_SIZE,
                    callbacks=[_PoisonKernel(1)])
    with open(os.path.join(run_dir, "LATEST")) as handle:
        assert handle.read() == "checkpoint-0001"


# ------------------------------------------------------------- bad inputs
class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3, activation="relu")
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(3)

    def call(self, inputs):
        return self.head(self.pool(self.conv(inputs)))


def _subclassed():
    model = _Subclassed()
    model(np.zeros((1, 8, 8, 1), "float32"))
    model.compile(optimizer="sgd", loss="mse")
    return model


def _nothing_prunable():
    inputs = keras.Input((8, 8, 1))
    outputs = L.Dense(3)(L.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    return model


@pytest.mark.parametrize(
    "make_model, kwargs, message",
    [
        (_subclassed, {}, "subclassed"),
        (_nothing_prunable, {}, "no prunable channel group"),
        (lambda: _model(compile=False), {}, "compiled"),
        (_model, {"epochs": 1}, "epochs` > warmup_epochs=1"),
        (_model, {"epochs": 2.5}, "Received: epochs=2.5"),
        (_model, {"resume": True}, "resume=True without a `run_dir`"),
    ],
    ids=[
        "subclassed",
        "nothing_prunable",
        "uncompiled",
        "epochs_le_warmup",
        "epochs_not_int",
        "resume_without_run_dir",
    ],
)
def test_fit_rejects_bad_inputs(make_model, kwargs, message):
    kwargs = dict({"epochs": 3}, **kwargs)
    trainer = keras_adp.ADPTrainer(POLICY, verbose=0)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        trainer.fit(make_model(), *_data(16), **kwargs)


def test_fit_rejects_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    trainer = keras_adp.ADPTrainer(
        POLICY, run_dir=str(blocker / "run"), verbose=0
    )
    with pytest.raises(ValueError, match="is not writable"):
        trainer.fit(_model(), *_data(16), epochs=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"policy": {"interval": 0}}, "Received: interval=0"),
        ({"policy": {"selection": "random"}}, "selection='random'"),
        ({"policy": {"warmup": 1}}, "Unknown ADPPolicy fields"),
        ({"policy": "aggressive"}, "Received: policy='aggressive'"),
        ({"seed": "0"}, "Received: seed='0'"),
        ({"seed": -1}, "Received: seed=-1"),
        ({"verbose": 3}, "Received: verbose=3"),
        ({"safe_mode": "yes"}, "Received: safe_mode='yes'"),
    ],
)
def test_trainer_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_adp.ADPTrainer(**kwargs)
