"""Keras operation nodes (Python arithmetic, `keras.ops` on symbolic tensors).

Expected pruned outputs are computed by zeroing the removed channels' input
slices of the consumers the test names, in float64.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import graph
from tests import surgery
from tests.test_nested import _zero_inputs, float64  # noqa: F401 (fixture)

L = keras.layers
ops = keras.ops


def _groups(model):
    return {g.name: g for g in keras_adp.channel_groups(model)}


def _images(shape=(6, 8, 8, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def ops_model():
    """Channel-preserving ops between convolutions, and a coupling `x * y`."""
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inputs)
    b = L.Conv2D(6, 1, name="b")(inputs)
    x = ops.relu6(a + 3.0) * (1.0 / 6.0)  # hard sigmoid, with ops
    x = x * b  # two channel tensors: a's and b's channels are coupled
    x = ops.relu(x) / 2.0
    x = ops.maximum(x, 0.1)
    spatial = ops.mean(x, axis=(1, 2), keepdims=True)  # channels kept
    x = x * ops.sigmoid(spatial)
    y = L.Conv2D(4, 1, name="c")(x)
    y = ops.relu6(y)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(inputs, L.Dense(2, name="head")(y))


def test_elementwise_ops_keep_channels_and_couple_channel_tensors():
    groups = _groups(ops_model())
    assert groups["a"].prunable, groups["a"].reason
    assert groups["a"].producers == ("a", "b")
    assert groups["a"].consumers == ("c",)
    assert groups["c"].prunable
    assert groups["c"].density_site.activation == "relu6"


def test_relu6_of_a_shifted_input_is_not_a_density_site():
    # relu6(a + 3) fires wherever a > -3: not the silent branch of `a`.
    group = _groups(ops_model())["a"]
    first = group.activation_sites[0]
    assert first.activation.startswith("relu6 of an input shifted by 3")
    assert group.density_site.activation == "relu"  # the later ops.relu(x)
    assert group.density_site.tensor is not first.tensor


def test_ops_model_prunes_like_zeroing_removed_inputs(float64):
    model = ops_model()
    small = keras_adp.prune_channels(model, {"a": [0, 2, 3], "c": [1, 2]})
    reference = _zero_inputs(model, {"c": [1, 4, 5], "head": [0, 3]})
    x = _images()
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    assert small.get_layer("a").filters == 3
    assert small.get_layer("b").filters == 3


def hard_swish_model():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="hs")(inputs)
    x = x * ops.relu6(x + 3.0) / 6.0  # hard-swish, as MobileNetV3 writes it
    y = L.Conv2D(5, 1, name="sw")(x)
    y = y * ops.sigmoid(y)  # swish
    z = L.Conv2D(4, 1, name="hs2")(y)
    z = L.Multiply()([z, L.ReLU(6.0)(z + 3.0) * (1.0 / 6.0)])
    z = L.GlobalAveragePooling2D()(L.Conv2D(3, 1, name="out")(z))
    return keras.Model(inputs, L.Dense(2, name="head")(z))


def test_hard_swish_and_swish_written_as_ops_are_density_sites():
    groups = _groups(hard_swish_model())
    assert groups["hs"].density_site.activation == "hard_swish"
    assert groups["sw"].density_site.activation == "silu"
    assert groups["hs2"].density_site.activation == "hard_swish"


def test_density_at_an_ops_hard_swish_counts_positive_inputs():
    model = hard_swish_model()
    x = _images(seed=1).astype("float32")
    result = keras_adp.measure_density(model, x)
    pre = model.get_layer("hs")(x)
    expected = (np.asarray(pre) > 0).reshape(-1, 6).mean(axis=0)
    np.testing.assert_allclose(result["hs"].channels, expected)


@pytest.mark.parametrize(
    "block, reason",
    [
        (lambda x: x - ops.mean(x, axis=-1, keepdims=True), "channel (last) axis"),
        (lambda x: x + np.arange(6, dtype="float32"), "constant operand"),
        (lambda x: ops.transpose(x, (0, 3, 1, 2)), "not channel-wise"),
        (lambda x: ops.flip(x, axis=-1), "not channel-wise"),
    ],
    ids=["channel_mean", "array_constant", "transpose", "flip"],
)
def test_ops_that_mix_or_move_channels_block_with_a_reason(block, reason):
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="a")(inputs)
    x = block(x)
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    group = _groups(model)["a"]
    assert not group.prunable
    assert reason in group.reason
    with pytest.raises(ValueError, match="Expected only layers"):
        keras_adp.channel_groups(model, strict=True)


def test_mobilenet_v3_small_measures_every_relu_family_group(float64):
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    groups = keras_adp.channel_groups(model)
    inner = [g for g in groups if "model output" not in g.reason]
    assert all(g.prunable for g in inner), [g.reason for g in inner]
    relu_family = [
        g for g in inner
        if any(s.activation in keras_adp.density.GATING_ACTIVATIONS
               for s in g.activation_sites)
    ]
    probe = keras_adp.density.DensityProbe(model)
    assert {g.name for g in relu_family} <= set(probe.names)
    assert len(probe.names) >= 20
    keep = surgery.random_keep(groups, np.random.default_rng(0), 0.5)
    small = keras_adp.prune_channels(model, keep)
    reference = surgery.zeroed_copy(model, groups, keep)
    x = _images((2, 32, 32, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
