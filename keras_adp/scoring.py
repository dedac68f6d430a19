"""Per-channel importance scores, used by the policy to rank channels.

`ADPPolicy.rank` orders a group's channels by density, by these scores, or
both (`selection`). A score is either the L1 norm of each output channel's
weights, summed over the group's producers, or `|gamma|` of the group's
first BatchNormalization (`selection="bn_gamma"`).

Which weight of a producer holds its output channels, and on which axis,
is declared by the producer's handler in `keras_adp.layers.REGISTRY`
(`output_weight`, `output_axis`): the registry is the one place that knows
a layer class's kernel layout.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_adp import graph as graph_lib
from keras_adp import layers as layer_handlers

__all__ = ["channel_scores", "first_gamma", "producer_l1"]


def channel_scores(
    model: keras.Model,
    groups: list[graph_lib.ChannelGroup],
    selection: str,
) -> dict[str, np.ndarray]:
    """Per-channel importance used to rank (or break ties between) channels.

    `"bn_gamma"`: |gamma| of the group's first BatchNormalization member.
    Otherwise (and when a group has no BatchNormalization): the L1 norm of
    each output channel's weights, summed over the group's producers.

    Args:
        model: the model the groups were found in. Not modified.
        groups: its `ChannelGroup`s; non-prunable ones get no score.
        selection: the policy's `selection` (`"density"`, `"l1"` or
            `"bn_gamma"`).

    Returns:
        Group name -> scores of shape `(group.size,)`, for prunable groups.
    """
    scores = {}
    for group in groups:
        if not group.prunable:
            continue
        if selection == "bn_gamma":
            gamma = first_gamma(model, group)
            if gamma is not None:
                scores[group.name] = np.abs(gamma)
                continue
        scores[group.name] = _group_l1(model, group)
    return scores


def producer_l1(layer: Any) -> np.ndarray:
    """The L1 norm of each output channel's weights of a producer layer.

    Read from the weight and axis its handler declares (`output_weight`,
    `output_axis`); the bias is not counted.

    Args:
        layer: a built layer whose handler has the role `"producer"`.

    Returns:
        An array of shape `(output channels,)`.

    Raises:
        ValueError: if `layer`'s class has no producer handler.
    """
    handler = layer_handlers.handler_for(layer)
    if handler is None or handler.role != "producer":
        raise ValueError(
            "Expected a producer layer (a registered class that defines "
            "output channels: Conv*, Conv*Transpose, SeparableConv*, Dense). "
            f"Received layer '{layer.name}' ({type(layer).__name__}), whose "
            f"handler is {handler.role if handler else None!r}."
        )
    kernel = next(
        np.asarray(weight.numpy())
        for weight in layer.weights
        if weight.name == handler.output_weight
    )
    axis = handler.output_axis % kernel.ndim
    other = tuple(a for a in range(kernel.ndim) if a != axis)
    return np.abs(kernel).sum(axis=other)


def _group_l1(model: keras.Model, group: graph_lib.ChannelGroup) -> np.ndarray:
    total = np.zeros(group.size)
    offsets = dict(group.producer_offsets)
    for name in group.producers:
        l1 = producer_l1(graph_lib.get_layer(model, name))
        # A producer split between groups owns a slice of its filters; one
        # of a split's sections makes only that section's channels.
        start = offsets.get(name, 0)
        low, high = max(0, -start), min(group.size, len(l1) - start)
        total[low:high] += l1[low + start:high + start]
    return total


def first_gamma(
    model: keras.Model, group: graph_lib.ChannelGroup
) -> np.ndarray | None:
    """Gamma of the group's first BatchNormalization member that carries
    all its channels (its slice of it, after a concatenation), or None when
    it has none with `scale`."""
    offsets = dict(group.member_offsets)
    for name in group.members:
        layer = graph_lib.get_layer(model, name)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
            # After a concatenation the group is a slice of the BN's channels.
            start = offsets.get(name, 0)
            gamma = np.asarray(layer.gamma.numpy())
            if 0 <= start and start + group.size <= len(gamma):
                return gamma[start:start + group.size]
            # Else it normalises one section of a split group only.
    return None
