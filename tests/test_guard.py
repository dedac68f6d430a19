"""The accuracy guard: decisions on hand-made numbers, exact rollback, the
budget on a constructed case where every step must fail, and the held-out
split."""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_adp
from keras_adp import guard

L = keras.layers


# ------------------------------------------------------------- decisions
def test_auto_monitor_prefers_validation_accuracy_then_loss():
    logs = {"loss": 1.0, "val_loss": 2.0, "val_accuracy": 0.5}
    assert guard.resolve_monitor("auto", logs) == "val_accuracy"
    assert guard.resolve_monitor("auto", {"val_loss": 2.0}) == "val_loss"
    assert (
        guard.resolve_monitor("auto", {"val_sparse_categorical_accuracy": 1})
        == "val_sparse_categorical_accuracy"
    )
    with pytest.raises(ValueError, match="'val_auc'.*Received log keys"):
        guard.resolve_monitor("val_auc", logs)


@pytest.mark.parametrize(
    "monitor, value, reference, budget, worse",
    [
        ("val_accuracy", 0.900, 0.905, 0.01, False),
        ("val_accuracy", 0.895, 0.905, 0.01, False),  # exactly at budget
        ("val_accuracy", 0.894, 0.905, 0.01, True),
        ("val_loss", 0.50, 0.45, 0.05, False),
        ("val_loss", 0.51, 0.45, 0.05, True),
        ("val_accuracy", float("nan"), 0.9, 0.5, True),
    ],
)
def test_worse_than_budget(monitor, value, reference, budget, worse):
    assert guard.is_worse_than_budget(monitor, value, reference, budget) is worse


def test_better_keeps_the_best_value_in_the_metrics_direction():
    assert guard.better("val_accuracy", None, 0.3) == 0.3
    assert guard.better("val_accuracy", 0.5, 0.3) == 0.5
    assert guard.better("val_loss", 0.5, 0.3) == 0.3


def test_gentler_keep_halves_each_groups_removal_in_rank_order():
    order = {"a": [3, 0, 2, 1, 5, 4, 7, 6], "b": [1, 0, 2], "c": [0, 1]}
    keep = guard.gentler_keep(
        order, before={"a": 8, "b": 3, "c": 2}, after={"a": 2, "b": 2, "c": 1}
    )
    # a: 6 removed -> 3 removed, keep the 5 best; b and c lost one channel:
    # half of it rounds to none, so they stay whole.
    assert set(keep) == {"a"}
    np.testing.assert_array_equal(keep["a"], [0, 1, 2, 3, 5])


@pytest.mark.parametrize("samples, fraction", [(2, 0.1), (10, 0.1), (97, 0.25)])
def test_holdout_split_is_disjoint_and_covers_every_sample(samples, fraction):
    train, held = guard.holdout_indices(samples, fraction, seed=3)
    assert len(held) >= 1 and len(train) >= 1
    assert not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(samples))
    again = guard.holdout_indices(samples, fraction, seed=3)
    np.testing.assert_array_equal(again[1], held)


# ---------------------------------------------------- trainer behaviour
def _classifier(filters=8):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(filters, 3, padding="same", activation="relu", name="c1")(
        inputs
    )
    x = L.Conv2D(filters, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(x), name="guarded")
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _data(samples=96):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, samples)
    x = rng.normal(size=(samples, 8, 8, 1)) + y[:, None, None, None]
    return x.astype("float32"), y


class _Snapshot(keras.callbacks.Callback):
    """Keeps the weights and optimizer slots at the end of epoch `saved`,
    and again at the start of epoch `restored` (before it trains)."""

    def __init__(self, saved, restored):
        super().__init__()
        self.saved, self.restored = saved, restored

    def _take(self):
        optimizer = self.model.optimizer
        return (
            [w.numpy().copy() for w in self.model.weights],
            [v.numpy().copy() for v in optimizer.variables
             if v is not optimizer.iterations],
            int(optimizer.iterations.numpy()),
            self.model,
        )

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.saved:
            self.before = self._take()

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.restored:
            self.after = self._take()


def test_rolled_back_step_restores_weights_and_optimizer_state_exactly(
    monkeypatch,
):
    monkeypatch.setattr(guard, "is_worse_than_budget", lambda *args: True)
    x, y = _data()
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, min_channels=2, calibration_samples=32, max_retries=0,
        width_rule="density",
    )
    # The step follows epoch 0 and is judged after epoch 1; epoch 2 trains
    # the restored model.
    snapshot = _Snapshot(saved=0, restored=2)
    result = keras_adp.ADPTrainer(policy, verbose=0).fit(
        _classifier(), x, y, epochs=3, batch_size=16,
        validation_data=(x[:24], y[:24]), callbacks=[snapshot],
    )
    step = result.steps[0]
    assert step["outcome"] == "rolled back" and step["after"]["c1"] < 8
    decision = result.history[1]["guard"]
    assert decision["action"] == "rolled back; pruning stops"
    assert decision["step_epoch"] == 0
    weights, slots, iterations, model = snapshot.after
    saved_weights, saved_slots, saved_iterations, saved_model = snapshot.before
    assert model is saved_model  # The pre-step model itself, not a copy.
    assert [layer.filters for layer in model.layers
            if hasattr(layer, "filters")] == [8, 8]
    for saved, weight in zip(saved_weights, weights, strict=True):
        np.testing.assert_array_equal(saved, weight)
    assert len(slots) == len(saved_slots) > 0
    for saved, slot in zip(saved_slots, slots, strict=True):
        np.testing.assert_array_equal(saved, slot)
    # The iteration count goes on: 6 steps before the step, 6 in the trial.
    assert (saved_iterations, iterations) == (6, 12)
    assert result.model is model


def _teacher_regression():
    """A model whose targets are its own initial outputs: val_loss is 0 at
    the start, gradients are 0, so the dense model never changes, and any
    cut of live channels makes the loss positive."""
    keras.utils.set_random_seed(11)
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x), name="teacher")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x_data = np.random.default_rng(4).normal(size=(64, 8, 8, 1)).astype(
        "float32"
    )
    return model, x_data, model.predict(x_data, verbose=0)


def test_budget_holds_when_every_step_must_fail():
    model, x, targets = _teacher_regression()
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, min_channels=1, calibration_samples=32,
        monitor="val_loss", max_accuracy_drop=0.0, width_rule="density",
        removal_scale=1.0, max_prune_steps=None,
    )
    result = keras_adp.ADPTrainer(policy, verbose=0).fit(
        model, x, targets, epochs=5, batch_size=16,
        validation_data=(x[:32], targets[:32]),
    )
    actions = [r["guard"]["action"] for r in result.history if r["guard"]]
    assert actions == [
        "rolled back; retrying half the removal",
        "rolled back; pruning stops",
    ]
    assert [step["outcome"] for step in result.steps] == ["rolled back"] * 2
    first, retry = result.steps
    assert retry["attempt"] == 1
    removed = first["before"]["c1"] - first["after"]["c1"]
    assert retry["after"]["c1"] == first["before"]["c1"] - removed // 2
    # Back to the dense model, whose validation loss is the reference.
    assert result.history[-1]["widths"] == {"c1": 8}
    final = result.history[-1]["logs"]["val_loss"]
    assert final <= result.history[0]["logs"]["val_loss"] + 1e-9
    summary = result.summary()
    assert summary["final_params"] == summary["dense_params"]
    assert summary["prune_steps"] == 0 and summary["rolled_back_steps"] == 2


def test_steps_within_budget_are_accepted():
    x, y = _data()
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, min_channels=2, calibration_samples=32,
        max_accuracy_drop=1.0,  # Any accuracy passes.
        width_rule="density",
    )
    result = keras_adp.ADPTrainer(policy, verbose=0).fit(
        _classifier(), x, y, epochs=3, batch_size=16,
        validation_data=(x[:24], y[:24]),
    )
    assert result.steps and all(
        step["outcome"] == "accepted" for step in result.steps
    )
    decisions = [r["guard"] for r in result.history if r["guard"]]
    assert [d["action"] for d in decisions] == ["accepted"] * len(result.steps)
    assert result.history[-1]["widths"]["c1"] < 8
    # No step in the last epoch: it could not be judged.
    assert all(step["epoch"] < 2 for step in result.steps)


@pytest.mark.parametrize(
    "monitor, best, dense, epoch, expected",
    [
        # Without a dense run: the best value so far.
        ("val_accuracy", 0.8, None, 3, 0.8),
        ("val_accuracy", None, None, 3, None),
        # The dense run's value at the judged epoch when it is stricter.
        ("val_accuracy", 0.8, (0.7, 0.85, 0.9), 1, 0.85),
        # ...the best so far when that is stricter.
        ("val_accuracy", 0.88, (0.7, 0.85, 0.9), 1, 0.88),
        # Past its end, its last value stands.
        ("val_accuracy", 0.8, (0.7, 0.85, 0.9), 7, 0.9),
        ("val_accuracy", None, (0.7, 0.85), 0, 0.7),
        # Losses: lower is stricter.
        ("val_loss", 0.5, (0.9, 0.4), 1, 0.4),
        ("val_loss", 0.3, (0.9, 0.4), 1, 0.3),
    ],
)
def test_reference_at_is_the_stricter_of_best_and_dense(
    monitor, best, dense, epoch, expected
):
    assert guard.reference_at(monitor, best, dense, epoch) == expected


def _accept_all_run(dense_reference):
    x, y = _data()
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, min_channels=2, calibration_samples=32,
        max_accuracy_drop=1.0,  # Any accuracy in [0, 1] passes the best so far.
        width_rule="density", dense_reference=dense_reference,
        removal_scale=1.0, max_prune_steps=None,
    )
    return keras_adp.ADPTrainer(policy, verbose=0).fit(
        _classifier(), x, y, epochs=4, batch_size=16,
        validation_data=(x[:24], y[:24]),
    )


def test_dense_reference_holds_steps_to_the_dense_run():
    # A dense run that reached 2.5 (out of reach): with a budget of 1.0
    # every step, which the best value so far would accept, is rolled back.
    result = _accept_all_run((2.5,))
    decisions = [r["guard"] for r in result.history if r["guard"]]
    assert [d["action"] for d in decisions] == [
        "rolled back; retrying half the removal",
        "rolled back; pruning stops",
    ]
    assert all(d["reference"] == 2.5 for d in decisions)
    assert result.history[-1]["widths"] == {"c1": 8, "c2": 8}


def test_dense_reference_below_the_best_changes_nothing():
    without = _accept_all_run(None)
    below = _accept_all_run([-5.0, -5.0])
    assert [s["after"] for s in below.steps] == [
        s["after"] for s in without.steps
    ]
    decisions = [r["guard"] for r in below.history if r["guard"]]
    reference = [r["guard"] for r in without.history if r["guard"]]
    assert [d["reference"] for d in decisions] == [
        d["reference"] for d in reference
    ]
    assert all(d["action"] == "accepted" for d in decisions)


def test_guard_holds_out_training_samples_it_never_trains_on():
    samples = 60
    x = np.arange(samples, dtype="float32")[:, None, None, None] * np.ones(
        (1, 8, 8, 1), "float32"
    )
    y = np.arange(samples) % 3
    trainer = keras_adp.ADPTrainer(keras_adp.ADPPolicy(recovery_updates=None), seed=7, verbose=0)
    x_train, y_train, (x_held, y_held) = trainer._guard_validation(x, y, None)
    trained = set(x_train[:, 0, 0, 0].astype(int))
    held = set(x_held[:, 0, 0, 0].astype(int))
    assert len(held) == 6 and not trained & held
    assert trained | held == set(range(samples))
    np.testing.assert_array_equal(y_held, x_held[:, 0, 0, 0].astype(int) % 3)


def test_guard_without_validation_data_on_a_dataset_raises():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(ValueError, match="needs validation data"):
        keras_adp.ADPTrainer(verbose=0).fit(_classifier(), dataset, epochs=3)


def test_guard_off_holds_nothing_out():
    x, y = _data()
    trainer = keras_adp.ADPTrainer(
        keras_adp.ADPPolicy(
            recovery_updates=None, max_accuracy_drop=None), verbose=0
    )
    x_train, y_train, validation = trainer._guard_validation(x, y, None)
    assert x_train is x and validation is None


MIRRORED_ROLLBACK_SCRIPT = """
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
import keras_adp
from keras_adp import guard

calls = []

def judge(monitor, value, reference, budget):
    calls.append(value)
    return len(calls) == 1  # Roll the first step back, accept the retry.

guard.is_worse_than_budget = judge
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="c1")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
y = np.arange(64) % 3
policy = keras_adp.ADPPolicy(
    recovery_updates=None, warmup_epochs=1, min_channels=2,
                             calibration_samples=32, max_prune_steps=1,
                             width_rule="density")
result = keras_adp.ADPTrainer(policy, verbose=0).fit(
    model, x, y, epochs=4, batch_size=16, validation_data=(x[:16], y[:16]))
variables = [v for v in result.model.weights]
print(json.dumps({
    "outcomes": [s["outcome"] for s in result.steps],
    "after": [s["after"]["c1"] for s in result.steps],
    "widths": [r["widths"]["c1"] for r in result.history],
    "mirrored": all(
        isinstance(v.value, tf.distribute.DistributedValues)
        for v in variables),
}))
"""


def test_rollback_and_retry_under_mirrored_strategy():
    import json
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_ROLLBACK_SCRIPT],
        capture_output=True, text=True, timeout=300, cwd=repo,
        env=dict(os.environ, PYTHONPATH=repo, CUDA_VISIBLE_DEVICES=""),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["outcomes"] == ["rolled back", "accepted"]
    first, retry = result["after"]
    assert retry == 8 - (8 - first) // 2
    # Epoch 1 dense, epoch 2 the rolled-back cut, epochs 3-4 the retry.
    assert result["widths"] == [8, first, retry, retry]
    assert result["mirrored"]


def _bn_classifier(momentum, nested):
    keras.utils.set_random_seed(5)
    inner_in = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, padding="same", name="c1")(inner_in)
    h = L.BatchNormalization(momentum=momentum, name="bn1")(h)
    h = L.ReLU()(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    inputs = keras.Input((8, 8, 1))
    h = backbone(inputs) if nested else backbone.layers[-1].output
    model = keras.Model(
        inputs if nested else inner_in,
        L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(h)),
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.mark.parametrize("nested", [False, True])
def test_lagging_batch_norm_momentum_warns_before_training(nested):
    # keras.applications' BatchNormalization momentum (0.999): inference-mode
    # validation, what the guard judges, lags ~1,000 steps behind training.
    x, y = _data()
    model = _bn_classifier(0.999, nested)
    policy = keras_adp.ADPPolicy(
        recovery_updates=None, warmup_epochs=1, calibration_samples=16)
    with pytest.warns(UserWarning, match=r"'bn1'\) have momentum >= 0.999.*1,000"):
        keras_adp.ADPTrainer(policy, verbose=0).fit(
            model, x, y, epochs=2, batch_size=16
        )


@pytest.mark.parametrize(
    "momentum, max_accuracy_drop", [(0.99, 0.01), (0.999, None)]
)
def test_no_batch_norm_warning_at_keras_default_or_without_guard(
    momentum, max_accuracy_drop
):
    x, y = _data()
    model = _bn_classifier(momentum, nested=True)
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, calibration_samples=16,
        max_accuracy_drop=max_accuracy_drop,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*BatchNormalization.*")
        keras_adp.ADPTrainer(policy, verbose=0).fit(
            model, x, y, epochs=2, batch_size=16
        )


@pytest.mark.parametrize(
    "monitor, value, dense, met, gap",
    [
        ("val_accuracy", 0.905, 0.912, True, 0.007),   # 0.7 points below
        ("val_accuracy", 0.900, 0.912, False, 0.012),  # 1.2 points below
        ("val_accuracy", 0.930, 0.912, True, -0.018),  # above dense
        ("val_loss", 0.305, 0.300, True, 0.005),       # loss 0.005 higher
        ("val_loss", 0.320, 0.300, False, 0.020),
        ("val_accuracy", float("nan"), 0.912, False, float("inf")),
    ],
)
def test_budget_verdict_on_hand_made_values(monitor, value, dense, met, gap):
    verdict = guard.budget_verdict(monitor, value, dense, 0.01)
    assert verdict["met"] is met
    assert verdict["shortfall"] == pytest.approx(gap)
    assert verdict["budget"] == 0.01 and verdict["dense"] == dense
