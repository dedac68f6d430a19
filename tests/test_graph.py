import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import graph, layers
from tests import zoo

L = keras.layers


def _groups(model, **kwargs):
    return {g.name: g for g in keras_adp.channel_groups(model, **kwargs)}


def test_channel_groups_of_vgg_are_one_per_conv_and_logits_not_prunable():
    groups = _groups(zoo.vgg())
    assert list(groups) == ["b1c1_conv", "b1c2_conv", "b2c1_conv", "fc1", "logits"]
    first = groups["b1c1_conv"]
    assert first.size == 8 and first.prunable
    assert first.producers == ("b1c1_conv",)
    assert first.consumers == ("b1c2_conv",)
    assert first.members == ("b1c1_bn",)
    assert first.density_site.layer == "b1c1_relu"
    assert groups["b2c1_conv"].consumers == ("fc1",)
    assert groups["fc1"].density_site.layer == "fc1"  # fused activation
    assert not groups["logits"].prunable
    assert "model output 'logits'" in groups["logits"].reason


def test_channel_groups_couple_residual_add_inputs():
    groups = _groups(zoo.resnet_basic())
    stem = groups["stem_conv"]
    assert stem.producers == ("stem_conv", "b1c2_conv")
    assert set(stem.consumers) == {"b1c1_conv", "b2c1_conv", "b2_proj"}
    assert stem.density_site.layer == "stem_relu"
    assert [s.layer for s in stem.activation_sites] == ["stem_relu", "b1_out"]
    proj = groups["b2c2_conv"]
    assert set(proj.producers) == {"b2c2_conv", "b2_proj"}
    assert proj.name == "b2c2_conv"  # first producer in topological order
    assert set(proj.members) == {"b2c2_bn", "b2_proj_bn"}


def test_channel_groups_track_concatenate_offsets():
    groups = _groups(zoo.densenet_block())
    stem = groups["stem"]
    assert {(s.layer, s.offset) for s in stem.consumer_slices} == {
        ("d0_conv", 0),
        ("d1_conv", 0),
        ("d2_conv", 0),
        ("trans_conv", 0),
    }
    assert {(s.layer, s.offset) for s in groups["d1_conv"].consumer_slices} == {
        ("d2_conv", 10),
        ("trans_conv", 10),
    }
    # The BatchNormalization after a concatenation is a member of every part.
    assert "trans_bn" in stem.members and "trans_bn" in groups["d2_conv"].members


def test_channel_groups_flatten_gives_dense_rows_per_position():
    groups = _groups(zoo.flatten_dense())
    (slice_,) = groups["c1"].consumer_slices
    assert (slice_.layer, slice_.offset, slice_.stride, slice_.positions) == (
        "fc1", 0, 6, 9
    )
    np.testing.assert_array_equal(
        slice_.input_indices(np.array([1])), np.arange(9) * 6 + 1
    )


def test_channel_groups_couple_squeeze_excitation_broadcast():
    groups = _groups(zoo.se_block())
    group = groups["c1_conv"]
    assert set(group.producers) == {"c1_conv", "se_expand", "se2_expand"}
    assert set(group.consumers) == {"se_reduce", "se2_expand", "c2_conv"}
    assert group.prunable


def test_channel_groups_do_not_couple_single_channel_broadcast():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, activation="relu", name="features")(inputs)
    attention = L.Conv2D(1, 1, activation="sigmoid", name="attention")(x)
    x = L.Multiply(name="gate")([x, attention])
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="logits")(x))
    groups = _groups(model)
    assert groups["features"].producers == ("features",)
    assert groups["features"].prunable
    assert groups["attention"].size == 1


def test_channel_groups_follow_nested_models_and_shared_layers():
    groups = _groups(zoo.nested_and_shared())
    inner = groups["inner/inner_conv"]
    assert inner.members == ("inner/inner_bn",)
    assert set(inner.consumers) == {"shared", "side"}
    # Both calls of the shared conv feed one Maximum: one group.
    assert groups["shared"].producers == ("shared",)
    outer = groups["outer_conv"]
    assert outer.consumers == ("inner/inner_conv",)
    # The shared layer's inputs (inner output and `side`) are coupled.
    assert "side" in inner.producers


def test_channel_groups_of_sequential_cover_every_layer_kind():
    groups = _groups(zoo.sequential())
    assert list(groups) == ["c1", "sep", "deconv", "logits"]
    assert groups["sep"].members == ("prelu",)
    assert groups["deconv"].consumers == ("logits",)
    assert groups["deconv"].density_site.layer == "leaky"


def test_channel_groups_of_conv1d_model_with_layer_normalization():
    groups = _groups(zoo.conv1d_and_3d())
    assert groups["c1d"].members == ("dw1d", "ln")
    assert groups["c1d"].density_site.activation == "gelu"
    assert groups["sep1d"].density_site.activation == "silu"


def test_channel_groups_coupled_to_model_input_are_not_prunable():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(3, 3, padding="same", name="c1")(inputs)
    x = L.Add()([inputs, x])
    x = L.Conv2D(4, 3, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    group = _groups(model)["c1"]
    assert not group.prunable
    assert "model input" in group.reason


def test_unknown_layer_makes_touched_groups_non_prunable_with_reason():
    class Scale(L.Layer):
        """Mixes channels (reverses them), so the permutation rule refuses."""

        def call(self, x):
            return keras.ops.flip(x, axis=-1) * 2.0

    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="before")(inputs)
    x = Scale(name="custom")(x)
    x = L.Conv2D(5, 3, name="after")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="logits")(x))
    groups = _groups(model)
    assert not groups["before"].prunable
    assert "'custom' (Scale)" in groups["before"].reason
    assert groups["after"].prunable
    with pytest.raises(ValueError, match=r"'custom' \(Scale\)"):
        keras_adp.channel_groups(model, strict=True)


@pytest.mark.parametrize(
    "layer, reason",
    [
        # groups == input channels, 2 filters a group: one input channel
        # per block, so no equal-share pruning of c1 removes any.
        (
            L.Conv2D(32, 1, groups=16, name="odd"),
            "one channel per channel block",
        ),
        (L.DepthwiseConv2D(3, depth_multiplier=2, name="odd"), "depth_multiplier=2"),
        (L.BatchNormalization(axis=1, name="odd"), "axis=1"),
        (L.Softmax(name="odd"), "normalises across channels"),
        (L.Reshape((8, 8, 8, 2), name="odd"), "changes the channel"),
    ],
)
def test_unsupported_configurations_block_their_group(layer, reason):
    inputs = keras.Input((8, 8, 6))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = layer(x)
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    group = _groups(model)["c1"]
    assert not group.prunable
    assert reason in group.reason


def test_channel_groups_never_mutate_the_model():
    model = zoo.resnet_bottleneck()
    config = model.get_config()
    keras_adp.channel_groups(model)
    assert model.get_config() == config


def test_channel_groups_reject_unbuilt_sequential():
    model = keras.Sequential([L.Conv2D(4, 3), L.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        keras_adp.channel_groups(model)


def test_every_registered_layer_class_is_exercised_by_the_zoo():
    """A registry entry nobody builds would rot: the zoo covers them all."""
    seen = set()

    def collect(model):
        for layer in model.layers:
            seen.add(type(layer).__name__)
            if isinstance(layer, keras.Model):
                collect(layer)

    for factory in list(zoo.FACTORIES.values()) + [zoo.conv1d_and_3d]:
        collect(factory())
    collect(_every_other_layer_model())
    missing = set(layers.supported_layers()) - seen
    assert not missing, f"registry entries without a test model: {missing}"


def _every_other_layer_model():
    """Layers the zoo's architectures do not use, chained channel-wise."""
    inputs = keras.Input((8, 8, 8, 3))
    x = L.Conv3D(4, 3, padding="same", name="c3d")(inputs)
    for layer in [
        L.SpatialDropout3D(0.1), L.MaxPooling3D(1), L.AveragePooling3D(1),
        L.ZeroPadding3D(1), L.Cropping3D(1), L.UpSampling3D(1),
        L.GaussianNoise(0.1), L.GaussianDropout(0.1), L.AlphaDropout(0.1),
        L.ActivityRegularization(), L.Identity(), L.ELU(),
        L.Conv3DTranspose(4, 3, padding="same", name="t3d"),
    ]:
        x = layer(x)
    a = L.GlobalAveragePooling3D()(x)
    b = L.GlobalMaxPooling3D()(x)
    x = L.Subtract()([a, b])
    x = L.Average()([x, a])
    x = L.Minimum()([x, b])
    x = L.Rescaling(2.0)(x)
    x = L.Normalization(mean=[0.0] * 4, variance=[1.0] * 4)(x)
    x = L.Reshape((1, 4))(x)
    x = L.SpatialDropout1D(0.1)(x)
    x = L.Conv1D(4, 1, name="c1d")(x)
    x = L.Conv1DTranspose(4, 1, name="t1d")(x)
    x = L.MaxPooling1D(1)(x)
    x = L.AveragePooling1D(1)(x)
    x = L.ZeroPadding1D(1)(x)
    x = L.Cropping1D(1)(x)
    x = L.UpSampling1D(1)(x)
    x = L.GlobalAveragePooling1D()(x)
    y = L.Reshape((1, 1, 4))(x)
    y = L.Conv2D(4, 1, name="c2d")(y)
    y = L.SpatialDropout2D(0.1)(y)
    y = L.GlobalMaxPooling2D()(y)
    x = L.Maximum()([x, y])
    from keras.src.applications import convnext, inception_resnet_v2

    x = convnext.LayerScale(0.5, 4)(x)
    x = inception_resnet_v2.CustomScaleLayer(0.3)([x, y])
    x = L.Softmax(axis=-1)(L.Reshape((4, 1))(x))
    x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(2)(x))


def test_layout_kept_indices_interleave_flattened_concatenation():
    analysis = graph.analyze(zoo.flatten_dense())
    io = next(v for v in analysis.layer_io.values() if v.name == "fc1")
    root = analysis.root_of_group("c1")
    kept = analysis.kept_indices(io.input_layouts[0], {root: np.array([0, 5])})
    expected = np.sort(np.concatenate([np.arange(9) * 6, np.arange(9) * 6 + 5]))
    np.testing.assert_array_equal(kept, expected)


def test_channel_group_measured_at_is_a_deprecated_alias_of_density_site():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inputs)
    x = keras.layers.ReLU(name="r")(x)
    outputs = keras.layers.Conv2D(2, 1, name="out")(x)
    group = next(
        g for g in graph.channel_groups(keras.Model(inputs, outputs))
        if g.name == "c"
    )
    assert group.density_site.layer == "r"
    with pytest.warns(DeprecationWarning, match="density_site"):
        assert group.measured_at == group.density_site
