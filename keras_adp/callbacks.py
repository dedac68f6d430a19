"""`ActivationDensity`: a Keras callback that measures activation density.

At the end of every `frequency`-th epoch the callback measures the
activation density (see `keras_adp.density`) of every prunable channel group
of the model being trained, on a fixed calibration set, and reports it in
the epoch logs (`density/<group>`), in its own `history`, and optionally in
TensorBoard.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_adp import density as density_lib
from keras_adp import distribution
from keras_adp import inputs as inputs_lib
from keras_adp import validation

__all__ = [
    "ActivationDensity",
    "LOG_PREFIX",
    "HISTOGRAM_BUCKETS",
]

LOG_PREFIX = "density/"
HISTOGRAM_BUCKETS = 20

class ActivationDensity(keras.callbacks.Callback):
    """Measures the activation density of each channel group during training.

    In `__init__`, the first `num_samples` inputs of `data` are copied into a
    fixed calibration set, and every measurement uses exactly these samples,
    in inference mode (Dropout off, BatchNormalization moving statistics), so
    that densities of different epochs are comparable. Arrays, or a dataset
    without shuffling or augmentation, are recommended: a shuffling or
    augmenting `tf.data.Dataset` is read once, so the set it gives is random
    but still fixed for the lifetime of the callback.

    After a measurement, `logs["density/<group>"]` holds the group's density
    (a float in [0, 1]) for every measured group, so `History`, `CSVLogger`,
    progress bars and `EarlyStopping` see it, provided they come after this
    callback in `callbacks=[...]` (`History` and the progress bar always do).
    Like validation metrics with `validation_freq`, the keys are absent in
    the epochs that are not measured.

    The measurement is set up for `self.model` on `on_train_begin`, and set
    up again when `fit()` is called on another model object, so one instance
    can be reused across `fit()` calls and models. A model without a measurable
    group (every prunable convolution followed by a ReLU-like nonlinearity)
    raises a `ValueError` there, naming the skipped groups and why.

    Args:
        data: the calibration inputs: a NumPy array, a list of arrays (one
            per input of a multi-input model), an `(x, y)` tuple of those,
            or a `tf.data.Dataset` yielding `x` or `(x, y)`; labels are
            ignored. A dataset whose leading dimension is `None` (as after
            `Dataset.batch()`) yields batches; any other dataset yields
            single samples, or batches of a static size (`drop_remainder=
            True`), which are told apart once the model is known.
        frequency: measure at the end of every `frequency`-th epoch, i.e.
            after epochs `frequency - 1`, `2 * frequency - 1`, ... (counted
            from 0, as `validation_freq` does). Defaults to `1`.
        steps: number of batches of `batch_size` calibration samples to use
            per measurement. Defaults to `None` (the whole calibration set).
        num_samples: size of the calibration set; `None` takes all of `data`
            (which must then be finite). Defaults to `512`.
        batch_size: batch size of the measurement. Defaults to `64`.
        threshold: an activation fires when it is strictly above it.
            Defaults to `0.0`.
        log_dir: directory for TensorBoard summaries: a scalar
            `density/<group>` and a histogram `density_channels/<group>` of
            the per-channel densities (20 buckets over [0, 1]) per
            measurement, with the epoch as step; the `tensorboard` package
            is not needed to write them. Defaults to `None` (no summaries).
        verbose: 1 prints one line per measurement, 0 is silent. Defaults
            to `0`.

    Attributes:
        history: one dict per measurement of the current `fit()` call:
            `{"epoch": int, "density": {group: float}, "channels": {group:
            np.ndarray of shape (group size,)}}`.
        calibration_inputs: the calibration set, a NumPy array of shape
            `(num_samples, *input_shape)`, or a list of them for a
            multi-input model.

    Example:

    ```python
    from keras_adp import callbacks as adp_callbacks

    density = adp_callbacks.ActivationDensity(x_train, num_samples=512)
    csv_logger = keras.callbacks.CSVLogger("log.csv")  # After `density`.
    history = model.fit(
        x_train, y_train, epochs=10, callbacks=[density, csv_logger]
    )
    history.history["density/conv1"]  # One float per epoch.
    density.history[-1]["channels"]["conv1"]  # Per-channel densities.
    ```
    """

    def __init__(
        self,
        data,
        *,
        frequency=1,
        steps=None,
        num_samples=512,
        batch_size=64,
        threshold=0.0,
        log_dir=None,
        verbose=0,
    ):
        super().__init__()
        _validate_int("frequency", frequency, minimum=1)
        _validate_int("steps", steps, minimum=1, allow_none=True)
        _validate_int("num_samples", num_samples, minimum=1, allow_none=True)
        _validate_int("batch_size", batch_size, minimum=1)
        if verbose not in (0, 1):
            raise ValueError(
                "Expected `verbose` to be 0 or 1. Received: "
                f"verbose={verbose!r}"
            )
        self.data = data
        self.frequency = int(frequency)
        self.steps = steps
        self.num_samples = num_samples
        self.batch_size = int(batch_size)
        self.threshold = validation.check_threshold(threshold)
        self.log_dir = None if log_dir is None else str(log_dir)
        self.verbose = int(verbose)
        self.calibration_inputs = _calibration_set(data, num_samples)
        self.history: list[dict[str, Any]] = []
        self._probe: density_lib.DensityProbe | None = None
        self._writer = None

    def on_train_begin(self, logs=None):
        self.history = []
        self._probe_of_model()

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.frequency:
            return
        densities = self._probe_of_model().measure(
            self.calibration_inputs,
            steps=self.steps,
            batch_size=self.batch_size,
        )
        record = {
            "epoch": int(epoch),
            "density": {
                name: value.overall for name, value in densities.items()
            },
            "channels": {
                name: value.channels for name, value in densities.items()
            },
        }
        self.history.append(record)
        if logs is not None:
            for name, value in record["density"].items():
                logs[LOG_PREFIX + name] = value
        if self.log_dir is not None:
            self._write_summaries(epoch, densities)
        if self.verbose:
            values = ", ".join(
                f"{name}={value:.4f}"
                for name, value in record["density"].items()
            )
            mean = float(np.mean(list(record["density"].values())))
            print(
                f"Epoch {epoch + 1}: activation density (mean {mean:.4f}) "
                f"{values}",
                flush=True,
            )

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _probe_of_model(self) -> density_lib.DensityProbe:
        """The probe of `self.model`, made anew when the model was swapped."""
        if self._probe is None or self._probe.model is not self.model:
            self._probe = None  # Release the previous model first.
            self._probe = density_lib.DensityProbe(
                self.model, threshold=self.threshold
            )
            self.calibration_inputs = _merge_static_batches(
                self.calibration_inputs,
                self._probe.input_shapes,
                self.num_samples,
            )
        return self._probe

    def _write_summaries(self, epoch, densities):
        tf = distribution.import_tensorflow(
            "Writing TensorBoard summaries (`log_dir`)"
        )
        scalar, histogram = _summary_metadata()
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for name, value in densities.items():
                tf.summary.write(
                    LOG_PREFIX + name,
                    tf.constant(value.overall, tf.float32),
                    step=epoch,
                    metadata=scalar,
                )
                tf.summary.write(
                    f"density_channels/{name}",
                    tf.constant(_histogram_buckets(value.channels)),
                    step=epoch,
                    metadata=histogram,
                )
        self._writer.flush()


def _summary_metadata():
    """TensorBoard's scalar and histogram plugin formats, written with
    TensorFlow's own `tf.summary.write` so that the `tensorboard` package
    is not required."""
    from tensorflow.core.framework import summary_pb2

    scalar = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="scalars"
        ),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )
    histogram = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="histograms"
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )
    return scalar, histogram


def _histogram_buckets(values: np.ndarray) -> np.ndarray:
    """`(HISTOGRAM_BUCKETS, 3)` rows of `[left, right, count]` over [0, 1]."""
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BUCKETS + 1)
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=edges)
    return np.stack([edges[:-1], edges[1:], counts], axis=1).astype(np.float64)


def _validate_int(name, value, *, minimum, allow_none=False):
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        none = " or None" if allow_none else ""
        raise ValueError(
            f"Expected `{name}` to be an integer >= {minimum}{none}. "
            f"Received: {name}={value!r}"
        )


def _calibration_set(data, num_samples):
    """The first `num_samples` inputs of `data` (all if None), copied.

    Without the model, a dataset whose elements have a static leading
    dimension is read as single samples; batches of a static size then
    keep an extra axis, which `_merge_static_batches` merges.
    """
    input_rank = None
    if inputs_lib.is_dataset(data):
        spec = keras.tree.flatten(
            inputs_lib.as_input_dataset(data).element_spec
        )[0]
        shape = getattr(spec, "shape", None)
        if shape is not None and shape.rank and shape[0] is not None:
            input_rank = shape.rank + 1  # Elements taken as single samples.
    return inputs_lib.calibration_inputs(
        data, num_samples, input_rank=input_rank
    )


def _merge_static_batches(inputs, input_shapes, num_samples):
    """Merges the batch axis of a dataset batched with a static batch size.

    Args:
        inputs: the calibration set, an array or a list of arrays.
        input_shapes: the model's input shapes, batch axis first.
        num_samples: the calibration set size (None: all).

    Returns:
        `inputs`, each array of rank `len(shape) + 1` reshaped to rank
        `len(shape)` and cut to `num_samples`.

    Raises:
        ValueError: an array of another rank than its model input.
    """
    if not isinstance(inputs, list):
        return _merge_batch_axis(inputs, len(input_shapes[0]), num_samples)
    if len(inputs) != len(input_shapes):
        return inputs  # `DensityProbe.measure` says what does not fit.
    return [
        _merge_batch_axis(array, len(shape), num_samples)
        for array, shape in zip(inputs, input_shapes)
    ]


def _merge_batch_axis(
    inputs: np.ndarray, input_rank: int, num_samples: int | None
) -> np.ndarray:
    if inputs.ndim == input_rank + 1:
        # Elements were batches of static size (`drop_remainder=True`), which
        # `_calibration_set` could not tell from samples without a model.
        return inputs.reshape((-1,) + inputs.shape[2:])[:num_samples]
    if inputs.ndim != input_rank:
        raise ValueError(
            f"Expected calibration inputs of rank {input_rank} (batch axis "
            f"included) for this model. Received: inputs of shape "
            f"{inputs.shape}. Fix: pass the same kind of inputs as to `fit()`."
        )
    return inputs
