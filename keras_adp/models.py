"""Reference image classifiers for activation-density driven pruning.

Functional Keras 3 models, channels_last, that output logits (no softmax;
train with `from_logits=True`). Every convolution is followed by its own
`BatchNormalization` and `ReLU` layers (`Conv2D(use_bias=False)` ->
`BatchNormalization` -> `ReLU`), so that the activation density of each
channel can be read at the `ReLU` output and a channel can be removed from
the convolution, its batch normalization and its consumers.

- `vgg19`: the CIFAR variant of VGG-19 with batch normalization (16
  convolutions, one `Dense` classifier), as used in the paper.
- `resnet18`: the CIFAR variant of ResNet-18 (3x3 stem, no stem max-pool).
- `vgg_small`: a six-convolution VGG-style model for quick CPU runs.

Layer names are stable and meaningful: `block{b}_conv{i}`, `block{b}_bn{i}`,
`block{b}_relu{i}` and `block{b}_pool` for VGG models; `stem_conv`,
`stage{s}_block{k}_conv{i}`, `stage{s}_block{k}_bn{i}`,
`stage{s}_block{k}_relu{i}`, `stage{s}_block{k}_shortcut_conv`,
`stage{s}_block{k}_shortcut_bn`, `stage{s}_block{k}_add` and
`stage{s}_block{k}_out_relu` for ResNet-18; `global_pool` (or `flatten`) and
`logits` for the heads.

Example:

```python
from keras_adp import models

model = models.vgg19(input_shape=(32, 32, 3), num_classes=10)
tiny = models.vgg_small(input_shape=(28, 28, 1), width_multiplier=0.5)
```
"""

from __future__ import annotations

import math
import numbers

import keras

VGG19_CFG = (
    *(64, 64, "M"),
    *(128, 128, "M"),
    *(256, 256, 256, 256, "M"),
    *(512, 512, 512, 512, "M"),
    *(512, 512, 512, 512, "M"),
)
VGG_SMALL_CFG = (32, 32, "M", 64, 64, "M", 128, 128, "M")
RESNET18_STAGES = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))

_KERNEL_INITIALIZER = "he_normal"


def vgg19(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    width_multiplier: float = 1.0,
    *,
    batch_norm: bool = True,
    name: str = "vgg19",
) -> keras.Model:
    """Builds the CIFAR VGG-19 (with batch normalization).

    Configuration `[64, 64, M, 128, 128, M, 256 x4, M, 512 x4, M, 512 x4, M]`:
    each number is a 3x3 "same" convolution followed by batch normalization
    and ReLU, each `M` a 2x2 max-pool. A max-pool is only added while both
    spatial dimensions are >= 2, so small inputs work: a 28x28 input is
    pooled to 14, 7, 3 and 1, and the fifth pool is skipped. The head is
    global average pooling (a `Flatten` when the final feature map is 1x1,
    e.g. for 32x32 inputs) followed by `Dense(num_classes)` logits.

    Args:
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        num_classes: Number of output logits. Defaults to `10`.
        width_multiplier: Factor applied to every convolution width (rounded,
            at least 1). Defaults to `1.0`.
        batch_norm: Whether each convolution is followed by batch
            normalization. Without it, convolutions have biases. Defaults to
            `True`.
        name: Model name. Defaults to `"vgg19"`.

    Returns:
        An uncompiled functional `keras.Model` mapping float32 images of
        shape `(batch, *input_shape)` to logits of shape
        `(batch, num_classes)`.
    """
    return _vgg(
        VGG19_CFG, input_shape, num_classes, width_multiplier, batch_norm, name
    )


def vgg_small(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    width_multiplier: float = 1.0,
    *,
    batch_norm: bool = True,
    name: str = "vgg_small",
) -> keras.Model:
    """Builds a small VGG-style model for quick CPU runs.

    Configuration `[32, 32, M, 64, 64, M, 128, 128, M]` with the same layer
    pattern, pooling rule and head as `vgg19` (about 0.29M parameters at
    width 1.0).

    Args:
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        num_classes: Number of output logits. Defaults to `10`.
        width_multiplier: Factor applied to every convolution width (rounded,
            at least 1). Defaults to `1.0`.
        batch_norm: Whether each convolution is followed by batch
            normalization. Defaults to `True`.
        name: Model name. Defaults to `"vgg_small"`.

    Returns:
        An uncompiled functional `keras.Model` producing logits.
    """
    return _vgg(
        VGG_SMALL_CFG, input_shape, num_classes, width_multiplier, batch_norm, name
    )


def resnet18(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    width_multiplier: float = 1.0,
    name: str = "resnet18",
) -> keras.Model:
    """Builds the CIFAR ResNet-18.

    A 3x3 stride-1 stem convolution (64 channels, no max-pool), then four
    stages of two BasicBlocks with widths 64, 128, 256 and 512 (the first
    block of stages 2-4 has stride 2). A BasicBlock is conv3x3-BN-ReLU,
    conv3x3-BN, added to the shortcut, then ReLU. The shortcut is the
    identity, or a 1x1 convolution with batch normalization when the stride
    or the width changes. The head is global average pooling and
    `Dense(num_classes)` logits.

    Args:
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        num_classes: Number of output logits. Defaults to `10`.
        width_multiplier: Factor applied to every convolution width (rounded,
            at least 1). Defaults to `1.0`.
        name: Model name. Defaults to `"resnet18"`.

    Returns:
        An uncompiled functional `keras.Model` producing logits.
    """
    input_shape = _validate_args(input_shape, num_classes, width_multiplier, name)
    inputs = keras.Input(shape=input_shape, name="input")
    stem_width = scaled_width(64, width_multiplier)
    x = _conv_bn_relu(inputs, stem_width, 1, "stem_conv", "stem_bn", "stem_relu")
    in_width = stem_width
    for stage_index, (base_width, num_blocks, first_stride) in enumerate(
        RESNET18_STAGES, start=1
    ):
        width = scaled_width(base_width, width_multiplier)
        for block_index in range(1, num_blocks + 1):
            stride = first_stride if block_index == 1 else 1
            prefix = f"stage{stage_index}_block{block_index}"
            x = _basic_block(x, in_width, width, stride, prefix)
            in_width = width
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def build_model(
    name: str,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    width_multiplier: float = 1.0,
) -> keras.Model:
    """Builds a reference model by name.

    Args:
        name: One of "vgg19", "resnet18", "vgg_small".
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        num_classes: Number of output logits. Defaults to `10`.
        width_multiplier: Factor applied to every convolution width.
            Defaults to `1.0`.

    Returns:
        An uncompiled functional `keras.Model` producing logits.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(
            f"Unknown model name. Expected one of {sorted(MODEL_BUILDERS)}. "
            f"Received: name={name!r}"
        )
    return MODEL_BUILDERS[name](
        input_shape=input_shape,
        num_classes=num_classes,
        width_multiplier=width_multiplier,
    )


def scaled_width(width: int, width_multiplier: float) -> int:
    """Returns `round(width * width_multiplier)`, at least 1.

    Args:
        width: The width at multiplier 1.0.
        width_multiplier: The scaling factor.

    Returns:
        The scaled number of channels.
    """
    return max(1, int(round(width * width_multiplier)))


MODEL_BUILDERS = {"vgg19": vgg19, "resnet18": resnet18, "vgg_small": vgg_small}


def _vgg(cfg, input_shape, num_classes, width_multiplier, batch_norm, name):
    input_shape = _validate_args(input_shape, num_classes, width_multiplier, name)
    if not isinstance(batch_norm, bool):
        raise ValueError(
            "Expected `batch_norm` to be True or False. Received: "
            f"batch_norm={batch_norm!r}"
        )
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    height, width = input_shape[:2]
    block_index, conv_index = 1, 0
    for entry in cfg:
        if entry == "M":
            if min(height, width) >= 2:
                x = keras.layers.MaxPooling2D(2, name=f"block{block_index}_pool")(x)
                height, width = height // 2, width // 2
            block_index, conv_index = block_index + 1, 0
            continue
        conv_index += 1
        prefix = f"block{block_index}"
        filters = scaled_width(entry, width_multiplier)
        if batch_norm:
            x = _conv_bn_relu(
                x,
                filters,
                1,
                f"{prefix}_conv{conv_index}",
                f"{prefix}_bn{conv_index}",
                f"{prefix}_relu{conv_index}",
            )
        else:
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                kernel_initializer=_KERNEL_INITIALIZER,
                name=f"{prefix}_conv{conv_index}",
            )(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu{conv_index}")(x)
    if height == 1 and width == 1:
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv_bn_relu(x, filters, strides, conv_name, bn_name, relu_name):
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=_KERNEL_INITIALIZER,
        name=conv_name,
    )(x)
    x = keras.layers.BatchNormalization(name=bn_name)(x)
    return keras.layers.ReLU(name=relu_name)(x)


def _basic_block(x, in_width, width, stride, prefix):
    shortcut = x
    y = _conv_bn_relu(
        x, width, stride, f"{prefix}_conv1", f"{prefix}_bn1", f"{prefix}_relu1"
    )
    y = keras.layers.Conv2D(
        width,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=_KERNEL_INITIALIZER,
        name=f"{prefix}_conv2",
    )(y)
    y = keras.layers.BatchNormalization(name=f"{prefix}_bn2")(y)
    if stride != 1 or in_width != width:
        shortcut = keras.layers.Conv2D(
            width,
            1,
            strides=stride,
            use_bias=False,
            kernel_initializer=_KERNEL_INITIALIZER,
            name=f"{prefix}_shortcut_conv",
        )(x)
        shortcut = keras.layers.BatchNormalization(name=f"{prefix}_shortcut_bn")(
            shortcut
        )
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out_relu")(y)


def _validate_args(input_shape, num_classes, width_multiplier, name):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) != 3
        or not all(
            isinstance(dim, numbers.Integral) and not isinstance(dim, bool) and dim >= 1
            for dim in shape
        )
    ):
        raise ValueError(
            "Expected `input_shape` to be a tuple of 3 positive integers "
            "(height, width, channels), channels last. Received: "
            f"input_shape={input_shape!r}. For grayscale 28x28 images pass "
            "input_shape=(28, 28, 1)."
        )
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise ValueError(
            "Expected `num_classes` to be an integer >= 1. Received: "
            f"num_classes={num_classes!r}"
        )
    if (
        isinstance(width_multiplier, bool)
        or not isinstance(width_multiplier, numbers.Real)
        or not math.isfinite(width_multiplier)
        or width_multiplier <= 0
    ):
        raise ValueError(
            "Expected `width_multiplier` to be a finite number > 0. Received: "
            f"width_multiplier={width_multiplier!r}"
        )
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"Expected `name` to be a non-empty string. Received: name={name!r}"
        )
    return tuple(int(dim) for dim in shape)
