"""Model inputs out of user data, and the checks `ADPTrainer.fit` runs on
them before any training.

- `as_input_dataset`: the batched `tf.data.Dataset` of model inputs (labels
  dropped) that density is measured on.
- `calibration_inputs`: the one place that copies the first model inputs
  out of whatever `fit` accepts (arrays, lists of arrays for multi-input
  models, `(x, y)` tuples, datasets) into a fixed calibration set; the
  trainer, the `ActivationDensity` callback and the commands use it.
- The checks of `fit`'s data and keywords, and the rows of a held-out split.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any


import keras
import numpy as np

from keras_adp import distribution
from keras_adp import graph as graph_lib
from keras_adp import validation
from keras_adp.validation import is_dataset

__all__ = [
    "is_dataset",
    "as_input_dataset",
    "input_arrays",
    "calibration_inputs",
    "num_samples",
    "take_rows",
    "split_last",
    "check_steps",
    "check_model_and_epochs",
    "check_training_data",
    "check_fit_keywords",
    "split_validation",
]

# Batch size in which `calibration_inputs` reads datasets of single samples.
_READ_BATCH_SIZE = 256


def num_samples(inputs) -> int:
    """Samples in an array, or in the first of a list of arrays."""
    return len(inputs[0] if isinstance(inputs, list) else inputs)


def take_rows(data, indices):
    """Rows `indices` of an array, or of each array of a list/dict."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: take_rows(value, indices) for key, value in data.items()}
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        return [np.asarray(value)[indices] for value in data]
    return np.asarray(data)[indices]


def split_last(samples: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """`model.fit(validation_split=fraction)`'s split of `samples` indices:
    (train, validation), the validation part being the last samples, taken
    before any shuffling."""
    split_at = int(math.floor(samples * (1.0 - fraction)))
    if split_at == 0 or split_at == samples:
        raise ValueError(
            f"Received validation_split={fraction} for {samples} samples, "
            f"which leaves {'no training' if split_at == 0 else 'no validation'}"
            " sample. Expected a split that keeps at least one sample on "
            "each side. Fix: pass another `validation_split`, or "
            "`validation_data`."
        )
    indices = np.arange(samples)
    return indices[:split_at], indices[split_at:]


def as_input_dataset(
    data: Any,
    *,
    batch_size: int | None = None,
    input_rank: int | None = None,
    name: str = "data",
) -> Any:
    """Batched `tf.data.Dataset` of model inputs only (labels dropped).

    Needs TensorFlow (imported here); `input_arrays` is the NumPy
    counterpart for array-like data.

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
        A dataset of input batches: each element one array, or `((x1, x2,
        ...),)` for a multi-input model (Keras' `predict` reads a 1-tuple
        as the inputs alone).

    Raises:
        ValueError: empty array, NaN/inf in an array, unsupported type or
            invalid `batch_size`.
    """
    batch_size = 32 if batch_size is None else batch_size
    validation.check_batch_size(batch_size)
    batch_size = int(batch_size)
    tf = distribution.import_tensorflow("A tf.data pipeline of inputs")
    if is_dataset(data):
        dataset = data.map(_first)
        shape = getattr(dataset.element_spec, "shape", None)
        rank = None if shape is None else shape.rank
        if input_rank is not None and rank == input_rank - 1:
            dataset = dataset.batch(batch_size)
        return _inputs_only(dataset)
    arrays = input_arrays(data, name=name)
    if len(arrays) == 1:
        return tf.data.Dataset.from_tensor_slices(arrays[0]).batch(batch_size)
    return _inputs_only(
        tf.data.Dataset.from_tensor_slices(tuple(arrays)).batch(batch_size)
    )


def input_arrays(data: Any, *, name: str = "data") -> list[np.ndarray]:
    """The model-input arrays of array-like `data`, checked.

    The NumPy counterpart of `as_input_dataset` (no TensorFlow needed).

    Args:
        data: a NumPy array of inputs, a list of arrays (one per input of a
            multi-input model), or an `(x,)`, `(x, y)` or `(x, y, w)` tuple
            of those; labels are dropped.
        name: how errors name `data`. Defaults to `"data"`.

    Returns:
        One array per model input, samples first.

    Raises:
        ValueError: empty arrays, NaN/inf, or an unsupported type.
    """
    arrays = _input_arrays(data, name)
    if arrays[0].ndim == 0 or arrays[0].shape[0] == 0:
        raise ValueError(
            "Received empty data: expected a non-empty array, an (x, y) "
            "tuple or a tf.data.Dataset. Got an array of shape "
            f"{arrays[0].shape}."
        )
    _check_finite(arrays, name)
    return arrays


def calibration_inputs(
    data: Any,
    count: int | None,
    *,
    input_rank: int | None = None,
    name: str = "data",
) -> np.ndarray | list[np.ndarray]:
    """A copy of the first `count` model inputs of `data`.

    Only the samples taken are read (a dataset is read lazily, so it may be
    infinite when `count` is given) and checked for NaN/inf.

    Args:
        data: what `fit` takes as `x`: a NumPy array of inputs, a list of
            arrays (one per input of a multi-input model), an `(x,)`,
            `(x, y)` or `(x, y, w)` tuple of those, or a `tf.data.Dataset`
            yielding `x` or `(x, y[, w])`; labels are ignored.
        count: how many samples to take (fewer when `data` has fewer);
            `None` takes all of them (a dataset must then be finite).
        input_rank: rank of the model input including the batch axis; a
            dataset whose elements have one axis less yields single
            samples. Defaults to `None`: datasets yield batches.
        name: how errors name `data`. Defaults to `"data"`.

    Returns:
        A new array of shape `(samples, *input_shape)`, or a list of them
        for a multi-input model.

    Raises:
        ValueError: `data` is None, a dict or an iterator, holds no sample,
            is an infinite dataset while `count` is None, or holds NaN/inf
            among the samples taken.
    """
    if data is None:
        raise ValueError(
            f"Expected `{name}` to hold the calibration inputs (for "
            "`ADPTrainer.fit`: the training data `x` or `calibration_data`). "
            "Received: None. Fix: pass an array, an (x, y) tuple or a "
            "tf.data.Dataset."
        )
    check_steps("count", count)
    if is_dataset(data):
        rows = _dataset_rows(data, count, input_rank, name)
    else:
        arrays = _input_arrays(data, name)
        if arrays[0].ndim == 0:
            raise _empty_calibration_error(
                name, f"a scalar {type(data).__name__}"
            )
        rows = [np.array(array[:count], copy=True) for array in arrays]
        if len(rows[0]) == 0:
            raise _empty_calibration_error(
                name, f"inputs of shape {arrays[0].shape}"
            )
    _check_finite(rows, name)
    return rows[0] if len(rows) == 1 else rows


def _dataset_rows(
    data, count: int | None, input_rank: int | None, name
) -> list[np.ndarray]:
    """The first `count` samples of each input of a dataset."""
    tf = distribution.import_tensorflow("Reading a tf.data.Dataset")

    if (
        count is None
        and int(data.cardinality()) == tf.data.INFINITE_CARDINALITY
    ):
        raise ValueError(
            f"Expected a finite dataset when taking all of `{name}` "
            "(`num_samples=None`). Received an infinite dataset. Fix: pass "
            "the number of samples (`num_samples`), or the dataset before "
            "`.repeat()`."
        )
    dataset = as_input_dataset(
        data, batch_size=_READ_BATCH_SIZE, input_rank=input_rank, name=name
    )
    chunks, total = [], 0
    for batch in dataset:
        if isinstance(batch, tuple) and len(batch) == 1:
            batch = batch[0]  # ((x1, x2),): a multi-input batch
        parts = list(batch) if isinstance(batch, (tuple, list)) else [batch]
        chunks.append([np.asarray(part) for part in parts])
        total += len(chunks[-1][0])
        if count is not None and total >= count:
            break
    if total == 0:
        raise _empty_calibration_error(name, "an empty tf.data.Dataset")
    return [
        np.concatenate([chunk[index] for chunk in chunks])[:count]
        for index in range(len(chunks[0]))
    ]


def _input_arrays(data: Any, name: str) -> list[np.ndarray]:
    """The input arrays of array-like `data`: one, or one per model input."""
    if isinstance(data, tuple) and len(data) in (1, 2, 3):
        data = data[0]
    if isinstance(data, list) and data and all(
        hasattr(item, "shape") for item in data
    ):
        # A list of arrays is a multi-input model's inputs (Keras' convention).
        return [np.asarray(item) for item in data]
    if isinstance(data, dict) or _is_iterator(data):
        raise ValueError(
            f"Expected `{name}` to be a NumPy array of inputs, an (x, y) "
            f"tuple or a tf.data.Dataset. Received: {type(data).__name__}. "
            "Fix: wrap generators with `tf.data.Dataset.from_generator`."
        )
    return [np.asarray(data)]


def _check_finite(arrays: list[np.ndarray], name: str) -> None:
    if len(arrays) == 1:
        validation.check_finite(arrays[0], name)
        return
    for index, array in enumerate(arrays):
        validation.check_finite(array, f"{name}[{index}]")


def _empty_calibration_error(name: str, received: str) -> ValueError:
    return ValueError(
        f"Expected `{name}` to hold at least one input sample for activation "
        f"density calibration. Received: {received}. Fix: pass a non-empty "
        "array, (x, y) tuple or tf.data.Dataset (e.g. `x_train`)."
    )


def _inputs_only(dataset):
    """Wrap multi-input elements `(x1, x2)` as `((x1, x2),)`.

    Keras' `predict` reads a tuple element as `(x, y)`; a 1-tuple holding
    the inputs is read as `x` alone.
    """
    if isinstance(dataset.element_spec, (tuple, list)):
        return dataset.map(_wrap_inputs)
    return dataset


def _wrap_inputs(*parts):
    return (tuple(parts),)


def _is_iterator(data: Any) -> bool:
    return hasattr(data, "__next__") or (
        hasattr(data, "__iter__") and not hasattr(data, "__len__")
    )


def _first(*element):
    if len(element) == 1:
        element = element[0]
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


def check_steps(name: str, steps) -> None:
    """Raise unless `steps` is None or an integer >= 1."""
    if steps is None:
        return
    if (
        isinstance(steps, bool)
        or not isinstance(steps, (numbers.Integral, np.integer))
        or steps < 1
    ):
        raise ValueError(
            f"Expected `{name}` to be None or an integer >= 1. "
            f"Received: {name}={steps!r}"
        )


def check_model_and_epochs(model, epochs, *, warmup_epochs: int) -> None:
    """Raise unless `model` is a compiled model with a prunable channel
    group and `epochs` leaves room for pruning after the warm-up."""
    graph_lib.check_model(model)
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            f"Expected a compiled model. Received model '{model.name}' "
            "that was not compiled. Fix: call `model.compile(optimizer="
            "..., loss=..., metrics=...)` first; ADPTrainer reuses those "
            "settings after every rebuild."
        )
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
        raise ValueError(
            "Expected `epochs` to be an integer. "
            f"Received: epochs={epochs!r}"
        )
    if epochs <= warmup_epochs:
        raise ValueError(
            "Expected `epochs` > "
            f"warmup_epochs={warmup_epochs} "
            f"so that pruning can happen. Received: epochs={epochs}. Fix: "
            "train longer or lower `ADPPolicy(warmup_epochs=...)`."
        )
    groups = graph_lib.channel_groups(model)
    if not any(g.prunable for g in groups):
        reasons = "; ".join(f"{g.name}: {g.reason}" for g in groups)
        raise ValueError(
            f"Model '{model.name}' has no prunable channel group, so "
            f"there is nothing to prune. Groups: {reasons or 'none'}."
        )


# BatchNormalization's moving statistics move by (1 - momentum) of the
# batch's per step: at 0.999 (keras.applications' choice) they describe
# the data only after a few thousand steps.
LAGGING_MOMENTUM = 0.999


def warn_if_batch_norm_lags(model) -> None:
    """Warn when BatchNormalization layers of `model` (nested ones
    included) have momentum >= 0.999: the accuracy guard validates in
    inference mode, on moving statistics that stay near their initial values
    for the first ~1/(1 - momentum) steps of training from scratch."""
    slow = [
        layer for layer in graph_lib.all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        and layer.momentum >= LAGGING_MOMENTUM
    ]
    if not slow:
        return
    names = ", ".join(f"'{layer.name}'" for layer in slow[:3])
    more = f" and {len(slow) - 3} more" if len(slow) > 3 else ""
    steps = round(1.0 / (1.0 - max(layer.momentum for layer in slow)))
    warnings.warn(
        f"{len(slow)} BatchNormalization layer(s) of '{model.name}' ({names}"
        f"{more}) have momentum >= {LAGGING_MOMENTUM}: their moving "
        f"statistics need about {steps:,} training steps to describe the "
        "data. Until then, validation in inference mode -- what the accuracy "
        "guard judges pruning steps by -- measures stale statistics, not "
        "the network (a model trained from scratch can score chance level). "
        "Fix: for training from scratch, set the layers' momentum to 0.99 "
        "(Keras' default) before compiling, or train enough steps before "
        "the first pruning step (`ADPPolicy(warmup_epochs=...)`).",
        stacklevel=3,
    )


def check_training_data(model, x, y, steps_per_epoch) -> None:
    """Everything about `x`/`y` that can fail before training starts."""
    if is_dataset(x):
        import tensorflow as tf

        if y is not None:
            raise ValueError(
                "Received a tf.data.Dataset for `x` and also `y`. Expected "
                "the dataset to yield (x, y) batches and `y=None`. Fix: "
                "drop `y`."
            )
        if (
            int(x.cardinality()) == tf.data.INFINITE_CARDINALITY
            and steps_per_epoch is None
        ):
            raise ValueError(
                "Received an infinite dataset (e.g. after `.repeat()`) "
                "without `steps_per_epoch`: an epoch would never end. Fix: "
                "pass `steps_per_epoch=N` (batches per epoch), or a finite "
                "dataset."
            )
        spec = x.element_spec
        if isinstance(spec, (tuple, list)):
            spec = spec[0]
        first = keras.tree.flatten(spec)[0]
        expected = len(model.inputs[0].shape)
        if getattr(first, "shape", None) is not None and (
            first.shape.rank == expected - 1
        ):
            raise ValueError(
                f"Received a dataset of single samples of shape "
                f"{tuple(first.shape)}; model '{model.name}' takes batches "
                f"of shape {tuple(model.inputs[0].shape)}. Expected a "
                "batched dataset. Fix: call `dataset.batch(batch_size)`."
            )
        return
    if x is None:
        raise ValueError(
            "Expected training data `x`. Received x=None. Fix: pass arrays "
            "`x, y` or a tf.data.Dataset of (x, y) batches."
        )
    validation.check_arrays(x, "x")
    validation.check_labels(model, y, "y")


def check_fit_keywords(
    x, *, epochs, resume, initial_epoch, validation_split, shuffle,
    class_weight, sample_weight, validation_steps, validation_freq,
    guard_on: bool,
) -> dict:
    """Check the keywords `ADPTrainer.fit` shares with `model.fit`.

    Returns:
        The keywords passed on to each epoch's `model.fit` (without
        `sample_weight`, which the validation split may cut).

    Raises:
        ValueError: a value `model.fit` would refuse, or a keyword that
            cannot apply here, saying why.
    """
    dataset = is_dataset(x)
    _check_initial_epoch(initial_epoch, epochs=epochs, resume=resume)
    if isinstance(validation_split, bool) or not isinstance(
        validation_split, numbers.Real
    ) or not 0 <= validation_split < 1:
        raise ValueError(
            "Expected `validation_split` to be a number in [0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    if validation_split and dataset:
        raise ValueError(
            f"Received validation_split={validation_split} with a "
            "tf.data.Dataset for `x`: a dataset cannot be split by "
            "sample (as in `model.fit`). Fix: pass `validation_data`."
        )
    if sample_weight is not None and dataset:
        raise ValueError(
            "Received `sample_weight` with a tf.data.Dataset for `x`: "
            "as in `model.fit`, a dataset carries its weights itself. "
            "Fix: yield (x, y, sample_weight) from the dataset."
        )
    if shuffle not in (True, False, "batch"):
        raise ValueError(
            "Expected `shuffle` to be True, False or 'batch'. "
            f"Received: shuffle={shuffle!r}"
        )
    check_steps("validation_steps", validation_steps)
    _check_validation_freq(validation_freq, guard_on=guard_on)
    validation.check_arrays(sample_weight, "sample_weight")
    options = {
        # A tf.data pipeline shuffles itself (Keras warns otherwise).
        "shuffle": False if dataset else shuffle,
        "class_weight": class_weight,
        "validation_steps": validation_steps,
        "validation_freq": int(validation_freq),
    }
    return options


def _check_initial_epoch(initial_epoch, *, epochs, resume) -> None:
    if (
        isinstance(initial_epoch, bool)
        or not isinstance(initial_epoch, (numbers.Integral, np.integer))
        or not 0 <= initial_epoch < epochs
    ):
        raise ValueError(
            f"Expected `initial_epoch` to be an integer in [0, {epochs}) "
            f"(epochs={epochs}). Received: initial_epoch="
            f"{initial_epoch!r}"
        )
    if resume and initial_epoch:
        raise ValueError(
            f"Received resume=True and initial_epoch={initial_epoch}: "
            "a resumed run starts where its checkpoint ended, so "
            "`initial_epoch` cannot apply. Fix: drop one of them."
        )


def _check_validation_freq(validation_freq, *, guard_on: bool) -> None:
    if (
        isinstance(validation_freq, bool)
        or not isinstance(validation_freq, (numbers.Integral, np.integer))
        or validation_freq < 1
    ):
        raise ValueError(
            "Expected `validation_freq` to be an integer >= 1. "
            f"Received: validation_freq={validation_freq!r}"
        )
    if validation_freq != 1 and guard_on:
        raise ValueError(
            f"Received validation_freq={validation_freq} with the "
            "accuracy guard on: the guard reads the validation metrics "
            "of every epoch, so validation cannot be skipped. Fix: pass "
            "validation_freq=1, or turn the guard off with "
            "`ADPPolicy(max_accuracy_drop=None)`."
        )


def split_validation(
    x, y, sample_weight, validation_data, validation_split, holdout=None
):
    """`x, y, sample_weight, validation_data` after the validation split.

    `validation_data` wins; else `validation_split` holds out the last
    samples, as `model.fit` does; else `holdout(x)`, when given, returns
    the (train, held out) indices (the accuracy guard's random split).
    """
    if validation_data is not None:
        return x, y, sample_weight, validation_data
    if validation_split:
        train, held = split_last(
            num_samples(x), validation_split
        )
    elif holdout is None:
        return x, y, sample_weight, None
    else:
        train, held = holdout(x)
    validation_data = (
        take_rows(x, held), take_rows(y, held)
    )
    if sample_weight is not None:
        validation_data += (take_rows(sample_weight, held),)
    return (
        take_rows(x, train),
        take_rows(y, train),
        take_rows(sample_weight, train),
        validation_data,
    )
