"""The driver on unusual inputs and random graphs with random policies.

The 2-epoch runs turn the accuracy guard off: they test pruning mechanics
on unusual models, and a guarded step needs an epoch after its trial."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_adp
from tests import test_properties

L = keras.layers


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _data(shape, samples=64, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        x = rng.integers(0, 256, (samples,) + shape).astype("uint8")
    else:
        x = rng.normal(size=(samples,) + shape).astype(dtype)
    return x, rng.integers(0, 3, samples).astype("int32")


def _small_cnn(input_dtype="float32", bias=0.0):
    inputs = keras.Input((8, 8, 1), dtype=input_dtype)
    x = L.Rescaling(1 / 255.0)(inputs) if input_dtype == "uint8" else inputs
    x = L.Conv2D(12, 3, padding="same", name="c1",
                 bias_initializer=keras.initializers.Constant(bias))(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(10, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return _compile(keras.Model(inputs, L.Dense(3, name="logits")(x)))


def test_calibration_set_smaller_than_one_batch_is_used_whole():
    keras.utils.set_random_seed(0)
    x, y = _data((8, 8, 1))
    result = keras_adp.ADPTrainer(
        keras_adp.ADPPolicy(
            recovery_updates=None,
            warmup_epochs=1, min_channels=2, max_accuracy_drop=None,
            width_rule="density",
        ),
        verbose=0
    ).fit(_small_cnn(), x, y, epochs=2, batch_size=32, calibration_data=x[:3])
    assert set(result.history[0]["density"]) == {"c1", "c2"}
    assert result.steps, "densities from 3 samples still drive a pruning step"


def test_uint8_inputs_train_and_prune():
    keras.utils.set_random_seed(0)
    x, y = _data((8, 8, 1), dtype="uint8")
    result = keras_adp.ADPTrainer(
        keras_adp.ADPPolicy(
            recovery_updates=None,
            warmup_epochs=1, min_channels=2, max_accuracy_drop=None,
            width_rule="density",
        ),
        verbose=0
    ).fit(_small_cnn("uint8"), x, y, epochs=2, batch_size=16)
    assert result.model.inputs[0].dtype == "uint8"
    assert result.model.get_layer("c1").filters < 12


def test_dead_layer_is_kept_at_min_channels_not_zero():
    keras.utils.set_random_seed(0)
    x, y = _data((8, 8, 1))
    x = np.abs(x) * 0.01  # small positive inputs: c1 never beats its bias
    model = _small_cnn(bias=-100.0)
    density = keras_adp.measure_density(model, x)
    assert density["c1"].overall == 0.0
    result = keras_adp.ADPTrainer(
        keras_adp.ADPPolicy(
            recovery_updates=None,
            warmup_epochs=1, min_channels=3, max_accuracy_drop=None,
            width_rule="density", removal_scale=1.0,
        ),
        verbose=0
    ).fit(model, x, y, epochs=2, batch_size=16)
    assert result.model.get_layer("c1").filters == 3


def test_min_channels_larger_than_a_layer_keeps_that_layer():
    keras.utils.set_random_seed(0)
    x, y = _data((8, 8, 1))
    result = keras_adp.ADPTrainer(
        keras_adp.ADPPolicy(
            recovery_updates=None, warmup_epochs=1, min_channels=11), verbose=0
    ).fit(_small_cnn(), x, y, epochs=2, batch_size=16)
    assert result.model.get_layer("c2").filters == 10  # 10 < min_channels
    assert result.model.get_layer("c1").filters >= 11


@st.composite
def policies(draw):
    return keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=draw(st.integers(0, 1)),
        min_channels=draw(st.integers(1, 4)),
        round_to=draw(st.sampled_from([1, 2])),
        selection=draw(st.sampled_from(["density", "l1", "bn_gamma"])),
        width_rule=draw(st.sampled_from(["density", "relative"])),
        trigger=draw(st.sampled_from(["interval", "converged"])),
        patience=1,
        tolerance=0.5,
        min_reduction=draw(st.sampled_from([0.0, 0.05])),
        reinitialize=draw(st.booleans()),
        calibration_samples=16,
    )


def _check_driver_run(recipe, policy):
    ops, head, model_seed, _ = recipe
    model = _compile(test_properties.build(ops, head, model_seed))
    if not any(g.prunable for g in keras_adp.channel_groups(model)):
        return
    x = np.random.default_rng(model_seed).normal(size=(32, 8, 8, 2))
    x = x.astype("float32")
    y = np.arange(32) % 3
    try:
        result = keras_adp.ADPTrainer(policy, seed=0, verbose=0).fit(
            model, x, y, epochs=3, batch_size=16
        )
    except ValueError as error:
        # The only acceptable refusal: nothing measurable to prune by.
        assert "activation" in str(error) and "density" in str(error)
        return
    final = result.model
    widths = {g.name: g.size for g in keras_adp.channel_groups(final)}
    for name, width in result.history[-1]["widths"].items():
        assert widths[name] == width
        assert width >= min(policy.min_channels, result.history[0]["widths"][name])
    test_properties._check_counts_match_weights(final)
    assert result.history[-1]["params"] == keras_adp.metrics.count_params(final)
    test_properties._check_keras_file_round_trip(final, x[:2])


_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@settings(max_examples=3, **_COMMON)
@given(test_properties.recipes(), policies())
def test_driver_on_random_graphs_and_policies_keeps_invariants(recipe, policy):
    _check_driver_run(recipe, policy)


@pytest.mark.slow
@settings(max_examples=40, **_COMMON)
@given(test_properties.recipes(), policies())
def test_driver_on_40_random_graphs_and_policies_keeps_invariants(recipe, policy):
    _check_driver_run(recipe, policy)


def test_multi_input_multi_output_model_trains_and_prunes():
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((8, 8, 1), name="extra")
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="a")(image)
    b = L.Conv2D(8, 3, padding="same", activation="relu", name="b")(extra)
    x = L.Concatenate()([a, b])
    x = L.GlobalAveragePooling2D()(x)
    classes = L.Dense(3, name="classes")(x)
    score = L.Dense(1, name="score")(x)
    model = keras.Model([image, extra], [classes, score])
    model.compile(
        optimizer="adam",
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "mse"],
    )
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(48, 8, 8, 1)).astype("float32")
    x2 = rng.normal(size=(48, 8, 8, 1)).astype("float32")
    y1 = rng.integers(0, 3, 48).astype("int32")
    y2 = rng.normal(size=(48, 1)).astype("float32")
    result = keras_adp.ADPTrainer(
        keras_adp.ADPPolicy(
            recovery_updates=None,
            warmup_epochs=1, min_channels=2, max_accuracy_drop=None,
            width_rule="density",
        ),
        verbose=0
    ).fit(model, [x1, x2], [y1, y2], epochs=2, batch_size=16)
    assert result.steps
    assert result.model.get_layer("a").filters < 8
    assert len(result.model.outputs) == 2
