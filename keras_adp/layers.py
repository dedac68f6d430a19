"""Per-layer-class handlers: how each Keras layer moves and slices channels.

Every supported layer class has one `Handler` in `REGISTRY`, keyed by the
class object itself (exact class: subclasses are not matched), so a misspelt
class fails at import. A handler has a `role` that tells the graph analysis
what the layer does to the channel axis, a `check` that rejects
configurations it cannot slice, and two pure functions used by the
rebuilder: `config` (the smaller layer's config) and `weights` (the retained
slices of the layer's weights, by variable name). A producer's handler also
declares which weight holds its output channels, and on which axis
(`output_weight`, `output_axis`): channel scores read it there.

Operation classes of `keras.ops` (`keras.src.ops.numpy.Add`,
`keras.src.ops.nn.Relu6`, ...) have handlers in the same registry: Python
arithmetic on symbolic tensors and `keras.ops` calls become such nodes in a
functional graph. Layers and operations without a handler can still be
accepted by `keras_adp.permutation_rule.infer_handler`, a behaviour-based
permutation test. The slicing functions themselves are in
`keras_adp.slicing`.

Roles:
    producer: defines new output channels and consumes input channels
        (Conv*, Conv*Transpose, SeparableConv*, Dense). A grouped `Conv*`
        (`1 < groups < channels`) declares `blocks`: its input and output
        channels are pruned in equal shares per group
        (`keras_adp.channel_blocks`).
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
    split: `keras.ops.split` / `array_split`: on another axis every output
        keeps the input's channels; on the channel axis the outputs are
        equal contiguous sections (`keras_adp.channel_sections`).

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
from keras import layers as keras_layers

from keras_adp import keras_graph
from keras_adp import slicing
from keras_adp.slicing import Weights

__all__ = [
    "Handler",
    "REGISTRY",
    "GROUPED_CONV",
    "GROUPED_DEPTHWISE",
    "ROLES",
    "activation_name",
    "fused_activation",
    "handler_for",
    "split_sections",
    "supported_layers",
    "supported_ops",
]

ROLES = (
    "producer", "channelwise", "passthrough", "reshape", "merge", "concat",
    "flatten", "split",
)


def _no_check(layer, in_shapes, out_shapes) -> str | None:
    return None


def _no_activation(layer) -> str | None:
    return None


def _one_block(layer) -> int:
    return 1


@dataclasses.dataclass(frozen=True)
class Handler:
    """How one layer class is analysed and sliced.

    Attributes:
        role: what the layer does to the channel axis (one of `ROLES`, see
            the module docs).
        check: `(layer, input_shapes, output_shapes)` -> why this
            configuration cannot be sliced, or None.
        config: `(layer, config, keep_in, keep_out)` -> the smaller
            layer's config (`keras_adp.slicing`).
        weights: `(layer, weights, keep_in, keep_out)` -> the retained
            slices of the layer's weights, by variable name.
        activation: `(layer)` -> the nonlinearity the layer applies, or
            None.
        output_weight: for a producer, the name of the weight whose axis
            `output_axis` holds the layer's output channels (its filters);
            what channel scores (`keras_adp.scoring`) are computed from.
        output_axis: that axis, counted from the end when negative.
        blocks: for a producer, `(layer)` -> the number of equal contiguous
            blocks its input and its output channels are cut into, each of
            which a pruning must leave with the same number of channels
            (a grouped convolution's `groups`); 1 for most layers.
    """

    role: str
    check: Callable[[Any, list, list], str | None] = _no_check
    config: Callable[[Any, dict, Any, Any], dict] = slicing.same_config
    weights: Callable[[Any, Weights, Any, Any], Weights] = slicing.same_weights
    activation: Callable[[Any], str | None] = _no_activation
    output_weight: str | None = None
    output_axis: int | None = None
    blocks: Callable[[Any], int] = _one_block

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(
                f"Expected a handler role among {ROLES}. "
                f"Received: role={self.role!r}"
            )
        declared = {
            self.output_weight is not None, self.output_axis is not None
        }
        if declared != {self.role == "producer"}:
            raise ValueError(
                "Expected `output_weight` and `output_axis` to be given for a "
                "producer handler and only for one. Received: "
                f"role={self.role!r}, output_weight={self.output_weight!r}, "
                f"output_axis={self.output_axis!r}"
            )


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
        # Conv1D/2D/3D get the grouped handlers (`handler_for`).
        return (
            f"grouped convolution (groups={layer.groups}) is not supported "
            f"for {type(layer).__name__}"
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


# ------------------------------------------------------------------ registry
_PRODUCER = Handler(
    "producer", _conv_check, slicing.filters_config("filters"),
    slicing.conv_weights, output_weight="kernel", output_axis=-1,
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
        "producer", _conv_check, slicing.filters_config("filters"),
        slicing.conv_transpose_weights, output_weight="kernel",
        output_axis=-2,
    ),
)
_register(
    [keras_layers.SeparableConv1D, keras_layers.SeparableConv2D],
    Handler(
        "producer", _conv_check, slicing.filters_config("filters"),
        slicing.separable_weights, output_weight="pointwise_kernel",
        output_axis=-1,
    ),
)
_register(
    [keras_layers.Dense],
    Handler(
        "producer", _no_check, slicing.filters_config("units"),
        slicing.conv_weights, output_weight="kernel", output_axis=-1,
    ),
)
_register(
    [keras_layers.DepthwiseConv1D, keras_layers.DepthwiseConv2D],
    Handler(
        "channelwise", _depthwise_check, weights=slicing.depthwise_weights,
        activation=fused_activation,
    ),
)
_register(
    [keras_layers.BatchNormalization, keras_layers.LayerNormalization],
    Handler("channelwise", _axis_check, weights=slicing.per_channel_weights),
)
_register(
    [keras_layers.PReLU],
    Handler("channelwise", _prelu_check, weights=slicing.prelu_weights,
            activation=_named("prelu")),
)
_register(
    [keras_layers.Normalization],
    Handler(
        "channelwise", _axis_check,
        slicing.per_channel_config("mean", "variance"),
        slicing.normalization_weights,
    ),
)
_register(
    [keras_layers.Rescaling],
    Handler("channelwise", _rescaling_check,
            slicing.per_channel_config("scale", "offset")),
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
    Handler("reshape", _reshape_check, slicing.reshape_config),
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
    slicing.grouped_depthwise_config,
    slicing.grouped_depthwise_weights,
    fused_activation,
)

# Any other grouped `Conv` (`groups > 1`): a producer whose input and output
# channels are pruned in equal shares per group (RegNet, ResNeXt).
GROUPED_CONV = Handler(
    "producer", _channels_last, slicing.filters_config("filters"),
    slicing.grouped_conv_weights, output_weight="kernel", output_axis=-1,
    blocks=lambda layer: int(layer.groups),
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


def split_sections(layer, rank: int) -> int | None:
    """The number of sections an `ops.split`/`array_split` node cuts the
    channel (last) axis into, or None when it splits another axis."""
    if layer.axis % rank != rank - 1:
        return None
    sections = layer.indices_or_sections
    return sections if isinstance(sections, int) else len(sections) + 1


def _split_check(layer, in_shapes, out_shapes) -> str | None:
    rank = len(in_shapes[0])
    if split_sections(layer, rank) is None:
        return None
    sections = layer.indices_or_sections
    if not isinstance(sections, int):
        return (
            f"it splits the channel axis at the explicit indices "
            f"{list(sections)}, which stay where they are when channels are "
            "removed; split into an integer number of equal sections instead"
        )
    widths = [shape[-1] for shape in out_shapes]
    if len(set(widths)) != 1:
        return (
            f"it splits the channel axis into unequal sections {widths}; "
            "only equal sections stay equal when channels are removed"
        )
    return None


_SPLIT = Handler("split", _split_check)

# Operation classes that older Keras versions accepted by setup.py
# (keras>=3.3) may lack, by `keras.src.ops` module and class name:
# registered when present.
# `tests/test_handlers.py` checks that each one resolves on the installed
# Keras, so a misspelt name fails there rather than disabling the handler.
_NEWER_KERAS_OPS: dict[tuple[str, str], Handler] = {
    ("numpy", "DivideNoNan"): _ELEMENTWISE_MERGE,
    ("numpy", "ArraySplit"): _SPLIT,
    ("nn", "Celu"): Handler(
        "passthrough", _elementwise_check, activation=_named("celu")
    ),
    ("nn", "HardTanh"): Handler(
        "passthrough", _elementwise_check, activation=_named("hard_tanh")
    ),
}


def _register_op_registry() -> None:
    ops_nn = keras_graph.keras_ops_module("nn")
    ops_numpy = keras_graph.keras_ops_module("numpy")

    _register(
        [ops_numpy.Add, ops_numpy.Subtract, ops_numpy.Multiply,
         ops_numpy.Divide, ops_numpy.TrueDivide, ops_numpy.Maximum,
         ops_numpy.Minimum, ops_numpy.Power],
        _ELEMENTWISE_MERGE,
    )
    _register([ops_numpy.Split], _SPLIT)
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
        cls = keras_graph.keras_op_class(module, name)
        if cls is not None:
            _register([cls], handler)


_register_op_registry()


# ------------------------------- per-channel layers of keras.applications
def _register_applications() -> None:
    convnext = keras_graph.keras_applications_module("convnext")
    inception_resnet_v2 = keras_graph.keras_applications_module(
        "inception_resnet_v2"
    )

    # `x * gamma`, gamma of shape (projection_dim,).
    _register(
        [convnext.LayerScale],
        Handler(
            "channelwise", weights=slicing.per_channel_weights,
            config=slicing.count_config("projection_dim"),
        ),
    )
    # `inputs[0] + inputs[1] * scale`, scale a Python float.
    _register([inception_resnet_v2.CustomScaleLayer], Handler("merge"))


_register_applications()


def handler_for(layer: Any) -> Handler | None:
    """The handler for `layer`'s exact class, or None when unsupported.

    Subclasses of supported layers are not matched: their `call` may do
    anything with the channels. A grouped `Conv1D/2D/3D` whose groups equal
    its input channels and filters gets the depthwise handler, any other
    grouped one `GROUPED_CONV`.
    """
    handler = REGISTRY.get(type(layer))
    if handler is _PRODUCER and getattr(layer, "groups", 1) > 1:
        return GROUPED_DEPTHWISE if _is_depthwise_style(layer) else GROUPED_CONV
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
