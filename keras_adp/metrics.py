"""Cost accounting for inference and training: parameters, MACs, FLOPs, energy.

All counts are analytic: they are derived from weight shapes and from the
tensor shapes recorded in the model's functional graph, never by running the
model. MACs and FLOPs are for ONE sample (the batch dimension is excluded).

Counting conventions, per layer call (`in_channels` is read from the call's
input shape, `out_positions` is the product of the output's spatial
dimensions, `in_positions` the product of the input's spatial dimensions;
`data_format` is respected):

- `Conv1D` / `Conv2D` / `Conv3D`:
  `out_positions * prod(kernel_size) * (in_channels / groups) * filters` MACs.
- `Conv1DTranspose` / `Conv2DTranspose` / `Conv3DTranspose`:
  `in_positions * prod(kernel_size) * in_channels * filters` MACs.
- `DepthwiseConv1D` / `DepthwiseConv2D`:
  `out_positions * prod(kernel_size) * in_channels * depth_multiplier` MACs.
- `SeparableConv1D` / `SeparableConv2D`: the depthwise part as above plus the
  pointwise part `out_positions * (in_channels * depth_multiplier) * filters`
  MACs.
- `Dense`: `prod(leading non-batch input dims) * in_features * units` MACs.
- `BatchNormalization` (at inference): 1 MAC per output element (the scale
  and shift are folded into one multiply-add).
- Pooling (`MaxPooling1D/2D/3D`, `AveragePooling1D/2D/3D`): 0 MACs;
  FLOPs = output elements * pool window size (`prod(pool_size)`).
- Global pooling (`GlobalMaxPooling1D/2D/3D`, `GlobalAveragePooling1D/2D/3D`):
  0 MACs; FLOPs = input elements.
- Merge layers (`Add`, `Subtract`, `Multiply`, `Average`, `Maximum`,
  `Minimum`): 0 MACs; FLOPs = `(n_inputs - 1) * output elements`.
- Everything else (activations, `Flatten`, `Dropout`, reshapes, non-layer
  operations such as `keras.ops.add` on symbolic tensors, ...): 0 MACs and
  0 FLOPs. Subclasses of the layers above are counted like their parent.

FLOPs = 2 * MACs + bias additions (the layer's output elements, when the
layer has `use_bias=True`) + the element operations listed above.

A layer's `params` is the number of scalars in its weights (trainable and
non-trainable), counted on its first call only: a shared layer called twice
yields two entries, the second with `params=0`. Functional and `Sequential`
models used as layers are recursed into; their inner layers are reported
with the sub-model's name as prefix, e.g. `"block/conv"`.

Training compute is estimated from the forward MACs: one training step costs
about 3x the forward MACs (the forward pass, the gradient with respect to the
activations and the gradient with respect to the weights); see
`training_macs()`. `energy_joules()` turns MACs into joules at 4.6 pJ per MAC,
a 32-bit floating point multiply (3.7 pJ) plus add (0.9 pJ) at 45 nm
(M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable

import keras

from keras_adp import graph as graph_lib

__all__ = [
    "Shape",
    "LayerCost",
    "Cost",
    "count_params",
    "layer_costs",
    "inference_cost",
    "training_macs",
    "energy_joules",
]

# A tensor shape, batch dimension first, e.g. `(None, 8, 8, 3)`.
Shape = tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Inference cost of one layer call, for one sample.

    Args:
        name: Layer name; inside nested sub-models it is prefixed with the
            sub-model names, e.g. `"block/conv"`.
        class_name: Class name of the layer, e.g. `"Conv2D"`.
        params: Number of weight scalars of the layer (trainable and
            non-trainable), or `0` when the layer was already counted at an
            earlier call.
        macs: Multiply-accumulates of this call for one sample.
        flops: Floating point operations of this call for one sample.
    """

    name: str
    class_name: str
    params: int
    macs: int
    flops: int


@dataclasses.dataclass(frozen=True)
class Cost:
    """Inference cost totals of a whole model, for one sample.

    Args:
        params: Number of weight scalars (trainable and non-trainable).
        macs: Multiply-accumulates of one forward pass of one sample.
        flops: Floating point operations of one forward pass of one sample.
    """

    params: int
    macs: int
    flops: int


def count_params(model: keras.Model) -> int:
    """Counts the scalars in all weights of a model.

    Trainable and non-trainable weights (e.g. batch-norm moving statistics)
    are both counted, each weight once even if reachable through several
    layers.

    Args:
        model: A built Keras model (or layer).

    Returns:
        The total number of weight scalars.
    """
    if not model.built:
        raise ValueError(
            "Expected a built model, so that its weight shapes are known. "
            f"Received: model={model.name!r} with built=False. Call "
            "`model.build(input_shape)` or create it from `keras.Input`."
        )
    return _weights_size(model.weights)


def layer_costs(model: keras.Model) -> list[LayerCost]:
    """Lists the inference cost of every layer call of a model.

    See the module docstring for the counting conventions.

    Args:
        model: A built Functional or `Sequential` Keras model with fixed
            (non-`None`) non-batch input dimensions.

    Returns:
        One `LayerCost` per layer call, in graph (topological) order. Nested
        Functional and `Sequential` sub-models are replaced by the calls of
        their inner layers.
    """
    costs = []
    counted_layers = set()
    for call in graph_lib.layer_calls(model):
        params = 0
        if id(call.layer) not in counted_layers:
            counted_layers.add(id(call.layer))
            params = _layer_params(call.layer)
        macs, additions = _call_counts(call)
        costs.append(
            LayerCost(
                name=call.path,
                class_name=type(call.layer).__name__,
                params=params,
                macs=macs,
                flops=2 * macs + additions,
            )
        )
    return costs


def inference_cost(model: keras.Model) -> Cost:
    """Totals the inference cost of a model for one sample.

    Args:
        model: A built Functional or `Sequential` Keras model with fixed
            (non-`None`) non-batch input dimensions.

    Returns:
        A `Cost` with `params` from `count_params(model)` and `macs` and
        `flops` summed over `layer_costs(model)`.
    """
    costs = layer_costs(model)
    return Cost(
        params=count_params(model),
        macs=sum(cost.macs for cost in costs),
        flops=sum(cost.flops for cost in costs),
    )


def training_macs(
    forward_macs: int, samples: int, *, backward_factor: float = 2.0
) -> float:
    """Estimates the MACs spent training on a number of samples.

    One training step costs about 3x the forward MACs: the forward pass, the
    gradient with respect to the activations and the gradient with respect to
    the weights, each roughly as expensive as the forward pass.

    Args:
        forward_macs: Forward MACs of one sample, e.g.
            `inference_cost(model).macs`. Must be >= 0.
        samples: Number of training samples processed (epochs times dataset
            size). Must be an integer >= 0.
        backward_factor: Cost of the backward pass relative to the forward
            pass. Must be >= 0. Defaults to `2.0`.

    Returns:
        `forward_macs * samples * (1 + backward_factor)`.
    """
    _validate_number("forward_macs", forward_macs)
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral):
        raise ValueError(
            "Expected `samples` to be an integer number of samples. "
            f"Received: samples={samples!r} of type {type(samples).__name__}."
        )
    _validate_number("samples", samples)
    _validate_number("backward_factor", backward_factor)
    return float(forward_macs) * int(samples) * (1.0 + backward_factor)


def energy_joules(macs: float, *, picojoules_per_mac: float = 4.6) -> float:
    """Converts a number of MACs into energy.

    The default of 4.6 pJ is a 32-bit floating point multiply-add at 45 nm
    (Horowitz, ISSCC 2014: 3.7 pJ multiply + 0.9 pJ add). Memory traffic is
    not included, so this is a lower bound on the energy spent.

    Args:
        macs: Number of multiply-accumulates. Must be >= 0.
        picojoules_per_mac: Energy of one multiply-accumulate in picojoules.
            Must be > 0. Defaults to `4.6`.

    Returns:
        The energy in joules.
    """
    _validate_number("macs", macs)
    _validate_number("picojoules_per_mac", picojoules_per_mac, positive=True)
    return float(macs) * picojoules_per_mac * 1e-12


def _validate_number(name: str, value: Any, *, positive: bool = False) -> None:
    """Raises a `ValueError` unless `value` is a finite real number >= 0.

    Args:
        name: Argument name, used in the error message.
        value: The value to check.
        positive: Whether `0` is rejected too. Defaults to `False`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"Expected `{name}` to be a real number. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    bound = "> 0" if positive else ">= 0"
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(
            f"Expected `{name}` to be a finite number {bound}. "
            f"Received: {name}={value!r}."
        )


def _weights_size(weights: list) -> int:
    """Number of scalars in `weights`, each distinct variable counted once."""
    unique_weights = {id(weight): weight for weight in weights}
    return sum(math.prod(weight.shape) for weight in unique_weights.values())


def _layer_params(layer: Any) -> int:
    """Weight scalars of a layer; `0` for non-layer operations (no weights)."""
    return _weights_size(getattr(layer, "weights", []))


# ---------------------------------------------------------------------------
# Per-layer counting. Each counter maps one call to `(macs, additions)`, where
# `additions` are the FLOPs on top of `2 * macs` (bias additions and element
# operations). Counters are looked up along the layer's MRO, so subclasses of
# a listed layer are counted like it.
# ---------------------------------------------------------------------------


def _known_size(shape: Shape, call: graph_lib.LayerCall) -> int:
    """Product of the non-batch dimensions of `shape`, which must be known."""
    if any(dim is None for dim in shape[1:]):
        raise ValueError(
            "Expected fixed (non-None) non-batch dimensions to count the cost "
            f"of layer {call.path!r} ({type(call.layer).__name__}). "
            f"Received: shape={shape}. Build the model on a fixed input "
            "shape, e.g. `keras.Input(shape=(32, 32, 3))`."
        )
    return math.prod(shape[1:])


def _channels_and_positions(
    shape: Shape, data_format: str, call: graph_lib.LayerCall
) -> tuple[int, int]:
    """Splits a shape into `(channels, product of spatial dimensions)`."""
    _known_size(shape, call)
    if data_format == "channels_last":
        return shape[-1], math.prod(shape[1:-1])
    return shape[1], math.prod(shape[2:])


def _in_channels_and_out_positions(
    call: graph_lib.LayerCall,
) -> tuple[int, int]:
    """Input channels and output positions of a convolution-like call."""
    data_format = call.layer.data_format
    in_channels, _ = _channels_and_positions(
        call.input_shapes[0], data_format, call
    )
    _, out_positions = _channels_and_positions(
        call.output_shapes[0], data_format, call
    )
    return in_channels, out_positions


def _bias_additions(call: graph_lib.LayerCall) -> int:
    if not getattr(call.layer, "use_bias", False):
        return 0
    return _known_size(call.output_shapes[0], call)


def _count_conv(call: graph_lib.LayerCall) -> tuple[int, int]:
    layer = call.layer
    in_channels, out_positions = _in_channels_and_out_positions(call)
    macs = (
        out_positions
        * math.prod(layer.kernel_size)
        * (in_channels // layer.groups)
        * layer.filters
    )
    return macs, _bias_additions(call)


def _count_conv_transpose(call: graph_lib.LayerCall) -> tuple[int, int]:
    layer = call.layer
    in_channels, in_positions = _channels_and_positions(
        call.input_shapes[0], layer.data_format, call
    )
    macs = (
        in_positions
        * math.prod(layer.kernel_size)
        * in_channels
        * layer.filters
    )
    return macs, _bias_additions(call)


def _depthwise_macs(call: graph_lib.LayerCall) -> tuple[int, int, int]:
    """Returns (depthwise MACs, in_channels, out_positions)."""
    layer = call.layer
    in_channels, out_positions = _in_channels_and_out_positions(call)
    macs = (
        out_positions
        * math.prod(layer.kernel_size)
        * in_channels
        * layer.depth_multiplier
    )
    return macs, in_channels, out_positions


def _count_depthwise_conv(call: graph_lib.LayerCall) -> tuple[int, int]:
    macs, _, _ = _depthwise_macs(call)
    return macs, _bias_additions(call)


def _count_separable_conv(call: graph_lib.LayerCall) -> tuple[int, int]:
    layer = call.layer
    depthwise, in_channels, out_positions = _depthwise_macs(call)
    pointwise = (
        out_positions * in_channels * layer.depth_multiplier * layer.filters
    )
    return depthwise + pointwise, _bias_additions(call)


def _count_dense(call: graph_lib.LayerCall) -> tuple[int, int]:
    input_size = _known_size(call.input_shapes[0], call)
    # prod(leading non-batch dims) * in_features == prod(non-batch dims).
    return input_size * call.layer.units, _bias_additions(call)


def _count_batch_normalization(call: graph_lib.LayerCall) -> tuple[int, int]:
    return _known_size(call.output_shapes[0], call), 0


def _count_pooling(call: graph_lib.LayerCall) -> tuple[int, int]:
    output_size = _known_size(call.output_shapes[0], call)
    return 0, output_size * math.prod(call.layer.pool_size)


def _count_global_pooling(call: graph_lib.LayerCall) -> tuple[int, int]:
    return 0, _known_size(call.input_shapes[0], call)


def _count_merge(call: graph_lib.LayerCall) -> tuple[int, int]:
    output_size = _known_size(call.output_shapes[0], call)
    return 0, (len(call.input_shapes) - 1) * output_size


_L = keras.layers
_COUNTERS: dict[type, Callable[[graph_lib.LayerCall], tuple[int, int]]] = {
    **dict.fromkeys((_L.Conv1D, _L.Conv2D, _L.Conv3D), _count_conv),
    **dict.fromkeys(
        (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose),
        _count_conv_transpose,
    ),
    **dict.fromkeys(
        (_L.DepthwiseConv1D, _L.DepthwiseConv2D), _count_depthwise_conv
    ),
    **dict.fromkeys(
        (_L.SeparableConv1D, _L.SeparableConv2D), _count_separable_conv
    ),
    _L.Dense: _count_dense,
    _L.BatchNormalization: _count_batch_normalization,
    **dict.fromkeys(
        (
            _L.MaxPooling1D,
            _L.MaxPooling2D,
            _L.MaxPooling3D,
            _L.AveragePooling1D,
            _L.AveragePooling2D,
            _L.AveragePooling3D,
        ),
        _count_pooling,
    ),
    **dict.fromkeys(
        (
            _L.GlobalMaxPooling1D,
            _L.GlobalMaxPooling2D,
            _L.GlobalMaxPooling3D,
            _L.GlobalAveragePooling1D,
            _L.GlobalAveragePooling2D,
            _L.GlobalAveragePooling3D,
        ),
        _count_global_pooling,
    ),
    **dict.fromkeys(
        (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum),
        _count_merge,
    ),
}
del _L


def _call_counts(call: graph_lib.LayerCall) -> tuple[int, int]:
    """Returns `(macs, additions)` of one call; `(0, 0)` for other layers."""
    for cls in type(call.layer).__mro__:
        counter = _COUNTERS.get(cls)
        if counter is not None:
            return counter(call)
    return 0, 0
