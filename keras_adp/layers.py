"""Per-layer-class handlers: how each Keras layer moves and slices channels.

Every supported layer class has one `Handler` in `REGISTRY`, keyed by the
class object itself (exact class: subclasses are not matched), so a misspelt
class fails at import. A handler has a `role` that tells the graph analysis
what the layer does to the channel axis, a `check` that rejects
configurations it cannot slice, and two pure functions used by the
rebuilder: `config` (the smaller layer's config) and `weights` (the retained
slices of the layer's weights, by variable name).

Operation classes of `keras.ops` (`keras.src.ops.numpy.Add`,
`keras.src.ops.nn.Relu6`, ...) have handlers in the same registry: Python
arithmetic on symbolic tensors and `keras.ops` calls become such nodes in a
functional graph. Layers and operations without a handler can still be
accepted by `infer_handler`, a behaviour-based permutation test.

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
import importlib
from typing import Any, Callable

import keras
import numpy as np
from keras import layers as keras_layers

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
        return (
            f"grouped convolution (groups={layer.groups}, filters="
            f"{layer.filters}, {in_shapes[0][-1]} input channels) is not "
            "supported; only groups == input channels == filters "
            "(depthwise-style) is"
        )
    return _channels_last(layer, in_shapes, out_shapes)


def _is_depthwise_style(layer) -> bool:
    """A grouped `Conv` with one input and one output channel per group."""
    groups = getattr(layer, "groups", 1)
    kernel = getattr(layer, "kernel", None)
    return (
        groups > 1
        and groups == layer.filters
        and kernel is not None
        and int(kernel.shape[-2]) == 1
    )


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


def _grouped_depthwise_weights(layer, weights, keep_in, keep_out) -> Weights:
    # Conv kernel with groups == channels: (*kernel_size, 1, channels).
    out = dict(weights)
    out["kernel"] = _take(weights["kernel"], keep_in, -1)
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], keep_in, 0)
    return out


def _grouped_depthwise_config(layer, config, keep_in, keep_out) -> dict:
    if keep_in is None:
        return config
    return dict(config, filters=int(len(keep_in)), groups=int(len(keep_in)))


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


def _register(classes: list[type], handler: Handler) -> None:
    """Map each class to `handler`. Classes, not names: a misspelt one fails
    at import instead of silently leaving the layer unsupported."""
    for cls in classes:
        REGISTRY[cls] = handler


_register(
    [keras_layers.Conv1D, keras_layers.Conv2D, keras_layers.Conv3D],
    _PRODUCER,
)
_register(
    [
        keras_layers.Conv1DTranspose, keras_layers.Conv2DTranspose,
        keras_layers.Conv3DTranspose,
    ],
    Handler(
        "producer", _conv_check, _filters_config("filters"),
        _conv_transpose_weights,
    ),
)
_register(
    [keras_layers.SeparableConv1D, keras_layers.SeparableConv2D],
    Handler(
        "producer", _conv_check, _filters_config("filters"), _separable_weights
    ),
)
_register(
    [keras_layers.Dense],
    Handler("producer", _no_check, _filters_config("units"), _conv_weights),
)
_register(
    [keras_layers.DepthwiseConv1D, keras_layers.DepthwiseConv2D],
    Handler(
        "channelwise", _depthwise_check, weights=_depthwise_weights,
        activation=fused_activation,
    ),
)
_register(
    [keras_layers.BatchNormalization, keras_layers.LayerNormalization],
    Handler("channelwise", _axis_check, weights=_per_channel_weights),
)
_register(
    [keras_layers.PReLU],
    Handler("channelwise", _prelu_check, weights=_prelu_weights,
            activation=_named("prelu")),
)
_register(
    [keras_layers.Normalization],
    Handler(
        "channelwise", _axis_check, _per_channel_config("mean", "variance"),
        _normalization_weights,
    ),
)
_register(
    [keras_layers.Rescaling],
    Handler("channelwise", _rescaling_check,
            _per_channel_config("scale", "offset")),
)
_register([keras_layers.ReLU], Handler("passthrough", activation=_relu_layer))
_register(
    [keras_layers.LeakyReLU],
    Handler("passthrough", activation=_named("leaky_relu")),
)
_register([keras_layers.ELU], Handler("passthrough", activation=_named("elu")))
_register(
    [keras_layers.Activation],
    Handler("passthrough", activation=_activation_layer),
)
_register([keras_layers.Softmax], Handler("passthrough", _softmax_check))
_register(
    [
        keras_layers.Dropout, keras_layers.GaussianNoise,
        keras_layers.GaussianDropout, keras_layers.AlphaDropout,
        keras_layers.ActivityRegularization, keras_layers.Identity,
        keras_layers.SpatialDropout1D,
    ],
    _PASS,
)
_register(
    [
        keras_layers.SpatialDropout2D, keras_layers.SpatialDropout3D,
        keras_layers.MaxPooling1D, keras_layers.MaxPooling2D,
        keras_layers.MaxPooling3D, keras_layers.AveragePooling1D,
        keras_layers.AveragePooling2D, keras_layers.AveragePooling3D,
        keras_layers.GlobalAveragePooling1D,
        keras_layers.GlobalAveragePooling2D,
        keras_layers.GlobalAveragePooling3D, keras_layers.GlobalMaxPooling1D,
        keras_layers.GlobalMaxPooling2D, keras_layers.GlobalMaxPooling3D,
        keras_layers.ZeroPadding1D, keras_layers.ZeroPadding2D,
        keras_layers.ZeroPadding3D, keras_layers.Cropping1D,
        keras_layers.Cropping2D, keras_layers.Cropping3D,
        keras_layers.UpSampling1D, keras_layers.UpSampling2D,
        keras_layers.UpSampling3D,
    ],
    _SPATIAL,
)
_register(
    [keras_layers.Reshape],
    Handler("reshape", _reshape_check, _reshape_config),
)
_register(
    [
        keras_layers.Add, keras_layers.Subtract, keras_layers.Multiply,
        keras_layers.Average, keras_layers.Maximum, keras_layers.Minimum,
    ],
    Handler("merge"),
)
_register([keras_layers.Concatenate], Handler("concat"))
_register([keras_layers.Flatten], Handler("flatten", _channels_last))


# Grouped `Conv` with groups == input channels == filters: a depthwise
# convolution written as `Conv*D(groups=channels)` (ConvNeXt).
GROUPED_DEPTHWISE = Handler(
    "channelwise",
    _channels_last,
    _grouped_depthwise_config,
    _grouped_depthwise_weights,
    fused_activation,
)


# --------------------------------------------- keras.ops operation nodes
# Python arithmetic and `keras.ops` calls on symbolic tensors become
# operation nodes (`keras.src.ops.*` classes, not layers). Constant operands
# are checked by the graph analysis (only scalars are accepted).
def _reduction_check(layer, in_shapes, out_shapes) -> str | None:
    rank = len(in_shapes[0])
    axis = getattr(layer, "axis", None)
    if axis is None:
        return "it reduces over every axis, the channel axis included"
    axes = [a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
    if rank - 1 in axes:
        return "it reduces over the channel (last) axis"
    return None


def _elementwise_check(layer, in_shapes, out_shapes) -> str | None:
    widths = [shape[-1] if shape else 1 for shape in in_shapes]
    width = max((w for w in widths if w is not None), default=None)
    if not out_shapes[0] or out_shapes[0][-1] != width:
        return (
            f"its output has {out_shapes[0][-1] if out_shapes[0] else 0} "
            f"channels, its inputs {widths}"
        )
    return None


_ELEMENTWISE_MERGE = Handler("merge", _elementwise_check)

# Operation classes that older Keras versions accepted by setup.py
# (keras>=3.3) may lack, by module and class name: registered when present.
# `tests/test_handlers.py` checks that each one resolves on the installed
# Keras, so a misspelt name fails there rather than disabling the handler.
_NEWER_KERAS_OPS: dict[tuple[str, str], Handler] = {
    ("keras.src.ops.numpy", "DivideNoNan"): _ELEMENTWISE_MERGE,
    ("keras.src.ops.nn", "Celu"): Handler(
        "passthrough", _elementwise_check, activation=_named("celu")
    ),
    ("keras.src.ops.nn", "HardTanh"): Handler(
        "passthrough", _elementwise_check, activation=_named("hard_tanh")
    ),
}


def _register_op_registry() -> None:
    from keras.src.ops import nn as ops_nn
    from keras.src.ops import numpy as ops_numpy

    _register(
        [ops_numpy.Add, ops_numpy.Subtract, ops_numpy.Multiply,
         ops_numpy.Divide, ops_numpy.TrueDivide, ops_numpy.Maximum,
         ops_numpy.Minimum, ops_numpy.Power],
        _ELEMENTWISE_MERGE,
    )
    _register(
        [ops_numpy.Abs, ops_numpy.Absolute, ops_numpy.Negative,
         ops_numpy.Square, ops_numpy.Sqrt, ops_numpy.Exp, ops_numpy.Log,
         ops_numpy.Log1p, ops_numpy.Expm1, ops_numpy.Tanh, ops_numpy.Clip,
         ops_numpy.Reciprocal, ops_numpy.Sign, ops_numpy.Floor,
         ops_numpy.Ceil, ops_numpy.Round, ops_numpy.Copy,
         ops_numpy.NanToNum],
        Handler("passthrough", _elementwise_check),
    )
    _register(
        [ops_numpy.Mean, ops_numpy.Sum, ops_numpy.Max, ops_numpy.Min,
         ops_numpy.Amax, ops_numpy.Amin, ops_numpy.Prod, ops_numpy.Var,
         ops_numpy.Std],
        Handler("passthrough", _reduction_check),
    )
    for cls, activation in [
        (ops_nn.Relu, "relu"), (ops_nn.Relu6, "relu6"),
        (ops_nn.LeakyRelu, "leaky_relu"), (ops_nn.Elu, "elu"),
        (ops_nn.Selu, "selu"), (ops_nn.Gelu, "gelu"),
        (ops_nn.Silu, "silu"), (ops_nn.HardSilu, "hard_silu"),
        (ops_nn.Sigmoid, "sigmoid"), (ops_nn.HardSigmoid, "hard_sigmoid"),
        (ops_nn.Softplus, "softplus"), (ops_nn.Softsign, "softsign"),
        (ops_nn.LogSigmoid, "log_sigmoid"),
    ]:
        _register(
            [cls],
            Handler("passthrough", _elementwise_check,
                    activation=_named(activation)),
        )
    for (module, name), handler in _NEWER_KERAS_OPS.items():
        cls = getattr(importlib.import_module(module), name, None)
        if cls is not None:
            _register([cls], handler)


_register_op_registry()


# ------------------------------- per-channel layers of keras.applications
def _count_config(key: str) -> Callable:
    """Set config entry `key` (a channel count) to the kept count."""

    def config(layer, config, keep_in, keep_out):
        if keep_in is None:
            return config
        return dict(config, **{key: int(len(keep_in))})

    return config


def _register_applications() -> None:
    from keras.src.applications import convnext, inception_resnet_v2

    # `x * gamma`, gamma of shape (projection_dim,).
    _register(
        [convnext.LayerScale],
        Handler(
            "channelwise", weights=_per_channel_weights,
            config=_count_config("projection_dim"),
        ),
    )
    # `inputs[0] + inputs[1] * scale`, scale a Python float.
    _register([inception_resnet_v2.CustomScaleLayer], Handler("merge"))


_register_applications()


def handler_for(layer: Any) -> Handler | None:
    """The handler for `layer`'s exact class, or None when unsupported.

    Subclasses of supported layers are not matched: their `call` may do
    anything with the channels. A grouped `Conv1D/2D/3D` whose groups equal
    its input channels and filters gets the depthwise handler.
    """
    handler = REGISTRY.get(type(layer))
    if handler is _PRODUCER and _is_depthwise_style(layer):
        return GROUPED_DEPTHWISE
    return handler


def supported_layers() -> list[str]:
    """Names of the layer classes keras_adp can analyse and slice."""
    return sorted(
        {cls.__name__ for cls in REGISTRY
         if issubclass(cls, keras.layers.Layer)}
    )


def supported_ops() -> list[str]:
    """Names of the `keras.ops` operations (symbolic-tensor arithmetic and
    `keras.ops.*` calls in a functional graph) keras_adp can analyse."""
    return sorted(
        {cls.__name__ for cls in REGISTRY
         if not issubclass(cls, keras.layers.Layer)}
    )


# ------------------------------------------- behaviour-based permutation rule
@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether an unknown layer or operation was found to be channel-wise.

    Attributes:
        handler: the handler to analyse and slice it with, or None.
        reason: why it was refused (`""` when accepted).
    """

    handler: Handler | None
    reason: str


_VERDICTS: dict[Any, Verdict] = {}


def infer_handler(node: Any) -> Verdict:
    """Decide from behaviour whether a node's operation is channel-wise.

    The layer (or `keras.ops` operation) called at `node` is accepted when,
    on random inputs shaped like the node's (unknown sizes set to 3):

    1. permuting the channels (last axis) of every input that has the
       output's channel count, and every weight axis of that size alongside,
       permutes the output's channels the same way; and
    2. a copy built for a random subset of the channels (weights sliced on
       that axis, and integer config entries equal to the channel count
       set to the subset's size where needed) computes exactly those
       channels of the original output.

    Weights with more than one axis of the channel count are refused. The
    verdict is cached per class, configuration and input shapes. An
    accepted layer is sliced with its group like a known per-channel layer.

    Args:
        node: a Keras graph node of an unregistered operation, single
            output.

    Returns:
        A `Verdict`: the inferred `Handler`, or None and why not.
    """
    operation = node.operation
    in_shapes = tuple(tuple(x.shape) for x in node.input_tensors)
    out_shapes = tuple(tuple(x.shape) for x in node.outputs)
    try:
        key = (type(operation), _config_key(operation, node), in_shapes)
        hash(key)
    except Exception:  # Unhashable or unserialisable config: no caching.
        key = None
    if key is not None and key in _VERDICTS:
        return _VERDICTS[key]
    try:
        verdict = _infer(node, operation, in_shapes, out_shapes)
    except Exception as error:  # Anything the layer raises is a refusal.
        verdict = Verdict(
            None,
            "the permutation test could not run it "
            f"({type(error).__name__}: {str(error).splitlines()[0][:120]})",
        )
    if key is not None:
        _VERDICTS[key] = verdict
    return verdict


def _config_key(operation, node) -> str:
    if isinstance(operation, keras.layers.Layer):
        config = operation.get_config()
        config.pop("name", None)
        return repr(sorted(config.items()))
    state = {
        name: value for name, value in vars(operation).items()
        if not name.startswith("_") and name != "name"
    }
    constants = [
        value
        for value in keras.tree.flatten(
            (node.arguments.args, node.arguments.kwargs)
        )
        if not isinstance(value, keras.KerasTensor)
    ]
    return repr((sorted(state.items()), constants))


def _concrete(shape: tuple, rng: np.random.Generator) -> np.ndarray:
    shape = (2,) + tuple(3 if dim is None else int(dim) for dim in shape[1:])
    return rng.standard_normal(shape).astype("float32")


def _run(operation, node, values: list):
    tensors = {id(ref): value for ref, value in zip(node.input_tensors, values)}
    args, kwargs = node.arguments.fill_in(tensors)
    return np.asarray(keras.ops.convert_to_numpy(operation(*args, **kwargs)))


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(1.0, float(np.max(np.abs(a))) if a.size else 1.0)
    return a.shape == b.shape and bool(
        np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    )


def _infer(node, operation, in_shapes, out_shapes) -> Verdict:
    if len(out_shapes) != 1 or not out_shapes[0] or not in_shapes:
        return Verdict(None, "it does not have one tensor output and inputs")
    channels = out_shapes[0][-1]
    if channels is None or channels < 2:
        return Verdict(None, "its output has no fixed channel axis")
    widths = [shape[-1] if shape else None for shape in in_shapes]
    if channels not in widths or any(w not in (channels, 1) for w in widths):
        return Verdict(
            None,
            f"its inputs' channel counts {widths} do not all equal the "
            f"output's {channels} (or 1)",
        )
    if any(x.dtype not in ("float16", "bfloat16", "float32", "float64")
           for x in node.input_tensors):
        return Verdict(None, "its inputs are not floating-point")
    is_layer = isinstance(operation, keras.layers.Layer)
    weights = {w.name: np.asarray(w.numpy()) for w in operation.weights} \
        if is_layer else {}
    if is_layer and len(weights) != len(operation.weights):
        return Verdict(None, "its weights do not have distinct names")
    axes = {}
    for name, value in weights.items():
        found = [axis for axis, dim in enumerate(value.shape) if dim == channels]
        if len(found) > 1:
            return Verdict(
                None,
                f"weight '{name}' of shape {value.shape} has several axes of "
                f"the channel count {channels}",
            )
        axes[name] = found[0] if found else None
    rng = np.random.default_rng(0)
    values = [_concrete(shape, rng) for shape in in_shapes]
    reference = _run(operation, node, values)
    if not _close(reference, _run(operation, node, values)):
        return Verdict(None, "its output is not deterministic")

    def channel_take(arrays, index):
        return [
            np.take(v, index, axis=-1) if v.shape[-1] == channels else v
            for v in arrays
        ]

    def sliced_weights(index):
        return {
            name: value if axes[name] is None
            else np.take(value, index, axis=axes[name])
            for name, value in weights.items()
        }

    def copy_with(config, index):
        """Run a copy of the layer built for channels `index`."""
        inputs = channel_take(values, index)
        if not is_layer:
            return _run(operation, node, inputs)
        copy = type(operation).from_config(config)
        tensors = {id(r): v for r, v in zip(node.input_tensors, inputs)}
        args, kwargs = node.arguments.fill_in(tensors)
        copy(*args, **kwargs)  # Build.
        new = sliced_weights(index)
        copy.set_weights([new[w.name] for w in operation.weights])
        return np.asarray(keras.ops.convert_to_numpy(copy(*args, **kwargs)))

    config = operation.get_config() if is_layer else None
    # A random permutation may commute with what the layer does to the
    # channels (e.g. reversing them); a rotation by one also checked.
    for permutation in (rng.permutation(channels), np.roll(np.arange(channels), 1)):
        try:
            permuted = copy_with(config, permutation)
        except Exception as error:
            return Verdict(
                None,
                f"a copy with permuted weights failed ({type(error).__name__})",
            )
        if not _close(np.take(reference, permutation, axis=-1), permuted):
            return Verdict(
                None,
                "permuting its input channels does not permute its output "
                "channels the same way",
            )
    keep = np.sort(rng.choice(channels, size=max(1, channels // 2),
                              replace=False))
    resize_keys: tuple[str, ...] = ()
    candidates = [()]
    if is_layer:
        candidates.append(tuple(
            key for key, value in config.items()
            if isinstance(value, int) and not isinstance(value, bool)
            and value == channels
        ))
    for resize_keys in candidates:
        config_k = dict(config or {}, **{k: int(len(keep)) for k in resize_keys})
        try:
            sliced = copy_with(config_k if is_layer else None, keep)
        except Exception:
            continue
        if _close(np.take(reference, keep, axis=-1), sliced):
            break
    else:
        return Verdict(
            None,
            "a copy keeping a subset of the channels does not compute those "
            "channels of the output (it mixes channels, e.g. normalises over "
            "them)",
        )
    return Verdict(_inferred_handler(axes, resize_keys, len(in_shapes), weights),
                   "")


def _inferred_handler(axes, resize_keys, inputs, weights) -> Handler:
    def config(layer, config, keep_in, keep_out):
        keep = keep_out if keep_out is not None else keep_in
        if keep is None:
            return config
        return dict(config, **{key: int(len(keep)) for key in resize_keys})

    def sliced(layer, weights, keep_in, keep_out):
        keep = keep_out if keep_out is not None else keep_in
        if keep is None:
            return dict(weights)
        return {
            name: value if axes.get(name) is None
            else np.take(value, keep, axis=axes[name])
            for name, value in weights.items()
        }

    if inputs > 1:
        role = "merge"
    elif any(axis is not None for axis in axes.values()):
        role = "channelwise"
    else:
        role = "passthrough"
    return Handler(role, config=config, weights=sliced)
