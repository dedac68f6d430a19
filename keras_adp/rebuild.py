"""Physical channel removal: rebuild a model with fewer channels.

`prune_channels(model, keep)` clones the model's graph with
`keras.models.clone_model`, giving every affected layer a smaller config
(fewer `filters`/`units`). The surviving slices of every weight go into the
new layers as they are built: each new variable is created with its
retained value as initial value (`_WeightCopy`), never through the config;
weights that cannot be matched that way are assigned with `set_weights`
afterwards. The input model is never modified.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from keras_adp import channel_blocks
from keras_adp import compiling
from keras_adp import graph as graph_lib
from keras_adp import keras_graph


def resolve_keep(
    analysis: graph_lib.GraphAnalysis, keep: Mapping[str, Sequence[int]]
) -> dict[int, np.ndarray]:
    """Validate `keep` and map it to union-find roots.

    A group whose channels form equal blocks (`ChannelGroup.blocks > 1`, a
    grouped convolution's) keeps the same number of channels in every
    block: `len(indices) / blocks` rounded to the nearest integer (at least
    1), the indices listed first within each block, a block with too few
    listed completed with its lowest other indices
    (`keras_adp.channel_blocks`); so does a group cut into equal
    sections by a channel-axis `ops.split` (`keras_adp.channel_sections`).

    Args:
        analysis: the analysis of the model being pruned.
        keep: group name, or the name of any producer of a group, mapped to
            the channel indices to retain.

    Returns:
        dict from group root to sorted `int64` indices.

    Raises:
        ValueError: listing every problem found in `keep`.
    """
    if not isinstance(keep, Mapping):
        raise ValueError(
            "Expected `keep` to be a mapping from group (or producer layer) "
            f"name to channel indices. Received: {type(keep).__name__}."
        )
    by_name = {}
    for group in analysis.groups:
        for name in group.producers:
            by_name.setdefault(name, group)
    # A group's own name wins over a producer name it shares with another
    # group (a producer whose channels were split between groups).
    by_name.update({group.name: group for group in analysis.groups})
    problems: list[str] = []
    result: dict[int, np.ndarray] = {}
    seen_from: dict[str, str] = {}
    for key, indices in keep.items():
        group = by_name.get(key)
        if group is None:
            problems.append(
                f"'{key}' is not a channel group or producer layer; known "
                f"groups: {sorted(g.name for g in analysis.groups)}"
            )
        elif group.name in seen_from:
            problems.append(
                f"'{key}' and '{seen_from[group.name]}' name the same group "
                f"'{group.name}'"
            )
        elif not group.prunable:
            seen_from[group.name] = key
            problems.append(
                f"group '{group.name}' is not prunable: {group.reason}"
            )
        else:
            seen_from[group.name] = key
            array, found = _checked_indices(key, indices, group)
            problems.extend(found)
            if not found:
                # One class per section of a split group: its own channels.
                for start, size, root in analysis.roots_of_group(group.name):
                    inside = (array >= start) & (array < start + size)
                    result[root] = array[inside] - start
    if problems:
        raise ValueError(
            "Invalid `keep` passed to prune_channels:\n  - "
            + "\n  - ".join(problems)
        )
    return result


def _checked_indices(
    key: str, indices: Sequence[int], group: graph_lib.ChannelGroup
) -> tuple[np.ndarray | None, list[str]]:
    """`(kept indices, problems)` for one entry of `keep`: the indices
    sorted (evened out over the group's blocks), or the problems found."""
    array = np.asarray(indices)
    if array.ndim != 1 or (
        array.size and not np.issubdtype(array.dtype, np.integer)
    ):
        return None, [
            f"indices for '{key}' must be a 1-D sequence of integers; "
            f"received {indices!r}"
        ]
    if array.size == 0:
        return None, [
            f"indices for '{key}' are empty; keep at least one of its "
            f"{group.size} channels"
        ]
    problems = []
    bad = sorted({int(i) for i in array if i < 0 or i >= group.size})
    if bad:
        problems.append(
            f"indices {bad} for '{key}' are out of range [0, {group.size})"
        )
    values, counts = np.unique(array, return_counts=True)
    duplicates = values[counts > 1].tolist()
    if duplicates:
        problems.append(f"indices {duplicates} for '{key}' are repeated")
    if problems:
        return None, problems
    array = array.astype(np.int64)
    if group.blocks > 1:
        count = channel_blocks.block_count(
            len(array), group.size, group.blocks
        )
        return channel_blocks.equal_blocks(
            array, count, group.size, group.blocks
        ), []
    return np.sort(array), []


def _layer_plan(
    analysis: graph_lib.GraphAnalysis, keep_by_root: dict[int, np.ndarray]
) -> dict[int, tuple[list, np.ndarray | None]]:
    """For each affected layer: (kept indices per input, kept output
    indices, handler).

    `None` stands for "every channel survives". The handler is the layer's
    registered one, or the one the permutation rule inferred.
    """
    plan = {}
    for key, io in analysis.layer_io.items():
        keep_in = [
            analysis.kept_indices(layout, keep_by_root)
            for layout in io.input_layouts
        ]
        keep_out = (
            analysis.kept_indices(io.output_layouts[0], keep_by_root)
            if io.output_layouts
            else None
        )
        if keep_out is not None or any(k is not None for k in keep_in):
            plan[key] = (keep_in, keep_out, analysis.handler_of(io.layer))
    return plan


def layer_from_config(layer, config: dict):
    """A new layer of `layer`'s class, made from `config`.

    A `Lambda` layer's function is Python code this process already runs:
    re-creating it from its own config loads nothing untrusted, so Keras'
    safe mode, which refuses `Lambda` configs, is off for it.
    """
    if isinstance(layer, keras.layers.Lambda):
        return layer.__class__.from_config(config, safe_mode=False)
    return layer.__class__.from_config(config)


def _clone(
    model: keras.Model, plan: dict, pairs: list, top: bool = True
) -> keras.Model:
    """Clone `model` (and nested models) with the planned smaller configs."""

    def clone_function(layer):
        if isinstance(layer, keras.Model):
            return _clone(layer, plan, pairs, top=False)
        if not isinstance(layer, keras.layers.Layer):
            return layer  # A stateless keras.ops operation.
        config = layer.get_config()
        if id(layer) in plan:
            keep_in, keep_out, handler = plan[id(layer)]
            config = handler.config(layer, config, keep_in[0], keep_out)
        new_layer = layer_from_config(layer, config)
        pairs.append(_WeightCopy(layer, new_layer, plan))
        return new_layer

    keep_in = plan.get(id(model), ([None] * len(model.inputs), None, None))[0]
    if top:
        keep_in = [None] * len(model.inputs)
    input_tensors = [
        keras.Input(
            batch_shape=tuple(tensor.shape[:-1])
            + ((len(kept),) if kept is not None else tuple(tensor.shape[-1:])),
            dtype=tensor.dtype,
            name=keras_graph.producer_name(tensor),
        )
        for tensor, kept in zip(model.inputs, keep_in)
    ]
    if isinstance(model, keras.Sequential):
        # Built here rather than by clone_model, which would also re-compile
        # the copy from its serialized compile config (and fail on custom,
        # unregistered losses or metrics).
        new_model = keras.Sequential(
            [input_tensors[0]] + [clone_function(layer) for layer in model.layers],
            name=model.name,
        )
    else:
        source = model
        if getattr(model, "compiled", False):
            # An uncompiled view over the same graph, for the same reason.
            source = keras.Model(model.input, model.output, name=model.name)
        new_model = keras.models.clone_model(
            source,
            # Keep the structure (and the input layers' names).
            input_tensors=keras.tree.pack_sequence_as(source.input, input_tensors),
            clone_function=clone_function,
        )
        new_model = _keep_class(model, new_model)
    if not model.trainable:
        new_model.trainable = False
    return new_model


def _keep_class(model: keras.Model, new_model: keras.Model) -> keras.Model:
    """`new_model`'s graph as an instance of `model`'s class, where possible.

    A subclass of `keras.Model` whose constructor takes `(inputs, outputs)`
    (it calls `super().__init__(inputs, outputs, ...)` with what it is
    given) is re-created over the pruned graph, as `keras.models.clone_model`
    does. Other subclassed functional models (keras-hub `Backbone`s and
    `Task`s such as `ImageClassifier`, whose constructors build the graph
    from architecture arguments like `growth_rate`) come back as plain
    functional models: their config describes the unpruned architecture, so
    an instance of their class would not reload with the pruned weights.
    """
    import inspect

    cls = type(model)
    if cls is type(new_model):
        return new_model
    try:
        parameters = list(inspect.signature(cls.__init__).parameters)[1:3]
    except (TypeError, ValueError):
        return new_model
    if parameters != ["inputs", "outputs"]:
        return new_model
    try:
        rebuilt = cls(new_model.inputs, new_model.outputs, name=model.name)
    except Exception:  # A constructor that needs more: keep Functional.
        return new_model
    return rebuilt if isinstance(rebuilt, cls) else new_model


class _ValueInitializer:
    """A Keras initializer that returns one given value (a weight's retained
    slice), so that the new variable is created with it."""

    def __init__(self, value: np.ndarray, where: str):
        self.value = value
        self.where = where

    def __call__(self, shape, dtype=None):
        if tuple(shape) != self.value.shape:
            raise ValueError(
                f"Rebuilding weight '{self.where}': the new layer asks for "
                f"shape {tuple(shape)}, the sliced weight has shape "
                f"{self.value.shape}. Expected the layer's handler to slice "
                "its config and its weights alike."
            )
        if keras.backend.backend() != "tensorflow":
            return np.array(self.value)  # Never alias the old model's buffer.
        return self.value


class _WeightCopy:
    """Copies one layer's retained weights into its smaller clone.

    The clone's variables are created with their final values: while the
    clone is built, its `add_weight` is wrapped (on the instance only, until
    `finish`) to pass each named weight's retained slice as the initializer.
    That saves drawing initial values and assigning the slices afterwards (a
    large share of rebuild time on big models). Weights the wrapper did not
    create (made outside `add_weight`, named automatically, or with
    repeated names) are then assigned with `set_weights`, by position.
    """

    def __init__(self, old, new, plan: dict):
        self.old, self.new = old, new
        self.values = _retained_weights(old, plan)
        self.created: dict[str, Any] = {}
        if self.values:
            object.__setattr__(new, "add_weight", self._add_weight)

    def _add_weight(self, *args, **kwargs):
        name = kwargs.get("name")
        original = type(self.new).add_weight.__get__(self.new)
        if name not in self.values or name in self.created:
            return original(*args, **kwargs)
        initializer = _ValueInitializer(
            self.values[name], f"{self.old.name}/{name}"
        )
        if len(args) > 1:  # add_weight(shape, initializer, dtype)
            args = (args[0], initializer, *args[2:])
        else:
            kwargs["initializer"] = initializer
        self.created[name] = original(*args, **kwargs)
        return self.created[name]

    def unwrap(self) -> None:
        """Remove the `add_weight` wrapper from the new layer."""
        if "add_weight" in vars(self.new):
            object.__delattr__(self.new, "add_weight")

    def finish(self) -> None:
        """Assign the weights the wrapper did not create."""
        if not self.old.weights:
            return
        if self.values is None:
            # Repeated variable names: copy by position (shapes unchanged).
            self.new.set_weights(self.old.get_weights())
            return
        created = {id(v) for v in self.created.values()}
        if len(self.new.weights) == len(self.old.weights) and all(
            id(w) in created for w in self.new.weights
        ):
            return
        # Same names in the same order, except for weights that `add_weight`
        # named automatically ("variable_18"): those are matched by position.
        self.new.set_weights([self.values[w.name] for w in self.old.weights])


def _weight_array(variable) -> np.ndarray:
    """A variable's value as a NumPy array, read-only and without a copy on
    TensorFlow (`Variable.numpy()` copies it, a large share of reading a
    big model's weights). Safe to hand on: slices are new arrays, and
    TensorFlow copies a NumPy initial value into the new variable."""
    if keras.backend.backend() == "tensorflow":
        return np.asarray(variable.value.read_value())
    return np.asarray(variable.numpy())


def _retained_weights(old, plan: dict) -> dict | None:
    """`old`'s weights by name, sliced as planned; None when names repeat."""
    weights = {w.name: _weight_array(w) for w in old.weights}
    if len(weights) != len(old.weights):
        return None
    if weights and id(old) in plan:
        keep_in, keep_out, handler = plan[id(old)]
        weights = handler.weights(old, weights, keep_in[0], keep_out)
    return weights


@dataclasses.dataclass
class Rebuild:
    """A pruned model and how to slice anything shaped like the old weights.

    Attributes:
        model: the new, smaller model.
        source: the model it was built from (not modified).
    """

    model: keras.Model
    source: keras.Model
    _pairs: list
    _plan: dict

    def slice_like(self, old_variable, value: np.ndarray) -> np.ndarray:
        """Slice `value`, shaped like `old_variable`, as that weight was sliced.

        Used for optimizer state (momentum, Adam moments), which has the
        shape of the weight it belongs to.
        """
        for pair in self._pairs:
            old = pair.old
            for weight in old.weights:
                if weight is not old_variable:
                    continue
                if id(old) not in self._plan:
                    return value
                weights = {w.name: np.asarray(w.numpy()) for w in old.weights}
                weights[weight.name] = np.asarray(value)
                keep_in, keep_out, handler = self._plan[id(old)]
                return handler.weights(old, weights, keep_in[0], keep_out)[
                    weight.name
                ]
        raise ValueError(
            f"Variable '{getattr(old_variable, 'path', old_variable)}' does not "
            f"belong to model '{self.source.name}'."
        )


def rebuild(
    model: keras.Model,
    keep: Mapping[str, Sequence[int]],
    *,
    strict: bool = False,
) -> Rebuild:
    """Like `prune_channels`, but also returns how every weight was sliced."""
    analysis = graph_lib.analyze(model, strict=strict)
    keep_by_root = resolve_keep(analysis, keep)
    plan = _layer_plan(analysis, keep_by_root)
    pairs: list[_WeightCopy] = []
    try:
        with _short_variable_names():
            new_model = _clone(model, plan, pairs)
    finally:
        for pair in pairs:
            pair.unwrap()
    for pair in pairs:
        pair.finish()
    _release_kernel_cache()
    return Rebuild(new_model, model, pairs, plan)


@contextlib.contextmanager
def _short_variable_names():
    """On TensorFlow, name each new `tf.Variable` after its weight alone.

    Keras names a layer's TensorFlow variable `"<layer>/<weight>"` (and
    prefixes any enclosing name scope), which becomes the `debug_name`
    attribute of the variable's `VarHandleOp`; TensorFlow's eager kernel
    cache is keyed by attributes, so a rebuild paid one kernel construction
    per weight (320 variables of 3x3x16x16 with the cache cleared: 0.22 s
    CPU with distinct names, 0.07 s with one name or a warm cache; ResNet50
    analysis + rebuild: 0.92 -> 0.70 s CPU on the loaded machine). Inside this
    scope the TensorFlow name is the weight's own (`"kernel"`, `"gamma"`;
    an absolute name scope, so no prefix), which repeats across layers.
    Keras' own `Variable.name` and `Variable.path`, which saving, the
    optimizer and this package use, are unchanged. No-op off TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    def creator(next_creator, **kwargs):
        name = kwargs.get("name") or "Variable"
        # A trailing "/" makes TensorFlow take the name as an absolute scope.
        kwargs["name"] = name if name.endswith("/") else f"{name}/"
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        yield


def _release_kernel_cache() -> None:
    """Drop TensorFlow's eager kernel cache.

    Every rebuild runs initializers and assignments on new weight shapes;
    TensorFlow caches one kernel per shape, which grew memory by about
    1 MiB per rebuild in `benchmarks/soak_rebuild.py`. Clearing it costs
    only a re-lookup of the kernels used next. Unlike
    `keras.backend.clear_session()`, it leaves Keras' global settings (such
    as the dtype policy) alone.
    """
    if keras.backend.backend() != "tensorflow":
        return
    from keras_adp import distribute

    distribute.clear_kernel_cache()


def prune_channels(
    model: keras.Model,
    keep: Mapping[str, Sequence[int]],
    *,
    strict: bool = False,
) -> keras.Model:
    """Return a physically smaller copy of `model` keeping chosen channels.

    Args:
        model: a built functional or Sequential model. Never mutated.
        keep: maps a channel-group name (see `channel_groups`), or the name
            of any producer layer of a group, to the indices of the channels
            to retain, in any order. Groups not named keep every channel.
            A grouped convolution's group (`ChannelGroup.blocks > 1`) keeps
            the same count in each of its blocks, the indices listed first
            within each block (see `resolve_keep`).
        strict: passed to the graph analysis: raise on unsupported layers
            instead of treating their groups as non-prunable. Defaults to
            `False`.

    Returns:
        A new model of the same class and layer names, with smaller layers
        and the retained weights copied exactly. Layers' dtype policies and
        `trainable` flags are kept. If `model` was compiled, the new model is
        compiled with the same loss, metrics and options and a fresh
        optimizer of the same configuration (`ADPTrainer` also carries the
        optimizer's state across).

    Raises:
        ValueError: for a subclassed model, or an invalid `keep` (unknown
            name, non-prunable group, empty, repeated or out-of-range
            indices); the message lists every problem.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    >>> small = prune_channels(model, {"c1": [0, 2, 5]})
    >>> small.get_layer("c1").filters
    3
    """
    new_model = rebuild(model, keep, strict=strict).model
    if getattr(model, "compiled", False) and model.optimizer is not None:
        compiling.compile_like(
            model, new_model, compiling.fresh_optimizer(model.optimizer)
        )
    return new_model


def recalibrate_batch_norm(model: keras.Model, inputs, *, batch_size=256) -> int:
    """Re-estimates every BatchNormalization's moving statistics on `inputs`.

    After channels are removed, a layer's inputs change, so the moving
    means and variances of the BatchNormalization layers after it describe
    another network until training has run long enough to forget them
    (with the default momentum 0.99, 43% of the old value is left after 85
    steps). Inference-mode accuracy, which is what validation measures, is
    then misleadingly low. This runs `model` in training mode over `inputs`
    and sets each moving statistic to the average of its batch statistics
    (momentum `(k - 1) / k` at batch `k`); weights, optimizer state and each
    layer's `momentum` are left as they were. Dropout and other
    training-only layers are active during these passes, as they are when
    the statistics are learnt.

    Args:
        model: a built functional or Sequential model. Its BatchNormalization
            layers' moving statistics are updated in place.
        inputs: an array, or a list of arrays for a multi-input model.
        batch_size: samples per pass. Defaults to `256`.

    Returns:
        The number of BatchNormalization layers recalibrated.
    """
    layers = [
        layer for layer in graph_lib.all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers:
        return 0
    arrays = inputs if isinstance(inputs, list) else [inputs]
    samples = len(arrays[0])
    if keras.backend.backend() == "jax":
        _recalibrate_compiled(model, layers, arrays, isinstance(inputs, list),
                              batch_size)
        return len(layers)
    momenta = [layer.momentum for layer in layers]
    try:
        for batch, start in enumerate(range(0, samples, batch_size), 1):
            for layer in layers:
                layer.momentum = (batch - 1) / batch
            chunk = [array[start:start + batch_size] for array in arrays]
            model(chunk if isinstance(inputs, list) else chunk[0],
                  training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def _recalibrate_compiled(model, layers, arrays, as_list, batch_size) -> None:
    """`recalibrate_batch_norm` on JAX, where calling a model eagerly
    compiles every operation on its own (tens of seconds for a small CNN):
    one compiled `stateless_call` per batch shape, with momentum 0 so each
    call returns its batch's statistics, averaged here (what momentum
    `(k - 1) / k` at batch `k` gives)."""
    import jax

    variables = model.non_trainable_variables
    position = {id(variable): i for i, variable in enumerate(variables)}
    slots = [
        (position[id(layer.moving_mean)], position[id(layer.moving_variance)])
        for layer in layers
    ]
    momenta = [layer.momentum for layer in layers]
    trainable = [variable.value for variable in model.trainable_variables]
    state = [variable.value for variable in variables]
    try:
        for layer in layers:
            layer.momentum = 0.0
        call = jax.jit(
            lambda t, n, x: model.stateless_call(t, n, x, training=True)[1]
        )
        sums, batches = None, 0
        for start in range(0, len(arrays[0]), batch_size):
            chunk = [array[start:start + batch_size] for array in arrays]
            # The new state carries the seed generators on (dropout).
            state = call(trainable, state, chunk if as_list else chunk[0])
            stats = [
                (np.asarray(state[m], np.float64),
                 np.asarray(state[v], np.float64))
                for m, v in slots
            ]
            sums = stats if sums is None else [
                (sm + m, sv + v) for (sm, sv), (m, v) in zip(sums, stats)
            ]
            batches += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for layer, (mean, variance) in zip(layers, sums):
        layer.moving_mean.assign(
            (mean / batches).astype(layer.moving_mean.dtype)
        )
        layer.moving_variance.assign(
            (variance / batches).astype(layer.moving_variance.dtype)
        )
