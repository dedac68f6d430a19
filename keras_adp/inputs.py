"""Training inputs as `ADPTrainer.fit` takes them: the checks run before any
training, the rows of a held-out split, and the calibration set density is
measured on.

`calibration_inputs` is the one place that takes the first model inputs out
of whatever `fit` accepts (arrays, lists of arrays for multi-input models,
`(x, y)` tuples, datasets).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

from keras_adp import density as density_lib
from keras_adp import graph as graph_lib
from keras_adp import validation

__all__ = [
    "num_samples",
    "take_rows",
    "split_last",
    "calibration_inputs",
    "check_steps",
    "check_model_and_epochs",
    "check_training_data",
    "check_fit_keywords",
    "split_validation",
]


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


def calibration_inputs(data, count: int):
    """The first `count` model inputs of `data`.

    Args:
        data: what `fit` takes as `x` (arrays, a list of arrays, an `(x,)`
            or `(x, y)` tuple, a `tf.data.Dataset` of inputs or of
            `(x, y)` batches).
        count: how many samples to take (fewer when `data` has fewer).

    Returns:
        One array, or a list of arrays for a multi-input model.

    Raises:
        ValueError: `data` is None or holds no sample.
    """
    if data is None:
        raise ValueError(
            "Expected training data `x` (or `calibration_data`). Received None."
        )
    dataset = density_lib.as_input_dataset(data, batch_size=256)
    chunks, total = [], 0
    for batch in dataset:
        if isinstance(batch, tuple) and len(batch) == 1:
            batch = batch[0]  # ((x1, x2),): a multi-input batch
        parts = list(batch) if isinstance(batch, (tuple, list)) else [batch]
        chunks.append([np.asarray(part) for part in parts])
        total += len(chunks[-1][0])
        if total >= count:
            break
    if not chunks or total == 0:
        raise ValueError("Received empty data: no samples to calibrate on.")
    inputs = [
        np.concatenate([chunk[i] for chunk in chunks])[:count]
        for i in range(len(chunks[0]))
    ]
    return inputs[0] if len(inputs) == 1 else inputs


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


def check_training_data(model, x, y, steps_per_epoch) -> None:
    """Everything about `x`/`y` that can fail before training starts."""
    if isinstance(x, tf.data.Dataset):
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
        first = tf.nest.flatten(spec)[0]
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
    dataset = isinstance(x, tf.data.Dataset)
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
    validation.check_arrays(sample_weight, "sample_weight")
    options = {
        # A tf.data pipeline shuffles itself (Keras warns otherwise).
        "shuffle": False if dataset else shuffle,
        "class_weight": class_weight,
        "validation_steps": validation_steps,
        "validation_freq": int(validation_freq),
    }
    return options


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
