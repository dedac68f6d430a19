"""`ADPPolicy(trial="twin")`: the model kept from before a step trains the
trial epoch beside the pruned one; it is the guard's reference, the budget
is shared by the run's steps, and a rollback goes on from it.

The references are independent runs: a rolled-back twin run must end
exactly where a run that never pruned ends (same seed, same batches), and
a run interrupted during the twin's epoch must resume to the uninterrupted
run's weights."""

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import checkpoints
from keras_adp import epoch_loop
from keras_adp import metrics
from keras_adp import pruning_steps

L = keras.layers
EPOCHS = 5
SAMPLES = 96
VALIDATION = 24


def _data():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, SAMPLES)
    x = rng.normal(size=(SAMPLES, 8, 8, 1)) + y[:, None, None, None]
    return x.astype("float32"), y


def _model():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU()(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, L.Dense(3, name="logits")(h), name="twin")
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _fit(policy, run_dir=None, resume=False):
    x, y = _data()
    return keras_adp.ADPTrainer(
        policy, run_dir=run_dir, seed=0, verbose=0
    ).fit(
        _model(), x[VALIDATION:], y[VALIDATION:], epochs=EPOCHS,
        batch_size=16, validation_data=(x[:VALIDATION], y[:VALIDATION]),
        resume=resume,
    )


def _policy(**fields):
    base = dict(
        warmup_epochs=1, min_channels=2, calibration_samples=32,
        removal_scale=1.0, max_prune_steps=None, trial="twin",
        recovery_updates=None,
    )
    return keras_adp.ADPPolicy(**{**base, **fields})


# A dense validation accuracy no model reaches: every step fails.
_OUT_OF_REACH = (2.0,)


def _assert_same_weights(first, second):
    a, b = first.get_weights(), second.get_weights()
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


def test_a_rolled_back_twin_trial_loses_no_epoch():
    never = _fit(_policy(max_prune_steps=0))
    twin = _fit(_policy(dense_reference=_OUT_OF_REACH))
    rollback = _fit(_policy(dense_reference=_OUT_OF_REACH, trial="rollback"))

    assert [s["outcome"] for s in twin.steps] == ["rolled back"] * 2
    assert twin.history[-1]["widths"] == {"c1": 8, "c2": 8}
    # Rolled back to the twin, which trained the trial epochs on the same
    # batches: the run ends exactly where a run that never pruned ends.
    _assert_same_weights(twin.model, never.model)
    assert int(twin.model.optimizer.iterations) == int(
        never.model.optimizer.iterations
    )
    # Each twin's validation logs are the never-pruned run's of that epoch.
    for record in twin.history:
        if record.get("twin"):
            dense_logs = never.history[record["epoch"]]["logs"]
            assert record["twin"]["logs"]["val_accuracy"] == pytest.approx(
                dense_logs["val_accuracy"], abs=0.0
            )
    # Plain rollbacks restore the pre-step weights: those epochs are lost.
    with pytest.raises(AssertionError):
        _assert_same_weights(rollback.model, never.model)


def test_the_twin_is_the_reference_and_its_epochs_count_as_compute():
    result = _fit(_policy(dense_reference=_OUT_OF_REACH))
    samples = SAMPLES - VALIDATION
    dense_macs = metrics.inference_cost(_model()).macs
    twins = [record for record in result.history if record.get("twin")]
    assert twins
    previous = {r["epoch"]: r for r in result.history}
    for record in twins:
        decision = record["guard"]
        # The stricter of the twin's value and the (unreachable) dense one.
        assert decision["twin"] == record["twin"]["logs"]["val_accuracy"]
        assert decision["reference"] == 2.0
        assert record["twin"]["params"] == result.dense["params"]
        # 3x the forward MACs per training sample, computed here.
        assert record["twin"]["train_macs"] == 3.0 * dense_macs * samples
        before = previous[record["epoch"] - 1]["cumulative_macs"]
        assert record["cumulative_macs"] == pytest.approx(
            before + record["train_macs"] + record["measure_macs"]
            + record["twin"]["train_macs"]
        )


class _FakeModel:
    def __init__(self):
        self.optimizer = keras.optimizers.SGD()
        self.stop_training = True


def _judge(steps, state, value, twin):
    record = {
        "logs": {"val_accuracy": value},
        "twin": {"logs": {"val_accuracy": twin}},
    }
    state.pending = {
        "epoch": 0, "attempt": 1, "epochs_trained": 0, "order": {},
        "before": {}, "after": {}, "last_prune_epoch": None,
    }
    state.steps.append({"outcome": None})
    state.steps_done += 1
    steps._pre_step = (_FakeModel(), [])  # Kept when the step was taken.
    steps._judge(_FakeModel(), None, state, 1, record, [], final=True)
    return record["guard"]


def test_the_steps_of_a_run_share_one_budget(monkeypatch):
    # Hand-made values: each step is judged against its twin, and the
    # shortfalls of accepted steps are spent from the run's 0.01.
    monkeypatch.setattr(
        pruning_steps.density_lib, "DensityProbe", lambda *a, **k: None
    )
    steps = pruning_steps.PruningSteps(
        _policy(max_accuracy_drop=0.01), epochs=10, calibration=None,
        run_dir=None, verbose=0, model=None, read_pre_step=None,
    )
    state = checkpoints.RunState(monitor="val_accuracy", reference=0.5)

    first = _judge(steps, state, value=0.894, twin=0.90)
    assert first["action"] == "accepted"
    assert first["reference"] == 0.90 and first["budget"] == 0.01
    assert state.deficit == pytest.approx(0.006)
    # A step better than its twin spends nothing.
    better = _judge(steps, state, value=0.93, twin=0.92)
    assert better["action"] == "accepted"
    assert better["budget"] == pytest.approx(0.004)
    assert state.deficit == pytest.approx(0.006)
    # 0.005 short of its twin: within the run's 0.01 alone, not within
    # the 0.004 left.
    last = _judge(steps, state, value=0.935, twin=0.94)
    assert last["action"] == "rolled back; pruning stops"
    assert last["deficit"] == pytest.approx(0.006)
    assert state.deficit == pytest.approx(0.006)


def test_a_run_interrupted_in_the_twin_epoch_resumes_to_the_same_weights(
    tmp_path, monkeypatch
):
    policy = _policy(max_accuracy_drop=0.0, monitor="val_loss")
    reference = _fit(policy)
    assert any(record.get("twin") for record in reference.history)

    train = epoch_loop.EpochLoop._train
    calls = {"twin": 0}

    def interrupt_the_first_twin(self, model, epoch, callbacks, probe):
        if probe is None:
            calls["twin"] += 1
            if calls["twin"] == 1:
                raise KeyboardInterrupt
        return train(self, model, epoch, callbacks, probe)

    run_dir = str(tmp_path / "run")
    with monkeypatch.context() as patch:
        patch.setattr(epoch_loop.EpochLoop, "_train", interrupt_the_first_twin)
        with pytest.raises(KeyboardInterrupt):
            _fit(policy, run_dir=run_dir)
    assert os.path.isdir(os.path.join(run_dir, checkpoints.PRE_STEP_DIR))

    # The resumed run reads the pre-step model back from run_dir and
    # trains it as the twin of the same trial epoch.
    resumed = _fit(policy, run_dir=run_dir, resume=True)
    assert [s["outcome"] for s in resumed.steps] == [
        s["outcome"] for s in reference.steps
    ]
    assert [r["guard"] for r in resumed.history] == [
        r["guard"] for r in reference.history
    ]
    _assert_same_weights(resumed.model, reference.model)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"trial": "shadow"}, "trial"),
        ({"trial": "twin", "recovery_epochs": 2}, "recovery_epochs=1"),
    ],
)
def test_trial_is_validated(fields, match):
    with pytest.raises(ValueError, match=match):
        keras_adp.ADPPolicy(recovery_updates=None, **fields)


def test_shortfall_is_in_the_metrics_direction():
    from keras_adp import guard

    assert guard.shortfall("val_accuracy", 0.8, 0.9) == pytest.approx(0.1)
    assert guard.shortfall("val_accuracy", 0.95, 0.9) == pytest.approx(-0.05)
    assert guard.shortfall("val_loss", 0.5, 0.4) == pytest.approx(0.1)
    assert guard.shortfall("val_loss", math.nan, 0.4) == math.inf
