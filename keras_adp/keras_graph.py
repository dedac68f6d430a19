"""Read access to the graph of a Keras 3 functional or Sequential model, and
every other use of Keras internals in the package.

The only module that reads Keras' private graph attributes
(`Functional._nodes_by_depth`, `Sequential._functional`, a symbolic
tensor's `_keras_history`, an operation's `_inbound_nodes`, a node's
`arguments._flat_arguments`) and, apart from `keras_adp.distribute` (its
patch of Keras' TensorFlow trainer, and TensorFlow's internals), any other
private Keras name: a model's compile arguments (`compile_arguments`), the
operation and keras.applications classes Keras does not export
(`keras_ops_module`, `keras_op_class`, `keras_applications_module`) and
the LiteRT exporter probe (`has_litert_exporter`) and the build `fit` does
on its first call (`build_training_state`). Everything else goes
through the functions here (`tests/test_import_graph.py` checks it). It
does not import TensorFlow.

It also offers two walks of a model graph that follow nested sub-models:
`layer_calls` (for cost counting) and `site_tensors` (for density
measurement inside sub-models). Nothing here mutates a model
(`site_tensors` adds symbolic calls to its layers, which change no config
or weight).

`keras_adp.graph` re-exports the public names.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Iterator, NamedTuple

import keras

from keras_adp.graph_types import ActivationSite

__all__ = [
    "LayerCall",
    "all_layers",
    "build_training_state",
    "check_model",
    "compile_arguments",
    "computed_nodes",
    "flat_arguments",
    "get_layer",
    "graph_of",
    "has_litert_exporter",
    "keras_applications_module",
    "keras_op_class",
    "keras_ops_module",
    "layer_calls",
    "producer_name",
    "producer_of",
    "site_tensors",
]


def check_model(model: Any) -> None:
    """Raise unless `model` is a functional or Sequential Keras model.

    Raises:
        ValueError: for a subclassed model (its graph is hidden in Python
            code) or anything that is not a `keras.Model`.
    """
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


def graph_of(model: keras.Model) -> Any:
    """The functional graph that runs `model` (a Sequential's inner one).

    Raises:
        ValueError: for a Sequential model that is not built.
    """
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


def _functional_graph(model: Any) -> Any:
    """Returns the Functional graph of `model`, or `None` if it has none."""
    if isinstance(model, keras.Sequential):
        return model._functional
    if hasattr(model, "_nodes_by_depth"):
        return model
    return None


def computed_nodes(graph: Any, known: dict[int, Any]) -> Iterator[Any]:
    """The operation nodes of `graph` in execution order, as
    `Function._run_through_graph` runs them (depth keys in reverse order).

    Input nodes are skipped, and so are nodes whose input tensors are not
    all keys of `known` (by `id`) when the node comes up: nodes of a shared
    layer called outside this graph. The caller adds each node's outputs to
    `known` before taking the next node.

    Args:
        graph: a Functional graph (`graph_of(model)`).
        known: `id(tensor)` -> anything, for the tensors computed so far.

    Yields:
        Keras graph nodes (`node.operation`, `node.input_tensors`,
        `node.outputs`, `node.arguments`).
    """
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            if any(id(x) not in known for x in node.input_tensors):
                continue
            yield node


def producer_of(tensor: Any) -> tuple[Any, Any] | None:
    """(operation, node) that computed a symbolic tensor, or None."""
    history = getattr(tensor, "_keras_history", None)
    if not history:
        return None
    operation, node_index, _ = history
    return operation, operation._inbound_nodes[node_index]


def producer_name(tensor: Any) -> str:
    """Name of the operation that computed `tensor` (else the tensor's)."""
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else str(tensor.name)


def flat_arguments(node: Any) -> list:
    """Every argument of a node's call, flattened: tensors and constants."""
    return node.arguments._flat_arguments


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
        for node in computed_nodes(graph, tensor_dict):
            operation = node.operation
            inputs = [tensor_dict[id(x)] for x in node.input_tensors]
            inner_graph = _functional_graph(operation)
            if inner_graph is not None:
                outputs = walk(
                    inner_graph, inputs, f"{prefix}{operation.name}/"
                )
            else:
                outputs = _call_outputs(node, inputs, tensor_dict)
                calls.append(
                    LayerCall(
                        path=f"{prefix}{operation.name}",
                        layer=operation,
                        input_shapes=tuple(tuple(x.shape) for x in inputs),
                        output_shapes=tuple(tuple(x.shape) for x in outputs),
                    )
                )
            for ref, actual in zip(node.outputs, outputs):
                tensor_dict[id(ref)] = actual
        return [tensor_dict[id(ref)] for ref in graph.outputs]

    walk(graph, list(graph.inputs), "")
    return calls


def _call_outputs(node: Any, inputs: list, tensor_dict: dict) -> list:
    """The recorded outputs of `node`, or, when it is called on other
    shapes than recorded, specs of its outputs on those."""
    shapes_as_recorded = all(
        tuple(actual.shape) == tuple(ref.shape)
        for actual, ref in zip(inputs, node.input_tensors)
    )
    if shapes_as_recorded:
        return node.outputs
    args, kwargs = node.arguments.fill_in(tensor_dict)
    spec = node.operation.compute_output_spec(*args, **kwargs)
    return keras.tree.flatten(spec)


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
        for node in computed_nodes(graph, tensor_map):
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

    graph = graph_of(model)
    walk(graph, list(graph.inputs), ())
    return [found[(site.context, id(site.tensor))] for site in sites]


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
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


# ------------------------------------------------- other Keras internals
def compile_arguments(model: keras.Model) -> dict[str, Any] | None:
    """The keyword arguments `model.compile` was last called with.

    Read from the model's private `_compile_config` (Keras 3 keeps no public
    copy of the loss and metric arguments).

    Args:
        model: any Keras model (not modified).

    Returns:
        A new dict (`optimizer`, `loss`, `metrics`, `weighted_metrics`, ...)
        whose values are the objects `compile` received, or None when the
        model was never compiled.
    """
    config = getattr(model, "_compile_config", None)
    if config is None:
        return None
    return dict(config.config)


def keras_ops_module(name: str) -> Any:
    """The module `keras.src.ops.<name>` (e.g. `"numpy"`, `"nn"`).

    It holds the classes of the operation nodes that `keras.ops` calls and
    Python arithmetic on symbolic tensors add to a functional graph
    (`keras.src.ops.numpy.Add`, `keras.src.ops.nn.Relu6`, ...), which
    Keras does not export publicly.
    """
    return importlib.import_module(f"keras.src.ops.{name}")


def keras_op_class(module: str, name: str) -> type | None:
    """The operation class `keras.src.ops.<module>.<name>`, or None when
    the installed Keras lacks it (e.g. `("nn", "Celu")` before Keras 3.6)."""
    return getattr(keras_ops_module(module), name, None)


def keras_applications_module(name: str) -> Any:
    """The module `keras.src.applications.<name>` (e.g. `"convnext"`),
    whose helper layers (`convnext.LayerScale`) are not exported publicly."""
    return importlib.import_module(f"keras.src.applications.{name}")


def build_training_state(model: keras.Model, x: Any, y: Any) -> None:
    """Builds what `model.fit` builds on its first call: the model, its
    compiled metrics and its loss state, from the shapes of `x` and `y`.

    On JAX and PyTorch, a first `fit` builds them from the first batch of
    an extra pass over the data, which for shuffled NumPy inputs draws one
    more NumPy permutation: a model that never trained (a resumed one)
    would shuffle its first epoch unlike one that had trained, seed or no
    seed. Built here first, `fit` reads no extra batch. Uses Keras'
    private `Trainer._symbolic_build` (nothing is done without it).

    Args:
        model: a compiled model.
        x: a batch of model inputs (only shapes and dtypes are read).
        y: the batch's targets, or None.
    """
    build = getattr(model, "_symbolic_build", None)
    if build is not None:
        build(data_batch=(x, y, None))


def has_litert_exporter() -> bool:
    """Whether the installed Keras has `model.export(format="litert")`
    (its private module `keras.src.export.litert` exists)."""
    try:
        return importlib.util.find_spec("keras.src.export.litert") is not None
    except ImportError:
        return False
