"""Small hand-built models covering the graph patterns keras_adp supports.

Each factory builds a fresh model with random (seeded) weights, including
non-trivial BatchNormalization statistics, so that output comparisons are
meaningful.
"""

import keras
import numpy as np

L = keras.layers


def randomize_batchnorm(model, seed=0):
    """Give every BatchNormalization non-trivial gamma/beta/mean/variance."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, w.shape).astype("float32")
                    if w.name in ("gamma", "moving_variance")
                    else rng.normal(0, 0.2, w.shape).astype("float32")
                    for w in layer.weights
                ]
            )
    return model


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def conv_bn_relu(x, filters, name, stride=1, kernel=3):
    x = L.Conv2D(filters, kernel, strides=stride, padding="same",
                 use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def vgg(input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = conv_bn_relu(inputs, 8, "b1c1")
    x = conv_bn_relu(x, 8, "b1c2")
    x = L.MaxPooling2D(name="pool1")(x)
    x = conv_bn_relu(x, 12, "b2c1")
    x = L.Dropout(0.1, name="drop")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(10, activation="relu", name="fc1")(x)
    outputs = L.Dense(3, name="logits")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="vgg"))


def resnet_basic(input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = conv_bn_relu(inputs, 8, "stem")
    # Identity shortcut.
    y = conv_bn_relu(x, 6, "b1c1")
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="b1c2_conv")(y)
    y = L.BatchNormalization(name="b1c2_bn")(y)
    x = L.ReLU(name="b1_out")(L.Add(name="b1_add")([x, y]))
    # Projection shortcut with stride.
    y = conv_bn_relu(x, 10, "b2c1", stride=2)
    y = L.Conv2D(12, 3, padding="same", use_bias=False, name="b2c2_conv")(y)
    y = L.BatchNormalization(name="b2c2_bn")(y)
    s = L.Conv2D(12, 1, strides=2, use_bias=False, name="b2_proj")(x)
    s = L.BatchNormalization(name="b2_proj_bn")(s)
    x = L.ReLU(name="b2_out")(L.Add(name="b2_add")([s, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(3, name="logits")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="resnet"))


def resnet_bottleneck(input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = conv_bn_relu(inputs, 16, "stem")
    for block, (width, stride, project) in enumerate(
        [(4, 1, False), (6, 2, True)]
    ):
        name = f"bott{block}"
        out_width = 16 if not project else 24
        y = conv_bn_relu(x, width, f"{name}a", kernel=1)
        y = conv_bn_relu(y, width, f"{name}b", stride=stride)
        y = L.Conv2D(out_width, 1, use_bias=False, name=f"{name}c_conv")(y)
        y = L.BatchNormalization(name=f"{name}c_bn")(y)
        if project:
            s = L.Conv2D(out_width, 1, strides=stride, name=f"{name}_proj")(x)
        else:
            s = x
        x = L.Activation("relu", name=f"{name}_out")(L.Add()([s, y]))
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    outputs = L.Dense(3, name="logits")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="bottleneck"))


def mobilenet_v2_block(input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.ReLU(6.0, name="stem_relu6")(x)
    for block in range(2):
        name = f"ir{block}"
        y = L.Conv2D(16, 1, name=f"{name}_expand")(x)
        y = L.BatchNormalization(name=f"{name}_expand_bn")(y)
        y = L.ReLU(6.0, name=f"{name}_expand_relu")(y)
        y = L.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(y)
        y = L.BatchNormalization(name=f"{name}_dw_bn")(y)
        y = L.ReLU(6.0, name=f"{name}_dw_relu")(y)
        y = L.Conv2D(8, 1, name=f"{name}_project")(y)
        y = L.BatchNormalization(name=f"{name}_project_bn")(y)
        x = L.Add(name=f"{name}_add")([x, y])
    x = L.Conv2D(12, 1, activation="relu6", name="last")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(3, name="logits")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="mbv2"))


def densenet_block(input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = L.Conv2D(6, 3, padding="same", name="stem")(inputs)
    for layer in range(3):
        y = L.BatchNormalization(name=f"d{layer}_bn")(x)
        y = L.ReLU(name=f"d{layer}_relu")(y)
        y = L.Conv2D(4, 3, padding="same", name=f"d{layer}_conv")(y)
        x = L.Concatenate(name=f"d{layer}_cat")([x, y])
    x = L.BatchNormalization(name="trans_bn")(x)
    x = L.Conv2D(8, 1, name="trans_conv")(x)
    x = L.AveragePooling2D(2, name="trans_pool")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(3, name="logits")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="densenet"))


def se_block(input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = conv_bn_relu(inputs, 12, "c1")
    s = L.GlobalAveragePooling2D(name="se_squeeze")(x)
    s = L.Dense(4, activation="relu", name="se_reduce")(s)
    s = L.Dense(12, activation="sigmoid", name="se_expand")(s)
    s = L.Reshape((1, 1, 12), name="se_reshape")(s)
    x = L.Multiply(name="se_scale")([x, s])
    # Keepdims variant broadcasting a (1, 1, C) map.
    t = L.GlobalAveragePooling2D(keepdims=True, name="se2_squeeze")(x)
    t = L.Conv2D(12, 1, activation="sigmoid", name="se2_expand")(t)
    x = L.Multiply(name="se2_scale")([x, t])
    x = conv_bn_relu(x, 8, "c2")
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(3, name="logits")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="se"))


def flatten_dense(input_shape=(8, 8, 2)):
    inputs = keras.Input(input_shape)
    x = L.Conv2D(6, 3, activation="relu", name="c1")(inputs)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(7, activation="relu", name="fc1")(x)
    x = L.Dropout(0.2)(x)
    outputs = L.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="flatten_dense")


def sequential(input_shape=(12, 12, 3)):
    return randomize_batchnorm(
        keras.Sequential(
            [
                keras.Input(input_shape),
                L.Conv2D(6, 3, name="c1"),
                L.BatchNormalization(name="bn1"),
                L.Activation("relu", name="act1"),
                L.SeparableConv2D(8, 3, depth_multiplier=2, name="sep"),
                L.PReLU(name="prelu"),
                L.ZeroPadding2D(1, name="pad"),
                L.Conv2DTranspose(5, 3, strides=2, name="deconv"),
                L.LeakyReLU(name="leaky"),
                L.Cropping2D(1, name="crop"),
                L.UpSampling2D(name="up"),
                L.GlobalAveragePooling2D(name="gap"),
                L.Dense(3, name="logits"),
            ],
            name="seq",
        )
    )


def nested_and_shared(input_shape=(12, 12, 3)):
    inner_in = keras.Input((12, 12, 6))
    y = L.Conv2D(6, 3, padding="same", name="inner_conv")(inner_in)
    y = L.BatchNormalization(name="inner_bn")(y)
    y = L.ReLU(name="inner_relu")(y)
    inner = keras.Model(inner_in, y, name="inner")
    inputs = keras.Input(input_shape)
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="outer_conv")(
        inputs
    )
    x = inner(x)
    shared = L.Conv2D(5, 3, padding="same", activation="elu", name="shared")
    a = shared(x)
    b = shared(L.Conv2D(6, 1, name="side")(x))
    x = L.Maximum(name="max")([a, b])
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(3, name="logits")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="nested"))


def conv1d_and_3d():
    inputs = keras.Input((16, 3))
    x = L.Conv1D(6, 3, activation="gelu", name="c1d")(inputs)
    x = L.DepthwiseConv1D(3, name="dw1d")(x)
    x = L.LayerNormalization(name="ln")(x)
    x = L.SeparableConv1D(5, 3, activation="swish", name="sep1d")(x)
    x = L.GlobalMaxPooling1D()(x)
    outputs = L.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs, name="conv1d")


FACTORIES = {
    "vgg": vgg,
    "resnet_basic": resnet_basic,
    "resnet_bottleneck": resnet_bottleneck,
    "mobilenet_v2_block": mobilenet_v2_block,
    "densenet_block": densenet_block,
    "se_block": se_block,
    "flatten_dense": flatten_dense,
    "sequential": sequential,
    "nested_and_shared": nested_and_shared,
}
