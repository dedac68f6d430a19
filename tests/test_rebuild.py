import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from tests import surgery, zoo

L = keras.layers


def _inputs(model, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch,) + tuple(model.inputs[0].shape[1:])
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("factory", sorted(zoo.FACTORIES))
def test_prune_channels_keeps_outputs_when_all_channels_kept(factory):
    model = zoo.FACTORIES[factory]()
    groups = keras_adp.channel_groups(model)
    keep = {g.name: np.arange(g.size) for g in groups if g.prunable}
    assert keep, "every zoo model has prunable groups"
    rebuilt = keras_adp.prune_channels(model, keep)
    x = _inputs(model)
    np.testing.assert_allclose(
        rebuilt.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize("factory", sorted(zoo.FACTORIES))
@pytest.mark.parametrize("seed", [0, 1])
def test_prune_channels_equals_zeroing_removed_consumer_inputs(factory, seed):
    model = zoo.FACTORIES[factory]()
    groups = keras_adp.channel_groups(model)
    keep = surgery.random_keep(groups, np.random.default_rng(seed))
    pruned = keras_adp.prune_channels(model, keep)
    reference = surgery.zeroed_copy(model, groups, keep)
    x = _inputs(model, seed=seed)
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0),
        reference.predict(x, verbose=0),
        atol=1e-5,
        rtol=1e-5,
    )
    pruned_groups = {g.name: g for g in keras_adp.channel_groups(pruned)}
    for name, kept in keep.items():
        assert pruned_groups[name].size == len(kept)


@pytest.mark.parametrize(
    "application",
    [
        lambda: keras.applications.ResNet50(
            weights=None, input_shape=(32, 32, 3), classes=5
        ),
        lambda: keras.applications.MobileNetV2(
            weights=None, input_shape=(32, 32, 3), classes=5
        ),
    ],
    ids=["ResNet50", "MobileNetV2"],
)
def test_prune_channels_equivalence_on_keras_applications(application):
    model = zoo.randomize_batchnorm(application())
    groups = keras_adp.channel_groups(model)
    prunable = [g for g in groups if g.prunable]
    assert len(prunable) > 10
    keep = surgery.random_keep(groups, np.random.default_rng(0), 0.5)
    pruned = keras_adp.prune_channels(model, keep)
    reference = surgery.zeroed_copy(model, groups, keep)
    x = _inputs(model, batch=2)
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0),
        reference.predict(x, verbose=0),
        atol=1e-5,
    )
    assert pruned.count_params() < model.count_params()


def test_prune_channels_slices_weights_like_np_delete():
    model = zoo.vgg()
    remove = [1, 4, 6]
    keep = np.setdiff1d(np.arange(8), remove)
    pruned = keras_adp.prune_channels(model, {"b1c1_conv": keep})
    old_kernel = model.get_layer("b1c1_conv").get_weights()[0]
    np.testing.assert_array_equal(
        pruned.get_layer("b1c1_conv").get_weights()[0],
        np.delete(old_kernel, remove, axis=3),
    )
    for old, new in zip(
        model.get_layer("b1c1_bn").get_weights(),
        pruned.get_layer("b1c1_bn").get_weights(),
    ):
        np.testing.assert_array_equal(new, np.delete(old, remove, axis=0))
    np.testing.assert_array_equal(
        pruned.get_layer("b1c2_conv").get_weights()[0],
        np.delete(model.get_layer("b1c2_conv").get_weights()[0], remove, 2),
    )


def test_prune_channels_slices_dense_rows_behind_flatten():
    model = zoo.flatten_dense()
    pruned = keras_adp.prune_channels(model, {"c1": [0, 2, 3]})
    # c1: 8x8 input, 3x3 valid -> 6x6, pool -> 3x3: 9 positions x 6 channels.
    old = model.get_layer("fc1").get_weights()[0]
    expected_rows = [p * 6 + c for p in range(9) for c in (0, 2, 3)]
    np.testing.assert_array_equal(
        pruned.get_layer("fc1").get_weights()[0], old[expected_rows]
    )


def test_prune_channels_slices_separable_pointwise_by_multiplier():
    model = zoo.sequential()
    pruned = keras_adp.prune_channels(model, {"c1": [1, 3, 4]})
    old_dw, old_pw, _ = model.get_layer("sep").get_weights()
    new_dw, new_pw, _ = pruned.get_layer("sep").get_weights()
    np.testing.assert_array_equal(new_dw, old_dw[:, :, [1, 3, 4], :])
    # depth_multiplier=2: intermediate channel index = c * 2 + m.
    np.testing.assert_array_equal(new_pw, old_pw[:, :, [2, 3, 6, 7, 8, 9], :])


def test_prune_channels_does_not_mutate_its_argument():
    model = zoo.resnet_basic()
    before = [w.copy() for w in model.get_weights()]
    config = model.get_config()
    keras_adp.prune_channels(model, {"stem_conv": [0, 1, 2]})
    assert model.get_config() == config
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_pruned_copies_hold_variables_of_their_own():
    # Every rebuild names its new TensorFlow variables after the weight
    # alone ("kernel"), so many variables share a name: each must still be
    # its own resource. Writing to one copy leaves the other and the source
    # alone, and Keras' variable paths are the source's.
    model = zoo.resnet_basic()
    source = [w.copy() for w in model.get_weights()]
    keep = {"stem_conv": [0, 1, 2]}
    first = keras_adp.prune_channels(model, keep)
    second = keras_adp.prune_channels(model, keep)
    expected = second.get_weights()
    assert [w.path for w in first.weights] == [w.path for w in model.weights]
    for variable in first.weights:
        variable.assign(np.full(variable.shape, 7.0, variable.dtype))
    for old, new in zip(expected, second.get_weights()):
        np.testing.assert_array_equal(old, new)
    for old, new in zip(source, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert all(np.all(w == 7.0) for w in first.get_weights())


def test_prune_channels_preserves_names_dtype_policies_and_trainable():
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(6, 3, name="c1", dtype="mixed_float16")(inputs)
    x = L.BatchNormalization(name="bn", trainable=False)(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(2, name="head", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="mixed")
    pruned = keras_adp.prune_channels(model, {"c1": [0, 5]})
    assert pruned.name == "mixed"
    assert [layer.name for layer in pruned.layers] == [
        layer.name for layer in model.layers
    ]
    assert pruned.get_layer("c1").dtype_policy.name == "mixed_float16"
    assert pruned.get_layer("bn").trainable is False
    assert pruned.get_layer("c1").filters == 2


def test_prune_channels_keeps_shared_layer_shared():
    model = zoo.nested_and_shared()
    pruned = keras_adp.prune_channels(model, {"shared": [0, 3]})
    shared = pruned.get_layer("shared")
    assert shared.filters == 2
    assert len(shared._inbound_nodes) >= 2
    assert isinstance(pruned.get_layer("inner"), keras.Model)


def test_prune_channels_by_any_producer_name_of_a_group():
    model = zoo.resnet_basic()
    group = next(
        g for g in keras_adp.channel_groups(model) if "b1c2_conv" in g.producers
    )
    assert group.name == "stem_conv"
    pruned = keras_adp.prune_channels(model, {"b1c2_conv": [0, 1]})
    assert pruned.get_layer("stem_conv").filters == 2
    assert pruned.get_layer("b1c2_conv").filters == 2


def test_pruned_model_round_trips_through_keras_file(tmp_path):
    model = zoo.se_block()
    pruned = keras_adp.prune_channels(model, {"c1_conv": [0, 2, 4, 6]})
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    x = _inputs(model)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )


# ------------------------------------------------------------- error paths
@pytest.mark.parametrize(
    "keep, message",
    [
        ({"nope": [0]}, "'nope' is not a channel group"),
        ({"b1c1_conv": []}, "are empty"),
        ({"b1c1_conv": [0, 0, 1]}, "indices [0] for 'b1c1_conv' are repeated"),
        ({"b1c1_conv": [0, 8, -1]}, "indices [-1, 8] for 'b1c1_conv' are out"),
        ({"b1c1_conv": [0.5]}, "must be a 1-D sequence of integers"),
        ({"logits": [0]}, "group 'logits' is not prunable: reaches the model"),
    ],
)
def test_prune_channels_rejects_bad_keep(keep, message):
    with pytest.raises(ValueError) as info:
        keras_adp.prune_channels(zoo.vgg(), keep)
    assert message in str(info.value)


def test_prune_channels_lists_every_problem_at_once():
    with pytest.raises(ValueError) as info:
        keras_adp.prune_channels(
            zoo.vgg(), {"nope": [0], "b1c2_conv": [], "fc1": [99]}
        )
    text = str(info.value)
    assert "'nope'" in text and "'b1c2_conv' are empty" in text
    assert "[99]" in text


def test_prune_channels_rejects_two_names_of_one_group():
    with pytest.raises(ValueError, match="name the same group 'stem_conv'"):
        keras_adp.prune_channels(
            zoo.resnet_basic(), {"stem_conv": [0], "b1c2_conv": [0]}
        )


def test_prune_channels_rejects_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed model"):
        keras_adp.prune_channels(net, {})


def test_prune_channels_rejects_non_mapping_keep():
    with pytest.raises(ValueError, match="Expected `keep` to be a mapping"):
        keras_adp.prune_channels(zoo.vgg(), [0, 1])


def _conv_bn_model():
    keras.utils.set_random_seed(9)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@pytest.mark.parametrize("batch_size", [64, 16, 24])
def test_recalibrate_batch_norm_sets_moving_statistics_to_batch_averages(
    batch_size,
):
    from keras_adp.rebuild import recalibrate_batch_norm

    model = _conv_bn_model()
    x = np.random.default_rng(1).normal(2.0, 3.0, (64, 6, 6, 2)).astype(
        "float32"
    )
    weights_before = [w.numpy().copy() for w in model.trainable_weights]
    assert recalibrate_batch_norm(model, x, batch_size=batch_size) == 1
    # Independent reference: the convolution's outputs, per batch, averaged.
    conv = keras.Model(model.inputs, model.get_layer("conv").output)
    outputs = conv.predict(x, verbose=0).astype(np.float64)
    batches = [outputs[i:i + batch_size] for i in range(0, 64, batch_size)]
    mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    variance = np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance,
                               rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.99
    for before, weight in zip(weights_before, model.trainable_weights):
        np.testing.assert_array_equal(before, weight.numpy())
