"""Channel sections: one group cut into equal sections by `keras.ops.split`.

`keras.ops.split(x, n, axis=-1)` cuts a tensor's channels into `n` equal
contiguous sections, each a tensor of its own that may meet other groups
downstream (keras-hub's CSPNet adds one section to the outputs of its
residual blocks and concatenates the other with their result). The walk
(`ChannelPartition.split_sections`) splits the tensor's group at the
section boundaries into one *piece* per section, so that each section
couples to other groups on its own, and records a `Tie` between the pieces.

A tie is reported as one `ChannelGroup` of the split tensor's channels,
with `blocks = n`: a pruning keeps the same number of channels in every
section, so that the split stays an equal one, and each section's consumers
get the kept channels of their block. Layers that see only one section (a
residual block's convolutions) produce, consume or carry only that block of
the group: their offsets are negative or their range short (see
`ChannelGroup.producer_offsets` and `ConsumerSlice.section`).

Pure Python: nothing here reads a Keras model.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from keras_adp.graph_types import (
    ActivationSite,
    ChannelGroup,
    ConsumerSlice,
    Layout,
    Part,
)

__all__ = ["Tie", "Piece", "structure_problem", "tied_group"]


@dataclasses.dataclass(frozen=True)
class Tie:
    """Pieces of one group that must keep equal channel counts.

    Attributes:
        layout: the split tensor's layout, one part per section (read it
            through `ChannelPartition.refresh`).
        sections: the number of equal sections.
        where: qualified name of the split operation.
    """

    layout: Layout
    sections: int
    where: str


@dataclasses.dataclass(frozen=True)
class Piece:
    """One section of a tie, as the partition sees it after the walk.

    Attributes:
        part: the section's part of the tie's (refreshed) layout: its
            `offset` is the section's first channel in the tied group.
        root: the representative root of the section's group.
        record: that group's `GroupRecord`.
        out_offsets: layer -> offset of the piece in the layer's output.
        in_offsets: layer -> offset of the piece in the layer's input.
    """

    part: Part
    root: int
    record: object
    out_offsets: dict
    in_offsets: dict


def structure_problem(tie: Tie, parts: Sequence[Part], roots: list[int],
                      shared: set[int]) -> str | None:
    """Why the tie's pieces cannot form one group of equal blocks.

    Args:
        tie: the tie.
        parts: its layout's parts after the walk.
        roots: the representative root of each part.
        shared: roots that belong to more than one tie.

    Returns:
        A reason, or None when the pieces are `sections` distinct groups
        of equal size, one per section.
    """
    size = tie.layout.width // tie.sections
    if len(parts) != tie.sections or any(
        part.positions != 1 or part.size != size or part.offset != i * size
        for i, part in enumerate(parts)
    ):
        return (
            f"the channel sections of split '{tie.where}' are cut further "
            "by a concatenation or a merge with differently cut channels"
        )
    if len(set(roots)) != len(roots):
        return (
            f"some channel sections of split '{tie.where}' are coupled to "
            "each other (a merge of two sections) and others are not"
        )
    if shared & set(roots):
        return (
            f"a channel section of split '{tie.where}' is coupled to a "
            "section of another split"
        )
    return None


def tied_group(
    name: str, tie: Tie, pieces: list[Piece], reasons: list[str]
) -> ChannelGroup:
    """The `ChannelGroup` of a tie's pieces, in section order.

    Args:
        name: the group's name.
        tie: the tie.
        pieces: one per section, in order.
        reasons: why the pieces' groups cannot be pruned (their records'
            reasons and block reasons), or empty.

    Returns:
        A group of `tie.layout.width` channels with `blocks = tie.sections`.
    """
    size = tie.layout.width
    reasons = list(dict.fromkeys(
        reasons + [r for piece in pieces for r in piece.record.reasons]
        + _piece_block_reasons(tie, pieces)
    ))
    if size == tie.sections:
        reasons.append(
            f"split '{tie.where}' leaves one channel in each of its "
            f"{tie.sections} sections: keeping every section equal removes "
            "none"
        )
    producers = _ordered(p.record.producers for p in pieces)
    members = _ordered(p.record.members for p in pieces)
    reason = "; ".join(reasons)
    return ChannelGroup(
        name=name,
        size=size,
        producers=producers,
        consumers=_ordered(p.record.consumers for p in pieces),
        members=members,
        prunable=not reason,
        reason=reason,
        consumer_slices=_consumer_slices(pieces, size),
        activation_sites=_whole_sites(pieces),
        inferred=_ordered(p.record.inferred for p in pieces),
        producer_offsets=tuple(
            (layer, _offset(pieces, layer, "out_offsets"))
            for layer in producers
        ),
        member_offsets=tuple(
            (layer, _offset(pieces, layer, "in_offsets")) for layer in members
        ),
        blocks=tie.sections,
    )


def _ordered(lists) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for names in lists for name in names))


def _piece_block_reasons(tie: Tie, pieces: list[Piece]) -> list[str]:
    """A grouped convolution on one section would need blocks within the
    section too; not supported."""
    found = [
        (layer, groups) for piece in pieces
        for layer, groups in piece.record.blocks
    ]
    if not found:
        return []
    where = ", ".join(
        f"'{layer}' (groups={groups})" for layer, groups in dict.fromkeys(found)
    )
    return [
        f"a channel section of split '{tie.where}' also meets grouped "
        f"convolution {where}; equal blocks within equal sections are not "
        "supported"
    ]


def _offset(pieces: list[Piece], layer: str, table: str) -> int:
    """Index in `layer`'s channels of the tied group's channel 0, from the
    first piece the layer carries (so negative for a later section)."""
    for piece in pieces:
        offsets = getattr(piece, table)
        if layer in offsets:
            return offsets[layer] - piece.part.offset
    return 0


def _consumer_slices(pieces: list[Piece], size: int) -> tuple:
    """Each piece's consumer slices in tied-group channels; sections that
    enter one consumer at consecutive indices are joined into one slice."""
    entries: list[list] = []  # [(layer, offset, stride, positions), start, stop]
    for piece in pieces:
        start, stop = piece.part.offset, piece.part.offset + piece.part.size
        for s in piece.record.consumer_slices:
            where = (s.layer, s.offset - start, s.stride, s.positions)
            joined = next(
                (e for e in entries if e[0] == where and e[2] == start), None
            )
            if joined is not None:
                joined[2] = stop
            else:
                entries.append([where, start, stop])
    return tuple(
        ConsumerSlice(
            *where, section=None if (start, stop) == (0, size) else (start, stop)
        )
        for where, start, stop in entries
    )


def _whole_sites(pieces: list[Piece]) -> tuple[ActivationSite, ...]:
    """Activation sites that carry every section at consistent indices
    (those before the split); a site of one section only is left out,
    since density is measured over the whole group."""
    def key(site, piece):
        return (site.layer, site.activation, id(site.tensor), site.context,
                site.offset - piece.part.offset)

    common = None
    for piece in pieces:
        keys = {key(s, piece) for s in piece.record.sites}
        common = keys if common is None else common & keys
    first = pieces[0]
    return tuple(
        dataclasses.replace(site, offset=site.offset - first.part.offset)
        for site in first.record.sites
        if key(site, first) in common
    )
