"""One pruning test per layer handler that slices weights or config.

Each case is a tiny functional model `up -> under -> pool -> head`: `up`
produces the group that `under` consumes (group "up"), and a producer
`under` also produces its own group ("under"). The case prunes chosen
channels with `keras_adp.prune_channels` and compares `under`'s weights with
`np.delete` of the originals, along axes written here, not taken from
`keras_adp.layers`.
"""

import dataclasses
import importlib
import os
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from keras.src.applications import convnext

import keras_adp
from keras_adp import layers as layer_handlers

L = keras.layers

UP_CHANNELS = 5
UNDER_CHANNELS = 6
KEEP_UP = [0, 2, 3]
REMOVED_UP = [1, 4]
KEEP_UNDER = [1, 2, 4, 5]
REMOVED_UNDER = [0, 3]

INPUT_SHAPES = {1: (8, 3), 2: (8, 8, 3), 3: (8, 8, 8, 3)}
CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
POOL = {
    1: L.GlobalAveragePooling1D,
    2: L.GlobalAveragePooling2D,
    3: L.GlobalAveragePooling3D,
}


@dataclasses.dataclass(frozen=True)
class Case:
    """A model routing group "up" (and, for producers, "under") through the
    layer named "under".

    Attributes:
        layer_class: the exact class of layer "under".
        build: makes the unpruned model.
        keep: the `keep` argument of `prune_channels`.
        expected_weights: original weights of "under" by name -> the pruned
            layer's weights by name.
        expected_config: config entries the pruned "under" must have.
        grouped_depthwise: "under" is a grouped `Conv` handled as depthwise.
    """

    layer_class: type
    build: Callable[[], keras.Model]
    keep: dict
    expected_weights: Callable[[dict], dict] = dict
    expected_config: dict = dataclasses.field(default_factory=dict)
    grouped_depthwise: bool = False


def _spatial_model(rank: int, under: L.Layer, pool=None) -> keras.Model:
    inputs = keras.Input(INPUT_SHAPES[rank])
    x = CONV[rank](UP_CHANNELS, 3, padding="same", name="up")(inputs)
    x = under(x)
    x = (pool or POOL[rank])()(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x))


def _dense_model(under: L.Layer) -> keras.Model:
    inputs = keras.Input((4,))
    x = L.Dense(UP_CHANNELS, name="up")(inputs)
    x = under(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x))


def _delete(array, removed_by_axis: dict) -> np.ndarray:
    for axis, removed in removed_by_axis.items():
        array = np.delete(array, removed, axis=axis)
    return array


# Producers: kernel (*kernel_size, in, out); bias (out,).
def _conv_case(rank: int) -> Case:
    return Case(
        CONV[rank],
        lambda: _spatial_model(
            rank, CONV[rank](UNDER_CHANNELS, 3, padding="same", name="under")
        ),
        {"up": KEEP_UP, "under": KEEP_UNDER},
        lambda w: {
            "kernel": _delete(w["kernel"], {rank: REMOVED_UP,
                                            rank + 1: REMOVED_UNDER}),
            "bias": np.delete(w["bias"], REMOVED_UNDER, axis=0),
        },
        {"filters": len(KEEP_UNDER)},
    )


# Transposed: kernel (*kernel_size, out, in); bias (out,).
def _conv_transpose_case(rank: int) -> Case:
    cls = {1: L.Conv1DTranspose, 2: L.Conv2DTranspose, 3: L.Conv3DTranspose}
    return Case(
        cls[rank],
        lambda: _spatial_model(
            rank,
            cls[rank](UNDER_CHANNELS, 3, strides=2, padding="same",
                      name="under"),
        ),
        {"up": KEEP_UP, "under": KEEP_UNDER},
        lambda w: {
            "kernel": _delete(w["kernel"], {rank: REMOVED_UNDER,
                                            rank + 1: REMOVED_UP}),
            "bias": np.delete(w["bias"], REMOVED_UNDER, axis=0),
        },
        {"filters": len(KEEP_UNDER)},
    )


# Separable, depth_multiplier 2: depthwise (*k, in, 2); pointwise
# (*1, in * 2, out) whose row c * 2 + m comes from input channel c.
def _separable_case(rank: int) -> Case:
    cls = {1: L.SeparableConv1D, 2: L.SeparableConv2D}
    removed_rows = [2 * c + m for c in REMOVED_UP for m in (0, 1)]
    return Case(
        cls[rank],
        lambda: _spatial_model(
            rank,
            cls[rank](UNDER_CHANNELS, 3, depth_multiplier=2, padding="same",
                      name="under"),
        ),
        {"up": KEEP_UP, "under": KEEP_UNDER},
        lambda w: {
            "depthwise_kernel": np.delete(
                w["depthwise_kernel"], REMOVED_UP, axis=rank
            ),
            "pointwise_kernel": _delete(
                w["pointwise_kernel"],
                {rank: removed_rows, rank + 1: REMOVED_UNDER},
            ),
            "bias": np.delete(w["bias"], REMOVED_UNDER, axis=0),
        },
        {"filters": len(KEEP_UNDER)},
    )


# Depthwise, depth_multiplier 1: kernel (*k, in, 1); bias (in,).
def _depthwise_case(rank: int) -> Case:
    cls = {1: L.DepthwiseConv1D, 2: L.DepthwiseConv2D}
    return Case(
        cls[rank],
        lambda: _spatial_model(rank, cls[rank](3, padding="same",
                                                name="under")),
        {"up": KEEP_UP},
        lambda w: {
            "kernel": np.delete(w["kernel"], REMOVED_UP, axis=rank),
            "bias": np.delete(w["bias"], REMOVED_UP, axis=0),
        },
    )


def _per_channel_vectors(w: dict) -> dict:
    """Every weight is one value per channel: axis 0."""
    return {name: np.delete(value, REMOVED_UP, axis=0)
            for name, value in w.items()}


CASES = {
    **{f"Conv{r}D": _conv_case(r) for r in (1, 2, 3)},
    **{f"Conv{r}DTranspose": _conv_transpose_case(r) for r in (1, 2, 3)},
    **{f"SeparableConv{r}D": _separable_case(r) for r in (1, 2)},
    **{f"DepthwiseConv{r}D": _depthwise_case(r) for r in (1, 2)},
    # Grouped Conv2D with groups == channels: kernel (3, 3, 1, in).
    "Conv2D_groups": Case(
        L.Conv2D,
        lambda: _spatial_model(
            2, L.Conv2D(UP_CHANNELS, 3, groups=UP_CHANNELS, padding="same",
                        name="under"),
        ),
        {"up": KEEP_UP},
        lambda w: {
            "kernel": np.delete(w["kernel"], REMOVED_UP, axis=3),
            "bias": np.delete(w["bias"], REMOVED_UP, axis=0),
        },
        {"filters": len(KEEP_UP), "groups": len(KEEP_UP)},
        grouped_depthwise=True,
    ),
    # Dense: kernel (in, out); bias (out,).
    "Dense": Case(
        L.Dense,
        lambda: _dense_model(L.Dense(UNDER_CHANNELS, name="under")),
        {"up": KEEP_UP, "under": KEEP_UNDER},
        lambda w: {
            "kernel": _delete(w["kernel"], {0: REMOVED_UP, 1: REMOVED_UNDER}),
            "bias": np.delete(w["bias"], REMOVED_UNDER, axis=0),
        },
        {"units": len(KEEP_UNDER)},
    ),
    # gamma, beta, moving_mean, moving_variance: (channels,).
    "BatchNormalization": Case(
        L.BatchNormalization,
        lambda: _spatial_model(2, L.BatchNormalization(name="under")),
        {"up": KEEP_UP},
        _per_channel_vectors,
    ),
    # gamma, beta: (channels,).
    "LayerNormalization": Case(
        L.LayerNormalization,
        lambda: _spatial_model(2, L.LayerNormalization(name="under")),
        {"up": KEEP_UP},
        _per_channel_vectors,
    ),
    # alpha: (8, 8, channels).
    "PReLU": Case(
        L.PReLU,
        lambda: _spatial_model(2, L.PReLU(name="under")),
        {"up": KEEP_UP},
        lambda w: {"alpha": np.delete(w["alpha"], REMOVED_UP, axis=2)},
    ),
    # alpha: (1, 1, channels).
    "PReLU_shared_spatial_axes": Case(
        L.PReLU,
        lambda: _spatial_model(2, L.PReLU(shared_axes=[1, 2], name="under")),
        {"up": KEEP_UP},
        lambda w: {"alpha": np.delete(w["alpha"], REMOVED_UP, axis=2)},
    ),
    # Adapted: mean, variance (channels,); count a scalar.
    "Normalization": Case(
        L.Normalization,
        lambda: _spatial_model(2, L.Normalization(axis=-1, name="under")),
        {"up": KEEP_UP},
        lambda w: {
            "mean": np.delete(w["mean"], REMOVED_UP, axis=0),
            "variance": np.delete(w["variance"], REMOVED_UP, axis=0),
            "count": w["count"],
        },
    ),
    # Given in the config: no weights, mean and variance lists.
    "Normalization_config": Case(
        L.Normalization,
        lambda: _spatial_model(
            2,
            L.Normalization(axis=-1, mean=[1.0, 2.0, 3.0, 4.0, 5.0],
                            variance=[1.0, 2.0, 4.0, 8.0, 16.0],
                            name="under"),
        ),
        {"up": KEEP_UP},
        expected_config={"mean": [1.0, 3.0, 4.0],
                         "variance": [1.0, 4.0, 8.0]},
    ),
    # Per-channel scale in the config, no weights.
    "Rescaling": Case(
        L.Rescaling,
        lambda: _spatial_model(
            2, L.Rescaling(scale=[1.0, 2.0, 3.0, 4.0, 5.0], name="under")
        ),
        {"up": KEEP_UP},
        expected_config={"scale": [1.0, 3.0, 4.0]},
    ),
    # ConvNeXt's LayerScale: gamma (projection_dim,).
    "LayerScale": Case(
        convnext.LayerScale,
        lambda: _spatial_model(
            2, convnext.LayerScale(0.5, UP_CHANNELS, name="under")
        ),
        {"up": KEEP_UP},
        _per_channel_vectors,
        {"projection_dim": len(KEEP_UP)},
    ),
    # (8, 8, channels) -> (64, channels).
    "Reshape": Case(
        L.Reshape,
        lambda: _spatial_model(
            2, L.Reshape((64, UP_CHANNELS), name="under"),
            pool=L.GlobalAveragePooling1D,
        ),
        {"up": KEEP_UP},
        expected_config={"target_shape": (64, len(KEEP_UP))},
    ),
}


def _randomize(model: keras.Model) -> keras.Model:
    """Distinct, positive values in every weight (variances stay valid)."""
    rng = np.random.default_rng(0)
    model.set_weights(
        [rng.uniform(0.5, 1.5, size=w.shape) for w in model.get_weights()]
    )
    return model


def _weights(layer: L.Layer, names: list[str]) -> dict:
    """`layer`'s weights under `names`, in order (unnamed variables get a
    fresh suffix in the rebuilt layer: "variable" becomes "variable_1")."""
    assert len(layer.weights) == len(names)
    return {
        name: np.asarray(w.numpy()) for name, w in zip(names, layer.weights)
    }


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_prune_channels_slices_weights_like_np_delete(case_name):
    case = CASES[case_name]
    model = _randomize(case.build())
    under = model.get_layer("under")
    assert type(under) is case.layer_class
    expected_handler = (
        layer_handlers.GROUPED_DEPTHWISE if case.grouped_depthwise
        else layer_handlers.REGISTRY[case.layer_class]
    )
    assert layer_handlers.handler_for(under) is expected_handler

    pruned = keras_adp.prune_channels(model, case.keep).get_layer("under")

    names = [w.name for w in under.weights]
    expected = case.expected_weights(_weights(under, names))
    actual = _weights(pruned, names)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)
    config = pruned.get_config()
    for key, value in case.expected_config.items():
        np.testing.assert_allclose(np.asarray(config[key]), value,
                                   err_msg=key)


def test_every_registered_slicing_layer_class_has_a_case():
    """A handler nobody slices would rot: every registered layer class that
    owns channels or slices weights or config needs a case above."""
    default = layer_handlers.Handler("passthrough")
    slicing = {
        cls for cls, handler in layer_handlers.REGISTRY.items()
        if issubclass(cls, keras.layers.Layer)
        and (handler.role in ("producer", "channelwise")
             or handler.weights is not default.weights
             or handler.config is not default.config)
    }
    covered = {case.layer_class for case in CASES.values()}
    missing = sorted(cls.__name__ for cls in slicing - covered)
    assert not missing, f"registered classes without a slicing case: {missing}"


def test_newer_keras_ops_resolve_on_the_installed_keras():
    """Ops registered by name (absent from older supported Keras versions)
    must exist here: a misspelt name would otherwise drop its handler."""
    for (module, name), handler in layer_handlers._NEWER_KERAS_OPS.items():
        module = f"keras.src.ops.{module}"
        cls = getattr(importlib.import_module(module), name, None)
        assert cls is not None, f"{module}.{name} does not exist"
        assert layer_handlers.REGISTRY[cls] is handler


def test_subclasses_of_registered_layers_have_no_handler():
    class MyConv(L.Conv2D):
        pass

    assert layer_handlers.handler_for(MyConv(4, 3)) is None
    assert layer_handlers.handler_for(L.Conv2D(4, 3)) is not None
