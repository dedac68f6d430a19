"""Channel-dependency analysis of Keras 3 functional and Sequential models.

A *channel group* is a set of tensors whose channel axis must be pruned
together: the outputs of a convolution, everything that passes through
channel-wise layers after it (BatchNormalization, activations, pooling,
depthwise convolutions, ...), and every tensor that a residual merge
(`Add`, `Multiply`, ...) couples to it. Removing channel `c` of a group
removes filter `c` from each of its *producers* and input slice `c` from
each of its *consumers*.

A tensor's channel axis is described by a `Layout`: an ordered list of
`Part`s, one per group whose channels it carries. A plain conv output has one
part; a channel-axis `Concatenate` has one part per input, at increasing
offsets; after `Flatten`, every spatial position repeats the channels, so a
part is interleaved: channel `c` of the group sits at index
`p * stride + offset + c` for each position `p < positions`.

Nodes of `keras.ops` operations (Python arithmetic on symbolic tensors,
`keras.ops.relu6(x)`, ...) are analysed like layers, with handlers keyed by
operation class. Nested functional and Sequential sub-models are walked
with their layer names prefixed (`"backbone/conv1"`); an activation site
inside one records which calls of the sub-models lead to it (`context`), so
that `site_tensors` can reach it from the outer model's inputs.

A group is split when a tensor cut into groups one way is merged with one
cut another way (a concatenation added to one convolution's output): the
convolution's filters then belong to several groups.

This is the only module that reads Keras' private graph attributes
(`Functional._nodes_by_depth`, `Sequential._functional`, a node's
`arguments`). It never mutates the model it analyses (`site_tensors` adds
symbolic calls to its layers, which change no config or weight).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import keras
import numpy as np

from keras_adp import layers as layer_handlers

MODEL_INPUT = "model_input"

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
    """

    layer: str
    offset: int
    stride: int
    positions: int

    def input_indices(self, channels: np.ndarray) -> np.ndarray:
        """Consumer input indices of the given group channel indices."""
        channels = np.asarray(channels, dtype=np.int64)
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
            permutation rule (`keras_adp.layers.infer_handler`).
        producer_offsets: `(producer, offset)` pairs: the index of the
            group's channel 0 among the producer's output channels (not 0
            when a producer's filters are split between groups).
        member_offsets: `(member, offset)` pairs: the index of the group's
            channel 0 among the member's channels (not 0 after a
            concatenation, e.g. DenseNet's BatchNormalization).
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

    @property
    def measured_at(self) -> ActivationSite | None:
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


@dataclasses.dataclass
class _Root:
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


class GraphAnalysis:
    """The result of walking a model: groups and per-layer channel layouts.

    Built by `analyze(model)`. `groups` is what `channel_groups` returns;
    `layer_io` and `find` are used by the rebuilder to compute which indices
    of every weight survive.
    """

    def __init__(self, model: keras.Model, strict: bool = False):
        _check_model(model)
        self.model = model
        self.strict = strict
        self._roots: list[_Root] = []
        self._parent: list[int] = []
        self._tensor_layouts: dict[int, Layout] = {}
        self._layer_roots: dict[int, int] = {}
        self._layer_inputs: dict[int, list[Layout]] = {}
        self.layer_io: dict[int, LayerIO] = {}
        self._group_roots: dict[str, int] = {}
        # Handlers found by the permutation rule, by id(layer).
        self.inferred_handlers: dict[int, layer_handlers.Handler] = {}
        self._context: tuple = ()
        # Groups split by `_refine`: dead root -> [(start, piece root)].
        self._pieces: dict[int, list[tuple[int, int]]] = {}
        input_layouts = []
        for tensor in _graph_of(model).inputs:
            root = self._new_root(_channels_of(tensor))
            self._block_root(root, f"coupled to the model input '{tensor.name}'")
            input_layouts.append(_single(root, self._roots[root].size))
        outputs = self._walk(model, input_layouts, prefix="")
        for tensor, layout in zip(_graph_of(model).outputs, outputs):
            self._block(
                layout,
                f"reaches the model output '{_producer_name(tensor)}'",
            )
        for io in self.layer_io.values():
            io.input_layouts = [self._refresh(x) for x in io.input_layouts]
            io.output_layouts = [self._refresh(x) for x in io.output_layouts]
        self.groups = self._assemble_groups()

    # ----------------------------------------------------------------- roots
    def find(self, root: int) -> int:
        while self._parent[root] != root:
            self._parent[root] = self._parent[self._parent[root]]
            root = self._parent[root]
        return root

    def _new_root(self, size: int, producer: str | None = None) -> int:
        self._roots.append(_Root(size=size))
        self._parent.append(len(self._parent))
        if producer is not None:
            self._roots[-1].producers.append(producer)
        return len(self._roots) - 1

    def _union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        # Keep the older root as representative: producers stay in order.
        if b < a:
            a, b = b, a
        self._parent[b] = a
        ra, rb = self._roots[a], self._roots[b]
        if ra.size != rb.size:
            ra.reasons.append(
                f"couples tensors of different widths ({ra.size} and {rb.size})"
            )
        for field in (
            "producers",
            "consumers",
            "members",
            "consumer_slices",
            "sites",
            "reasons",
            "inferred",
        ):
            getattr(ra, field).extend(getattr(rb, field))

    def _block_root(self, root: int, reason: str) -> None:
        info = self._roots[self.find(root)]
        if reason not in info.reasons:
            info.reasons.append(reason)

    def _block(self, layout: Layout, reason: str) -> None:
        for part in self._refresh(layout).parts:
            self._block_root(part.root, reason)

    def _unknown(
        self, name: str, layer: Any, inputs: list[Layout], why: str
    ) -> None:
        """Make every group reaching an unsupported layer non-prunable."""
        reason = f"passes through layer '{name}' ({type(layer).__name__}): {why}"
        if self.strict:
            raise ValueError(
                f"Cannot analyse layer '{name}' ({type(layer).__name__}): {why}. "
                "Expected only layers keras_adp knows how to slice (see "
                "`keras_adp.supported_layers()`). Pass strict=False to treat "
                "the channel groups it touches as non-prunable instead."
            )
        for layout in inputs:
            self._block(layout, reason)

    def _unify(self, layouts: list[Layout], where: str) -> None:
        """Couple the channel axes of same-shaped tensors.

        Where the two tensors' channels are cut into groups differently (a
        concatenation merged with one convolution's output, as in
        Inception-ResNet's residual blocks), the groups are first split at
        every cut of either (`_refine`), so that part `i` of one tensor
        lines up with part `i` of the other.
        """
        first = self._refresh(layouts[0])
        for other in layouts[1:]:
            first, other = self._refresh(first), self._refresh(other)
            if not _aligned(first, other):
                first, other = self._refine(first, other)
            if _aligned(first, other):
                for a, b in zip(first.parts, other.parts):
                    self._union(a.root, b.root)
            else:
                reason = (
                    f"'{where}' merges tensors whose channels come from "
                    "differently concatenated groups"
                )
                self._block(first, reason)
                self._block(other, reason)

    def _refresh(self, layout: Layout) -> Layout:
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
                    piece, self._roots[piece].size, part.offset + start,
                    part.stride, part.positions,
                )
                parts.extend(self._refresh(Layout((sub,), 0)).parts)
        return Layout(tuple(parts), layout.width) if changed else layout

    def _refine(self, a: Layout, b: Layout) -> tuple[Layout, Layout]:
        """Split groups of `a` and `b` at every part boundary of either.

        Only for tensors of equal width whose parts are not flattened and
        tile the channel axis; otherwise `a` and `b` come back unchanged.
        """
        for _ in range(8):
            if a.width != b.width or not (_tiles(a) and _tiles(b)):
                return a, b
            cuts = {p.offset for p in a.parts + b.parts} - {0}
            by_root: dict[int, set[int]] = {}
            for part in a.parts + b.parts:
                local = {
                    cut - part.offset for cut in cuts
                    if part.offset < cut < part.offset + part.size
                }
                if local:
                    by_root.setdefault(self.find(part.root), set()).update(local)
            if not by_root:
                return a, b
            for root, local in by_root.items():
                self._split(root, sorted(local))
            a, b = self._refresh(a), self._refresh(b)
        return a, b

    def _split(self, rep: int, cuts: list[int]) -> None:
        """Replace group `rep` by pieces `[0, c1), [c1, c2), ...`.

        Each piece keeps every producer, consumer and member of the group
        (they now own a share of each), its reasons, and its consumer
        slices and activation sites moved to the piece's offset.
        """
        info = self._roots[rep]
        bounds = [0, *cuts, info.size]
        pieces = []
        for start, end in zip(bounds, bounds[1:]):
            piece = self._new_root(end - start)
            new = self._roots[piece]
            new.producers = list(info.producers)
            new.consumers = list(info.consumers)
            new.members = list(info.members)
            new.reasons = list(info.reasons)
            new.inferred = list(info.inferred)
            new.consumer_slices = [
                dataclasses.replace(s, offset=s.offset + start)
                for s in info.consumer_slices
            ]
            new.sites = [
                dataclasses.replace(s, offset=s.offset + start)
                for s in info.sites
            ]
            pieces.append((start, piece))
        info.producers = []  # No longer a group of its own.
        self._pieces[rep] = pieces

    # ------------------------------------------------------------------ walk
    def _bind(self, tensor: Any, layout: Layout, where: str) -> None:
        key = id(tensor)
        if key in self._tensor_layouts:
            self._unify([self._tensor_layouts[key], layout], where)
        else:
            self._tensor_layouts[key] = layout

    def _walk(
        self, model: keras.Model, input_layouts: list[Layout], prefix: str
    ) -> list[Layout]:
        graph = _graph_of(model)
        for tensor, layout in zip(graph.inputs, input_layouts):
            self._bind(tensor, layout, model.name)
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(
                    id(x) not in self._tensor_layouts for x in node.input_tensors
                ):
                    continue  # Node of a shared layer outside this model.
                self._visit(node, prefix)
        return [self._refresh(self._tensor_layouts[id(x)]) for x in graph.outputs]

    def handler_of(self, layer: Any) -> layer_handlers.Handler | None:
        """The registered handler of `layer`, or the one the rule found."""
        handler = layer_handlers.handler_for(layer)
        return handler or self.inferred_handlers.get(id(layer))

    def _visit(self, node: Any, prefix: str) -> None:
        layer = node.operation
        name = prefix + layer.name
        inputs = [
            self._refresh(self._tensor_layouts[id(x)])
            for x in node.input_tensors
        ]
        if isinstance(layer, keras.Model):
            outer = self._context
            self._context = outer + (id(node),)
            try:
                outputs = self._walk(layer, inputs, prefix=name + "/")
            finally:
                self._context = outer
            if id(layer) not in self.layer_io:
                self.layer_io[id(layer)] = LayerIO(layer, name, inputs, outputs)
        else:
            outputs = self._visit_layer(node, layer, name, inputs)
        for tensor, layout in zip(node.outputs, outputs):
            self._bind(tensor, self._refresh(layout), name)

    def _visit_layer(
        self, node: Any, layer: Any, name: str, inputs: list[Layout]
    ) -> list[Layout]:
        handler = layer_handlers.handler_for(layer)
        in_shapes = [tuple(x.shape) for x in node.input_tensors]
        out_shapes = [tuple(x.shape) for x in node.outputs]
        why = _constant_operand(node)
        inferred = False
        if why is not None:
            pass
        elif handler is None and not node.input_tensors:
            why = "it has no tensor input"
        elif handler is None and self.strict:
            why = (
                f"{_kind(layer)} class not supported (strict=True accepts "
                "only registered classes)"
            )
        elif handler is None:
            verdict = layer_handlers.infer_handler(node)
            if verdict.handler is None:
                why = (
                    f"{_kind(layer)} class not supported, and not channel-wise "
                    f"by the permutation rule: {verdict.reason}"
                )
            else:
                handler, inferred = verdict.handler, True
                self.inferred_handlers[id(layer)] = handler
        if why is not None:
            pass
        elif len(node.outputs) != 1:
            why = "layers with several outputs are not supported"
        else:
            why = handler.check(layer, in_shapes, out_shapes)
        if why is not None:
            self._unknown(name, layer, inputs, why)
            outputs = []
            # A producer class in an unsupported configuration still defines
            # a group: list it, non-prunable, with the reason.
            producer = name if handler and handler.role == "producer" else None
            for shape in out_shapes:
                root = self._new_root(
                    int(shape[-1]) if shape and shape[-1] else 1, producer
                )
                self._block_root(
                    root,
                    f"produced by layer '{name}' ({type(layer).__name__}), "
                    f"which cannot be sliced: {why}",
                )
                outputs.append(_single(root, self._roots[root].size))
            self._record(layer, name, inputs, outputs)
            return outputs

        role = handler.role
        if inferred:
            for layout in inputs:
                for part in layout.parts:
                    self._roots[self.find(part.root)].inferred.append(name)
        if role == "producer":
            outputs = [self._producer(layer, name, inputs[0], node)]
        elif role in ("channelwise", "passthrough", "reshape"):
            if role == "channelwise":
                for part in inputs[0].parts:
                    self._roots[self.find(part.root)].members.append(name)
            outputs = [inputs[0]]
            activation = handler.activation(layer)
            if activation is not None:
                shift = _shift_of(node.input_tensors[0])
                if shift:
                    # e.g. relu6(x + 3) in a hard sigmoid: silent only below
                    # -3, so "fired" does not mean "x > 0".
                    activation = f"{activation} of an input shifted by {shift}"
                self._add_sites(inputs[0], name, activation, node.outputs[0])
        elif role == "merge":
            outputs = [self._merge(name, inputs)]
            gated = _self_gate(node)
            if gated is not None:
                self._add_sites(
                    self._refresh(outputs[0]), name, gated, node.outputs[0]
                )
        elif role == "concat":
            outputs = [self._concat(layer, name, inputs, in_shapes)]
        elif role == "flatten":
            outputs = [self._flatten(name, inputs[0], in_shapes[0])]
        else:  # pragma: no cover - registry roles are fixed
            raise RuntimeError(f"Unknown handler role {role!r}")
        self._record(layer, name, inputs, outputs)
        return outputs

    def _record(self, layer, name, inputs, outputs) -> None:
        if id(layer) not in self.layer_io:
            self.layer_io[id(layer)] = LayerIO(layer, name, inputs, outputs)
        else:
            # A shared layer: every call must see the same channels.
            first = self.layer_io[id(layer)]
            for a, b in zip(first.input_layouts, inputs):
                self._unify([a, b], name)
            for a, b in zip(first.output_layouts, outputs):
                self._unify([a, b], name)

    def _producer(
        self, layer: Any, name: str, inputs: Layout, node: Any
    ) -> Layout:
        out_shape = tuple(node.outputs[0].shape)
        for part in inputs.parts:
            info = self._roots[self.find(part.root)]
            if name not in info.consumers:
                info.consumers.append(name)
            info.consumer_slices.append(
                ConsumerSlice(name, part.offset, part.stride, part.positions)
            )
        if id(layer) in self._layer_roots:
            root = self._layer_roots[id(layer)]
        else:
            root = self._new_root(int(out_shape[-1]), producer=name)
            self._layer_roots[id(layer)] = root
        # A shared producer's group may have been split since its first call.
        layout = self._refresh(_single(root, int(out_shape[-1])))
        activation = layer_handlers.fused_activation(layer)
        if activation is not None:
            self._add_sites(layout, name, activation, node.outputs[0])
        return layout

    def _add_sites(self, layout, name, activation, tensor) -> None:
        for part in layout.parts:
            if part.positions != 1:
                continue
            self._roots[self.find(part.root)].sites.append(
                ActivationSite(
                    name, activation, part.offset, tensor, self._context
                )
            )

    def _merge(self, name: str, inputs: list[Layout]) -> Layout:
        width = max(layout.width for layout in inputs)
        # Inputs with one channel broadcast over the others (e.g. a spatial
        # attention map): they are not coupled to the channel axis.
        full = [layout for layout in inputs if layout.width == width]
        if width > 1:
            self._unify(full, name)
        else:
            self._unify(inputs, name)
        return full[0]

    def _concat(self, layer, name, inputs, in_shapes) -> Layout:
        rank = len(in_shapes[0])
        axis = layer.axis % rank
        if axis != rank - 1:
            self._unify(inputs, name)
            return inputs[0]
        parts, base = [], 0
        for layout in inputs:
            for part in layout.parts:
                parts.append(dataclasses.replace(part, offset=part.offset + base))
            base += layout.width
        return Layout(tuple(parts), base)

    def _flatten(self, name: str, layout: Layout, in_shape: tuple) -> Layout:
        if len(in_shape) <= 2:
            return layout
        positions = math.prod(int(d) for d in in_shape[1:-1])
        if any(part.positions != 1 for part in layout.parts):
            self._block(layout, f"'{name}' flattens an already flattened tensor")
            return layout
        parts = tuple(
            dataclasses.replace(part, stride=layout.width, positions=positions)
            for part in layout.parts
        )
        return Layout(parts, layout.width * positions)

    # ---------------------------------------------------------------- result
    def _channel_offsets(self) -> tuple[dict, dict]:
        """rep -> {layer name: offset of the group in its output / input}."""
        outputs: dict[int, dict[str, int]] = {}
        inputs: dict[int, dict[str, int]] = {}
        for io in self.layer_io.values():
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

    def _assemble_groups(self) -> list[ChannelGroup]:
        groups = []
        seen = set()
        out_offsets, in_offsets = self._channel_offsets()
        for index in range(len(self._roots)):
            rep = self.find(index)
            if rep in seen or not self._roots[rep].producers:
                continue
            seen.add(rep)
            info = self._roots[rep]
            reason = "; ".join(info.reasons)
            name = info.producers[0]
            if name in self._group_roots:
                # Pieces of a split group with no producer of their own.
                name = f"{name}#{sum(n.startswith(name + '#') for n in self._group_roots) + 1}"
            self._group_roots[name] = rep
            groups.append(
                ChannelGroup(
                    name=name,
                    size=info.size,
                    producers=tuple(dict.fromkeys(info.producers)),
                    consumers=tuple(dict.fromkeys(info.consumers)),
                    members=tuple(dict.fromkeys(info.members)),
                    prunable=not reason,
                    reason=reason,
                    consumer_slices=tuple(info.consumer_slices),
                    activation_sites=tuple(info.sites),
                    inferred=tuple(dict.fromkeys(info.inferred)),
                    producer_offsets=tuple(
                        (producer, out_offsets.get(rep, {}).get(producer, 0))
                        for producer in dict.fromkeys(info.producers)
                    ),
                    member_offsets=tuple(
                        (member, in_offsets.get(rep, {}).get(member, 0))
                        for member in dict.fromkeys(info.members)
                    ),
                )
            )
        return groups

    def root_of_group(self, name: str) -> int:
        """Union-find representative of the group called `name`."""
        return self._group_roots[name]

    def kept_indices(
        self, layout: Layout, keep_by_root: dict[int, np.ndarray]
    ) -> np.ndarray | None:
        """Surviving indices of a tensor's channel axis, or None if all."""
        layout = self._refresh(layout)
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


def _kind(operation: Any) -> str:
    return "layer" if isinstance(operation, keras.layers.Layer) else "operation"


def _constant_operand(node: Any) -> str | None:
    """Why a `keras.ops` node cannot be sliced because of a constant operand.

    Python arithmetic on symbolic tensors records its constants in the node
    (`x + 3.0`); a scalar broadcasts over any number of channels, but an
    array constant of several values may hold one per channel, which the
    rebuild cannot slice.
    """
    if isinstance(node.operation, keras.layers.Layer):
        return None
    for value in node.arguments._flat_arguments:
        if isinstance(value, keras.KerasTensor) or value is None:
            continue
        if hasattr(value, "shape") and int(np.size(value)) > 1:
            return (
                f"a constant operand of shape {tuple(np.shape(value))} may "
                "hold one value per channel, which cannot be sliced; write "
                "it as a layer with a weight instead"
            )
    return None


def _producer_of(tensor: Any) -> tuple[Any, Any] | None:
    """(operation, node) that computed a symbolic tensor, or None."""
    history = getattr(tensor, "_keras_history", None)
    if not history:
        return None
    operation, node_index, _ = history
    return operation, operation._inbound_nodes[node_index]


def _scalar_operand(node: Any) -> float | None:
    for value in node.arguments._flat_arguments:
        if isinstance(value, (int, float, np.number)) and not isinstance(
            value, bool
        ):
            return float(value)
    return None


def _self_gate(node: Any) -> str | None:
    """The activation `x * gate(x)` computes, for a two-input product.

    Recognises swish (`x * sigmoid(x)`) and hard-swish (`x *
    hard_sigmoid(x)`, `x * relu6(x + 3) / 6`), written with layers or
    `keras.ops` (MobileNetV3's `x * ReLU(6.)(x + 3.) * (1. / 6.)`). Their
    output is positive exactly where `x` is, like a ReLU's.
    """
    from keras.src.ops import nn as ops_nn
    from keras.src.ops import numpy as ops_numpy

    operation = node.operation
    if not isinstance(operation, (ops_numpy.Multiply, keras.layers.Multiply)):
        return None
    tensors = list(node.input_tensors)
    if len(tensors) != 2:
        return None
    for x, gate in (tensors, tensors[::-1]):
        found = _producer_of(gate)
        # Strip a positive constant factor: `* (1 / 6)` or `/ 6`.
        while found and isinstance(
            found[0], (ops_numpy.Multiply, ops_numpy.Divide,
                       ops_numpy.TrueDivide)
        ) and len(found[1].input_tensors) == 1 and (
            _scalar_operand(found[1]) or 0
        ) > 0:
            found = _producer_of(found[1].input_tensors[0])
        if not found:
            continue
        operation, gate_node = found
        inputs = list(gate_node.input_tensors)
        if len(inputs) != 1:
            continue
        name = (
            layer_handlers.activation_name(operation.activation)
            if isinstance(operation, keras.layers.Activation) else None
        )
        if inputs[0] is x and (
            isinstance(operation, ops_nn.Sigmoid) or name == "sigmoid"
        ):
            return "silu"
        if inputs[0] is x and (
            isinstance(operation, ops_nn.HardSigmoid) or name == "hard_sigmoid"
        ):
            return "hard_swish"
        relu6 = isinstance(operation, ops_nn.Relu6) or (
            isinstance(operation, keras.layers.ReLU)
            and operation.max_value == 6
            and not operation.negative_slope
            and not operation.threshold
        )
        shifted = _producer_of(inputs[0])
        if relu6 and shifted and isinstance(shifted[0], ops_numpy.Add) and (
            len(shifted[1].input_tensors) == 1
            and shifted[1].input_tensors[0] is x
            and _scalar_operand(shifted[1]) == 3.0
        ):
            return "hard_swish"
    return None


def _shift_of(tensor: Any) -> float:
    """The constant `c` when `tensor` is `x + c` or `x - c`, else 0."""
    history = getattr(tensor, "_keras_history", None)
    if not history:
        return 0.0
    operation, node_index, _ = history
    from keras.src.ops import numpy as ops_numpy

    if not isinstance(operation, (ops_numpy.Add, ops_numpy.Subtract)):
        return 0.0
    node = operation._inbound_nodes[node_index]
    for value in node.arguments._flat_arguments:
        if isinstance(value, (int, float, np.number)) and value != 0:
            return float(value)
    return 0.0


def _aligned(a: Layout, b: Layout) -> bool:
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


def _tiles(layout: Layout) -> bool:
    """Whether unflattened parts cover the channel axis once, in order."""
    offset = 0
    for part in layout.parts:
        if part.positions != 1 or part.offset != offset:
            return False
        offset += part.size
    return offset == layout.width


def _single(root: int, size: int) -> Layout:
    return Layout((Part(root, size, 0, size, 1),), size)


def _channels_of(tensor: Any) -> int:
    shape = tuple(tensor.shape)
    if not shape or shape[-1] is None:
        return 1
    return int(shape[-1])


def _producer_name(tensor: Any) -> str:
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else str(tensor.name)


def _graph_of(model: keras.Model) -> Any:
    """The functional graph that runs `model` (a Sequential's inner one)."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                f"Sequential model '{model.name}' is not built, so it has no "
                "graph to analyse. Expected a built model. Fix: start it with "
                "`keras.Input(shape=...)` or call `model.build(input_shape)`."
            )
        return graph
    return model


def _check_model(model: Any) -> None:
    from keras.src.models.functional import Functional

    if isinstance(model, (keras.Sequential, Functional)):
        return
    if isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a functional or Sequential Keras model. Received a "
            f"subclassed model '{model.name}' ({type(model).__name__}), whose "
            "graph is hidden in Python code and cannot be rebuilt. Fix: build "
            "the same network with the functional API "
            "(`keras.Model(inputs, outputs)`) or as `keras.Sequential`."
        )
    raise ValueError(
        f"Expected a keras.Model. Received: {type(model).__name__}."
    )


# ------------------------------------------------------------ layer calls
class LayerCall(NamedTuple):
    """One call of a leaf layer in a model graph.

    Args:
        path: Layer name prefixed with the names of enclosing sub-models,
            e.g. `"block/conv"`.
        layer: The called layer (or non-layer operation).
        input_shapes: Shapes of the call's input tensors, flattened.
        output_shapes: Shapes of the call's output tensors, flattened.
    """

    path: str
    layer: Any
    input_shapes: tuple[tuple, ...]
    output_shapes: tuple[tuple, ...]


def _functional_graph(model: Any) -> Any:
    """Returns the Functional graph of `model`, or `None` if it has none."""
    if isinstance(model, keras.Sequential):
        return model._functional
    if hasattr(model, "_nodes_by_depth"):
        return model
    return None


def layer_calls(model: keras.Model) -> list[LayerCall]:
    """Lists the leaf layer calls of a model graph, in execution order.

    Mirrors `keras/src/ops/function.py: Function._run_through_graph()`: depth
    keys in reverse order, input nodes and nodes whose inputs are not computed
    from the model inputs skipped. Nested Functional / `Sequential` models are
    recursed into. Shapes are taken from the recorded graph; when a sub-model
    is called on shapes other than those it was built on (e.g. built on
    `(None, None, 3)`, called on `(8, 8, 3)`), they are re-derived with
    `compute_output_spec`.

    Args:
        model: A built Functional or `Sequential` model.

    Returns:
        One `LayerCall(path, layer, input_shapes, output_shapes)` per call.
    """
    graph = _functional_graph(model)
    if graph is None:
        raise ValueError(
            "Expected a built Functional or Sequential model, whose layer "
            f"graph can be walked. Received: model={model.name!r} of type "
            f"{type(model).__name__}. Build it with `keras.Input` (or call "
            "`Sequential.build(input_shape)`); subclassed models have no graph."
        )

    calls = []

    def walk(graph: Any, input_tensors: list, prefix: str) -> list:
        """Appends the calls of `graph` to `calls`; returns its outputs."""
        tensor_dict = {
            id(ref): actual for ref, actual in zip(graph.inputs, input_tensors)
        }
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(x) not in tensor_dict for x in node.input_tensors):
                    continue
                operation = node.operation
                inputs = [tensor_dict[id(x)] for x in node.input_tensors]
                shapes_as_recorded = all(
                    tuple(actual.shape) == tuple(ref.shape)
                    for actual, ref in zip(inputs, node.input_tensors)
                )
                inner_graph = _functional_graph(operation)
                if inner_graph is not None:
                    outputs = walk(
                        inner_graph, inputs, f"{prefix}{operation.name}/"
                    )
                else:
                    if shapes_as_recorded:
                        outputs = node.outputs
                    else:
                        args, kwargs = node.arguments.fill_in(tensor_dict)
                        outputs = keras.tree.flatten(
                            operation.compute_output_spec(*args, **kwargs)
                        )
                    calls.append(
                        LayerCall(
                            path=f"{prefix}{operation.name}",
                            layer=operation,
                            input_shapes=tuple(tuple(x.shape) for x in inputs),
                            output_shapes=tuple(
                                tuple(x.shape) for x in outputs
                            ),
                        )
                    )
                for ref, actual in zip(node.outputs, outputs):
                    tensor_dict[id(ref)] = actual
        return [tensor_dict[id(ref)] for ref in graph.outputs]

    walk(graph, list(graph.inputs), "")
    return calls


def site_tensors(
    model: keras.Model, sites: list[ActivationSite]
) -> list[Any]:
    """Tensors of `model`'s graph holding each site's activations.

    A site at the top level is its own tensor. A site inside a nested
    functional or Sequential sub-model lives in the sub-model's graph, which
    starts at the sub-model's own inputs; to reach it from `model`'s inputs,
    the graph is traced once more with every nested sub-model inlined:
    the same layer objects are called on the outer tensors (so the result
    shares the model's weights). Each call of a sub-model called more than
    once is traced separately, and a site names its call by `context`.
    Top-level nodes that only depend on top-level tensors are not traced
    again. Nothing is traced when every site is at the top level.

    Args:
        model: the built model the sites were found in.
        sites: activation sites from `channel_groups(model)`.

    Returns:
        One symbolic tensor per site, all computed from `model`'s inputs.
    """
    if all(not site.context for site in sites):
        return [site.tensor for site in sites]
    found: dict[tuple, Any] = {}

    def walk(graph: Any, inputs: list, context: tuple) -> list:
        tensor_map = {id(ref): actual for ref, actual in zip(graph.inputs, inputs)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(x) not in tensor_map for x in node.input_tensors):
                    continue
                operation = node.operation
                values = [tensor_map[id(x)] for x in node.input_tensors]
                inner = (
                    _functional_graph(operation)
                    if isinstance(operation, keras.Model) else None
                )
                if inner is not None:
                    outputs = walk(inner, values, context + (id(node),))
                elif all(a is b for a, b in zip(values, node.input_tensors)):
                    outputs = node.outputs
                else:
                    args, kwargs = node.arguments.fill_in(tensor_map)
                    outputs = keras.tree.flatten(operation(*args, **kwargs))
                for ref, actual in zip(node.outputs, outputs):
                    tensor_map[id(ref)] = actual
                    found[(context, id(ref))] = actual
        return [tensor_map[id(ref)] for ref in graph.outputs]

    graph = _graph_of(model)
    walk(graph, list(graph.inputs), ())
    return [found[(site.context, id(site.tensor))] for site in sites]


def all_layers(model: keras.Model):
    """Every layer of `model`, nested functional/Sequential models' layers
    included (not the nested models themselves), in `model.layers` order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def get_layer(model: keras.Model, qualified_name: str) -> keras.layers.Layer:
    """The layer called `qualified_name` ("outer/inner/layer" in sub-models)."""
    *path, name = qualified_name.split("/")
    for part in path:
        model = model.get_layer(part)
    return model.get_layer(name)


def analyze(model: keras.Model, *, strict: bool = False) -> GraphAnalysis:
    """Walk `model` and return its channel groups and per-layer layouts."""
    return GraphAnalysis(model, strict=strict)


def channel_groups(
    model: keras.Model, *, strict: bool = False
) -> list[ChannelGroup]:
    """Channel groups of a functional or Sequential Keras 3 model.

    Args:
        model: a built functional or Sequential model (nested sub-models and
            shared layers are followed). Never mutated.
        strict: if True, an unsupported layer raises `ValueError`; otherwise
            the groups it touches are reported with `prunable=False` and a
            `reason` naming the layer and its class. Defaults to `False`.

    Returns:
        The groups in topological order of their first producer.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> outputs = keras.layers.Dense(2, name="head")(x)
    >>> model = keras.Model(inputs, outputs)
    >>> [(g.name, g.size, g.prunable) for g in channel_groups(model)]
    [('c1', 4, True), ('head', 2, False)]
    """
    return analyze(model, strict=strict).groups
