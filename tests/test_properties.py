"""Property-based tests: pruning random functional graphs is exact.

For random graphs of conv / batch norm / relu / add / concatenate / pooling /
flatten / dense and random channel subsets, the pruned model computes what the
original computes with the removed channels' consumer inputs set to zero.
A handful of graphs run by default; `pytest -m slow` runs 200.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_adp
from tests import surgery, zoo

L = keras.layers

OPS = ["conv", "conv", "bn", "relu", "add", "concat", "pool", "depthwise",
       "sep"]


@st.composite
def recipes(draw):
    """A random graph as data: (ops, head, model seed, subset seed).

    Each op is (kind, width, kernel, activation, pick), where `pick` chooses
    the earlier tensor that `add`/`concat` merge with.
    """
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(OPS),
                st.integers(1, 6),
                st.sampled_from([1, 3]),
                st.sampled_from([None, "relu"]),
                st.integers(0, 100),
            ),
            min_size=2,
            max_size=8,
        )
    )
    head = (draw(st.booleans()), draw(st.integers(0, 5)))
    return ops, head, draw(st.integers(0, 2**16)), draw(st.integers(0, 2**16))


def build(ops, head, seed):
    """Build the functional model a recipe describes."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 3, padding="same")(inputs)
    available = [x]
    for kind, width, kernel, activation, pick in ops:
        same_spatial = [t for t in available if t.shape[1:3] == x.shape[1:3]]
        other = same_spatial[pick % len(same_spatial)]
        if kind == "conv":
            x = L.Conv2D(width, kernel, padding="same", activation=activation)(x)
        elif kind == "bn":
            x = L.BatchNormalization()(x)
        elif kind == "relu":
            x = L.ReLU()(x)
        elif kind == "depthwise":
            x = L.DepthwiseConv2D(kernel, padding="same")(x)
        elif kind == "sep":
            x = L.SeparableConv2D(width, kernel, padding="same")(x)
        elif kind == "pool" and x.shape[1] >= 2:
            x = L.MaxPooling2D(2)(x)
        elif kind == "add":
            if other.shape[-1] != x.shape[-1]:
                other = L.Conv2D(x.shape[-1], 1)(other)
            x = L.Add()([x, other])
        elif kind == "concat":
            x = L.Concatenate()([x, other])
        available.append(x)
    flatten, hidden = head
    x = L.Flatten()(x) if flatten else L.GlobalAveragePooling2D()(x)
    if hidden:
        x = L.Dense(hidden, activation="relu")(x)
    outputs = L.Dense(3)(x)
    return zoo.randomize_batchnorm(keras.Model(inputs, outputs), seed)


def _check_pruning_is_exact(recipe):
    ops, head, model_seed, seed = recipe
    model = build(ops, head, model_seed)
    groups = keras_adp.channel_groups(model)
    keep = surgery.random_keep(groups, np.random.default_rng(seed), 0.1)
    pruned = keras_adp.prune_channels(model, keep)
    reference = surgery.zeroed_copy(model, groups, keep)
    x = np.random.default_rng(seed).normal(size=(2, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(pruned(x)), np.asarray(reference(x)), atol=1e-4, rtol=1e-4
    )
    sizes = {g.name: g.size for g in keras_adp.channel_groups(pruned)}
    for name, kept in keep.items():
        assert sizes[name] == len(kept)
    _check_counts_match_weights(pruned)
    _check_keras_file_round_trip(pruned, x)


def _independent_macs(model):
    """Conv/depthwise/separable/dense MACs from weight and output shapes."""
    total = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        out_positions = int(np.prod(layer.output.shape[1:-1]))
        shapes = {w.name: tuple(w.shape) for w in layer.weights}
        if isinstance(layer, L.SeparableConv2D):
            total += out_positions * int(np.prod(shapes["depthwise_kernel"]))
            total += out_positions * int(np.prod(shapes["pointwise_kernel"]))
        elif isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense)):
            total += out_positions * int(np.prod(shapes["kernel"]))
    return total


def _check_counts_match_weights(model):
    assert keras_adp.metrics.count_params(model) == sum(
        int(np.prod(w.shape)) for w in model.weights
    )
    counted = sum(
        cost.macs
        for cost in keras_adp.metrics.layer_costs(model)
        if cost.class_name
        in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")
    )
    assert counted == _independent_macs(model)


def _check_keras_file_round_trip(model, x):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "pruned.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)  # safe_mode, no custom objects
    np.testing.assert_allclose(
        np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6
    )


_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@settings(max_examples=6, **_COMMON)
@given(recipes())
def test_pruning_random_graphs_equals_zeroing_removed_inputs(recipe):
    _check_pruning_is_exact(recipe)


@pytest.mark.slow
@settings(max_examples=200, **_COMMON)
@given(recipes())
def test_pruning_200_random_graphs_equals_zeroing_removed_inputs(recipe):
    _check_pruning_is_exact(recipe)
