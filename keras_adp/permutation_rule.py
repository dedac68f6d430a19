"""The permutation rule: accept unknown channel-wise layers by behaviour.

A layer or `keras.ops` operation without a registered handler
(`keras_adp.layers.REGISTRY`) can still be pruned through when it treats
channels one by one. `infer_handler` decides that by running it: on random
inputs, permuting the channels must permute its output the same way, and a
copy built for a subset of the channels must compute exactly those channels
of the output. An accepted operation gets a handler that slices its weights
along the axis of the channel count, like a known per-channel layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_adp.layers import Handler

__all__ = ["Verdict", "infer_handler"]


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
        verdict = _infer(node, in_shapes, out_shapes)
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


def _shape_refusal(node, in_shapes, out_shapes) -> str | None:
    """Why the node's tensors cannot be channel-wise, or None."""
    if len(out_shapes) != 1 or not out_shapes[0] or not in_shapes:
        return "it does not have one tensor output and inputs"
    channels = out_shapes[0][-1]
    if channels is None or channels < 2:
        return "its output has no fixed channel axis"
    widths = [shape[-1] if shape else None for shape in in_shapes]
    if channels not in widths or any(w not in (channels, 1) for w in widths):
        return (
            f"its inputs' channel counts {widths} do not all equal the "
            f"output's {channels} (or 1)"
        )
    if any(x.dtype not in ("float16", "bfloat16", "float32", "float64")
           for x in node.input_tensors):
        return "its inputs are not floating-point"
    return None


def _channel_axes(
    weights: dict[str, np.ndarray], channels: int
) -> tuple[dict[str, int | None], str | None]:
    """Each weight's axis of size `channels` (None if it has none), or why
    not: a weight with several such axes is ambiguous."""
    axes = {}
    for name, value in weights.items():
        found = [axis for axis, dim in enumerate(value.shape) if dim == channels]
        if len(found) > 1:
            return axes, (
                f"weight '{name}' of shape {value.shape} has several axes of "
                f"the channel count {channels}"
            )
        axes[name] = found[0] if found else None
    return axes, None


@dataclasses.dataclass
class _Trial:
    """One node's operation run on fixed random inputs, and copies of it
    built for chosen channels (a permutation or a subset)."""

    node: Any
    channels: int
    values: list
    weights: dict[str, np.ndarray]
    axes: dict[str, int | None]

    @property
    def operation(self) -> Any:
        return self.node.operation

    @property
    def is_layer(self) -> bool:
        return isinstance(self.operation, keras.layers.Layer)

    def reference(self) -> np.ndarray:
        return _run(self.operation, self.node, self.values)

    def _channel_take(self, index) -> list:
        return [
            np.take(v, index, axis=-1) if v.shape[-1] == self.channels else v
            for v in self.values
        ]

    def _sliced_weights(self, index) -> dict[str, np.ndarray]:
        return {
            name: value if self.axes[name] is None
            else np.take(value, index, axis=self.axes[name])
            for name, value in self.weights.items()
        }

    def copy_output(self, config: dict | None, index) -> np.ndarray:
        """The output of a copy built from `config` for channels `index`
        (for an operation, the operation itself on those channels)."""
        inputs = self._channel_take(index)
        if not self.is_layer:
            return _run(self.operation, self.node, inputs)
        copy = type(self.operation).from_config(config)
        tensors = {id(r): v for r, v in zip(self.node.input_tensors, inputs)}
        args, kwargs = self.node.arguments.fill_in(tensors)
        copy(*args, **kwargs)  # Build.
        new = self._sliced_weights(index)
        copy.set_weights([new[w.name] for w in self.operation.weights])
        return np.asarray(keras.ops.convert_to_numpy(copy(*args, **kwargs)))


def _permutation_refusal(trial, config, reference, rng) -> str | None:
    """Why permuting the channels does not permute the output, or None."""
    channels = trial.channels
    # A random permutation may commute with what the layer does to the
    # channels (e.g. reversing them); a rotation by one also checked.
    for permutation in (rng.permutation(channels),
                        np.roll(np.arange(channels), 1)):
        try:
            permuted = trial.copy_output(config, permutation)
        except Exception as error:
            return (
                f"a copy with permuted weights failed ({type(error).__name__})"
            )
        if not _close(np.take(reference, permutation, axis=-1), permuted):
            return (
                "permuting its input channels does not permute its output "
                "channels the same way"
            )
    return None


def _subset_resize_keys(trial, config, reference, rng) -> tuple | None:
    """Config keys to set to the kept count for a copy keeping a random
    subset of the channels to compute those channels of the output (`()`
    when none need to), or None when no such copy does."""
    channels = trial.channels
    keep = np.sort(rng.choice(channels, size=max(1, channels // 2),
                              replace=False))
    candidates = [()]
    if trial.is_layer:
        candidates.append(tuple(
            key for key, value in config.items()
            if isinstance(value, int) and not isinstance(value, bool)
            and value == channels
        ))
    for resize_keys in candidates:
        resized = {key: int(len(keep)) for key in resize_keys}
        config_k = dict(config, **resized) if trial.is_layer else None
        try:
            sliced = trial.copy_output(config_k, keep)
        except Exception:
            continue
        if _close(np.take(reference, keep, axis=-1), sliced):
            return resize_keys
    return None


def _infer(node, in_shapes, out_shapes) -> Verdict:
    refusal = _shape_refusal(node, in_shapes, out_shapes)
    if refusal is not None:
        return Verdict(None, refusal)
    channels = out_shapes[0][-1]
    operation = node.operation
    is_layer = isinstance(operation, keras.layers.Layer)
    weights = {w.name: np.asarray(w.numpy()) for w in operation.weights} \
        if is_layer else {}
    if is_layer and len(weights) != len(operation.weights):
        return Verdict(None, "its weights do not have distinct names")
    axes, refusal = _channel_axes(weights, channels)
    if refusal is not None:
        return Verdict(None, refusal)
    rng = np.random.default_rng(0)
    values = [_concrete(shape, rng) for shape in in_shapes]
    trial = _Trial(node, channels, values, weights, axes)
    reference = trial.reference()
    if not _close(reference, trial.reference()):
        return Verdict(None, "its output is not deterministic")
    config = operation.get_config() if is_layer else None
    refusal = _permutation_refusal(trial, config, reference, rng)
    if refusal is not None:
        return Verdict(None, refusal)
    resize_keys = _subset_resize_keys(trial, config, reference, rng)
    if resize_keys is None:
        return Verdict(
            None,
            "a copy keeping a subset of the channels does not compute those "
            "channels of the output (it mixes channels, e.g. normalises over "
            "them)",
        )
    return Verdict(_inferred_handler(axes, resize_keys, len(in_shapes)), "")


def _inferred_handler(axes, resize_keys, inputs: int) -> Handler:
    """A handler slicing each weight on its channel axis (`axes`) and
    setting the config entries `resize_keys` to the kept count."""

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
