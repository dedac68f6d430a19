"""Per-layer-class handlers: how each Keras layer moves and slices channels.

Every supported layer class has one `Handler` in `REGISTRY`. A handler has a
`role` that tells the graph analysis what the layer does to the channel axis,
a `check` that rejects configurations it cannot slice, and two pure functions
used by the rebuilder: `config` (the smaller layer's config) and `weights`
(the retained slices of the layer's weights, by variable name).

Roles:
    producer: defines new output channels and consumes input channels
        (Conv*, Conv*Transpose, SeparableConv*, Dense).
    channelwise: keeps channels one-to-one and owns per-channel state that is
        sliced with the group (BatchNormalization, DepthwiseConv with
        `depth_multiplier=1`, PReLU, LayerNormalization, Normalization,
        per-channel Rescaling).
    passthrough: keeps channels one-to-one, no per-channel state
        (activations, pooling, dropout and noise, padding, cropping,
        upsampling, global pooling).
    reshape: a `Reshape` that leaves the channel axis last and unchanged.
    merge: element-wise merge; its inputs share channels (Add, Subtract,
        Multiply, Average, Maximum, Minimum).
    concat: `Concatenate`.
    flatten: `Flatten`.

`keep_in` and `keep_out` below are sorted `np.ndarray`s of surviving indices
of the layer's input and output channel axes, or `None` when all survive.

LayerNormalization normalises over the channel axis, so slicing it changes
the statistics it computes: the pruned layer normalises over the kept
channels only. Its outputs on kept channels are therefore not identical
before and after pruning (every other supported layer's are). It is sliced
anyway, because pruning during training retrains afterwards.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import keras
import numpy as np

Weights = dict[str, np.ndarray]



def _take(array: np.ndarray, keep: np.ndarray | None, axis: int) -> np.ndarray:
    return array if keep is None else np.take(array, keep, axis=axis)


def _no_check(layer, in_shapes, out_shapes) -> str | None:
    return None


def _same_config(layer, config, keep_in, keep_out) -> dict:
    return config


def _same_weights(layer, weights, keep_in, keep_out) -> Weights:
    return weights


def _no_activation(layer) -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class Handler:
    """How one layer class is analysed and sliced."""

    role: str
    check: Callable[[Any, list, list], str | None] = _no_check
    config: Callable[[Any, dict, Any, Any], dict] = _same_config
    weights: Callable[[Any, Weights, Any, Any], Weights] = _same_weights
    activation: Callable[[Any], str | None] = _no_activation


# --------------------------------------------------------------- activations
def activation_name(fn: Any) -> str | None:
    """Name of a Keras activation function or string, None if linear."""
    if fn is None:
        return None
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
    return None if name in ("linear", "identity") else name


def fused_activation(layer: Any) -> str | None:
    """The nonlinearity a producer applies through its `activation=`."""
    return activation_name(getattr(layer, "activation", None))


def _activation_layer(layer) -> str | None:
    return activation_name(layer.activation)


def _relu_layer(layer) -> str | None:
    return "relu6" if getattr(layer, "max_value", None) == 6 else "relu"


def _named(name: str) -> Callable[[Any], str]:
    return lambda layer: name


# ----------------------------------------------------------------- checks
def _channels_last(layer, in_shapes, out_shapes) -> str | None:
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format not in (None, "channels_last"):
        return (
            f"data_format='{data_format}' is not supported (only "
            "'channels_last')"
        )
    return None


def _conv_check(layer, in_shapes, out_shapes) -> str | None:
    if getattr(layer, "groups", 1) != 1:
        return f"grouped convolution (groups={layer.groups}) is not supported"
    return _channels_last(layer, in_shapes, out_shapes)


def _depthwise_check(layer, in_shapes, out_shapes) -> str | None:
    if layer.depth_multiplier != 1:
        return (
            f"depth_multiplier={layer.depth_multiplier} is not supported "
            "(only 1, which keeps channels one-to-one)"
        )
    return _channels_last(layer, in_shapes, out_shapes)


def _last_axis(axis: Any, rank: int) -> bool:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return [a % rank for a in axes] == [rank - 1]


def _axis_check(layer, in_shapes, out_shapes) -> str | None:
    rank = len(in_shapes[0])
    if not _last_axis(layer.axis, rank):
        return (
            f"axis={layer.axis} is not the channel (last) axis of its "
            f"{rank}-D input"
        )
    return None


def _prelu_check(layer, in_shapes, out_shapes) -> str | None:
    return None


def _rescaling_check(layer, in_shapes, out_shapes) -> str | None:
    channels = in_shapes[0][-1]
    for value in (layer.scale, layer.offset):
        size = np.size(value)
        if size not in (1, channels):
            return f"scale/offset of shape {np.shape(value)} is not per-channel"
    return None


def _reshape_check(layer, in_shapes, out_shapes) -> str | None:
    if in_shapes[0][-1] != out_shapes[0][-1]:
        return (
            "it changes the channel (last) axis from "
            f"{in_shapes[0][-1]} to {out_shapes[0][-1]}"
        )
    return None


def _spatial_passthrough_check(layer, in_shapes, out_shapes) -> str | None:
    return _channels_last(layer, in_shapes, out_shapes)


def _softmax_check(layer, in_shapes, out_shapes) -> str | None:
    if _last_axis(layer.axis, len(in_shapes[0])):
        return "it normalises across channels"
    return None


# ---------------------------------------------------------- producer slicing
def _filters_config(key: str) -> Callable:
    def config(layer, config, keep_in, keep_out):
        if keep_out is not None:
            config = dict(config, **{key: int(len(keep_out))})
        return config

    return config


def _conv_weights(layer, weights, keep_in, keep_out) -> Weights:
    # Conv kernel: (*kernel_size, in, out); Dense kernel: (in, out).
    out = dict(weights)
    out["kernel"] = _take(_take(weights["kernel"], keep_in, -2), keep_out, -1)
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], keep_out, 0)
    return out


def _conv_transpose_weights(layer, weights, keep_in, keep_out) -> Weights:
    # Transposed conv kernel: (*kernel_size, out, in).
    out = dict(weights)
    out["kernel"] = _take(_take(weights["kernel"], keep_in, -1), keep_out, -2)
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], keep_out, 0)
    return out


def _separable_weights(layer, weights, keep_in, keep_out) -> Weights:
    # depthwise (*k, in, mult); pointwise (*1, in * mult, out), index c*mult+m.
    out = dict(weights)
    mult = weights["depthwise_kernel"].shape[-1]
    out["depthwise_kernel"] = _take(weights["depthwise_kernel"], keep_in, -2)
    keep_mid = None
    if keep_in is not None:
        keep_mid = (keep_in[:, None] * mult + np.arange(mult)[None, :]).ravel()
    out["pointwise_kernel"] = _take(
        _take(weights["pointwise_kernel"], keep_mid, -2), keep_out, -1
    )
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], keep_out, 0)
    return out


# -------------------------------------------------------- channelwise slicing
def _per_channel_weights(layer, weights, keep_in, keep_out) -> Weights:
    """Slice every weight whose last axis is the channel axis."""
    out = {}
    for name, value in weights.items():
        if np.ndim(value) >= 1 and keep_in is not None:
            out[name] = _take(value, keep_in, -1 if np.ndim(value) > 1 else 0)
        else:
            out[name] = value
    return out


def _depthwise_weights(layer, weights, keep_in, keep_out) -> Weights:
    out = dict(weights)
    out["kernel"] = _take(weights["kernel"], keep_in, -2)
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], keep_in, 0)
    return out


def _prelu_weights(layer, weights, keep_in, keep_out) -> Weights:
    alpha = weights["alpha"]
    if alpha.shape[-1] == 1:  # channel axis shared
        return dict(weights)
    return {"alpha": _take(alpha, keep_in, -1)}


def _normalization_weights(layer, weights, keep_in, keep_out) -> Weights:
    out = dict(weights)
    for name in ("mean", "variance"):
        if name in weights and np.ndim(weights[name]) >= 1:
            out[name] = _take(weights[name], keep_in, -1)
    return out


def _per_channel_config(*keys: str) -> Callable:
    """Slice config entries that hold one value per channel."""

    def config(layer, config, keep_in, keep_out):
        if keep_in is None:
            return config
        config = dict(config)
        for key in keys:
            value = config.get(key)
            if value is not None and np.size(value) > 1:
                config[key] = np.take(
                    np.asarray(value), keep_in, axis=-1
                ).tolist()
        return config

    return config


def _reshape_config(layer, config, keep_in, keep_out) -> dict:
    if keep_in is None:
        return config
    target = list(config["target_shape"])
    target[-1] = int(len(keep_in))
    return dict(config, target_shape=tuple(target))


# ------------------------------------------------------------------ registry
_PRODUCER = Handler(
    "producer", _conv_check, _filters_config("filters"), _conv_weights
)
_PASS = Handler("passthrough")
_SPATIAL = Handler("passthrough", _spatial_passthrough_check)

REGISTRY: dict[type, Handler] = {}


def _register(names: list[str], handler: Handler) -> None:
    for name in names:
        cls = getattr(keras.layers, name, None)
        if cls is not None:
            REGISTRY[cls] = handler


_register(["Conv1D", "Conv2D", "Conv3D"], _PRODUCER)
_register(
    ["Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"],
    Handler(
        "producer", _conv_check, _filters_config("filters"),
        _conv_transpose_weights,
    ),
)
_register(
    ["SeparableConv1D", "SeparableConv2D"],
    Handler(
        "producer", _conv_check, _filters_config("filters"), _separable_weights
    ),
)
_register(
    ["Dense"],
    Handler("producer", _no_check, _filters_config("units"), _conv_weights),
)
_register(
    ["DepthwiseConv1D", "DepthwiseConv2D"],
    Handler(
        "channelwise", _depthwise_check, weights=_depthwise_weights,
        activation=fused_activation,
    ),
)
_register(
    ["BatchNormalization", "LayerNormalization"],
    Handler("channelwise", _axis_check, weights=_per_channel_weights),
)
_register(
    ["PReLU"],
    Handler("channelwise", _prelu_check, weights=_prelu_weights,
            activation=_named("prelu")),
)
_register(
    ["Normalization"],
    Handler(
        "channelwise", _axis_check, _per_channel_config("mean", "variance"),
        _normalization_weights,
    ),
)
_register(
    ["Rescaling"],
    Handler("channelwise", _rescaling_check,
            _per_channel_config("scale", "offset")),
)
_register(["ReLU"], Handler("passthrough", activation=_relu_layer))
_register(["LeakyReLU"], Handler("passthrough", activation=_named("leaky_relu")))
_register(["ELU"], Handler("passthrough", activation=_named("elu")))
_register(["Activation"], Handler("passthrough", activation=_activation_layer))
_register(["Softmax"], Handler("passthrough", _softmax_check))
_register(
    [
        "Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "Identity", "SpatialDropout1D",
    ],
    _PASS,
)
_register(
    [
        "SpatialDropout2D", "SpatialDropout3D",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
        "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D",
        "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D",
    ],
    _SPATIAL,
)
_register(["Reshape"], Handler("reshape", _reshape_check, _reshape_config))
_register(
    ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"],
    Handler("merge"),
)
_register(["Concatenate"], Handler("concat"))
_register(["Flatten"], Handler("flatten", _channels_last))


def handler_for(layer: Any) -> Handler | None:
    """The handler for `layer`'s exact class, or None when unsupported.

    Subclasses of supported layers are not matched: their `call` may do
    anything with the channels.
    """
    return REGISTRY.get(type(layer))


def supported_layers() -> list[str]:
    """Names of the layer classes keras_adp can analyse and slice."""
    return sorted({cls.__name__ for cls in REGISTRY})
