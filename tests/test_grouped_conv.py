"""General grouped convolutions (`1 < groups < channels`): pruned in whole
equal shares per group.

The references here are written with NumPy in the test: a grouped kernel
`(*k, in / G, out)` is cut into its G blocks by hand, each block sliced on
its own, and a smaller model is built from those arrays with plain Keras
layers. Nothing is read from `keras_adp`'s slicing or group data.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import channel_blocks
from keras_adp import layers as layer_handlers
from keras_adp import rebuild as rebuild_lib
from keras_adp.density import Density
from keras_adp.policy import ADPPolicy
from tests.test_nested import float64  # noqa: F401 (fixture)

L = keras.layers

CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
POOL = {
    1: L.GlobalAveragePooling1D,
    2: L.GlobalAveragePooling2D,
    3: L.GlobalAveragePooling3D,
}
SPATIAL = {1: (7,), 2: (6, 6), 3: (5, 5, 5)}


def _model(rank, in_channels=8, filters=12, groups=4, use_bias=True):
    """input -> a (1x1) -> g (grouped, 3) -> relu -> c (1x1) -> pool -> head."""
    inputs = keras.Input(SPATIAL[rank] + (3,))
    x = CONV[rank](in_channels, 1, name="a")(inputs)
    x = CONV[rank](filters, 3, groups=groups, padding="same",
                   use_bias=use_bias, name="g")(x)
    x = L.ReLU(name="relu")(x)
    x = CONV[rank](5, 1, name="c")(x)
    x = POOL[rank]()(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x))


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.standard_normal(w.shape) for w in model.get_weights()]
    )
    return model


def _hand_grouped_kernel(kernel, groups, keep_in, keep_out):
    """The smaller grouped kernel, one block at a time."""
    in_per = kernel.shape[-2]
    out_per = kernel.shape[-1] // groups
    blocks = []
    for g in range(groups):
        ins = [i - g * in_per for i in keep_in if i // in_per == g]
        outs = [o - g * out_per for o in keep_out if o // out_per == g]
        block = kernel[..., g * out_per:(g + 1) * out_per]
        blocks.append(block[..., ins, :][..., outs])
    return np.concatenate(blocks, axis=-1)


def _hand_pruned(model, rank, keep_a, keep_g, groups=4, use_bias=True):
    """The pruned model written out by hand: same layers, smaller, with the
    weights sliced by NumPy indexing."""
    w = {layer.name: [np.asarray(v.numpy()) for v in layer.weights]
         for layer in model.layers}
    inputs = keras.Input(SPATIAL[rank] + (3,))
    a = CONV[rank](len(keep_a), 1, name="a")
    g = CONV[rank](len(keep_g), 3, groups=groups, padding="same",
                   use_bias=use_bias, name="g")
    c = CONV[rank](5, 1, name="c")
    head = L.Dense(2, name="head")
    x = c(L.ReLU()(g(a(inputs))))
    small = keras.Model(inputs, head(POOL[rank]()(x)))
    a.set_weights([w["a"][0][..., keep_a], w["a"][1][keep_a]])
    g_weights = [_hand_grouped_kernel(w["g"][0], groups, keep_a, keep_g)]
    if use_bias:
        g_weights.append(w["g"][1][keep_g])
    g.set_weights(g_weights)
    c.set_weights([w["c"][0][..., keep_g, :], w["c"][1]])
    head.set_weights(w["head"])
    return small


# ------------------------------------------------------------- analysis
def test_grouped_conv_groups_are_prunable_in_blocks():
    groups = {g.name: g for g in keras_adp.channel_groups(_model(2))}
    assert groups["a"].prunable and groups["a"].blocks == 4
    assert groups["g"].prunable and groups["g"].blocks == 4
    assert groups["c"].blocks == 1
    layer = _model(2).get_layer("g")
    assert layer_handlers.handler_for(layer) is layer_handlers.GROUPED_CONV
    # An explicit handler: accepted under strict=True too.
    assert keras_adp.channel_groups(_model(2), strict=True)


# ------------------------------------------------------------ exactness
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("use_bias", [True, False])
def test_pruned_grouped_conv_equals_hand_sliced_reference(
    rank, use_bias, float64
):
    model = _randomize(_model(rank, use_bias=use_bias))
    # Blocks of a: {0,1} {2,3} {4,5} {6,7}; of g: {0,1,2} ... {9,10,11}.
    keep_a = [1, 2, 4, 7]
    keep_g = [0, 2, 4, 5, 6, 8, 9, 11]
    small = keras_adp.prune_channels(model, {"a": keep_a, "g": keep_g})
    pruned_g = small.get_layer("g")
    assert (pruned_g.filters, pruned_g.groups) == (8, 4)
    reference = _hand_pruned(model, rank, keep_a, keep_g, use_bias=use_bias)
    x = np.random.default_rng(1).standard_normal((3,) + SPATIAL[rank] + (3,))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(
        pruned_g.kernel.numpy(), reference.get_layer("g").kernel.numpy()
    )


def test_pruning_only_the_input_or_only_the_output(float64):
    model = _randomize(_model(2))
    x = np.random.default_rng(2).standard_normal((2, 6, 6, 3))
    everything_g = list(range(12))
    everything_a = list(range(8))
    for keep in ({"a": [0, 3, 5, 6]}, {"g": [1, 2, 3, 4, 7, 8, 10, 11]}):
        small = keras_adp.prune_channels(model, keep)
        reference = _hand_pruned(
            model, 2, keep.get("a", everything_a), keep.get("g", everything_g)
        )
        np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)


# --------------------------------------------------- evening out a keep
def test_uneven_keep_is_evened_out_per_block(float64):
    model = _randomize(_model(2))
    # 7 channels asked of 4 blocks of 3: round(1.75) = 2 a block. The first
    # listed win within a block (2 before 0); blocks with one listed
    # channel get their lowest other one.
    asked = [2, 0, 1, 3, 6, 7, 9]
    small = keras_adp.prune_channels(model, {"g": asked})
    expected = [0, 2, 3, 4, 6, 7, 9, 10]
    assert small.get_layer("g").filters == len(expected)
    reference = _hand_pruned(model, 2, list(range(8)), expected)
    x = np.random.default_rng(3).standard_normal((2, 6, 6, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "width, size, blocks, minimum, expected",
    [
        (8, 12, 4, 1, 2),
        (7, 12, 4, 1, 2),  # 1.75 -> 2
        (6, 12, 4, 1, 2),  # 1.5 -> 2 (halves up)
        (5, 12, 4, 1, 1),  # 1.25 -> 1
        (1, 12, 4, 1, 1),  # never 0
        (5, 12, 4, 6, 2),  # min_channels 6 -> 2 a block (8 in all)
        (40, 12, 4, 1, 3),  # capped at the block size
    ],
)
def test_block_count(width, size, blocks, minimum, expected):
    assert channel_blocks.block_count(width, size, blocks, minimum) == expected


def test_block_count_rejects_a_size_that_is_not_a_multiple():
    with pytest.raises(ValueError, match="multiple"):
        channel_blocks.block_count(4, 10, 4)


# ----------------------------------------------------------------- policy
def test_policy_keeps_equal_counts_of_the_best_ranked_in_every_block():
    groups = {g.name: g for g in keras_adp.channel_groups(_model(2))}
    group = groups["g"]
    rng = np.random.default_rng(4)
    channels = rng.uniform(0.0, 1.0, size=group.size)
    density = Density(
        overall=0.4, channels=channels, measured_at="relu", samples=16
    )
    policy = ADPPolicy(
        width_rule="density", min_channels=4, selection="density",
        removal_scale=1.0,
    )
    keep = policy.plan([group], {"g": density}, {"g": np.ones(group.size)})
    kept = keep["g"]
    # ceil(0.4 * 12) = 5 -> round(5 / 4) = 1 a block, raised to
    # ceil(min_channels / 4) = 1: 4 channels, one a block.
    per_block = np.bincount(kept // 3, minlength=4)
    assert per_block.tolist() == [1, 1, 1, 1]
    for block in range(4):
        inside = channels[block * 3:(block + 1) * 3]
        assert kept[block] == block * 3 + int(np.argmax(inside))
    # The model prunes with that keep unchanged.
    small = keras_adp.prune_channels(_model(2), keep)
    assert small.get_layer("g").filters == 4


def test_policy_width_never_goes_below_min_channels():
    group = next(g for g in keras_adp.channel_groups(_model(2)) if g.name == "g")
    density = Density(
        overall=0.0, channels=np.zeros(12), measured_at="relu", samples=16
    )
    keep = ADPPolicy(
        width_rule="density", min_channels=6, removal_scale=1.0
    ).plan(
        [group], {"g": density}, {"g": np.arange(12.0)}
    )
    # min_channels 6 over 4 blocks: 2 a block, the largest scores.
    assert keep["g"].tolist() == [1, 2, 4, 5, 7, 8, 10, 11]


# ------------------------------------------------------ optimizer state
def test_slice_like_slices_grouped_kernels_like_the_weights():
    model = _randomize(_model(2))
    surgery = rebuild_lib.rebuild(
        model, {"a": [0, 3, 4, 6], "g": [0, 1, 3, 5, 6, 8, 10, 11]}
    )
    old = model.get_layer("g").kernel
    sliced = surgery.slice_like(old, np.asarray(old.numpy()))
    np.testing.assert_array_equal(
        sliced, surgery.model.get_layer("g").kernel.numpy()
    )


# ------------------------------------------------ unsupported combinations
def _groups(model):
    return {g.name: g for g in keras_adp.channel_groups(model)}


def _head(x):
    return L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))


def test_grouped_conv_over_a_concatenation_blocks_with_a_reason():
    inputs = keras.Input((6, 6, 3))
    p = L.Conv2D(4, 1, name="p")(inputs)
    q = L.Conv2D(4, 1, name="q")(inputs)
    x = L.Concatenate(name="cat")([p, q])
    x = L.Conv2D(8, 3, groups=4, name="g")(x)
    groups = _groups(keras.Model(inputs, _head(L.Conv2D(3, 1)(x))))
    for name in ("p", "q"):
        assert not groups[name].prunable
        assert "grouped convolution 'g' (groups=4)" in groups[name].reason
        assert "2 groups" in groups[name].reason
    assert groups["g"].prunable  # Its own output is one group.


def test_two_grouped_consumers_combine_their_blocks():
    """Groups 2 and 3 over 24 channels: 6 equal blocks satisfy both."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(24, 1, name="a")(inputs)
    y = L.Conv2D(6, 1, groups=2, name="g2")(x)
    z = L.Conv2D(6, 1, groups=3, name="g3")(x)
    group = _groups(keras.Model(inputs, _head(L.Add()([y, z]))))["a"]
    assert group.prunable and group.blocks == 6


def test_blocks_of_one_channel_block_with_a_reason():
    """Groups 8 and 3 over 24 channels need 24 blocks of one channel."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(24, 1, name="a")(inputs)
    y = L.Conv2D(24, 1, groups=8, name="g8")(x)
    z = L.Conv2D(24, 1, groups=3, name="g3")(x)
    groups = _groups(keras.Model(inputs, _head(L.Add()([y, z]))))
    assert not groups["a"].prunable
    assert "one channel per channel block" in groups["a"].reason
    assert "'g8' (groups=8)" in groups["a"].reason
    assert "'g3' (groups=3)" in groups["a"].reason
    with pytest.raises(ValueError, match="not prunable"):
        keras_adp.prune_channels(
            keras.Model(inputs, _head(L.Add()([y, z]))), {"a": [0, 1]}
        )


def test_channel_multiplier_conv_blocks_its_input_but_prunes_its_output():
    """groups == input channels, filters = 2 x channels: one input channel
    a block (not prunable); two output channels a block (prunable)."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="a")(inputs)
    x = L.Conv2D(8, 3, groups=4, name="g")(x)
    groups = _groups(keras.Model(inputs, _head(L.Conv2D(3, 1)(x))))
    assert not groups["a"].prunable
    assert "one channel per channel block" in groups["a"].reason
    assert groups["g"].prunable and groups["g"].blocks == 4


def test_blocks_split_by_a_concatenated_merge_block_with_a_reason():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="a")(inputs)
    g = L.Conv2D(8, 3, groups=2, padding="same", name="g")(x)
    cat = L.Concatenate()(
        [L.Conv2D(3, 1, name="p")(x), L.Conv2D(5, 1, name="q")(x)]
    )
    groups = _groups(keras.Model(inputs, _head(L.Add()([g, cat]))))
    assert all(
        not group.prunable for group in groups.values()
        if "g" in group.producers
    )
    reasons = " ".join(
        group.reason for group in groups.values() if "g" in group.producers
    )
    assert "split between concatenated groups" in reasons


def test_grouped_slicing_refuses_uneven_blocks():
    layer = L.Conv2D(4, 1, groups=2)
    layer.build((None, 4, 4, 4))
    weights = {w.name: np.asarray(w.numpy()) for w in layer.weights}
    with pytest.raises(ValueError, match="same number of kept channels"):
        layer_handlers.GROUPED_CONV.weights(
            layer, weights, np.array([0, 1, 2]), None
        )
