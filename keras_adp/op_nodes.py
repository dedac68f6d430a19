"""What the channel analysis reads from `keras.ops` operation nodes.

Python arithmetic on symbolic tensors (`x + 3.0`, `x * y`) and `keras.ops`
calls (`keras.ops.relu6(x)`) become operation nodes in a functional graph.
Their handlers are in `keras_adp.layers`; this module adds what a handler
cannot see from one node alone: whether a constant operand could hold one
value per channel (`constant_operand`), whether a product is a self-gated
activation such as swish (`self_gate`), and by how much an input is
shifted before an activation (`shift_of`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_adp import keras_graph
from keras_adp.layers import activation_name

__all__ = ["constant_operand", "operation_kind", "self_gate", "shift_of"]


def operation_kind(operation: Any) -> str:
    """`"layer"` for a Keras layer, `"operation"` for a `keras.ops` node."""
    return "layer" if isinstance(operation, keras.layers.Layer) else "operation"


def constant_operand(node: Any) -> str | None:
    """Why a `keras.ops` node cannot be sliced because of a constant operand.

    Python arithmetic on symbolic tensors records its constants in the node
    (`x + 3.0`); a scalar broadcasts over any number of channels, but an
    array constant of several values may hold one per channel, which the
    rebuild cannot slice.
    """
    if isinstance(node.operation, keras.layers.Layer):
        return None
    for value in keras_graph.flat_arguments(node):
        if isinstance(value, keras.KerasTensor) or value is None:
            continue
        if hasattr(value, "shape") and int(np.size(value)) > 1:
            return (
                f"a constant operand of shape {tuple(np.shape(value))} may "
                "hold one value per channel, which cannot be sliced; write "
                "it as a layer with a weight instead"
            )
    return None


def _scalar_operand(node: Any) -> float | None:
    for value in keras_graph.flat_arguments(node):
        if isinstance(value, (int, float, np.number)) and not isinstance(
            value, bool
        ):
            return float(value)
    return None


def _strip_positive_factor(found: tuple | None) -> tuple | None:
    """Follow `* c` and `/ c` by a positive constant `c` back to the
    (operation, node) of their input."""
    ops_numpy = keras_graph.keras_ops_module("numpy")

    while found and isinstance(
        found[0], (ops_numpy.Multiply, ops_numpy.Divide, ops_numpy.TrueDivide)
    ) and len(found[1].input_tensors) == 1 and (
        _scalar_operand(found[1]) or 0
    ) > 0:
        found = keras_graph.producer_of(found[1].input_tensors[0])
    return found


def _is_relu6(operation: Any) -> bool:
    ops_nn = keras_graph.keras_ops_module("nn")

    return isinstance(operation, ops_nn.Relu6) or (
        isinstance(operation, keras.layers.ReLU)
        and operation.max_value == 6
        and not operation.negative_slope
        and not operation.threshold
    )


def _gate_of(x: Any, gate: Any) -> str | None:
    """The activation `x * gate` computes when `gate` is a sigmoid-like
    function of `x` (up to a positive constant factor), else None."""
    ops_nn = keras_graph.keras_ops_module("nn")
    ops_numpy = keras_graph.keras_ops_module("numpy")

    found = _strip_positive_factor(keras_graph.producer_of(gate))
    if not found:
        return None
    operation, gate_node = found
    inputs = list(gate_node.input_tensors)
    if len(inputs) != 1:
        return None
    name = (
        activation_name(operation.activation)
        if isinstance(operation, keras.layers.Activation) else None
    )
    if inputs[0] is x and (
        isinstance(operation, ops_nn.Sigmoid) or name == "sigmoid"
    ):
        return "silu"
    if inputs[0] is x and (
        isinstance(operation, ops_nn.HardSigmoid) or name == "hard_sigmoid"
    ):
        return "hard_swish"
    shifted = keras_graph.producer_of(inputs[0])
    if _is_relu6(operation) and shifted and isinstance(
        shifted[0], ops_numpy.Add
    ) and (
        len(shifted[1].input_tensors) == 1
        and shifted[1].input_tensors[0] is x
        and _scalar_operand(shifted[1]) == 3.0
    ):
        return "hard_swish"
    return None


def self_gate(node: Any) -> str | None:
    """The activation `x * gate(x)` computes, for a two-input product.

    Recognises swish (`x * sigmoid(x)`) and hard-swish (`x *
    hard_sigmoid(x)`, `x * relu6(x + 3) / 6`), written with layers or
    `keras.ops` (MobileNetV3's `x * ReLU(6.)(x + 3.) * (1. / 6.)`). Their
    output is positive exactly where `x` is, like a ReLU's.
    """
    ops_numpy = keras_graph.keras_ops_module("numpy")

    operation = node.operation
    if not isinstance(operation, (ops_numpy.Multiply, keras.layers.Multiply)):
        return None
    tensors = list(node.input_tensors)
    if len(tensors) != 2:
        return None
    for x, gate in (tensors, tensors[::-1]):
        gated = _gate_of(x, gate)
        if gated is not None:
            return gated
    return None


def shift_of(tensor: Any) -> float:
    """The constant `c` when `tensor` is `x + c` or `x - c`, else 0."""
    ops_numpy = keras_graph.keras_ops_module("numpy")

    found = keras_graph.producer_of(tensor)
    if not found:
        return 0.0
    operation, node = found
    if not isinstance(operation, (ops_numpy.Add, ops_numpy.Subtract)):
        return 0.0
    for value in keras_graph.flat_arguments(node):
        if isinstance(value, (int, float, np.number)) and value != 0:
            return float(value)
    return 0.0
