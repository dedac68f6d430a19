"""The behaviour-based rule for layers without a handler, grouped
convolutions, the per-channel layers of keras.applications, and groups split
where a concatenation meets one convolution's output.

Expected pruned outputs: the unpruned model with the removed channels'
input slices zeroed in the consumers the test names, in float64.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import layers as layer_handlers
from tests.test_nested import _zero_inputs, float64  # noqa: F401 (fixture)

L = keras.layers


class ChannelScale(L.Layer):
    """`x * scale + shift`, one learnt value per channel; `channels` in config."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(self.channels,), initializer="ones")
        self.shift = self.add_weight(shape=(1, self.channels), initializer="zeros")

    def call(self, x):
        return x * self.scale + self.shift

    def get_config(self):
        return dict(super().get_config(), channels=self.channels)


class Doubler(L.Layer):
    """No weights: `2x + 1`."""

    def call(self, x):
        return 2.0 * x + 1.0


class ChannelSoftmax(L.Layer):
    """Permutation-equivariant but mixes channels: refused by the slice check."""

    def call(self, x):
        return keras.ops.softmax(x, axis=-1)


class ChannelMatrix(L.Layer):
    """A (C, C) weight: several axes of the channel count."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.matrix = self.add_weight(shape=(channels, channels))

    def call(self, x):
        return keras.ops.matmul(x, self.matrix)


class Reverse(L.Layer):
    def call(self, x):
        return keras.ops.flip(x, axis=-1)


def _model_with(layer):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 3, padding="same", name="a")(inputs)
    x = layer(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(4, 1, name="b")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    rng = np.random.default_rng(0)
    for weight in layer.weights:
        weight.assign(rng.normal(1.0, 0.5, weight.shape))
    return model


def _group(model, name="a", **kwargs):
    return next(
        g for g in keras_adp.channel_groups(model, **kwargs) if g.name == name
    )


@pytest.mark.parametrize(
    "make", [lambda: ChannelScale(6, name="custom"), lambda: Doubler(name="custom")],
    ids=["per_channel_weights", "weightless"],
)
def test_rule_accepts_channel_wise_custom_layers_and_prunes_exactly(make, float64):
    model = _model_with(make())
    group = _group(model)
    assert group.prunable, group.reason
    assert group.inferred == ("custom",)
    small = keras_adp.prune_channels(model, {"a": [0, 3, 4]})
    reference = _zero_inputs(model, {"b": [1, 2, 5]})
    x = np.random.default_rng(1).standard_normal((4, 6, 6, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    custom = small.get_layer("custom")
    if isinstance(custom, ChannelScale):
        assert custom.channels == 3
        np.testing.assert_array_equal(
            custom.scale.numpy(),
            model.get_layer("custom").scale.numpy()[[0, 3, 4]],
        )


def test_strict_refuses_layers_accepted_only_by_the_rule():
    model = _model_with(ChannelScale(6, name="custom"))
    with pytest.raises(ValueError, match=r"'custom' \(ChannelScale\).*strict"):
        keras_adp.channel_groups(model, strict=True)


@pytest.mark.parametrize(
    "make, reason",
    [
        (ChannelSoftmax, "does not compute those channels"),
        (ChannelMatrix, "several axes of the channel count"),
        (Reverse, "does not permute its output"),
    ],
    ids=["softmax", "matrix", "reverse"],
)
def test_rule_refuses_layers_that_mix_channels(make, reason):
    group = _group(_model_with(make(name="custom")))
    assert not group.prunable
    assert "'custom'" in group.reason and reason in group.reason


def test_rule_verdict_is_cached_per_class_config_and_shapes():
    calls = []

    class Counted(Doubler):
        def call(self, x):
            calls.append(1)
            return super().call(x)

    layer = Counted(name="custom")
    model = _model_with(layer)
    keras_adp.channel_groups(model)
    first = len(calls)
    assert first > 0
    keras_adp.channel_groups(model)
    assert len(calls) == first


# ------------------------------------------------------- grouped convolutions
def test_depthwise_style_grouped_conv_is_sliced_with_its_group(float64):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 1, name="a")(inputs)
    x = L.Conv2D(6, 3, padding="same", groups=6, activation="relu", name="dw")(x)
    x = L.Conv2D(4, 1, name="b")(x)
    model = keras.Model(
        inputs, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    )
    for weight in model.get_layer("dw").weights:
        weight.assign(np.random.default_rng(2).normal(size=weight.shape))
    group = _group(model)
    assert group.prunable and group.members == ("dw",)
    assert group.density_site.layer == "dw"
    small = keras_adp.prune_channels(model, {"a": [1, 2, 5]})
    assert small.get_layer("dw").groups == 3
    np.testing.assert_array_equal(
        small.get_layer("dw").kernel.numpy(),
        np.delete(model.get_layer("dw").kernel.numpy(), [0, 3, 4], axis=-1),
    )
    reference = _zero_inputs(model, {"b": [0, 3, 4]})
    x = np.random.default_rng(3).standard_normal((3, 6, 6, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)


def test_general_grouped_conv_is_pruned_in_equal_blocks():
    """More in tests/test_grouped_conv.py."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="a")(inputs)
    x = L.Conv2D(8, 3, groups=2, name="g")(x)
    model = keras.Model(
        inputs, L.Dense(2)(L.GlobalAveragePooling2D()(L.Conv2D(3, 1)(x)))
    )
    group = _group(model)
    assert group.prunable and group.blocks == 2


# --------------------------------------------- keras.applications layers
def test_layer_scale_and_custom_scale_layer_have_explicit_handlers(float64):
    from keras.src.applications import convnext, inception_resnet_v2

    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(6, 1, name="a")(inputs)
    r = L.Conv2D(6, 1, name="r")(a)
    x = convnext.LayerScale(0.5, 6, name="scale")(r)
    x = inception_resnet_v2.CustomScaleLayer(0.3, name="custom")([a, x])
    x = L.Conv2D(4, 1, name="b")(L.ReLU()(x))
    model = keras.Model(
        inputs, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    )
    model.get_layer("scale").set_weights([np.linspace(0.5, 1.5, 6)])
    group = _group(model, strict=True)
    assert group.prunable and group.producers == ("a", "r")
    assert group.inferred == ()
    small = keras_adp.prune_channels(model, {"a": [0, 1, 4]}, strict=True)
    assert small.get_layer("scale").projection_dim == 3
    reference = _zero_inputs(model, {"r": [2, 3, 5], "b": [2, 3, 5]})
    x = np.random.default_rng(4).standard_normal((3, 6, 6, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)


# -------------------------------------- concatenation merged with one conv
def test_concatenation_added_to_one_conv_output_splits_the_conv(float64):
    """Inception-ResNet: x = concat(b0, b1); x + conv(x) couples conv's
    channels [0, 2) with b0's and [2, 5) with b1's."""
    inputs = keras.Input((6, 6, 3))
    b0 = L.Conv2D(2, 1, name="b0")(inputs)
    b1 = L.Conv2D(3, 1, name="b1")(inputs)
    x = L.Concatenate(name="cat")([b0, b1])
    up = L.Conv2D(5, 1, name="up")(x)
    x = L.ReLU()(L.Add()([x, up]))
    y = L.Conv2D(4, 1, name="c")(x)
    model = keras.Model(
        inputs, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(y))
    )
    groups = {g.name: g for g in keras_adp.channel_groups(model)}
    assert groups["b0"].producers == ("b0", "up") and groups["b0"].prunable
    assert groups["b1"].producers == ("b1", "up") and groups["b1"].prunable
    assert groups["b1"].size == 3
    small = keras_adp.prune_channels(model, {"b0": [1], "b1": [0, 2]})
    assert small.get_layer("up").filters == 3
    # Removed: b0's channel 0 (index 0 of the concat), b1's 1 (index 3).
    reference = _zero_inputs(model, {"up": [0, 3], "c": [0, 3]})
    x = np.random.default_rng(5).standard_normal((3, 6, 6, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)


def test_supported_ops_lists_arithmetic_and_activations():
    names = layer_handlers.supported_ops()
    assert {"Add", "Multiply", "Relu6", "Mean"} <= set(names)
    assert "LayerScale" in layer_handlers.supported_layers()


def test_groups_record_their_offset_in_split_producers_and_members():
    inputs = keras.Input((6, 6, 3))
    b0 = L.Conv2D(2, 1, name="b0")(inputs)
    b1 = L.Conv2D(3, 1, name="b1")(inputs)
    x = L.Concatenate(name="cat")([b0, b1])
    up = L.Conv2D(5, 1, name="up")(x)
    x = L.BatchNormalization(name="bn")(L.Add()([x, up]))
    y = L.Conv2D(4, 1, name="c")(L.ReLU()(x))
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(y))
    groups = {g.name: g for g in keras_adp.channel_groups(model)}
    assert groups["b1"].producer_offsets == (("b1", 0), ("up", 2))
    assert groups["b1"].member_offsets == (("bn", 2),)
    assert groups["b0"].member_offsets == (("bn", 0),)


@pytest.mark.parametrize("selection", ["l1", "bn_gamma"])
def test_channel_scores_take_a_split_group_slice(selection):
    from keras_adp import scoring

    inputs = keras.Input((6, 6, 3))
    b0 = L.Conv2D(2, 1, name="b0")(inputs)
    b1 = L.Conv2D(3, 1, name="b1")(inputs)
    x = L.Concatenate(name="cat")([b0, b1])
    up = L.Conv2D(5, 1, name="up")(x)
    x = L.BatchNormalization(name="bn")(L.Add()([x, up]))
    y = L.Conv2D(4, 1, name="c")(L.ReLU()(x))
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(y))
    model.get_layer("bn").gamma.assign(np.arange(1.0, 6.0))
    groups = keras_adp.channel_groups(model)
    scores = scoring.channel_scores(model, groups, selection)
    if selection == "bn_gamma":
        np.testing.assert_array_equal(scores["b1"], [3.0, 4.0, 5.0])
    else:
        l1 = lambda name: np.abs(model.get_layer(name).kernel.numpy()).sum(
            axis=(0, 1, 2)
        )
        np.testing.assert_allclose(scores["b1"], l1("b1") + l1("up")[2:5])
