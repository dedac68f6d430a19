"""Activation density: the fraction of a layer's activations that fire.

Definition. For a channel group measured at tensor `a` (the output of its
nonlinearity, see `ChannelGroup.measured_at`), an activation *fires* when it
is strictly greater than `threshold` (default `0.0`). The group's density is

    density = (# fired activations) / (# activations)

over all samples, spatial positions and the group's channels; the per-channel
density is the same ratio for each channel. For ReLU, ReLU6 and PReLU/
LeakyReLU with a zero negative slope, "fires" is exactly "is non-zero". For
nonlinearities that are never exactly zero (GELU, swish/SiLU, ELU, SELU,
mish, LeakyReLU), `> 0` counts the activations on their positive branch,
i.e. whose pre-activation is positive; their small negative tail counts as
silent. Saturating activations that are positive everywhere (sigmoid,
softplus, tanh, ...) carry no such signal: groups measured only there get no
density.

Measurement runs through auxiliary outputs: a *probe* model that shares the
user's layers and, for each group, outputs the per-sample, per-channel count
of fired activations, reduced over spatial positions inside the graph. The
host only receives `(batch, channels)` counts, never activation maps. The
probe runs in inference mode (`predict`), under the model's distribution
strategy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_adp import graph as graph_lib

GATING_ACTIVATIONS = frozenset(
    {"relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu",
     "swish", "hard_silu", "hard_swish", "mish", "celu"}
)


@dataclasses.dataclass(frozen=True)
class Density:
    """Activation density of one channel group.

    Attributes:
        layer: fraction of fired activations over all samples, positions and
            channels, in [0, 1].
        channels: per-channel fraction, shape `(group size,)`.
        measured_at: name of the layer whose output was measured.
        samples: number of samples measured.
    """

    layer: float
    channels: np.ndarray
    measured_at: str
    samples: int


@keras.saving.register_keras_serializable(package="keras_adp")
class FiredCount(keras.layers.Layer):
    """Counts, per sample and channel, activations above `threshold`.

    Input `(batch, *positions, channels)`; output `(batch, size)` float32 for
    channels `[offset, offset + size)`.
    """

    def __init__(self, offset, size, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset
        self.size = size
        self.threshold = threshold

    def call(self, inputs):
        inputs = inputs[..., self.offset : self.offset + self.size]
        fired = keras.ops.cast(
            keras.ops.greater(inputs, self.threshold), "float32"
        )
        axes = tuple(range(1, len(inputs.shape) - 1))
        return keras.ops.sum(fired, axis=axes) if axes else fired

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size)

    def get_config(self):
        return dict(
            super().get_config(),
            offset=self.offset,
            size=self.size,
            threshold=self.threshold,
        )


class DensityProbe:
    """A model that outputs per-channel fired counts for each channel group.

    Args:
        model: functional or Sequential model; its layers are shared, not
            copied, so the probe always sees the current weights.
        threshold: activations strictly above it fire. Defaults to `0.0`.
        groups: channel groups to measure (defaults to every prunable group
            of `model` that has an activation site).

    Attributes:
        names: the measured group names, in output order.
        skipped: group name -> why it gets no density.
    """

    def __init__(self, model, *, threshold=0.0, groups=None):
        self.model = model
        self.threshold = float(threshold)
        if groups is None:
            groups = [g for g in graph_lib.channel_groups(model) if g.prunable]
        self.names: list[str] = []
        self.sites: dict[str, graph_lib.ActivationSite] = {}
        self.skipped: dict[str, str] = {}
        outputs = []
        for group in groups:
            site = group.measured_at
            if site is None:
                self.skipped[group.name] = (
                    "no nonlinearity after it (e.g. a linear bottleneck or "
                    "logits)"
                    if not group.activation_sites
                    else "its activations are inside a nested sub-model"
                )
                continue
            if site.activation not in GATING_ACTIVATIONS:
                self.skipped[group.name] = (
                    f"its nonlinearity '{site.activation}' at '{site.layer}' "
                    "is never zero, so density is undefined"
                )
                continue
            self.names.append(group.name)
            self.sites[group.name] = site
            outputs.append(
                FiredCount(
                    site.offset,
                    group.size,
                    self.threshold,
                    dtype="float32",
                    name=f"fired_{len(outputs)}",
                )(site.tensor)
            )
        if not outputs:
            raise ValueError(
                f"Model '{model.name}' has no channel group whose activation "
                "density can be measured. Expected at least one prunable "
                "group followed by a ReLU-like nonlinearity. Skipped: "
                f"{self.skipped or 'no prunable groups'}."
            )
        graph = graph_lib._graph_of(model)
        with model.distribute_strategy.scope():
            self.probe = keras.Model(
                graph.inputs, outputs, name=f"{model.name}_density_probe"
            )

    def measure(self, data, *, steps=None, batch_size=None) -> dict[str, Density]:
        """Measure density on `data` (see `measure_density`)."""
        dataset = as_input_dataset(
            data,
            batch_size=batch_size,
            input_rank=len(graph_lib._graph_of(self.model).inputs[0].shape),
        )
        if steps is not None:
            if steps < 1:
                raise ValueError(f"Expected steps >= 1. Received: steps={steps}")
            dataset = dataset.take(steps)
        counts = self.probe.predict(dataset, verbose=0)
        if len(self.names) == 1:
            counts = [counts]
        samples = int(np.shape(counts[0])[0])
        if samples == 0:
            raise ValueError(
                "Received empty data: expected at least one sample to "
                "measure activation density on."
            )
        result = {}
        for name, count in zip(self.names, counts):
            site = self.sites[name]
            positions = _positions(site.tensor)
            per_channel = np.asarray(count, np.float64).sum(axis=0) / (
                samples * positions
            )
            result[name] = Density(
                layer=float(per_channel.mean()),
                channels=per_channel,
                measured_at=site.layer,
                samples=samples,
            )
        return result


def _positions(tensor) -> int:
    shape = tuple(tensor.shape)[1:-1]
    return int(np.prod(shape)) if shape else 1


def as_input_dataset(
    data, *, batch_size=None, input_rank=None
) -> tf.data.Dataset:
    """Batched `tf.data.Dataset` of model inputs only (labels dropped).

    Args:
        data: a NumPy array of inputs, an `(x, y)` or `(x, y, w)` tuple of
            arrays, or a `tf.data.Dataset` yielding `x` or `(x, y[, w])`.
        batch_size: batch size for arrays, and for datasets whose elements
            are single samples. Defaults to 32.
        input_rank: rank of the model input including the batch axis; a
            dataset whose elements have one axis less is batched.
    """
    batch_size = 32 if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(
            f"Expected batch_size >= 1. Received: batch_size={batch_size}"
        )
    if isinstance(data, tf.data.Dataset):
        dataset = data.map(_first)
        rank = getattr(dataset.element_spec, "shape", None)
        rank = None if rank is None else rank.rank
        if input_rank is not None and rank == input_rank - 1:
            dataset = dataset.batch(batch_size)
        return dataset
    if isinstance(data, tuple) and len(data) in (2, 3):
        data = data[0]
    array = np.asarray(data)
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(
            "Received empty data: expected a non-empty array, an (x, y) "
            f"tuple or a tf.data.Dataset. Got an array of shape {array.shape}."
        )
    return tf.data.Dataset.from_tensor_slices(array).batch(batch_size)


def _first(*element):
    if len(element) == 1:
        element = element[0]
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


def measure_density(
    model: keras.Model,
    data: Any,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    threshold: float = 0.0,
) -> dict[str, Density]:
    """Activation density of every measurable prunable channel group.

    Args:
        model: functional or Sequential Keras model (not modified).
        data: NumPy array of inputs, `(x, y)` tuple, or `tf.data.Dataset`
            of `x` or `(x, y)`; labels are ignored.
        steps: number of batches to use (all when None). Defaults to `None`.
        batch_size: batch size for arrays and unbatched datasets. Defaults
            to 32.
        threshold: activations strictly above it fire. Defaults to `0.0`.

    Returns:
        group name -> `Density`.

    Raises:
        ValueError: empty data, or a model with no measurable group.
    """
    return DensityProbe(model, threshold=threshold).measure(
        data, steps=steps, batch_size=batch_size
    )
