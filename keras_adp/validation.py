"""Checks on user input, run once before any training or measurement time is
spent.

Each check raises a `ValueError` (or `TypeError` for a wrong type) that says
what was received, what was expected and how to fix it.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import numpy as np

__all__ = [
    "is_dataset",
    "check_finite",
    "check_batch_size",
    "check_bool",
    "check_threshold",
    "check_callbacks",
    "check_arrays",
    "check_validation_data",
    "check_labels",
]


def check_finite(array: Any, name: str) -> None:
    """Raise if a floating-point array holds NaN or inf.

    Args:
        array: a NumPy array (or array-like); non-float arrays always pass.
        name: how the message names the array, e.g. `"x"`.

    Raises:
        ValueError: naming the array and the index of the first bad value.
    """
    values = np.asarray(array)
    if not np.issubdtype(values.dtype, np.floating) and not np.issubdtype(
        values.dtype, np.complexfloating
    ):
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    index = np.unravel_index(int(np.argmin(finite.ravel())), values.shape)
    bad = values[index]
    kind = "NaN" if np.isnan(bad) else "inf"
    shown = ", ".join(str(int(i)) for i in index)
    raise ValueError(
        f"Received non-finite data: {name}[{shown}] is {kind} "
        f"({int(values.size - finite.sum())} non-finite value(s) in {name}, "
        f"shape {values.shape}). Expected only finite numbers. Fix: clean "
        "or impute the data before training (e.g. `np.nan_to_num`)."
    )


def check_batch_size(batch_size: Any, *, name: str = "batch_size") -> None:
    """Raise unless `batch_size` is None or an integer >= 1."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(
        batch_size, (numbers.Integral, np.integer)
    ):
        raise ValueError(
            f"Expected `{name}` to be None or an integer >= 1. Received: "
            f"{name}={batch_size!r} of type {type(batch_size).__name__}. "
            f"Fix: pass an int, e.g. {name}=32."
        )
    if batch_size < 1:
        raise ValueError(
            f"Expected `{name}` to be None or an integer >= 1. Received: "
            f"{name}={batch_size!r}. Fix: pass a positive batch size, or None "
            "for the default."
        )


def check_bool(value: Any, name: str) -> bool:
    """`value` if it is a bool (or NumPy bool), else a ValueError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"Expected `{name}` to be True or False. Received: "
            f"{name}={value!r} of type {type(value).__name__}."
        )
    return bool(value)


def check_threshold(threshold: Any) -> float:
    """`threshold` as a float, if it is a finite real number."""
    if (
        isinstance(threshold, (bool, np.bool_))
        or not isinstance(threshold, (numbers.Real, np.floating, np.integer))
        or not np.isfinite(float(threshold))
    ):
        raise ValueError(
            "Expected `threshold` to be a finite number. Received: "
            f"threshold={threshold!r} of type {type(threshold).__name__}. "
            "Fix: pass a float, e.g. threshold=0.0."
        )
    return float(threshold)


def check_callbacks(callbacks: Any) -> list:
    """`callbacks` as a list, if it is a list or tuple of Keras callbacks."""
    import keras

    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.Callback):
        raise TypeError(
            "Expected `callbacks` to be a list of `keras.callbacks.Callback`. "
            f"Received a single {type(callbacks).__name__}. Fix: pass "
            f"callbacks=[{type(callbacks).__name__}(...)]."
        )
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            "Expected `callbacks` to be a list of `keras.callbacks.Callback`. "
            f"Received: {type(callbacks).__name__}."
        )
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, keras.callbacks.Callback):
            raise TypeError(
                "Expected every item of `callbacks` to be a "
                f"`keras.callbacks.Callback`. Received callbacks[{index}] of "
                f"type {type(callback).__name__}. Fix: wrap plain functions "
                "in `keras.callbacks.LambdaCallback`."
            )
    return list(callbacks)


def check_arrays(data: Any, name: str) -> None:
    """NaN/inf check of an array, or of each array in a list/tuple/dict."""
    if data is None or _is_dataset_like(data):
        return
    if isinstance(data, dict):
        for key, value in data.items():
            check_arrays(value, f"{name}[{key!r}]")
        return
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        for index, value in enumerate(data):
            check_arrays(value, f"{name}[{index}]")
        return
    if hasattr(data, "shape") or isinstance(data, (list, tuple)):
        array = np.asarray(data)
        if array.dtype != object:
            check_finite(array, name)


def check_validation_data(validation_data: Any) -> None:
    """Raise unless `validation_data` is None, a dataset or (x, y[, w])."""
    if validation_data is None or _is_dataset_like(validation_data):
        return
    if not isinstance(validation_data, (tuple, list)) or len(
        validation_data
    ) not in (2, 3):
        shown = (
            f"a {type(validation_data).__name__} of {len(validation_data)} "
            "item(s)"
            if isinstance(validation_data, (tuple, list))
            else type(validation_data).__name__
        )
        raise ValueError(
            "Expected `validation_data` to be a tuple (x_val, y_val), "
            "(x_val, y_val, val_sample_weight) or a tf.data.Dataset. "
            f"Received {shown}. Fix: pass validation_data=(x_val, y_val)."
        )
    for part, name in zip(
        validation_data, ("validation_data[0] (x)", "validation_data[1] (y)",
                          "validation_data[2] (sample weights)")
    ):
        check_arrays(part, name)


_SPARSE_LOSSES = ("sparse_categorical_crossentropy",)
_CATEGORICAL_LOSSES = ("categorical_crossentropy",)


def _loss_name(loss: Any) -> str | None:
    import keras

    if isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return "sparse_categorical_crossentropy"
    if isinstance(loss, keras.losses.CategoricalCrossentropy):
        return "categorical_crossentropy"
    name = getattr(loss, "__name__", None)
    return name if isinstance(name, str) else None


def check_labels(model: Any, y: Any, name: str = "y") -> None:
    """Check array labels against the loss and the model's output size.

    Labels must be finite. With a (sparse) categorical cross-entropy loss on
    a single-output model, sparse labels must be integers in
    `[0, num_classes)` and one-hot labels must have `num_classes` columns.
    Datasets, dicts and multi-output models are only checked for NaN/inf.
    """
    check_arrays(y, name)
    if y is None or _is_dataset_like(y) or isinstance(y, (dict, list, tuple)):
        return
    if len(getattr(model, "outputs", None) or []) != 1:
        return
    loss = _loss_name(getattr(model, "loss", None))
    num_classes = model.outputs[0].shape[-1]
    if loss is None or num_classes is None:
        return
    labels = np.asarray(y)
    if loss in _SPARSE_LOSSES:
        if not (
            np.issubdtype(labels.dtype, np.integer)
            or np.issubdtype(labels.dtype, np.floating)
        ):
            return
        valid = (labels >= 0) & (labels < num_classes) & (labels == np.round(labels))
        if valid.all():
            return
        index = np.unravel_index(int(np.argmin(valid.ravel())), labels.shape)
        shown = ", ".join(str(int(i)) for i in index)
        raise ValueError(
            f"Received {name}[{shown}] = {labels[index].item():g}, not a class "
            "index "
            f"of model '{model.name}', which has {num_classes} outputs. "
            f"Expected integer labels in [0, {num_classes}) for the loss "
            f"'{loss}'. Fix: remap the labels to 0 .. {num_classes - 1}, or "
            "give the model's last layer as many units as there are classes."
        )
    if loss in _CATEGORICAL_LOSSES and labels.ndim >= 2:
        if labels.shape[-1] != num_classes:
            raise ValueError(
                f"Received one-hot labels `{name}` with {labels.shape[-1]} "
                f"columns for model '{model.name}', which has {num_classes} "
                f"outputs. Expected {num_classes} columns for the loss "
                f"'{loss}'. Fix: one-hot encode with num_classes="
                f"{num_classes}, or use sparse labels with "
                "'sparse_categorical_crossentropy'."
            )


def _is_dataset_like(data: Any) -> bool:
    return is_dataset(data) or (
        hasattr(data, "__next__") or hasattr(data, "__getitem__")
        and hasattr(data, "on_epoch_end")  # keras.utils.PyDataset
    )


def is_dataset(data: Any) -> bool:
    """Whether `data` is a `tf.data.Dataset`, without importing TensorFlow.

    A dataset can only exist once TensorFlow is imported, so when it is not
    (e.g. on the JAX or torch backend) nothing is one.
    """
    tf = sys.modules.get("tensorflow")
    data_module = getattr(tf, "data", None)
    dataset_type = getattr(data_module, "Dataset", None)
    return isinstance(dataset_type, type) and isinstance(data, dataset_type)
