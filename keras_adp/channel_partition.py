"""The partition of a model's channels into groups, built during the walk.

`keras_adp.graph` walks a model and records here every group of channels a
layer creates (`new_root`), every coupling of two tensors' channel axes
(`unify`), and why a group cannot be pruned (`block`). Groups are the
classes of a union-find structure over *roots*, one root per tensor of
channels first seen; each class keeps a `GroupRecord` of its producers,
consumers, members, activation sites and reasons.

A group is split when a tensor cut into groups one way is merged with one
cut another way (a concatenation added to one convolution's output, as in
Inception-ResNet's residual blocks): the group is replaced by *pieces*, and
every layout that mentions it is read through `refresh`, which substitutes
the pieces. A producer's filters then belong to several groups.

Pure Python and NumPy: nothing here reads a Keras model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_adp import channel_sections
from keras_adp.graph_types import (
    ActivationSite,
    ChannelGroup,
    ConsumerSlice,
    LayerIO,
    Layout,
    Part,
    aligned,
    single_layout,
    tiles,
)

__all__ = ["GroupRecord", "ChannelPartition"]

_MAX_REFINEMENTS = 8


@dataclasses.dataclass
class GroupRecord:
    """What is known of one group (the record of a union-find class).

    Attributes:
        size: number of channels.
        producers, consumers, members: qualified layer names, in the order
            the walk met them (see `ChannelGroup`).
        consumer_slices: where the group enters each consumer.
        sites: activation sites of the group's channels.
        reasons: why the group cannot be pruned (empty when it can).
        inferred: layers accepted by the permutation rule on the way.
        blocks: `(layer, groups)` of each grouped convolution that produces
            or consumes the channels (`ChannelGroup.blocks`).
    """

    size: int
    producers: list[str] = dataclasses.field(default_factory=list)
    consumers: list[str] = dataclasses.field(default_factory=list)
    members: list[str] = dataclasses.field(default_factory=list)
    consumer_slices: list[ConsumerSlice] = dataclasses.field(
        default_factory=list
    )
    sites: list[ActivationSite] = dataclasses.field(default_factory=list)
    reasons: list[str] = dataclasses.field(default_factory=list)
    inferred: list[str] = dataclasses.field(default_factory=list)
    blocks: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    _LISTS = (
        "producers", "consumers", "members", "consumer_slices", "sites",
        "reasons", "inferred", "blocks",
    )

    def absorb(self, other: GroupRecord) -> None:
        """Append every list of `other` to this record's."""
        if self.size != other.size:
            self.reasons.append(
                "couples tensors of different widths "
                f"({self.size} and {other.size})"
            )
        for name in self._LISTS:
            getattr(self, name).extend(getattr(other, name))

    def piece(self, start: int, end: int) -> GroupRecord:
        """The record of channels `[start, end)` split off this group: every
        producer, consumer and member (each now owns a share), reasons, and
        consumer slices and sites moved to the piece's offset."""
        return GroupRecord(
            size=end - start,
            producers=list(self.producers),
            consumers=list(self.consumers),
            members=list(self.members),
            consumer_slices=[
                dataclasses.replace(s, offset=s.offset + start)
                for s in self.consumer_slices
            ],
            sites=[
                dataclasses.replace(s, offset=s.offset + start)
                for s in self.sites
            ],
            reasons=list(self.reasons) + _split_blocks_reason(self.blocks),
            inferred=list(self.inferred),
        )


class ChannelPartition:
    """Groups of channels as a union-find structure with splitting."""

    def __init__(self):
        self._records: list[GroupRecord] = []
        self._parent: list[int] = []
        # Groups split by `_refine`: dead root -> [(start, piece root)].
        self._pieces: dict[int, list[tuple[int, int]]] = {}
        # Groups cut into equal sections by a channel-axis split.
        self._ties: list[channel_sections.Tie] = []

    def new_root(self, size: int, producer: str | None = None) -> int:
        """A new group of `size` channels (produced by `producer`)."""
        self._records.append(GroupRecord(size=size))
        self._parent.append(len(self._parent))
        if producer is not None:
            self._records[-1].producers.append(producer)
        return len(self._records) - 1

    def find(self, root: int) -> int:
        """The representative root of `root`'s group."""
        while self._parent[root] != root:
            self._parent[root] = self._parent[self._parent[root]]
            root = self._parent[root]
        return root

    def record(self, root: int) -> GroupRecord:
        """The record of `root`'s group."""
        return self._records[self.find(root)]

    def union(self, a: int, b: int) -> None:
        """Merge the groups of roots `a` and `b`."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        # Keep the older root as representative: producers stay in order.
        if b < a:
            a, b = b, a
        self._parent[b] = a
        self._records[a].absorb(self._records[b])

    def block_root(self, root: int, reason: str) -> None:
        """Mark `root`'s group non-prunable, for `reason`."""
        record = self.record(root)
        if reason not in record.reasons:
            record.reasons.append(reason)

    def block(self, layout: Layout, reason: str) -> None:
        """Mark every group on `layout` non-prunable, for `reason`."""
        for part in self.refresh(layout).parts:
            self.block_root(part.root, reason)

    def require_blocks(self, layout: Layout, blocks: int, where: str) -> None:
        """Ask that `layout`'s channels be pruned in `blocks` equal blocks.

        `where` is a grouped convolution with `groups=blocks` that produces
        or consumes the tensor. Its channels must then be one whole group:
        equal blocks across several groups would couple their widths, which
        groups cannot express, so those groups are blocked instead.
        """
        layout = self.refresh(layout)
        parts = layout.parts
        if len(parts) == 1 and parts[0].positions == 1 and (
            parts[0].size == layout.width
        ):
            record = self.record(parts[0].root)
            if (where, blocks) not in record.blocks:
                record.blocks.append((where, blocks))
            return
        self.block(
            layout,
            f"grouped convolution '{where}' (groups={blocks}) takes channels "
            f"of {len(parts)} groups (a concatenation); keeping its channel "
            "blocks equal would couple their widths, which is not supported",
        )

    def split_sections(
        self, layout: Layout, sections: int, where: str
    ) -> list[Layout] | None:
        """Cut `layout`'s channels into `sections` equal sections.

        `where` is a channel-axis `ops.split` into `sections` equal parts.
        The tensor's group is split at the section boundaries, one piece
        per section, and the pieces are tied: reported as one group pruned
        in `sections` equal blocks (`keras_adp.channel_sections`).

        Returns:
            The layout of each section, or None when the tensor carries
            several groups (a concatenation: equal sections would couple
            their widths, which groups cannot express) or is flattened.
        """
        layout = self.refresh(layout)
        parts = layout.parts
        if not (
            len(parts) == 1 and parts[0].positions == 1
            and parts[0].size == layout.width
        ):
            return None
        size = layout.width // sections
        rep = self.find(parts[0].root)
        self._split(rep, [size * i for i in range(1, sections)])
        pieces = self._pieces[rep]
        self._ties.append(channel_sections.Tie(
            self.refresh(layout), sections, where
        ))
        return [single_layout(piece, size) for _, piece in pieces]

    def unify(self, layouts: list[Layout], where: str) -> None:
        """Couple the channel axes of same-shaped tensors.

        Where the two tensors' channels are cut into groups differently (a
        concatenation merged with one convolution's output, as in
        Inception-ResNet's residual blocks), the groups are first split at
        every cut of either (`_refine`), so that part `i` of one tensor
        lines up with part `i` of the other.
        """
        first = self.refresh(layouts[0])
        for other in layouts[1:]:
            first, other = self.refresh(first), self.refresh(other)
            if not aligned(first, other):
                first, other = self._refine(first, other)
            if aligned(first, other):
                for a, b in zip(first.parts, other.parts):
                    self.union(a.root, b.root)
            else:
                reason = (
                    f"'{where}' merges tensors whose channels come from "
                    "differently concatenated groups"
                )
                self.block(first, reason)
                self.block(other, reason)

    def refresh(self, layout: Layout) -> Layout:
        """`layout` with the parts of split groups replaced by their pieces."""
        if not self._pieces:
            return layout
        parts, changed = [], False
        for part in layout.parts:
            rep = self.find(part.root)
            if rep not in self._pieces:
                parts.append(part)
                continue
            changed = True
            for start, piece in self._pieces[rep]:
                sub = Part(
                    piece, self._records[piece].size, part.offset + start,
                    part.stride, part.positions,
                )
                parts.extend(self.refresh(Layout((sub,), 0)).parts)
        return Layout(tuple(parts), layout.width) if changed else layout

    def _refine(self, a: Layout, b: Layout) -> tuple[Layout, Layout]:
        """Split groups of `a` and `b` at every part boundary of either.

        Only for tensors of equal width whose parts are not flattened and
        tile the channel axis; otherwise `a` and `b` come back unchanged.
        """
        for _ in range(_MAX_REFINEMENTS):
            if a.width != b.width or not (tiles(a) and tiles(b)):
                return a, b
            cuts_by_root = self._cuts_by_root(a.parts + b.parts)
            if not cuts_by_root:
                return a, b
            for root, local in cuts_by_root.items():
                self._split(root, sorted(local))
            a, b = self.refresh(a), self.refresh(b)
        return a, b

    def _cuts_by_root(self, parts: tuple[Part, ...]) -> dict[int, set[int]]:
        """Group representative -> the part boundaries that fall inside it,
        as offsets within the group."""
        cuts = {p.offset for p in parts} - {0}
        by_root: dict[int, set[int]] = {}
        for part in parts:
            local = {
                cut - part.offset for cut in cuts
                if part.offset < cut < part.offset + part.size
            }
            if local:
                by_root.setdefault(self.find(part.root), set()).update(local)
        return by_root

    def _split(self, rep: int, cuts: list[int]) -> None:
        """Replace group `rep` by pieces `[0, c1), [c1, c2), ...`."""
        record = self._records[rep]
        bounds = [0, *cuts, record.size]
        pieces = []
        for start, end in zip(bounds, bounds[1:]):
            piece = self.new_root(end - start)
            self._records[piece] = record.piece(start, end)
            pieces.append((start, piece))
        record.producers = []  # No longer a group of its own.
        self._pieces[rep] = pieces

    # ---------------------------------------------------------------- result
    def kept_indices(
        self, layout: Layout, keep_by_root: dict[int, np.ndarray]
    ) -> np.ndarray | None:
        """Surviving indices of a tensor's channel axis, or None if all.

        Args:
            layout: the tensor's layout.
            keep_by_root: group representative -> kept channel indices;
                groups not in it keep every channel.
        """
        layout = self.refresh(layout)
        if not any(self.find(part.root) in keep_by_root for part in layout.parts):
            return None
        covered = np.zeros(layout.width, dtype=bool)
        kept = []
        for part in layout.parts:
            channels = keep_by_root.get(
                self.find(part.root), np.arange(part.size, dtype=np.int64)
            )
            base = (
                np.arange(part.positions, dtype=np.int64)[:, None] * part.stride
            )
            all_idx = (base + part.offset + np.arange(part.size)[None, :]).ravel()
            covered[all_idx] = True
            kept.append((base + part.offset + channels[None, :]).ravel())
        # Channels not covered by any part (cannot happen for analysed layouts).
        kept.append(np.flatnonzero(~covered))
        return np.sort(np.concatenate(kept))

    def _channel_offsets(self, layer_io) -> tuple[dict, dict]:
        """rep -> {layer name: offset of the group in its output / input}."""
        outputs: dict[int, dict[str, int]] = {}
        inputs: dict[int, dict[str, int]] = {}
        for io in layer_io:
            for layouts, table in (
                (io.output_layouts[:1], outputs), (io.input_layouts[:1], inputs)
            ):
                for layout in layouts:
                    for part in layout.parts:
                        if part.positions == 1:
                            table.setdefault(self.find(part.root), {}).setdefault(
                                io.name, part.offset
                            )
        return outputs, inputs

    def groups(self, layer_io: list[LayerIO]) -> tuple[
        list[ChannelGroup], dict[str, int], dict[str, tuple]
    ]:
        """The groups with a producer, in order of their first root.

        Args:
            layer_io: every analysed layer's layouts (for the offsets of a
                group among its producers' and members' channels).

        Returns:
            `(groups, roots, pieces)`: the `ChannelGroup`s; each group's
            representative root by group name (a tied group's first
            section's); and for each group made of split sections, its
            `(first channel, size, root)` per section.
        """
        groups = []
        roots: dict[str, int] = {}
        pieces_by_name: dict[str, tuple] = {}
        seen = set()
        out_offsets, in_offsets = self._channel_offsets(layer_io)
        ties = self._valid_ties()
        for index in range(len(self._records)):
            rep = self.find(index)
            if rep in seen or not self._records[rep].producers:
                continue
            tie = ties.get(rep)
            pieces = [] if tie is None else [
                channel_sections.Piece(
                    part, self.find(part.root), self.record(part.root),
                    out_offsets.get(self.find(part.root), {}),
                    in_offsets.get(self.find(part.root), {}),
                )
                for part in self.refresh(tie.layout).parts
            ]
            seen.update([rep] + [piece.root for piece in pieces])
            record = self._records[rep]
            name = next(
                (p.record.producers[0] for p in pieces if p.record.producers),
                record.producers[0],
            )
            if name in roots:
                # Pieces of a split group with no producer of their own.
                count = sum(n.startswith(name + "#") for n in roots)
                name = f"{name}#{count + 1}"
            roots[name] = pieces[0].root if pieces else rep
            if tie is None:
                groups.append(_group(
                    name, record, out_offsets.get(rep, {}),
                    in_offsets.get(rep, {}),
                ))
                continue
            pieces_by_name[name] = tuple(
                (p.part.offset, p.part.size, p.root) for p in pieces
            )
            groups.append(channel_sections.tied_group(
                name, tie, pieces,
                [r for p in pieces for r in _blocks(p.record)[1]],
            ))
        return groups, roots, pieces_by_name

    def _valid_ties(self) -> dict[int, channel_sections.Tie]:
        """Root of every section -> its tie, for the ties whose sections
        are distinct groups. A tie whose sections were all merged into one
        group needs nothing (that group keeps the same channels of each);
        any other that cannot hold blocks its sections' groups."""
        layouts = [self.refresh(tie.layout) for tie in self._ties]
        counts: dict[int, int] = {}
        for layout in layouts:
            for root in {self.find(part.root) for part in layout.parts}:
                counts[root] = counts.get(root, 0) + 1
        shared = {root for root, count in counts.items() if count > 1}
        valid = {}
        for tie, layout in zip(self._ties, layouts):
            roots = [self.find(part.root) for part in layout.parts]
            if len(set(roots)) == 1 and not shared & set(roots):
                continue
            why = channel_sections.structure_problem(
                tie, layout.parts, roots, shared
            )
            if why is not None:
                for root in roots:
                    self.block_root(root, why)
                continue
            valid.update({root: tie for root in roots})
        return valid


def _convolutions(blocks: list[tuple[str, int]]) -> str:
    return ", ".join(
        f"'{layer}' (groups={groups})" for layer, groups in dict.fromkeys(blocks)
    )


def _split_blocks_reason(blocks: list[tuple[str, int]]) -> list[str]:
    """Why a piece of a split group with equal blocks is blocked."""
    if not blocks:
        return []
    return [
        "its channels are split between concatenated groups, across the "
        f"equal channel blocks of grouped convolution {_convolutions(blocks)}"
    ]


def _blocks(record: GroupRecord) -> tuple[int, list[str]]:
    """The group's number of equal blocks, and why it cannot be pruned in
    them (empty when it can)."""
    blocks = math.lcm(1, *(groups for _, groups in record.blocks))
    if blocks == 1:
        return 1, []
    where = _convolutions(record.blocks)
    if record.size % blocks:
        return blocks, [
            f"grouped convolution {where} cannot cut its {record.size} "
            f"channels into {blocks} equal blocks"
        ]
    if record.size == blocks:
        return blocks, [
            f"grouped convolution {where} leaves one channel per channel "
            f"block of its {record.size} channels: keeping every block equal "
            "removes none"
        ]
    return blocks, []


def _group(
    name: str, record: GroupRecord, out_offsets: dict, in_offsets: dict
) -> ChannelGroup:
    blocks, block_reasons = _blocks(record)
    reason = "; ".join(record.reasons + block_reasons)
    producers = tuple(dict.fromkeys(record.producers))
    members = tuple(dict.fromkeys(record.members))
    return ChannelGroup(
        name=name,
        size=record.size,
        producers=producers,
        consumers=tuple(dict.fromkeys(record.consumers)),
        members=members,
        prunable=not reason,
        reason=reason,
        consumer_slices=tuple(record.consumer_slices),
        activation_sites=tuple(record.sites),
        inferred=tuple(dict.fromkeys(record.inferred)),
        producer_offsets=tuple(
            (producer, out_offsets.get(producer, 0)) for producer in producers
        ),
        member_offsets=tuple(
            (member, in_offsets.get(member, 0)) for member in members
        ),
        blocks=blocks,
    )
