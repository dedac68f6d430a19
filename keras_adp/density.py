"""Activation density: the fraction of a layer's activations that fire.

Definition. For a channel group measured at tensor `a` (the output of its
nonlinearity, see `ChannelGroup.measured_at`), an activation *fires* when it
is strictly greater than `threshold` (default `0.0`). The group's density is

    density = (# fired activations) / (# activations)

over all samples, spatial positions and the group's channels; the per-channel
density is the same ratio for each channel. For ReLU, ReLU6 and PReLU/
LeakyReLU with a zero negative slope, "fires" is exactly "is non-zero". For
nonlinearities that are never exactly zero (GELU, swish/SiLU, ELU, SELU,
CELU, mish, LeakyReLU), `> 0` counts the activations on their positive
branch, i.e. whose pre-activation is positive; their small negative tail
counts as silent. Nonlinearities without a silent branch (sigmoid, softplus,
tanh, softsign, ...) carry no such signal: groups measured only there get no
density, and `DensityProbe.skipped` says why.

Measurement runs through auxiliary outputs: a *probe* model that shares the
user's layers and, for each group, outputs the per-sample, per-channel count
of fired activations, reduced over spatial positions inside the graph. The
host only receives `(batch, channels + 1)` counts, never activation maps. The
probe runs in inference mode (`predict`: Dropout is off, BatchNormalization
uses its moving statistics), under the model's distribution strategy, and
counts in float32 whatever the model's dtype policy (e.g. `mixed_float16`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_adp import graph as graph_lib
from keras_adp import validation

GATING_ACTIVATIONS = graph_lib.GATING_ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class Density:
    """Activation density of one channel group.

    Attributes:
        layer: fraction of fired activations over all samples, positions and
            channels, in [0, 1].
        channels: per-channel fraction, float64 of shape `(group size,)`.
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

    Called on `[activations, weight]`: activations `(batch, *positions,
    channels)` and a per-sample weight `(batch,)` (1 for a real sample, 0
    for padding). Output `(batch, size + 1)` float32: columns
    `0 .. size - 1` count the fired activations of channels
    `[offset, offset + size)` over the positions of each sample; the last
    column is the number of positions counted per channel, so that inputs
    whose spatial shape is only known at run time are normalised exactly.
    Both are multiplied by the sample's weight, so padded samples count for
    nothing. Counts are exact up to 2**24 positions per sample.
    """

    def __init__(self, offset, size, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset
        self.size = size
        self.threshold = threshold

    def call(self, inputs):
        inputs, weight = inputs
        inputs = inputs[..., self.offset : self.offset + self.size]
        fired = keras.ops.cast(
            keras.ops.greater(inputs, self.threshold), "float32"
        )
        axes = tuple(range(1, len(inputs.shape) - 1))
        if axes:
            counts = keras.ops.sum(fired, axis=axes)
        else:
            counts = fired
        positions = keras.ops.ones_like(counts[:, :1]) * keras.ops.cast(
            keras.ops.prod(keras.ops.shape(inputs)[1:-1]), "float32"
        )
        weight = keras.ops.expand_dims(keras.ops.cast(weight, "float32"), -1)
        return keras.ops.concatenate([counts, positions], axis=-1) * weight

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.size + 1)

    def get_config(self):
        return dict(
            super().get_config(),
            offset=self.offset,
            size=self.size,
            threshold=self.threshold,
        )


class DensityProbe:
    """A model that outputs per-channel fired counts for each channel group.

    Build it once and call `measure` as often as needed: the probe shares the
    model's layers (nothing is copied), so every measurement sees the current
    weights, and its compiled predict function is reused.

    Args:
        model: built functional or Sequential model. Not modified.
        threshold: activations strictly above it fire. Defaults to `0.0`.
        groups: channel groups to measure. Defaults to `None`: every
            prunable group of `model` that has an activation site.

    Attributes:
        model: the measured model.
        names: the measured group names, in output order.
        sites: group name -> `ActivationSite` where it is measured.
        skipped: group name -> why it gets no density (prunable groups, or
            the given `groups`, only).
        probe: the auxiliary `keras.Model`.
        input_rank: rank of the (first) model input, batch axis included.

    Raises:
        ValueError: if no group can be measured.

    Example:

    ```python
    probe = DensityProbe(model)
    densities = probe.measure(x_calibration)
    densities["conv1"].layer  # A float in [0, 1].
    densities["conv1"].channels  # Shape (filters of conv1,).
    ```
    """

    def __init__(self, model, *, threshold=0.0, groups=None):
        self.model = model
        self.threshold = validation.check_threshold(threshold)
        all_groups = graph_lib.channel_groups(model)
        if groups is None:
            groups = [group for group in all_groups if group.prunable]
        self.names: list[str] = []
        self.sites: dict[str, graph_lib.ActivationSite] = {}
        self.skipped: dict[str, str] = {}
        measured = []
        # Per-sample weight: 1 for real samples, 0 for the padding that
        # makes every batch whole (see `measure`).
        self._weight = keras.Input((), name="keras_adp_sample_weight")
        for group in groups:
            site = group.measured_at
            if site is None:
                self.skipped[group.name] = (
                    "no nonlinearity after it (e.g. a linear bottleneck or "
                    "logits)"
                )
                continue
            if site.activation not in GATING_ACTIVATIONS:
                self.skipped[group.name] = (
                    f"its nonlinearity '{site.activation}' at '{site.layer}' "
                    "has no silent branch, so density is undefined"
                )
                continue
            self.names.append(group.name)
            self.sites[group.name] = site
            measured.append((group, site))
        # Sites inside nested sub-models are reached by tracing the graph
        # with the sub-models inlined (same layers, same weights).
        tensors = graph_lib.site_tensors(model, [site for _, site in measured])
        outputs = [
            FiredCount(
                site.offset,
                group.size,
                self.threshold,
                dtype="float32",
                name=f"fired_{index}",
            )([tensor, self._weight])
            for index, ((group, site), tensor) in enumerate(
                zip(measured, tensors)
            )
        ]
        if not outputs:
            not_prunable = {
                group.name: group.reason
                for group in all_groups
                if not group.prunable
            }
            raise ValueError(
                f"Model '{model.name}' has no channel group whose activation "
                "density can be measured. Expected at least one prunable "
                "channel group followed by a ReLU-like nonlinearity "
                f"({', '.join(sorted(GATING_ACTIVATIONS))}). Received: "
                f"skipped groups {self.skipped or 'none'}; groups that are "
                f"not prunable {not_prunable or 'none'}. Fix: put a ReLU "
                "(fused `activation='relu'` or a `ReLU` layer) after the "
                "convolutions to be pruned."
            )
        graph = graph_lib._graph_of(model)
        self.input_rank = len(graph.inputs[0].shape)
        self.input_shapes = [tuple(tensor.shape) for tensor in graph.inputs]
        with model.distribute_strategy.scope():
            self.probe = keras.Model(
                [*graph.inputs, self._weight],
                outputs,
                name=f"{model.name}_density_probe",
            )

    def measure(
        self, data, *, steps=None, batch_size=None
    ) -> dict[str, Density]:
        """Measures the density of every group in `names` on `data`.

        Args:
            data: NumPy array of inputs, `(x, y)` tuple, or `tf.data.Dataset`
                of `x` or `(x, y)`, batched or not; labels are ignored.
            steps: number of batches to use (all when None). Defaults to
                `None`.
            batch_size: batch size for arrays and unbatched datasets.
                Defaults to `None` (32).

        Returns:
            group name -> `Density`, in the order of `names`.

        Raises:
            ValueError: empty data or invalid `steps`/`batch_size`.
        """
        batch_size = 32 if batch_size is None else batch_size
        validation.check_batch_size(batch_size)
        dataset = as_input_dataset(
            data, batch_size=batch_size, input_rank=self.input_rank
        )
        if steps is not None:
            dataset = dataset.take(_optional_count("steps", steps))
        cardinality = int(dataset.cardinality())
        if cardinality == 0:
            raise _empty_data_error()
        if cardinality == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "Received an infinite dataset (e.g. after `.repeat()`) to "
                "measure activation density on, without `steps`: the "
                "measurement would never end. Fix: pass `steps=N` (batches "
                "to measure), or a finite dataset."
            )
        self._check_input_shapes(dataset.element_spec)
        replicas = self.model.distribute_strategy.num_replicas_in_sync
        dataset = whole_batches(dataset, replicas)
        batches = _BatchCounter()
        try:
            with warnings.catch_warnings():
                # Keras warns before failing on a dataset that yields nothing.
                warnings.filterwarnings(
                    "ignore", message="Your input ran out of data"
                )
                counts = self.probe.predict(
                    dataset, verbose=0, callbacks=[batches]
                )
        except tf.errors.InvalidArgumentError as error:
            if _NON_FINITE_MARKER in str(error):
                raise ValueError(
                    "Received non-finite data: the data to measure "
                    "activation density on holds NaN or inf (found in batch "
                    f"{batches.count + 1}). Expected only finite numbers. "
                    "Fix: clean the data, e.g. with `np.nan_to_num`."
                ) from None
            raise
        except Exception as error:
            # Keras' predict fails obscurely on a dataset that yields nothing
            # (unknown cardinality, e.g. after `filter`).
            if batches.count == 0 and _yields_nothing(dataset):
                raise _empty_data_error() from error
            raise
        if len(self.names) == 1:
            counts = [counts]
        # Padding rows are all zero, the position count included.
        samples = int(np.count_nonzero(np.asarray(counts[0])[:, -1] > 0))
        if samples == 0:
            raise _empty_data_error()
        result = {}
        for name, count in zip(self.names, counts):
            count = np.asarray(count, np.float64)
            count = count[count[:, -1] > 0]
            per_channel = count[:, :-1].sum(axis=0) / count[:, -1].sum()
            result[name] = Density(
                layer=float(per_channel.mean()),
                channels=per_channel,
                measured_at=self.sites[name].layer,
                samples=samples,
            )
        return result


    def check_inputs(self, data, *, batch_size=None) -> None:
        """Raise before any measurement unless `data` fits the model.

        Args:
            data: as for `measure`.
            batch_size: as for `measure`. Defaults to `None`.

        Raises:
            ValueError: NaN/inf in arrays, or inputs of another number or
                shape than the model's.
        """
        dataset = as_input_dataset(
            data, batch_size=batch_size, input_rank=self.input_rank
        )
        self._check_input_shapes(dataset.element_spec)

    def _check_input_shapes(self, element_spec) -> None:
        """Raise unless the batches fit the model's inputs."""
        specs = tf.nest.flatten(element_spec)
        expected = self.input_shapes
        name = self.model.name
        if len(specs) != len(expected):
            raise ValueError(
                f"Model '{name}' has {len(expected)} input(s) of shapes "
                f"{expected}. Received data with {len(specs)} input "
                f"array(s) of shapes {[tuple(s.shape) for s in specs]}. Fix: "
                "pass one array per model input (a list for a multi-input "
                "model)."
            )
        for index, (spec, shape) in enumerate(zip(specs, expected)):
            received = tuple(spec.shape)
            if len(received) != len(shape) or any(
                want is not None and got is not None and want != got
                for want, got in zip(shape[1:], received[1:])
            ):
                raise ValueError(
                    f"Model '{name}' expects input {index} of shape {shape} "
                    f"(batch first). Received batches of shape {received}. "
                    "Fix: pass data shaped like the model's input, e.g. "
                    "the same preprocessing as the training data."
                )


_NON_FINITE_MARKER = "keras_adp: non-finite calibration input"


def whole_batches(
    dataset: tf.data.Dataset, replicas: int = 1
) -> tf.data.Dataset:
    """Pads each batch of model inputs to a whole number of replica batches.

    Each batch is padded with zeros to a multiple of `replicas` samples and
    each element becomes `((*inputs, weight),)`, with `weight` 1.0 for a
    real sample and 0.0 for padding. A distribution strategy splits such a
    batch evenly, so no replica ever receives an empty batch (which
    TensorFlow's oneDNN CPU kernels mis-shape), and padded samples count
    for nothing. Float inputs are checked for NaN/inf on the way.

    Args:
        dataset: batched dataset of inputs, as from `as_input_dataset`.
        replicas: replicas in sync. Defaults to `1`.

    Returns:
        The padded, weighted dataset.
    """

    @tf.autograph.experimental.do_not_convert
    def pad(*element):
        parts = tf.nest.flatten(element)
        count = tf.shape(parts[0])[0]
        extra = (replicas - count % replicas) % replicas
        padded = []
        for part in parts:
            if part.dtype.is_floating:
                part = tf.debugging.check_numerics(part, _NON_FINITE_MARKER)
            paddings = [[0, extra]] + [[0, 0]] * (len(part.shape) - 1)
            padded.append(tf.pad(part, paddings))
        weight = tf.concat(
            [tf.ones([count], tf.float32), tf.zeros([extra], tf.float32)], 0
        )
        return ((*padded, weight),)

    return dataset.map(pad)


class _BatchCounter(keras.callbacks.Callback):
    """Counts the batches `predict` completes.

    `async_safe` keeps Keras' asynchronous batch dispatch on.
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self.count = 0

    def on_predict_batch_end(self, batch, logs=None):
        self.count += 1


def _yields_nothing(dataset: tf.data.Dataset) -> bool:
    return next(iter(dataset.take(1)), None) is None


def _empty_data_error() -> ValueError:
    return ValueError(
        "Received empty data: expected at least one sample to measure "
        "activation density on. Fix: pass a non-empty array, (x, y) tuple "
        "or tf.data.Dataset (and `steps` >= 1)."
    )


def as_input_dataset(
    data, *, batch_size=None, input_rank=None, name="data"
) -> tf.data.Dataset:
    """Batched `tf.data.Dataset` of model inputs only (labels dropped).

    Args:
        data: a NumPy array of inputs, a list of arrays (one per input of
            a multi-input model), an `(x,)`, `(x, y)` or `(x, y, w)` tuple
            of those, or a `tf.data.Dataset` yielding `x` or `(x, y[, w])`.
        batch_size: batch size for arrays, and for datasets whose elements
            are single samples. Defaults to `None` (32).
        input_rank: rank of the model input including the batch axis; a
            dataset whose elements have one axis less is batched. Defaults
            to `None` (datasets are assumed batched).
        name: how errors name `data`. Defaults to `"data"`.

    Returns:
        A dataset of input batches.

    Raises:
        ValueError: empty array, NaN/inf in an array, unsupported type or
            invalid `batch_size`.
    """
    batch_size = 32 if batch_size is None else batch_size
    batch_size = _optional_count("batch_size", batch_size)
    if isinstance(data, tf.data.Dataset):
        dataset = data.map(_first)
        shape = getattr(dataset.element_spec, "shape", None)
        rank = None if shape is None else shape.rank
        if input_rank is not None and rank == input_rank - 1:
            dataset = dataset.batch(batch_size)
        return _inputs_only(dataset)
    if isinstance(data, tuple) and len(data) in (1, 2, 3):
        data = data[0]
    if isinstance(data, list) and data and all(
        hasattr(item, "shape") for item in data
    ):
        # A list of arrays is a multi-input model's inputs (Keras' convention).
        arrays = tuple(np.asarray(item) for item in data)
        if arrays[0].shape[0] == 0:
            raise ValueError("Received empty data: the input arrays are empty.")
        for index, array in enumerate(arrays):
            validation.check_finite(array, f"{name}[{index}]")
        return _inputs_only(
            tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)
        )
    if isinstance(data, dict) or _is_iterator(data):
        raise ValueError(
            "Expected a NumPy array of inputs, an (x, y) tuple or a "
            f"tf.data.Dataset. Received: {type(data).__name__}. Fix: wrap "
            "generators with `tf.data.Dataset.from_generator`."
        )
    array = np.asarray(data)
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(
            "Received empty data: expected a non-empty array, an (x, y) "
            f"tuple or a tf.data.Dataset. Got an array of shape {array.shape}."
        )
    validation.check_finite(array, name)
    return tf.data.Dataset.from_tensor_slices(array).batch(batch_size)


def _optional_count(name: str, value) -> int:
    """`value` as an int, or a ValueError if it is not an integer >= 1."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValueError(
            f"Expected `{name}` to be None or an integer >= 1. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def _inputs_only(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Wrap multi-input elements `(x1, x2)` as `((x1, x2),)`.

    Keras' `predict` reads a tuple element as `(x, y)`; a 1-tuple holding
    the inputs is read as `x` alone.
    """
    if isinstance(dataset.element_spec, (tuple, list)):
        return dataset.map(_wrap_inputs)
    return dataset


def _wrap_inputs(*parts):
    return (tuple(parts),)


def _is_iterator(data) -> bool:
    return hasattr(data, "__next__") or (
        hasattr(data, "__iter__") and not hasattr(data, "__len__")
    )


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

    For repeated measurements of the same model, build a `DensityProbe`
    once instead: each call here builds (and traces) a new probe.

    Args:
        model: functional or Sequential Keras model (not modified).
        data: NumPy array of inputs, `(x, y)` tuple, or `tf.data.Dataset`
            of `x` or `(x, y)`, batched or not; labels are ignored.
        steps: number of batches to use (all when None). Defaults to `None`.
        batch_size: batch size for arrays and unbatched datasets. Defaults
            to `None` (32).
        threshold: activations strictly above it fire. Defaults to `0.0`.

    Returns:
        group name -> `Density`.

    Raises:
        ValueError: empty data, or a model with no measurable group.

    Example:

    ```python
    densities = measure_density(model, x_train[:512])
    {name: density.layer for name, density in densities.items()}
    ```
    """
    return DensityProbe(model, threshold=threshold).measure(
        data, steps=steps, batch_size=batch_size
    )
