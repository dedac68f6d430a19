"""Carry a compiled model's training setup over to its pruned rebuild.

After a rebuild, training goes on where it stopped: the new model is compiled
with the user's own loss, metrics and compile options; the optimizer is a new
instance of the same class and configuration (so a learning-rate schedule
keeps its shape), its iteration count is copied (so the schedule keeps its
position), and its per-variable state (momentum, Adam moments, ...) is sliced
exactly as the weights it belongs to were sliced.

`optimizer_state` and `restore_optimizer_state` save and restore that state
as plain arrays, for checkpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np

from keras_adp import distribution
from keras_adp.compiling import compile_like, fresh_optimizer

if TYPE_CHECKING:  # Only for annotations.
    from keras_adp.rebuild import Rebuild

__all__ = [
    "compile_like",
    "fresh_optimizer",
    "carry_over",
    "optimizer_state",
    "restore_optimizer_state",
]


def _reference_of(slot, references: list) -> object | None:
    """The model variable an optimizer slot was created from, by its name.

    Keras names a slot `{reference.path with '/' -> '_'}_{slot name}`.
    """
    best = None
    for reference in references:
        prefix = reference.path.replace("/", "_") + "_"
        if slot.name.startswith(prefix) and (
            best is None or len(prefix) > len(best.path) + 1
        ):
            best = reference
    return best


def carry_over(
    source: keras.Model,
    target: keras.Model,
    surgery: Rebuild,
    *,
    reset: bool = False,
) -> None:
    """Compile `target` like `source` and move the optimizer state across.

    Args:
        source: the compiled model before the rebuild (not modified).
        target: its rebuild, `surgery.model`.
        surgery: the `Rebuild` that produced `target`.
        reset: start a fresh optimizer (iteration 0, empty state) instead,
            e.g. when the rebuilt model is re-initialised. Defaults to
            `False`.
    """
    old_optimizer = source.optimizer
    with distribution.scope(target):
        compile_like(source, target, fresh_optimizer(old_optimizer))
        new_optimizer = target.optimizer
        new_optimizer.build(target.trainable_variables)
    if reset or not old_optimizer.built:
        return
    old_variables = list(old_optimizer.variables)
    new_variables = list(new_optimizer.variables)
    if len(old_variables) != len(new_variables):
        raise RuntimeError(
            "The rebuilt optimizer has a different number of variables "
            f"({len(new_variables)}) than the original ({len(old_variables)})."
        )
    references = list(source.trainable_variables)
    for old, new in zip(old_variables, new_variables):
        value = np.asarray(old.numpy())
        if tuple(old.shape) != tuple(new.shape):
            reference = _reference_of(old, references)
            if reference is None:
                raise RuntimeError(
                    f"Cannot tell which weight optimizer variable '{old.name}' "
                    f"of shape {tuple(old.shape)} belongs to."
                )
            value = surgery.slice_like(reference, value)
        new.assign(value)


def optimizer_state(optimizer) -> list[np.ndarray]:
    """The values of all of `optimizer`'s variables, in order."""
    return [np.asarray(variable.numpy()) for variable in optimizer.variables]


def restore_optimizer_state(optimizer, values) -> None:
    """Assign `values` (from `optimizer_state`) to a built `optimizer`.

    Raises:
        ValueError: if the number or shapes of the values do not match the
            optimizer's variables (it was built for another model).
    """
    variables = list(optimizer.variables)
    shapes = [tuple(variable.shape) for variable in variables]
    received = [tuple(np.shape(value)) for value in values]
    if shapes != received:
        raise ValueError(
            f"Expected {len(shapes)} optimizer values of shapes {shapes}. "
            f"Received {len(received)} of shapes {received}."
        )
    for variable, value in zip(variables, values):
        variable.assign(value)
