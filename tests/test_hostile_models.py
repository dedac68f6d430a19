"""Unusual and hostile models: each is analysed correctly or refused clearly."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from tests import surgery, zoo

L = keras.layers


def _groups(model):
    return {g.name: g for g in keras_adp.channel_groups(model)}


def test_multi_input_multi_output_model_prunes_exactly():
    image = keras.Input((8, 8, 3), name="image")
    extra = keras.Input((8, 8, 2), name="extra")
    a = L.Conv2D(6, 3, padding="same", activation="relu", name="a")(image)
    b = L.Conv2D(6, 3, padding="same", activation="relu", name="b")(extra)
    x = L.Add(name="fuse")([a, b])
    x = L.Conv2D(5, 1, activation="relu", name="shared_trunk")(x)
    pooled = L.GlobalAveragePooling2D()(x)
    out1 = L.Dense(3, name="class_head")(pooled)
    out2 = L.Dense(1, name="score_head")(L.Flatten()(x))
    model = keras.Model([image, extra], [out1, out2])
    groups = _groups(model)
    assert groups["a"].producers == ("a", "b")
    keep = {"a": [0, 2, 5], "shared_trunk": [1, 4]}
    pruned = keras_adp.prune_channels(model, keep)
    reference = surgery.zeroed_copy(model, list(groups.values()), keep)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 8, 8, 3)), rng.normal(size=(2, 8, 8, 2))]
    inputs = [i.astype("float32") for i in inputs]
    for got, want in zip(pruned(inputs), reference(inputs)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    assert [t.name for t in pruned.inputs] == ["image", "extra"]


def test_channels_first_convolution_is_not_prunable_and_says_why():
    inputs = keras.Input((3, 8, 8))
    x = L.Conv2D(4, 3, data_format="channels_first", name="cf")(inputs)
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    # The conv's output channel axis is axis 1: it is refused, not mis-sliced.
    assert not any(g.prunable for g in keras_adp.channel_groups(model))
    reason = " ".join(g.reason for g in keras_adp.channel_groups(model))
    assert "channels_first" in reason


def test_model_whose_groups_are_all_non_prunable_rebuilds_unchanged():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(3, 3, padding="same", name="c")(inputs)
    outputs = L.Add()([inputs, x])
    model = keras.Model(inputs, outputs)
    assert not any(g.prunable for g in keras_adp.channel_groups(model))
    rebuilt = keras_adp.prune_channels(model, {})
    x = np.ones((1, 8, 8, 3), "float32")
    np.testing.assert_allclose(np.asarray(rebuilt(x)), np.asarray(model(x)))
    with pytest.raises(ValueError, match="is not prunable"):
        keras_adp.prune_channels(model, {"c": [0]})


def test_lambda_layer_blocks_its_groups_and_strict_mode_raises():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="before")(inputs)
    x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    group = _groups(model)["before"]
    assert not group.prunable and "'double' (Lambda)" in group.reason
    with pytest.raises(ValueError, match="Lambda"):
        keras_adp.channel_groups(model, strict=True)


def test_keras_file_with_lambda_is_refused_by_safe_mode(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Lambda(lambda t: t + 1.0)(L.Dense(3)(inputs)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match="(?i)lambda"):
        keras.saving.load_model(path)  # safe_mode=True is Keras' default


def test_model_loaded_from_keras_file_prunes_like_the_original(tmp_path):
    model = zoo.resnet_basic()
    path = tmp_path / "resnet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    keep = {"stem_conv": [0, 3, 4], "b2c2_conv": [1, 2, 7, 11]}
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(keras_adp.prune_channels(loaded, keep)(x)),
        np.asarray(keras_adp.prune_channels(model, keep)(x)),
        atol=1e-6,
    )


def test_uint8_input_with_rescaling_prunes_exactly():
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = L.Rescaling(1 / 255.0)(inputs)
    x = L.Conv2D(6, 3, activation="relu", name="c1")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="logits")(x))
    keep = {"c1": [1, 2]}
    pruned = keras_adp.prune_channels(model, keep)
    assert pruned.inputs[0].dtype == "uint8"
    reference = surgery.zeroed_copy(model, keras_adp.channel_groups(model), keep)
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype("uint8")
    np.testing.assert_allclose(
        np.asarray(pruned(x)), np.asarray(reference(x)), atol=1e-5
    )


def test_per_channel_rescaling_and_normalization_are_sliced():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = L.Rescaling(scale=[1.0, 2.0, 3.0, 4.0], offset=0.5, name="scale")(x)
    x = L.Normalization(
        mean=[0.0, 1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0, 16.0], name="norm"
    )(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    keep = {"c1": [1, 3]}
    pruned = keras_adp.prune_channels(model, keep)
    np.testing.assert_allclose(pruned.get_layer("scale").scale, [2.0, 4.0])
    reference = surgery.zeroed_copy(model, keras_adp.channel_groups(model), keep)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(pruned(x)), np.asarray(reference(x)), atol=1e-5
    )


def test_nan_and_inf_inputs_do_not_break_surgery():
    model = zoo.vgg()
    pruned = keras_adp.prune_channels(model, {"b1c1_conv": [0, 1]})
    x = np.full((1, 16, 16, 3), np.nan, "float32")
    assert np.isnan(np.asarray(pruned(x))).all()
    assert pruned.get_layer("b1c1_conv").filters == 2
