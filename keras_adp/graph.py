"""Channel-dependency analysis of Keras 3 functional and Sequential models.

A *channel group* is a set of tensors whose channel axis must be pruned
together: the outputs of a convolution, everything that passes through
channel-wise layers after it (BatchNormalization, activations, pooling,
depthwise convolutions, ...), and every tensor that a residual merge
(`Add`, `Multiply`, ...) couples to it. Removing channel `c` of a group
removes filter `c` from each of its *producers* and input slice `c` from
each of its *consumers*.

`channel_groups(model)` walks the model's graph once (`GraphAnalysis`),
layer by layer in execution order, and asks each layer's handler
(`keras_adp.layers`) what it does to the channel axis. The analysis is
split over a few modules, all re-exported here:

- `keras_adp.graph_types`: the data types (`ChannelGroup`, `Layout`, ...).
- `keras_adp.channel_partition`: the groups as a union-find structure.
- `keras_adp.channel_sections`: a group cut into equal sections by a
  channel-axis `keras.ops.split`, reported as one group in equal blocks.
- `keras_adp.keras_graph`: read access to the Keras graph (the only one
  of these that reads Keras' private graph attributes), and the walks
  `layer_calls` and `site_tensors`.
- `keras_adp.op_nodes`: what is read from `keras.ops` operation nodes.
- `keras_adp.permutation_rule`: unknown layers accepted by behaviour.

Nodes of `keras.ops` operations (Python arithmetic on symbolic tensors,
`keras.ops.relu6(x)`, ...) are analysed like layers, with handlers keyed by
operation class. Nested functional and Sequential sub-models are walked
with their layer names prefixed (`"backbone/conv1"`); an activation site
inside one records which calls of the sub-models lead to it (`context`), so
that `site_tensors` can reach it from the outer model's inputs.

The analysis never mutates the model it analyses.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_adp import layers as layer_handlers
from keras_adp import op_nodes
from keras_adp.channel_partition import ChannelPartition
from keras_adp.graph_types import (
    GATING_ACTIVATIONS,
    ActivationSite,
    ChannelGroup,
    ConsumerSlice,
    LayerIO,
    Layout,
    Part,
    concatenated,
    flattened,
    single_layout,
)
from keras_adp.keras_graph import (
    LayerCall,
    all_layers,
    check_model,
    computed_nodes,
    get_layer,
    graph_of,
    layer_calls,
    producer_name,
    site_tensors,
)
from keras_adp.permutation_rule import infer_handler

__all__ = [
    "GATING_ACTIVATIONS",
    "ActivationSite",
    "ChannelGroup",
    "ConsumerSlice",
    "GraphAnalysis",
    "LayerCall",
    "LayerIO",
    "Layout",
    "Part",
    "all_layers",
    "analyze",
    "channel_groups",
    "check_model",
    "get_layer",
    "graph_of",
    "layer_calls",
    "site_tensors",
]

class GraphAnalysis:
    """The result of walking a model: groups and per-layer channel layouts.

    Built by `analyze(model)`. `groups` is what `channel_groups` returns;
    `layer_io`, `root_of_group`, `kept_indices` and `handler_of` are used by
    the rebuilder to compute which indices of every weight survive.

    Args:
        model: a built functional or Sequential model. Never mutated.
        strict: raise on a layer that cannot be sliced instead of marking
            its groups non-prunable. Defaults to `False`.

    Attributes:
        groups: the `ChannelGroup`s, in topological order of their first
            producer.
        layer_io: `id(layer)` -> the `LayerIO` of its first call.
        inferred_handlers: `id(layer)` -> the handler the permutation rule
            found for a layer without a registered one.
    """

    def __init__(self, model: keras.Model, strict: bool = False):
        check_model(model)
        self.model = model
        self.strict = strict
        self._partition = ChannelPartition()
        self.layer_io: dict[int, LayerIO] = {}
        self.inferred_handlers: dict[int, layer_handlers.Handler] = {}
        self._tensor_layouts: dict[int, Layout] = {}
        self._layer_roots: dict[int, int] = {}
        # Ids of the outer nodes calling the sub-model being walked.
        self._context: tuple = ()
        graph = graph_of(model)
        input_layouts = [self._input_layout(tensor) for tensor in graph.inputs]
        outputs = self._walk(model, input_layouts, prefix="")
        for tensor, layout in zip(graph.outputs, outputs):
            self._partition.block(
                layout, f"reaches the model output '{producer_name(tensor)}'"
            )
        refresh = self._partition.refresh
        for io in self.layer_io.values():
            io.input_layouts = [refresh(x) for x in io.input_layouts]
            io.output_layouts = [refresh(x) for x in io.output_layouts]
        self.groups, self._group_roots, self._group_pieces = (
            self._partition.groups(list(self.layer_io.values()))
        )

    # ------------------------------------------------------------- queries
    def find(self, root: int) -> int:
        """The representative root of `root`'s group."""
        return self._partition.find(root)

    def root_of_group(self, name: str) -> int:
        """Union-find representative of the group called `name` (of its
        first section, for a group of split sections)."""
        return self._group_roots[name]

    def roots_of_group(self, name: str) -> tuple[tuple[int, int, int], ...]:
        """`(first channel, size, root)` of each part of the group called
        `name` that is a union-find class of its own: one, `(0, size,
        root)`, except for the sections of a channel-axis split
        (`keras_adp.channel_sections`), one per section."""
        if name in self._group_pieces:
            return self._group_pieces[name]
        root = self._group_roots[name]
        return ((0, self._partition.record(root).size, root),)

    def kept_indices(
        self, layout: Layout, keep_by_root: dict[int, np.ndarray]
    ) -> np.ndarray | None:
        """Surviving indices of a tensor's channel axis, or None if all."""
        return self._partition.kept_indices(layout, keep_by_root)

    def handler_of(self, layer: Any) -> layer_handlers.Handler | None:
        """The registered handler of `layer`, or the one the rule found."""
        handler = layer_handlers.handler_for(layer)
        return handler or self.inferred_handlers.get(id(layer))

    # ---------------------------------------------------------------- walk
    def _input_layout(self, tensor: Any) -> Layout:
        """A model input's layout: a group that can never be pruned."""
        shape = tuple(tensor.shape)
        channels = 1 if not shape or shape[-1] is None else int(shape[-1])
        root = self._partition.new_root(channels)
        self._partition.block_root(
            root, f"coupled to the model input '{tensor.name}'"
        )
        return single_layout(root, channels)

    def _bind(self, tensor: Any, layout: Layout, where: str) -> None:
        key = id(tensor)
        if key in self._tensor_layouts:
            self._partition.unify([self._tensor_layouts[key], layout], where)
        else:
            self._tensor_layouts[key] = layout

    def _walk(
        self, model: keras.Model, input_layouts: list[Layout], prefix: str
    ) -> list[Layout]:
        graph = graph_of(model)
        for tensor, layout in zip(graph.inputs, input_layouts):
            self._bind(tensor, layout, model.name)
        # Nodes of a shared layer called outside this model are skipped.
        for node in computed_nodes(graph, self._tensor_layouts):
            self._visit(node, prefix)
        return [
            self._partition.refresh(self._tensor_layouts[id(x)])
            for x in graph.outputs
        ]

    def _visit(self, node: Any, prefix: str) -> None:
        layer = node.operation
        name = prefix + layer.name
        inputs = [
            self._partition.refresh(self._tensor_layouts[id(x)])
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
            self._bind(tensor, self._partition.refresh(layout), name)

    def _visit_layer(
        self, node: Any, layer: Any, name: str, inputs: list[Layout]
    ) -> list[Layout]:
        handler, inferred, why = _resolve_handler(node, layer, self.strict)
        if inferred:
            self.inferred_handlers[id(layer)] = handler
        split = why is None and handler.role == "split"
        if why is None and len(node.outputs) != 1 and not split:
            why = "layers with several outputs are not supported"
        elif why is None:
            in_shapes = [tuple(x.shape) for x in node.input_tensors]
            out_shapes = [tuple(x.shape) for x in node.outputs]
            why = handler.check(layer, in_shapes, out_shapes)
        outputs = None
        if why is None and split:
            outputs = self._split(node, layer, name, inputs[0])
            if outputs is None:
                why = (
                    "it splits channels of several groups (a concatenation) "
                    "into equal sections; keeping the sections equal would "
                    "couple their widths, which is not supported"
                )
        if why is not None:
            outputs = self._unsliceable(node, layer, name, inputs, handler, why)
        elif outputs is None:
            if inferred:
                for layout in inputs:
                    for part in layout.parts:
                        self._partition.record(part.root).inferred.append(name)
            outputs = [self._output_layout(node, layer, name, inputs, handler)]
        self._record(layer, name, inputs, outputs)
        return outputs

    def _split(self, node, layer, name, layout) -> list[Layout] | None:
        """The outputs of `ops.split`: the input's channels on every output
        when another axis is split; else equal sections of the input's
        group (None when it carries several groups)."""
        rank = len(node.input_tensors[0].shape)
        sections = layer_handlers.split_sections(layer, rank)
        if sections is None or sections == 1:
            return [layout] * len(node.outputs)
        return self._partition.split_sections(layout, sections, name)

    def _unsliceable(
        self, node, layer, name, inputs, handler, why
    ) -> list[Layout]:
        """Block every group reaching a layer that cannot be sliced (or
        raise, when strict); its outputs start new, blocked groups."""
        kind = type(layer).__name__
        if self.strict:
            raise ValueError(
                f"Cannot analyse layer '{name}' ({kind}): {why}. "
                "Expected only layers keras_adp knows how to slice (see "
                "`keras_adp.supported_layers()`). Pass strict=False to treat "
                "the channel groups it touches as non-prunable instead."
            )
        for layout in inputs:
            self._partition.block(
                layout, f"passes through layer '{name}' ({kind}): {why}"
            )
        # A producer class in an unsupported configuration still defines a
        # group: list it, non-prunable, with the reason.
        producer = name if handler and handler.role == "producer" else None
        outputs = []
        for tensor in node.outputs:
            shape = tuple(tensor.shape)
            root = self._partition.new_root(
                int(shape[-1]) if shape and shape[-1] else 1, producer
            )
            self._partition.block_root(
                root,
                f"produced by layer '{name}' ({kind}), which cannot be "
                f"sliced: {why}",
            )
            outputs.append(
                single_layout(root, self._partition.record(root).size)
            )
        return outputs

    def _output_layout(self, node, layer, name, inputs, handler) -> Layout:
        """The output layout of a sliceable layer, by its handler's role."""
        role = handler.role
        if role == "producer":
            return self._producer(layer, name, inputs[0], node, handler)
        if role in ("channelwise", "passthrough", "reshape"):
            if role == "channelwise":
                for part in inputs[0].parts:
                    self._partition.record(part.root).members.append(name)
            activation = handler.activation(layer)
            if activation is not None:
                shift = op_nodes.shift_of(node.input_tensors[0])
                if shift:
                    # e.g. relu6(x + 3) in a hard sigmoid: silent only below
                    # -3, so "fired" does not mean "x > 0".
                    activation = f"{activation} of an input shifted by {shift}"
                self._add_sites(inputs[0], name, activation, node.outputs[0])
            return inputs[0]
        if role == "merge":
            output = self._merge(name, inputs)
            gated = op_nodes.self_gate(node)
            if gated is not None:
                self._add_sites(
                    self._partition.refresh(output), name, gated,
                    node.outputs[0],
                )
            return output
        if role == "concat":
            return self._concat(layer, name, inputs, node)
        if role == "flatten":
            return self._flatten(name, inputs[0], node)
        raise RuntimeError(f"Unknown handler role {role!r}")  # pragma: no cover

    def _record(self, layer, name, inputs, outputs) -> None:
        if id(layer) not in self.layer_io:
            self.layer_io[id(layer)] = LayerIO(layer, name, inputs, outputs)
        else:
            # A shared layer: every call must see the same channels.
            first = self.layer_io[id(layer)]
            for a, b in zip(first.input_layouts, inputs):
                self._partition.unify([a, b], name)
            for a, b in zip(first.output_layouts, outputs):
                self._partition.unify([a, b], name)

    def _producer(
        self, layer: Any, name: str, inputs: Layout, node: Any, handler
    ) -> Layout:
        out_channels = int(tuple(node.outputs[0].shape)[-1])
        # A grouped convolution: input and output pruned in equal blocks.
        blocks = handler.blocks(layer)
        if blocks > 1:
            self._partition.require_blocks(inputs, blocks, name)
        for part in inputs.parts:
            record = self._partition.record(part.root)
            if name not in record.consumers:
                record.consumers.append(name)
            record.consumer_slices.append(
                ConsumerSlice(name, part.offset, part.stride, part.positions)
            )
        if id(layer) not in self._layer_roots:
            self._layer_roots[id(layer)] = self._partition.new_root(
                out_channels, producer=name
            )
        root = self._layer_roots[id(layer)]
        # A shared producer's group may have been split since its first call.
        layout = self._partition.refresh(single_layout(root, out_channels))
        if blocks > 1:
            self._partition.require_blocks(layout, blocks, name)
        activation = layer_handlers.fused_activation(layer)
        if activation is not None:
            self._add_sites(layout, name, activation, node.outputs[0])
        return layout

    def _add_sites(self, layout, name, activation, tensor) -> None:
        for part in layout.parts:
            if part.positions != 1:
                continue
            self._partition.record(part.root).sites.append(
                ActivationSite(
                    name, activation, part.offset, tensor, self._context
                )
            )

    def _merge(self, name: str, inputs: list[Layout]) -> Layout:
        width = max(layout.width for layout in inputs)
        # Inputs with one channel broadcast over the others (e.g. a spatial
        # attention map): they are not coupled to the channel axis.
        full = [layout for layout in inputs if layout.width == width]
        self._partition.unify(full if width > 1 else inputs, name)
        return full[0]

    def _concat(self, layer, name, inputs, node) -> Layout:
        rank = len(node.input_tensors[0].shape)
        if layer.axis % rank != rank - 1:
            self._partition.unify(inputs, name)
            return inputs[0]
        return concatenated(inputs)

    def _flatten(self, name: str, layout: Layout, node: Any) -> Layout:
        in_shape = tuple(node.input_tensors[0].shape)
        if len(in_shape) > 2 and any(p.positions != 1 for p in layout.parts):
            self._partition.block(
                layout, f"'{name}' flattens an already flattened tensor"
            )
            return layout
        return flattened(layout, in_shape)


def _resolve_handler(
    node: Any, layer: Any, strict: bool
) -> tuple[layer_handlers.Handler | None, bool, str | None]:
    """`(handler, inferred, why)`: the layer's handler (registered, or
    found by the permutation rule when `inferred`), and why the layer
    cannot be sliced (None when it can, as far as that tells)."""
    handler = layer_handlers.handler_for(layer)
    why = op_nodes.constant_operand(node)
    kind = op_nodes.operation_kind(layer)
    if why is not None or handler is not None:
        return handler, False, why
    if not node.input_tensors:
        return None, False, "it has no tensor input"
    if strict:
        return None, False, (
            f"{kind} class not supported (strict=True accepts only "
            "registered classes)"
        )
    verdict = infer_handler(node)
    if verdict.handler is None:
        return None, False, (
            f"{kind} class not supported, and not channel-wise by the "
            f"permutation rule: {verdict.reason}"
        )
    return verdict.handler, True, None


def analyze(model: keras.Model, *, strict: bool = False) -> GraphAnalysis:
    """Walk `model` and return its channel groups and per-layer layouts.

    Args:
        model: a built functional or Sequential model. Never mutated.
        strict: see `channel_groups`. Defaults to `False`.

    Returns:
        The `GraphAnalysis` of `model`.
    """
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
