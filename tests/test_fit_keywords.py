"""`ADPTrainer.fit` takes `model.fit`'s keywords with the same meaning."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_adp
from keras_adp import inputs

L = keras.layers

SAMPLES = 64
# The guard is off unless a test is about it: these tests are about which
# keywords reach each epoch's `model.fit`.
# The paper's width rule: the model has one group, which the default
# relative rule (AD relative to the densest group's) never shrinks.
NO_GUARD = keras_adp.ADPPolicy(
    recovery_updates=None,
    warmup_epochs=1, min_channels=2, calibration_samples=32,
    max_accuracy_drop=None, width_rule="density",
)
GUARD = keras_adp.ADPPolicy(
    recovery_updates=None,
    warmup_epochs=1, min_channels=2, calibration_samples=32,
    width_rule="density",
)


def _model():
    """One ReLU convolution (8 channels) on 6x6 images, 3 logits."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _data(samples=SAMPLES):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, size=samples)
    return x, y


@pytest.fixture
def fit_calls(monkeypatch):
    """The keyword arguments of every `keras.Model.fit` call."""
    calls = []
    keras_fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):
        calls.append(kwargs)
        return keras_fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    return calls


def _fit(policy=NO_GUARD, trainer_verbose=0, **kwargs):
    x, y = _data()
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("batch_size", 16)
    trainer = keras_adp.ADPTrainer(policy, verbose=trainer_verbose)
    return trainer.fit(_model(), x, y, **kwargs)


# ------------------------------------------------------------------ verbose
def test_fit_verbose_overrides_the_trainer_verbose(capsys):
    _fit(trainer_verbose=1, verbose=0)
    assert capsys.readouterr().out == ""
    _fit(trainer_verbose=0, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[keras-adp] epoch 1: loss")


def test_fit_verbose_auto_shows_progress_bars(capsys):
    _fit(trainer_verbose=0, verbose="auto")
    assert "Epoch 1/2" in capsys.readouterr().out


def test_fit_verbose_none_is_the_trainer_verbose(capsys):
    _fit(trainer_verbose=2)
    assert "[keras-adp] epoch 2: loss" in capsys.readouterr().out


# --------------------------------------------------------- validation_split
def test_validation_split_holds_out_the_last_samples_like_model_fit():
    x, y = _data()
    weights = np.arange(SAMPLES, dtype="float32")
    x_train, y_train, w_train, validation = inputs.split_validation(
        x, y, weights, None, 0.25, holdout=None
    )
    np.testing.assert_array_equal(x_train, x[:48])
    np.testing.assert_array_equal(y_train, y[:48])
    np.testing.assert_array_equal(w_train, weights[:48])
    np.testing.assert_array_equal(validation[0], x[48:])
    np.testing.assert_array_equal(validation[1], y[48:])
    np.testing.assert_array_equal(validation[2], weights[48:])


def test_validation_split_is_what_the_guard_judges_on(capsys, fit_calls):
    result = _fit(GUARD, trainer_verbose=0, epochs=3, validation_split=0.25)
    assert "holding out" not in capsys.readouterr().out
    assert all("val_accuracy" in record["logs"] for record in result.history)
    for call in fit_calls:
        assert len(call["validation_data"][0]) == SAMPLES // 4
    assert result.history[1]["guard"]["monitor"] == "val_accuracy"


def test_validation_data_wins_over_validation_split(fit_calls):
    x, y = _data(16)
    _fit(validation_split=0.5, validation_data=(x, y))
    assert all(len(call["validation_data"][0]) == 16 for call in fit_calls)


def test_validation_split_without_the_guard_still_validates():
    result = _fit(validation_split=0.25)
    assert "val_loss" in result.history[0]["logs"]


# ------------------------------------------------ keywords passed each epoch
@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"shuffle": False}, {"shuffle": False}),
        ({"shuffle": "batch"}, {"shuffle": "batch"}),
        ({}, {"shuffle": True, "class_weight": None, "validation_freq": 1}),
        ({"class_weight": {0: 1.0, 1: 2.0, 2: 1.0}},
         {"class_weight": {0: 1.0, 1: 2.0, 2: 1.0}}),
        ({"batch_size": 8}, {"batch_size": 8}),
    ],
)
def test_keywords_reach_every_epochs_model_fit(fit_calls, kwargs, expected):
    _fit(**kwargs)
    assert len(fit_calls) == 2
    for call in fit_calls:
        for key, value in expected.items():
            assert call[key] == value


def test_class_weight_weights_the_loss():
    result = _fit(class_weight={0: 0.0, 1: 0.0, 2: 0.0})
    assert all(record["logs"]["loss"] == 0.0 for record in result.history)


def test_sample_weight_weights_the_loss_and_is_split_with_the_data():
    x, y = _data()
    trainer = keras_adp.ADPTrainer(NO_GUARD, verbose=0)
    result = trainer.fit(
        _model(), x, y, epochs=2, batch_size=16,
        sample_weight=np.zeros(SAMPLES, "float32"), validation_split=0.25,
    )
    logs = result.history[0]["logs"]
    assert logs["loss"] == 0.0 and logs["val_loss"] == 0.0


def test_sample_weight_follows_the_guards_held_out_split(fit_calls):
    _fit(GUARD, epochs=3, sample_weight=np.ones(SAMPLES, "float32"))
    call = fit_calls[0]
    held = len(call["validation_data"][0])
    assert len(call["validation_data"]) == 3
    assert len(call["validation_data"][2]) == held
    assert len(call["sample_weight"]) == SAMPLES - held


def test_initial_epoch_starts_the_run_there():
    result = _fit(epochs=3, initial_epoch=1)
    assert [record["epoch"] for record in result.history] == [1, 2]
    # Epoch 0 counts as the warm-up: the first epoch trained may prune.
    assert result.steps and result.steps[0]["epoch"] == 1


def test_initial_epoch_keeps_the_converged_trigger_waiting():
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, min_channels=2, calibration_samples=32,
        max_accuracy_drop=None, trigger="converged", patience=1,
        tolerance=0.99, width_rule="density",
    )
    # Densities of the epochs before `initial_epoch` are unknown: the
    # window needs `patience + 1` measured epochs (2 and 3), and after the
    # step at epoch 3 two more measured since the step (4 and 5).
    result = _fit(policy, epochs=7, initial_epoch=2)
    assert [step["epoch"] for step in result.steps][:2] == [3, 5]


def test_steps_per_epoch_limits_each_epoch(fit_calls):
    result = _fit(steps_per_epoch=2)
    assert [call["steps_per_epoch"] for call in fit_calls] == [2, 2]
    assert int(result.model.optimizer.iterations.numpy()) == 4


def test_validation_steps_limits_validation_on_a_dataset(fit_calls):
    x, y = _data(32)
    validation = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    _fit(validation_data=validation, validation_steps=1)
    assert [call["validation_steps"] for call in fit_calls] == [1, 1]


def test_validation_freq_validates_every_nth_epoch_without_the_guard():
    result = _fit(epochs=2, validation_split=0.25, validation_freq=2)
    assert "val_loss" not in result.history[0]["logs"]
    assert "val_loss" in result.history[1]["logs"]


# ------------------------------------------------------------ clear errors
@pytest.mark.parametrize(
    "policy, kwargs, message",
    [
        (GUARD, {"validation_freq": 2}, "the guard reads the validation"),
        (NO_GUARD, {"validation_freq": 0}, "`validation_freq` to be an integer"),
        (NO_GUARD, {"verbose": 3}, "`verbose` to be 0, 1, 2, 'auto'"),
        (NO_GUARD, {"shuffle": "yes"}, "`shuffle` to be True, False"),
        (NO_GUARD, {"validation_split": 1.0}, "`validation_split` to be a"),
        (NO_GUARD, {"validation_split": 0.99}, "leaves no training"),
        (NO_GUARD, {"initial_epoch": 2}, "`initial_epoch` to be an integer"),
        (NO_GUARD, {"validation_steps": 0}, "`validation_steps` to be None"),
        (NO_GUARD, {"sample_weight": np.full(SAMPLES, np.nan)},
         "sample_weight"),
    ],
)
def test_fit_keywords_that_cannot_apply_raise(policy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _fit(policy, **kwargs)


def test_initial_epoch_with_resume_raises(tmp_path):
    x, y = _data()
    trainer = keras_adp.ADPTrainer(NO_GUARD, run_dir=tmp_path, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch.* cannot apply"):
        trainer.fit(_model(), x, y, epochs=3, initial_epoch=1, resume=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"validation_split": 0.2}, "dataset cannot be split by sample"),
        ({"sample_weight": np.ones(SAMPLES)}, "a dataset carries its weights"),
    ],
)
def test_dataset_keywords_that_cannot_apply_raise(kwargs, message):
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    trainer = keras_adp.ADPTrainer(NO_GUARD, verbose=0)
    with pytest.raises(ValueError, match=message):
        trainer.fit(_model(), dataset, epochs=2, **kwargs)
