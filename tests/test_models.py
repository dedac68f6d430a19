"""Tests for keras_adp.models: architectures, parameter counts, validation."""

import numpy as np
import pytest

from keras_adp import models

# Written out here, independently of keras_adp.models.VGG19_CFG.
VGG19_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 256] + [512] * 8
VGG_SMALL_WIDTHS = [32, 32, 64, 64, 128, 128]


def expected_vgg_params(widths, in_channels, num_classes):
    """Returns (trainable, total) parameters of conv3x3(no bias)-BN-ReLU stacks."""
    conv = 0
    bn_trainable = 0
    previous = in_channels
    for width in widths:
        conv += 3 * 3 * previous * width
        bn_trainable += 2 * width  # gamma, beta
        previous = width
    dense = previous * num_classes + num_classes
    trainable = conv + bn_trainable + dense
    return trainable, trainable + bn_trainable  # + moving mean, variance


def expected_resnet18_params(in_channels, num_classes):
    """Returns (trainable, total) parameters of the CIFAR ResNet-18."""
    trainable = 0
    non_trainable = 0

    def conv_bn(kernel, cin, cout):
        nonlocal trainable, non_trainable
        trainable += kernel * kernel * cin * cout + 2 * cout
        non_trainable += 2 * cout

    conv_bn(3, in_channels, 64)
    previous = 64
    for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            block_stride = stride if block == 0 else 1
            conv_bn(3, previous, width)
            conv_bn(3, width, width)
            if block_stride != 1 or previous != width:
                conv_bn(1, previous, width)
            previous = width
    trainable += previous * num_classes + num_classes
    return trainable, trainable + non_trainable


def trainable_count(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def test_vgg19_parameter_count_matches_architecture():
    model = models.vgg19(input_shape=(32, 32, 3), num_classes=10)
    trainable, total = expected_vgg_params(VGG19_WIDTHS, 3, 10)
    assert trainable_count(model) == trainable
    assert model.count_params() == total
    # The well-known CIFAR VGG-19-BN count, minus its 5,504 conv biases.
    assert trainable == 20_040_522 - 5_504


def test_resnet18_parameter_count_matches_architecture():
    model = models.resnet18(input_shape=(32, 32, 3), num_classes=10)
    trainable, total = expected_resnet18_params(3, 10)
    assert trainable_count(model) == trainable
    assert model.count_params() == total
    # The well-known CIFAR ResNet-18 count.
    assert trainable == 11_173_962


def test_vgg_small_parameter_count_matches_architecture():
    model = models.vgg_small(input_shape=(28, 28, 1), num_classes=10)
    trainable, total = expected_vgg_params(VGG_SMALL_WIDTHS, 1, 10)
    assert trainable_count(model) == trainable
    assert model.count_params() == total


def test_vgg19_without_batch_norm_has_conv_biases_and_no_bn_layers():
    model = models.vgg19(batch_norm=False)
    layer_types = {type(layer).__name__ for layer in model.layers}
    assert "BatchNormalization" not in layer_types
    conv_params = sum(
        3 * 3 * cin * cout + cout
        for cin, cout in zip([3] + VGG19_WIDTHS[:-1], VGG19_WIDTHS)
    )
    assert model.count_params() == conv_params + 512 * 10 + 10


@pytest.mark.parametrize("multiplier", [0.25, 0.5])
def test_width_multiplier_scales_every_conv_width(multiplier):
    model = models.vgg19(width_multiplier=multiplier)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [conv.filters for conv in convs] == [
        max(1, round(width * multiplier)) for width in VGG19_WIDTHS
    ]
    trainable, _ = expected_vgg_params(
        [max(1, round(width * multiplier)) for width in VGG19_WIDTHS], 3, 10
    )
    assert trainable_count(model) == trainable


def test_width_multiplier_scales_resnet18_stages_and_shortcuts():
    model = models.resnet18(width_multiplier=0.5)
    assert model.get_layer("stem_conv").filters == 32
    assert model.get_layer("stage1_block1_conv1").filters == 32
    assert model.get_layer("stage4_block2_conv2").filters == 256
    assert model.get_layer("stage2_block1_shortcut_conv").filters == 64
    with pytest.raises(ValueError):
        model.get_layer("stage1_block1_shortcut_conv")


def test_tiny_width_multiplier_keeps_at_least_one_channel():
    model = models.vgg_small(width_multiplier=0.001)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert all(conv.filters == 1 for conv in convs)


@pytest.mark.parametrize("builder", [models.vgg19, models.resnet18, models.vgg_small])
def test_grayscale_28x28_input_gives_logits_of_num_classes(builder):
    model = builder(input_shape=(28, 28, 1), num_classes=7, width_multiplier=0.125)
    logits = model(np.zeros((2, 28, 28, 1), np.float32))
    assert tuple(logits.shape) == (2, 7)


def test_vgg19_skips_pools_once_spatial_size_is_one():
    model = models.vgg19(input_shape=(28, 28, 1), width_multiplier=0.125)
    pools = [layer.name for layer in model.layers if "pool" in layer.name]
    # 28 -> 14 -> 7 -> 3 -> 1: the fifth pool is skipped.
    assert pools == ["block1_pool", "block2_pool", "block3_pool", "block4_pool"]
    assert model.layers[-2].name == "flatten"


def test_vgg_small_uses_global_pooling_when_spatial_size_remains():
    model = models.vgg_small(input_shape=(32, 32, 3))
    assert model.layers[-2].name == "global_pool"
    assert model.get_layer("block3_relu2").output.shape[1:3] == (8, 8)


@pytest.mark.parametrize("builder", [models.vgg19, models.resnet18])
def test_forward_pass_outputs_logits_for_32x32_rgb(builder):
    model = builder(width_multiplier=0.125)
    images = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    logits = model(images)
    assert tuple(logits.shape) == (3, 10)
    assert np.all(np.isfinite(np.asarray(logits)))


def test_vgg_layers_are_conv_bn_relu_with_stable_names():
    model = models.vgg19(width_multiplier=0.125)
    names = [layer.name for layer in model.layers]
    start = names.index("block1_conv1")
    assert names[start : start + 4] == [
        "block1_conv1", "block1_bn1", "block1_relu1", "block1_conv2"
    ]
    assert not model.get_layer("block1_conv1").use_bias
    assert names[-1] == "logits"
    assert "block5_conv4" in names


def test_resnet18_blocks_add_shortcut_then_relu():
    model = models.resnet18(width_multiplier=0.125)
    add = model.get_layer("stage2_block1_add")
    inbound = {tensor._keras_history.operation.name for tensor in add.input}
    assert inbound == {"stage2_block1_bn2", "stage2_block1_shortcut_bn"}
    identity_add = model.get_layer("stage2_block2_add")
    inbound = {tensor._keras_history.operation.name for tensor in identity_add.input}
    assert inbound == {"stage2_block2_bn2", "stage2_block1_out_relu"}
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert model.get_layer("stage3_block1_conv1").strides == (2, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_shape": (32, 32)},
        {"input_shape": (0, 32, 3)},
        {"input_shape": "32x32"},
        {"num_classes": 0},
        {"num_classes": 2.5},
        {"width_multiplier": 0},
        {"width_multiplier": -1.0},
        {"width_multiplier": float("nan")},
        {"name": ""},
    ],
)
@pytest.mark.parametrize("builder", [models.vgg19, models.resnet18, models.vgg_small])
def test_invalid_arguments_raise_value_error_naming_argument(builder, kwargs):
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`"):
        builder(**kwargs)


def test_build_model_dispatches_by_name_and_rejects_unknown_names():
    model = models.build_model(
        "vgg_small", input_shape=(28, 28, 1), num_classes=3, width_multiplier=0.25
    )
    assert model.name == "vgg_small"
    assert model.output_shape == (None, 3)
    with pytest.raises(ValueError, match="resnet18"):
        models.build_model("alexnet")
