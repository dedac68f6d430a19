"""Activation density: the fraction of a layer's activations that fire.

Definition. For a channel group measured at tensor `a` (the output of its
nonlinearity, see `ChannelGroup.density_site`), an activation *fires* when it
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
uses its moving statistics), under the model's distribution (see
`keras_adp.distribution`), and counts in float32 whatever the model's dtype
policy (e.g. `mixed_float16`). Arrays reach the probe as NumPy batches on
every backend; only a `tf.data.Dataset` goes through tf.data (and needs
TensorFlow).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import keras
import numpy as np

from keras_adp import distribution
from keras_adp import graph as graph_lib
from keras_adp import inputs as inputs_lib
from keras_adp import validation

__all__ = [
    "GATING_ACTIVATIONS",
    "Density",
    "DensityProbe",
    "FiredCount",
    "measure_density",
    "whole_batches",
]

GATING_ACTIVATIONS = graph_lib.GATING_ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class Density:
    """Activation density of one channel group.

    Attributes:
        overall: fraction of fired activations over all samples, positions
            and channels of the group, in [0, 1] (the mean of `channels`).
        channels: per-channel fraction, float64 of shape `(group size,)`.
        measured_at: qualified name (a `str`, never None) of the layer whose
            output was measured, e.g. `"block/relu"`: the `layer` of the
            group's `ChannelGroup.density_site` activation site. Groups
            without a site get no `Density`.
        samples: number of samples measured.
    """

    overall: float
    channels: np.ndarray
    measured_at: str
    samples: int

    @property
    def layer(self) -> float:
        """Deprecated alias of `overall`, kept for one release."""
        warnings.warn(
            "`Density.layer` is deprecated and will be removed in the next "
            "release: it is the group's overall density, now named "
            "`Density.overall`. Fix: read `density.overall`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.overall


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
    densities["conv1"].overall  # A float in [0, 1].
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
        measured = self._measurable(groups)
        # Per-sample weight: 1 for real samples, 0 for the padding that
        # makes every batch whole (see `measure`).
        self._weight = keras.Input((), name="keras_adp_sample_weight")
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
            raise self._nothing_to_measure_error(all_groups)
        graph = graph_lib.graph_of(model)
        self.input_rank = len(graph.inputs[0].shape)
        self.input_shapes = [tuple(tensor.shape) for tensor in graph.inputs]
        with distribution.scope(model):
            self.probe = keras.Model(
                [*graph.inputs, self._weight],
                outputs,
                name=f"{model.name}_density_probe",
            )

    def _measurable(self, groups) -> list:
        """`(group, site)` of the groups with a gating activation site;
        fills `names`, `sites` and `skipped`."""
        measured = []
        for group in groups:
            site = group.density_site
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
        return measured

    def _nothing_to_measure_error(self, all_groups) -> ValueError:
        not_prunable = {
            group.name: group.reason
            for group in all_groups
            if not group.prunable
        }
        return ValueError(
            f"Model '{self.model.name}' has no channel group whose activation "
            "density can be measured. Expected at least one prunable "
            "channel group followed by a ReLU-like nonlinearity "
            f"({', '.join(sorted(GATING_ACTIVATIONS))}). Received: "
            f"skipped groups {self.skipped or 'none'}; groups that are "
            f"not prunable {not_prunable or 'none'}. Fix: put a ReLU "
            "(fused `activation='relu'` or a `ReLU` layer) after the "
            "convolutions to be pruned."
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
        if inputs_lib.is_dataset(data):
            dataset = self._measurement_batches(data, steps, batch_size)
            counts = self._fired_counts(dataset)
        else:
            counts = self._fired_counts_of_arrays(data, steps, batch_size)
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
                overall=float(per_channel.mean()),
                channels=per_channel,
                measured_at=self.sites[name].layer,
                samples=samples,
            )
        return result

    def _fired_counts_of_arrays(self, data, steps, batch_size):
        """The probe's outputs on array-like `data`, batched in NumPy.

        Each batch of `batch_size` samples is padded with zero samples of
        weight 0 to a whole number of replica batches (as `whole_batches`
        does for datasets), so no replica receives an empty share and the
        padding counts for nothing.
        """
        batch_size = 32 if batch_size is None else batch_size
        validation.check_batch_size(batch_size)
        inputs_lib.check_steps("steps", steps)
        batch_size = int(batch_size)
        arrays = inputs_lib.input_arrays(data)
        self._check_input_shapes(arrays)
        samples = len(arrays[0])
        if steps is not None:
            samples = min(samples, int(steps) * batch_size)
        replicas = distribution.replicas(self.model)
        padded, weight = _padded_batches(
            [array[:samples] for array in arrays], batch_size, replicas
        )
        return self.probe.predict(
            [*padded, weight],
            batch_size=-(-batch_size // replicas) * replicas,
            verbose=0,
        )

    def _measurement_batches(self, data, steps, batch_size):
        """Dataset `data` as the probe's padded, weighted batches (see
        `measure`)."""
        tf = distribution.import_tensorflow("Measuring a tf.data.Dataset")
        batch_size = 32 if batch_size is None else batch_size
        validation.check_batch_size(batch_size)
        inputs_lib.check_steps("steps", steps)
        dataset = inputs_lib.as_input_dataset(
            data, batch_size=batch_size, input_rank=self.input_rank
        )
        if steps is not None:
            dataset = dataset.take(int(steps))
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
        return whole_batches(dataset, distribution.replicas(self.model))

    def _fired_counts(self, dataset):
        """The probe's outputs on `dataset`, with readable errors."""
        import tensorflow as tf

        batches = _BatchCounter()
        try:
            with warnings.catch_warnings():
                # Keras warns before failing on a dataset that yields nothing.
                warnings.filterwarnings(
                    "ignore", message="Your input ran out of data"
                )
                return self.probe.predict(
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

    def check_inputs(self, data, *, batch_size=None) -> None:
        """Raise before any measurement unless `data` fits the model.

        Args:
            data: as for `measure`.
            batch_size: as for `measure`. Defaults to `None`.

        Raises:
            ValueError: NaN/inf in arrays, or inputs of another number or
                shape than the model's.
        """
        if not inputs_lib.is_dataset(data):
            validation.check_batch_size(
                32 if batch_size is None else batch_size
            )
            self._check_input_shapes(inputs_lib.input_arrays(data))
            return
        dataset = inputs_lib.as_input_dataset(
            data, batch_size=batch_size, input_rank=self.input_rank
        )
        self._check_input_shapes(dataset.element_spec)

    def _check_input_shapes(self, element_spec) -> None:
        """Raise unless the batches fit the model's inputs (a dataset's
        `element_spec`, or the input arrays)."""
        specs = keras.tree.flatten(element_spec)
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


def _padded_batches(
    arrays: list[np.ndarray], batch_size: int, replicas: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """`arrays` with each batch padded to a multiple of `replicas`.

    Returns:
        The padded arrays and the per-sample weight (1.0 real, 0.0
        padding), float32.
    """
    samples = len(arrays[0])
    if replicas == 1:
        return arrays, np.ones(samples, np.float32)
    index = []
    for start in range(0, samples, batch_size):
        size = min(batch_size, samples - start)
        index.append(np.arange(start, start + size))
        index.append(np.full((-size) % replicas, -1))
    index = np.concatenate(index)
    real = index >= 0
    padded = []
    for array in arrays:
        out = np.zeros((len(index), *array.shape[1:]), array.dtype)
        out[real] = array[index[real]]
        padded.append(out)
    return padded, real.astype(np.float32)


def whole_batches(dataset, replicas: int = 1):
    """Pads each batch of model inputs to a whole number of replica batches.

    Each batch is padded with zeros to a multiple of `replicas` samples and
    each element becomes `((*inputs, weight),)`, with `weight` 1.0 for a
    real sample and 0.0 for padding. A distribution strategy splits such a
    batch evenly, so no replica ever receives an empty batch (which
    TensorFlow's oneDNN CPU kernels mis-shape), and padded samples count
    for nothing. Float inputs are checked for NaN/inf on the way.

    Args:
        dataset: batched dataset of inputs, as from
            `keras_adp.inputs.as_input_dataset`.
        replicas: replicas in sync. Defaults to `1`.

    Returns:
        The padded, weighted dataset.
    """
    import tensorflow as tf

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


def _yields_nothing(dataset) -> bool:
    return next(iter(dataset.take(1)), None) is None


def _empty_data_error() -> ValueError:
    return ValueError(
        "Received empty data: expected at least one sample to measure "
        "activation density on. Fix: pass a non-empty array, (x, y) tuple "
        "or tf.data.Dataset (and `steps` >= 1)."
    )


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
    {name: density.overall for name, density in densities.items()}
    ```
    """
    return DensityProbe(model, threshold=threshold).measure(
        data, steps=steps, batch_size=batch_size
    )
