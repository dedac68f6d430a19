"""Compile a model like another one: same loss, metrics and options.

Shared by `keras_adp.rebuild` (a pruned model is compiled like the model it
was cut from) and `keras_adp.optimizers` (which also carries the optimizer's
state across). It imports neither, so they do not import each other.
"""

from __future__ import annotations

import keras

from keras_adp import keras_graph

__all__ = ["compile_like", "fresh_optimizer"]


def compile_like(source: keras.Model, target: keras.Model, optimizer) -> None:
    """Compile `target` with `source`'s compile arguments and `optimizer`.

    Metric objects are re-created from their configs (they hold state);
    strings, functions and losses are reused as given.

    Args:
        source: a compiled model (not modified).
        target: the model to compile.
        optimizer: the optimizer `target` gets (see `fresh_optimizer`).

    Raises:
        ValueError: if `source` was never compiled.
    """
    kwargs = keras_graph.compile_arguments(source)
    if not source.compiled or kwargs is None:
        raise ValueError(
            f"Expected a compiled model. Received model '{source.name}' that "
            "was never compiled. Fix: call `model.compile(optimizer=..., "
            "loss=..., metrics=...)` before training it with keras_adp."
        )
    for key in ("metrics", "weighted_metrics"):
        kwargs[key] = keras.tree.map_structure(_fresh_metric, kwargs[key])
    kwargs["optimizer"] = optimizer
    target.compile(**kwargs)


def _fresh_metric(metric):
    if isinstance(metric, keras.metrics.Metric):
        return metric.__class__.from_config(metric.get_config())
    return metric


def fresh_optimizer(optimizer: keras.optimizers.Optimizer):
    """A new, unbuilt optimizer with the same class and configuration."""
    return keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
