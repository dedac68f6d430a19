"""The data types of the channel-dependency analysis (`keras_adp.graph`).

A *channel group* (`ChannelGroup`) is a set of tensors whose channel axis
must be pruned together. A tensor's channel axis is described by a
`Layout`: an ordered list of `Part`s, one per group whose channels it
carries. A plain conv output has one part; a channel-axis `Concatenate` has
one part per input, at increasing offsets; after `Flatten`, every spatial
position repeats the channels, so a part is interleaved: channel `c` of the
group sits at index `p * stride + offset + c` for each position
`p < positions`.

The functions at the end combine layouts; they know nothing of Keras.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import keras
import numpy as np

__all__ = [
    "GATING_ACTIVATIONS",
    "Part",
    "Layout",
    "ConsumerSlice",
    "ActivationSite",
    "ChannelGroup",
    "LayerIO",
    "single_layout",
    "aligned",
    "tiles",
    "concatenated",
    "flattened",
]

# Nonlinearities with a silent (zero or negative) branch: "fired" (> 0)
# then means the pre-activation was positive.
GATING_ACTIVATIONS = frozenset(
    {"relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu",
     "swish", "hard_silu", "hard_swish", "mish", "celu"}
)


@dataclasses.dataclass(frozen=True)
class Part:
    """Where one group's channels sit on a tensor's channel axis.

    Channel `c` of group `root` is at index `p * stride + offset + c` for
    `p` in `range(positions)`. For a tensor that is not flattened,
    `positions == 1` and `stride` is unused.
    """

    root: int
    size: int
    offset: int
    stride: int
    positions: int


@dataclasses.dataclass(frozen=True)
class Layout:
    """The channel axis of one tensor: its parts and its total width."""

    parts: tuple[Part, ...]
    width: int


@dataclasses.dataclass(frozen=True)
class ConsumerSlice:
    """Where a group's channels enter a consumer layer's input channel axis.

    Attributes:
        layer: qualified name of the consuming layer.
        offset: index of the group's channel 0 in the consumer's input.
        stride: distance between two spatial positions after `Flatten`
            (equal to the flattened tensor's channel count per position).
        positions: number of spatial positions that repeat the channels
            (1 unless the group reaches the consumer through `Flatten`).
        section: `(start, stop)`: only the group's channels `[start, stop)`
            enter the consumer (one section of a channel-axis `ops.split`;
            `offset` is then negative when `start > 0`: channel `c` is at
            index `offset + c`). None when every channel does.
    """

    layer: str
    offset: int
    stride: int
    positions: int
    section: tuple[int, int] | None = None

    def input_indices(self, channels: np.ndarray) -> np.ndarray:
        """Consumer input indices of the given group channel indices (those
        outside `section` do not enter the consumer and are left out)."""
        channels = np.asarray(channels, dtype=np.int64)
        if self.section is not None:
            start, stop = self.section
            channels = channels[(channels >= start) & (channels < stop)]
        base = np.arange(self.positions, dtype=np.int64)[:, None] * self.stride
        return np.sort((base + self.offset + channels[None, :]).ravel())


@dataclasses.dataclass(frozen=True)
class ActivationSite:
    """A tensor in which a group's channels have passed a nonlinearity.

    Attributes:
        layer: qualified name of the layer whose output is measured (the
            producer itself for a fused `activation=` argument).
        activation: name of the nonlinearity (`"relu"`, `"gelu"`, ...).
        offset: index of the group's channel 0 in that tensor.
        tensor: the symbolic `KerasTensor` (private, not compared).
        context: for a tensor inside nested sub-models, the ids of the
            outer graph nodes that call them, outermost first (`()` at the
            top level); which call of a sub-model called more than once.
    """

    layer: str
    activation: str
    offset: int
    tensor: Any = dataclasses.field(compare=False, repr=False, default=None)
    context: tuple = dataclasses.field(compare=False, repr=False, default=())


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together.

    Attributes:
        name: stable name, the (qualified) name of the group's first
            producer layer in topological order.
        size: number of channels.
        producers: layers whose output channels define the group (Conv*,
            Conv*Transpose, SeparableConv*, Dense).
        consumers: layers whose input channels include the group's channels.
        members: channel-wise layers sliced along with the group
            (BatchNormalization, DepthwiseConv, PReLU, LayerNormalization, ...).
        prunable: whether channels can be removed.
        reason: why not, when `prunable` is False (else `""`).
        consumer_slices: where the group enters each consumer's input.
        activation_sites: tensors where the channels have passed a
            nonlinearity, in topological order.
        inferred: layers and operations the group passes through that have
            no registered handler but were found channel-wise by the
            permutation rule (`keras_adp.permutation_rule`).
        producer_offsets: `(producer, offset)` pairs: the index of the
            group's channel 0 among the producer's output channels (not 0
            when a producer's filters are split between groups): group
            channel `c` is the producer's channel `offset + c`. A producer
            of one section of a split group (`keras_adp.channel_sections`)
            makes only the channels that land in its output range (its
            offset is then negative).
        member_offsets: `(member, offset)` pairs: the index of the group's
            channel 0 among the member's channels (not 0 after a
            concatenation, e.g. DenseNet's BatchNormalization); negative or
            short, like `producer_offsets`, for a member of one section.
        blocks: the channels form this many equal contiguous blocks, and a
            pruning keeps the same number of channels in each: the groups
            of the grouped convolutions (`1 < groups < channels`) that
            produce or consume them (the least common multiple when there
            are several), or the sections of a channel-axis `ops.split`
            (`keras_adp.channel_sections`). 1 when unconstrained. See
            `keras_adp.channel_blocks`.
    """

    name: str
    size: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    members: tuple[str, ...]
    prunable: bool
    reason: str
    consumer_slices: tuple[ConsumerSlice, ...] = ()
    activation_sites: tuple[ActivationSite, ...] = ()
    inferred: tuple[str, ...] = ()
    producer_offsets: tuple[tuple[str, int], ...] = ()
    member_offsets: tuple[tuple[str, int], ...] = ()
    blocks: int = 1

    @property
    def measured_at(self) -> ActivationSite | None:
        """Deprecated alias of `density_site` (one release).

        `Density.measured_at` is the measured layer's name (a `str`); this
        attribute of the same name held an `ActivationSite`.
        """
        warnings.warn(
            "`ChannelGroup.measured_at` is deprecated: use "
            "`ChannelGroup.density_site` (an `ActivationSite`); "
            "`Density.measured_at` is the measured layer's name.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.density_site

    @property
    def density_site(self) -> ActivationSite | None:
        """Where activation density is measured: the first activation site
        whose nonlinearity has a silent branch (`GATING_ACTIVATIONS`), else
        the first site (which then gives no density); None without sites.

        A site inside a nested sub-model (`layer` like `"backbone/relu"`) is
        measured there (`keras_adp.graph.site_tensors` reaches it from the
        outer model's inputs).
        """
        for site in self.activation_sites:
            if site.activation in GATING_ACTIVATIONS:
                return site
        return self.activation_sites[0] if self.activation_sites else None


@dataclasses.dataclass
class LayerIO:
    """The channel layouts of one layer's inputs and output (first call)."""

    layer: keras.layers.Layer
    name: str
    input_layouts: list[Layout]
    output_layouts: list[Layout]


def aligned(a: Layout, b: Layout) -> bool:
    """Whether part `i` of `a` and part `i` of `b` cover the same indices."""
    return (
        a.width == b.width
        and len(a.parts) == len(b.parts)
        and all(
            (x.size, x.offset, x.positions) == (y.size, y.offset, y.positions)
            # The stride only matters between flattened positions.
            and (x.positions == 1 or x.stride == y.stride)
            for x, y in zip(a.parts, b.parts)
        )
    )


def tiles(layout: Layout) -> bool:
    """Whether unflattened parts cover the channel axis once, in order."""
    offset = 0
    for part in layout.parts:
        if part.positions != 1 or part.offset != offset:
            return False
        offset += part.size
    return offset == layout.width


def single_layout(root: int, size: int) -> Layout:
    """The layout of a tensor carrying one whole group, unflattened."""
    return Layout((Part(root, size, 0, size, 1),), size)


def concatenated(layouts: list[Layout]) -> Layout:
    """The layout of a channel-axis concatenation of `layouts`."""
    parts, base = [], 0
    for layout in layouts:
        for part in layout.parts:
            parts.append(dataclasses.replace(part, offset=part.offset + base))
        base += layout.width
    return Layout(tuple(parts), base)


def flattened(layout: Layout, in_shape: tuple) -> Layout:
    """The layout after `Flatten` of an unflattened tensor of `in_shape`."""
    if len(in_shape) <= 2:
        return layout
    positions = math.prod(int(d) for d in in_shape[1:-1])
    parts = tuple(
        dataclasses.replace(part, stride=layout.width, positions=positions)
        for part in layout.parts
    )
    return Layout(parts, layout.width * positions)
