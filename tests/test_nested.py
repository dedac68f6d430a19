"""Density and pruning inside nested functional and Sequential sub-models.

The references here are computed without the code under test: expected
densities from the sub-model's own activations (a `keras.Model` cut at the
activation, run on the outer model's intermediate tensor), expected pruned
outputs by zeroing the removed channels' input slices of the consumers the
test itself names.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import graph
from tests import surgery

L = keras.layers


def _backbone(name="backbone"):
    """Conv(6) -> BN -> ReLU -> Conv(5, relu) -> Add with a Conv(5) shortcut."""
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="c2")(x)
    shortcut = L.Conv2D(5, 1, name="short")(inputs)
    x = L.Add(name="add")([x, shortcut])
    x = L.ReLU(name="r2")(x)
    return keras.Model(inputs, x, name=name)


def nested_model(dtype=None):
    """A stem, the backbone as one layer, a head."""
    backbone = _backbone()
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, activation="relu", name="stem")(inputs)
    x = backbone(x)
    x = L.Conv2D(3, 1, name="after")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs, name="outer")
    surgery_randomize(model)
    return model


def doubly_nested_model():
    """A Sequential inside a functional inside the outer model, called twice."""
    inner = keras.Sequential(
        [keras.Input((8, 8, 4)), L.Conv2D(6, 3, padding="same", name="s1"),
         L.ReLU(name="s1_relu"), L.Conv2D(4, 1, name="s2")],
        name="seq",
    )
    middle_in = keras.Input((8, 8, 4))
    middle = keras.Model(
        middle_in, L.ReLU(name="m_relu")(inner(middle_in)), name="middle"
    )
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="stem")(inputs)
    a = middle(x)
    b = middle(L.Conv2D(4, 1, name="stem2")(inputs))
    x = L.Concatenate(name="cat")([a, b])
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x), name="outer2")
    surgery_randomize(model)
    return model


def surgery_randomize(model):
    """Non-trivial biases and BN statistics, so densities are not all 0.5."""
    rng = np.random.default_rng(3)
    for layer in graph.all_layers(model):
        for weight in layer.weights:
            if weight.name in ("bias", "beta", "moving_mean"):
                weight.assign(rng.normal(0, 0.5, weight.shape))
            elif weight.name in ("gamma", "moving_variance"):
                weight.assign(rng.uniform(0.5, 1.5, weight.shape))


def _images(shape=(24, 8, 8, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _fired(values):
    """Per-channel fraction of activations > 0, over all other axes."""
    values = np.asarray(values)
    return (values > 0).reshape(-1, values.shape[-1]).mean(axis=0)


def test_groups_inside_a_nested_model_are_prunable_and_measured_there():
    model = nested_model()
    groups = {g.name: g for g in keras_adp.channel_groups(model)}
    assert groups["backbone/c1"].prunable
    assert groups["backbone/c1"].density_site.layer == "backbone/r1"
    assert groups["backbone/c2"].producers == ("backbone/c2", "backbone/short")
    assert groups["backbone/c2"].density_site.layer == "backbone/c2"


def test_density_inside_nested_model_equals_independent_numpy_count():
    model = nested_model()
    x = _images()
    result = keras_adp.measure_density(model, x, batch_size=7)
    backbone = model.get_layer("backbone")
    # The backbone's input, from the outer model's own layer.
    backbone_in = model.get_layer("stem")(x)
    r1 = keras.Model(backbone.input, backbone.get_layer("r1").output)
    c2 = keras.Model(backbone.input, backbone.get_layer("c2").output)
    expected_c1 = _fired(r1(backbone_in))
    expected_c2 = _fired(c2(backbone_in))
    np.testing.assert_array_equal(result["backbone/c1"].channels, expected_c1)
    np.testing.assert_array_equal(result["backbone/c2"].channels, expected_c2)
    assert result["backbone/c1"].overall == pytest.approx(expected_c1.mean())
    assert result["backbone/c1"].measured_at == "backbone/r1"
    # The top-level group is still measured at the top level.
    np.testing.assert_array_equal(
        result["stem"].channels, _fired(model.get_layer("stem")(x))
    )


def test_density_of_a_sub_model_called_twice_is_measured_at_its_first_call():
    model = doubly_nested_model()
    x = _images(seed=1)
    result = keras_adp.measure_density(model, x)
    group = "middle/seq/s1"
    assert result[group].measured_at == "middle/seq/s1_relu"
    seq = model.get_layer("middle").get_layer("seq")
    cut = keras.Model(seq.inputs, seq.get_layer("s1_relu").output)
    first_call_input = model.get_layer("stem")(x)
    np.testing.assert_array_equal(
        result[group].channels, _fired(cut(first_call_input))
    )


def test_density_probe_leaves_nested_model_config_unchanged():
    model = nested_model()
    config = model.get_config()
    keras_adp.density.DensityProbe(model).measure(_images())
    assert model.get_config() == config


@pytest.fixture
def float64():
    """Build models in float64, so that a 1e-9 tolerance is meaningful."""
    previous = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(previous[0])
    keras.config.set_dtype_policy(previous[1])


def _zero_inputs(model, consumer_slices):
    """Copy of `model` with the named consumers' input channels zeroed.

    `consumer_slices` maps a consumer's qualified name to the input channel
    indices to zero: written by the test from the architecture, not taken
    from `ChannelGroup`.
    """
    copy = surgery.copy_model(model)
    for name, channels in consumer_slices.items():
        layer = graph.get_layer(copy, name)
        kernel = np.array(layer.kernel.numpy())
        axis = 0 if isinstance(layer, L.Dense) else -2
        index = [slice(None)] * kernel.ndim
        index[axis] = channels
        kernel[tuple(index)] = 0.0
        layer.kernel.assign(kernel)
    return copy


def test_prune_inside_nested_model_equals_zeroing_removed_inputs(float64):
    model = nested_model()
    keep = {"backbone/c1": [0, 2, 5], "backbone/c2": [1, 4], "stem": [0, 3]}
    small = keras_adp.prune_channels(model, keep)
    reference = _zero_inputs(
        model,
        {
            # stem's channels 1, 2 enter c1 and the shortcut of the backbone.
            "backbone/c1": [1, 2],
            "backbone/short": [1, 2],
            # c1's removed channels enter c2.
            "backbone/c2": [1, 3, 4],
            # c2 and the shortcut share channels (Add); they enter `after`.
            "after": [0, 2, 3],
        },
    )
    x = _images().astype("float64")
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    backbone = small.get_layer("backbone")
    assert isinstance(backbone, keras.Model) and backbone.name == "backbone"
    assert backbone.get_layer("c1").filters == 3
    assert backbone.get_layer("c2").filters == 2
    assert backbone.get_layer("short").filters == 2
    assert backbone.get_layer("bn1").gamma.shape == (3,)
    assert [layer.name for layer in small.layers] == [
        layer.name for layer in model.layers
    ]


def test_prune_sub_model_called_twice_equals_zeroing_removed_inputs(float64):
    model = doubly_nested_model()
    keep = {"middle/seq/s1": [1, 4], "stem": [0, 1, 3]}
    small = keras_adp.prune_channels(model, keep)
    reference = _zero_inputs(
        model,
        {"middle/seq/s2": [0, 2, 3, 5], "middle/seq/s1": [2]},
    )
    x = _images(seed=2).astype("float64")
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    assert small.get_layer("middle").get_layer("seq").get_layer("s1").filters == 2


def _mobilenet_v2_under_head(size=32):
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=None,
        alpha=0.35,
    )
    inputs = keras.Input((size, size, 3))
    x = base(inputs, training=False)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10, name="head")(x)
    return keras.Model(inputs, outputs)


def test_mobilenet_v2_backbone_under_a_head_is_measured_and_pruned(float64):
    model = _mobilenet_v2_under_head()
    surgery_randomize(model)
    groups = keras_adp.channel_groups(model)
    base = model.layers[1].name
    inside = [g for g in groups if g.name.startswith(base + "/")]
    assert len(inside) == len(groups) - 1  # all but the head's logits
    assert all(g.prunable for g in inside)
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3))
    densities = keras_adp.measure_density(model, x)
    relu_groups = {
        g.name for g in inside
        if any(s.activation == "relu6" for s in g.activation_sites)
    }
    assert relu_groups and relu_groups <= set(densities)
    rng = np.random.default_rng(5)
    keep = surgery.random_keep(groups, rng, min_fraction=0.3)
    small = keras_adp.prune_channels(model, keep)
    reference = surgery.zeroed_copy(model, groups, keep)
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    assert small.layers[1].name == base and isinstance(small.layers[1], keras.Model)
    assert small.count_params() < model.count_params()


def test_adp_trainer_prunes_inside_a_nested_model(tmp_path):
    keras.utils.set_random_seed(0)
    model = nested_model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 8, 8, 3)).astype("float32")
    y = (x[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int32")
    # The paper's width rule (width = AD x width) always shrinks here.
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, min_channels=2, calibration_samples=32,
        max_accuracy_drop=None, width_rule="density",
    )
    run_dir = tmp_path / "run"
    result = keras_adp.ADPTrainer(policy, run_dir=str(run_dir)).fit(
        model, x, y, epochs=2, batch_size=32, verbose=0
    )
    assert result.steps, "no pruning step was taken"
    densities = result.history[0]["density"]
    assert "backbone/c1" in densities
    before = model.get_layer("backbone").get_layer("c1").filters
    after = result.model.get_layer("backbone").get_layer("c1").filters
    assert after < before
    assert isinstance(result.model.get_layer("backbone"), keras.Model)
    # Checkpoints hold the nested model; the report names the inner groups.
    from keras_adp import report

    report.write_report(run_dir, result)
    assert "backbone/c1" in (run_dir / "report.md").read_text()


class FunctionalSubclass(keras.Model):
    """A user class over a functional graph: `super().__init__(inputs, outputs)`."""

    def __init__(self, inputs, outputs, **kwargs):
        super().__init__(inputs, outputs, **kwargs)


def test_functional_subclass_keeps_its_class_outside_and_nested():
    inner = _backbone()
    backbone = FunctionalSubclass(inner.input, inner.output, name="backbone")
    inputs = keras.Input((8, 8, 4))
    x = L.GlobalAveragePooling2D()(backbone(inputs))
    model = FunctionalSubclass(inputs, L.Dense(2, name="head")(x), name="top")
    model.compile(optimizer="sgd", loss="mse")
    small = keras_adp.prune_channels(model, {"backbone/c1": [0, 1]})
    assert type(small) is FunctionalSubclass and small.name == "top"
    assert type(small.get_layer("backbone")) is FunctionalSubclass
    assert small.get_layer("backbone").get_layer("c1").filters == 2
    assert small.compiled


def test_nested_model_saves_and_reloads_after_density_probe(tmp_path):
    model = nested_model()
    x = _images()
    keras_adp.measure_density(model, x)
    small = keras_adp.prune_channels(model, {"backbone/c1": [0, 4]})
    keras_adp.measure_density(small, x)
    path = str(tmp_path / "small.keras")
    small.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), small(x), rtol=1e-6, atol=1e-6)
    assert loaded.get_layer("backbone").get_layer("c1").filters == 2


def test_activation_density_callback_logs_groups_inside_a_nested_model():
    model = nested_model()
    model.compile(optimizer="sgd", loss="mse")
    x = _images((16, 8, 8, 3)).astype("float32")
    callback = keras_adp.ActivationDensity(x, num_samples=16)
    history = model.fit(
        x, np.zeros((16, 2)), epochs=1, verbose=0, callbacks=[callback]
    )
    assert "density/backbone/c1" in history.history
    assert 0.0 <= history.history["density/backbone/c1"][0] <= 1.0
