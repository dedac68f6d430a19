"""Channel scores and the output axis each producer handler declares.

The expected values are computed here, independently of
`keras_adp.layers`: the axis a handler's slicing cuts is found by building
the same layer with fewer filters and comparing weight shapes, and the L1
scores by summing `np.abs(kernel)` over axes written out for each layer
class.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import layers as layer_handlers
from keras_adp import scoring

L = keras.layers

IN_CHANNELS = 5
FULL = 6
KEEP = np.array([0, 2, 3, 5])

_SPATIAL = {"1D": (8, IN_CHANNELS), "2D": (8, 8, IN_CHANNELS),
            "3D": (6, 6, 6, IN_CHANNELS)}

# Producer class -> (layer with `n` output channels, input shape).
PRODUCERS = {
    L.Conv1D: (lambda n: L.Conv1D(n, 3), _SPATIAL["1D"]),
    L.Conv2D: (lambda n: L.Conv2D(n, 3), _SPATIAL["2D"]),
    L.Conv3D: (lambda n: L.Conv3D(n, 3), _SPATIAL["3D"]),
    L.Conv1DTranspose: (lambda n: L.Conv1DTranspose(n, 3), _SPATIAL["1D"]),
    L.Conv2DTranspose: (lambda n: L.Conv2DTranspose(n, 3), _SPATIAL["2D"]),
    L.Conv3DTranspose: (lambda n: L.Conv3DTranspose(n, 3), _SPATIAL["3D"]),
    L.SeparableConv1D: (lambda n: L.SeparableConv1D(n, 3), _SPATIAL["1D"]),
    L.SeparableConv2D: (lambda n: L.SeparableConv2D(n, 3), _SPATIAL["2D"]),
    L.Dense: (lambda n: L.Dense(n), (IN_CHANNELS,)),
}

REGISTERED_PRODUCERS = sorted(
    (cls for cls, handler in layer_handlers.REGISTRY.items()
     if handler.role == "producer"),
    key=lambda cls: cls.__name__,
)


def _built(cls, channels: int) -> L.Layer:
    make, input_shape = PRODUCERS[cls]
    layer = make(channels)
    layer.build((None, *input_shape))
    rng = np.random.default_rng(channels)
    layer.set_weights(
        [rng.standard_normal(w.shape).astype("float32") for w in layer.weights]
    )
    return layer


def _weights(layer: L.Layer) -> dict:
    return {w.name: np.asarray(w.numpy()) for w in layer.weights}


def test_every_registered_producer_has_a_case():
    missing = sorted(
        cls.__name__ for cls in REGISTERED_PRODUCERS if cls not in PRODUCERS
    )
    assert not missing, f"producer classes without a case: {missing}"


@pytest.mark.parametrize(
    "cls", REGISTERED_PRODUCERS, ids=lambda cls: cls.__name__
)
def test_declared_output_axis_is_the_axis_its_slicing_cuts(cls):
    handler = layer_handlers.REGISTRY[cls]
    full = _built(cls, FULL)
    smaller = _built(cls, len(KEEP))
    weights = _weights(full)
    declared = handler.output_weight
    rank = weights[declared].ndim
    # The one axis where a layer with fewer filters is smaller.
    full_shape = weights[declared].shape
    smaller_shape = tuple(_weights(smaller)[declared].shape)
    changed = [a for a in range(rank) if full_shape[a] != smaller_shape[a]]
    assert changed == [handler.output_axis % rank]

    sliced = handler.weights(full, weights, None, KEEP)

    assert {name: value.shape for name, value in sliced.items()} == {
        name: value.shape for name, value in _weights(smaller).items()
    }
    np.testing.assert_array_equal(
        sliced[declared], np.take(weights[declared], KEEP, axis=changed[0])
    )


def _single_producer_model(producer: L.Layer) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = producer(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    rng = np.random.default_rng(0)
    model.set_weights(
        [rng.standard_normal(w.shape) for w in model.get_weights()]
    )
    return model


# Producer -> the kernel holding its output channels, and the axes summed
# for each channel's L1 norm.
L1_CASES = {
    # kernel (kh, kw, in, out)
    "conv2d": (lambda: L.Conv2D(6, 3, name="p"), "kernel", (0, 1, 2)),
    # kernel (kh, kw, out, in)
    "conv2d_transpose": (
        lambda: L.Conv2DTranspose(6, 3, name="p"), "kernel", (0, 1, 3)
    ),
    # pointwise kernel (1, 1, in * multiplier, out)
    "separable_conv2d": (
        lambda: L.SeparableConv2D(6, 3, depth_multiplier=2, name="p"),
        "pointwise_kernel", (0, 1, 2),
    ),
}


@pytest.mark.parametrize("selection", ["l1", "density"])
@pytest.mark.parametrize("case", sorted(L1_CASES))
def test_l1_scores_equal_a_numpy_sum_over_the_other_axes(case, selection):
    make, weight_name, summed = L1_CASES[case]
    model = _single_producer_model(make())
    kernel = next(
        np.asarray(w.numpy()) for w in model.get_layer("p").weights
        if w.name == weight_name
    )
    groups = keras_adp.channel_groups(model)

    scores = scoring.channel_scores(model, groups, selection)

    assert set(scores) == {"p"}  # "head" reaches the output: not prunable.
    np.testing.assert_allclose(
        scores["p"], np.abs(kernel).sum(axis=summed), rtol=1e-6
    )


def test_l1_scores_sum_the_producers_of_a_residual_group():
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    b = L.Conv2DTranspose(4, 3, padding="same", name="deconv")(inputs)
    x = L.GlobalAveragePooling2D()(L.Add()([a, b]))
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    groups = keras_adp.channel_groups(model)

    scores = scoring.channel_scores(model, groups, "l1")

    conv = np.abs(model.get_layer("conv").kernel.numpy()).sum(axis=(0, 1, 2))
    deconv = np.abs(model.get_layer("deconv").kernel.numpy()).sum(
        axis=(0, 1, 3)
    )
    group = next(g for g in groups if "conv" in g.producers)
    assert set(group.producers) == {"conv", "deconv"}
    np.testing.assert_allclose(scores[group.name], conv + deconv, rtol=1e-6)


def test_producer_l1_rejects_a_layer_that_is_not_a_producer():
    layer = L.BatchNormalization(name="bn")
    layer.build((None, 4))
    with pytest.raises(ValueError, match="Expected a producer layer.*'bn'"):
        scoring.producer_l1(layer)


def test_a_producer_handler_must_declare_its_output_weight():
    with pytest.raises(ValueError, match="output_weight"):
        layer_handlers.Handler("producer")
    with pytest.raises(ValueError, match="output_weight"):
        layer_handlers.Handler(
            "passthrough", output_weight="kernel", output_axis=-1
        )
