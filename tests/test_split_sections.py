"""Channel-axis `keras.ops.split` / `array_split`: the split tensor's group
is pruned in equal blocks, one per section, and each section's consumers
lose the removed channels of their block.

The references here are computed without the code under test: the pruned
model's outputs must equal the unpruned model's with the removed channels'
input slices zeroed in every consumer, and the consumers and their input
offsets are written by the test from the architecture it built (or, for
keras-hub's CSPNet, from its layer names and the sizes in its config), not
read from `ChannelGroup`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import graph, scoring
from keras_adp.density import Density
from keras_adp.policy import ADPPolicy
from tests import surgery, zoo
from tests.test_nested import float64  # noqa: F401 (fixture)

L = keras.layers
WIDTH = 4  # Channels per section.

SPLITS = {
    "split": lambda x, n: keras.ops.split(x, n, axis=-1),
    "array_split": lambda x, n: keras.ops.array_split(x, n, axis=-1),
}


def _split_model(sections=2, split="split"):
    """a (conv, 4 x sections) -> bn -> relu -> split into `sections`.

    The last section runs a residual block (b -> relu -> c, added back to
    it) and then t; the others are concatenated, in order, with t's output
    and read by `out`.
    """
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(WIDTH * sections, 1, name="a")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    *firsts, last = SPLITS[split](x, sections)
    y = L.Conv2D(3, 3, padding="same", name="b")(last)
    y = L.Conv2D(WIDTH, 1, name="c")(L.ReLU(name="b_relu")(y))
    last = L.ReLU(name="add_relu")(L.Add(name="add")([last, y]))
    t = L.Conv2D(5, 1, name="t")(last)
    z = L.Concatenate(name="cat")([*firsts, t])
    z = L.Conv2D(6, 1, name="out")(z)
    outputs = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(z))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    model.set_weights(
        [rng.standard_normal(w.shape) for w in model.get_weights()]
    )
    return zoo.randomize_batchnorm(model)


def _zeroed_reference(model, sections, removed_a):
    """The model with a's removed channels zeroed where they enter: block
    `i < sections - 1` at `out`'s inputs `4 i + c`, the last block at the
    inputs `c` of `b` and `t`."""
    zero = {"out": [], "b": [], "t": []}
    for channel in removed_a:
        block, local = divmod(int(channel), WIDTH)
        if block < sections - 1:
            zero["out"].append(block * WIDTH + local)
        else:
            zero["b"].append(local)
            zero["t"].append(local)
    copy = surgery.copy_model(model)
    for name, channels in zero.items():
        kernel = np.array(copy.get_layer(name).kernel.numpy())
        kernel[..., channels, :] = 0.0
        copy.get_layer(name).kernel.assign(kernel)
    return copy


def _images(seed=1):
    return np.random.default_rng(seed).standard_normal((3, 6, 6, 3))


def _groups(model):
    return {g.name: g for g in keras_adp.channel_groups(model)}


# ------------------------------------------------------------- analysis
@pytest.mark.parametrize("split", sorted(SPLITS))
def test_split_group_is_one_group_in_equal_blocks(split):
    model = _split_model(3, split)
    group = _groups(model)["a"]
    assert group.prunable, group.reason
    assert (group.size, group.blocks) == (12, 3)
    # c makes the last section's channels: 8..11 of the group.
    assert group.producers == ("a", "c")
    assert dict(group.producer_offsets) == {"a": 0, "c": -8}
    assert group.density_site.layer == "relu"
    # Only the sections' own groups: no separate group for c.
    assert "c" not in _groups(model)


# ------------------------------------------------------------ exactness
@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("sections", [2, 3])
def test_pruned_split_equals_zeroing_removed_inputs(split, sections, float64):
    model = _split_model(sections, split)
    rng = np.random.default_rng(sections)
    # Two of every four channels of each block, at random.
    keep_a = np.concatenate([
        block * WIDTH + rng.choice(WIDTH, 2, replace=False)
        for block in range(sections)
    ])
    small = keras_adp.prune_channels(model, {"a": keep_a})
    removed = np.setdiff1d(np.arange(WIDTH * sections), keep_a)
    reference = _zeroed_reference(model, sections, removed)
    x = _images()
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    assert small.get_layer("a").filters == 2 * sections
    assert small.get_layer("c").filters == 2
    assert small.get_layer("bn").gamma.shape == (2 * sections,)
    assert small.get_layer("b").kernel.shape[-2] == 2
    assert small.get_layer("out").kernel.shape[-2] == 2 * (sections - 1) + 5


def test_pruning_the_split_group_with_its_neighbours(float64):
    model = _split_model(2)
    keep = {"a": [0, 3, 5, 6], "b": [0, 2], "t": [1, 3, 4]}
    small = keras_adp.prune_channels(model, keep)
    reference = _zeroed_reference(model, 2, [1, 2, 4, 7])
    for name, channels in (("c", [1]), ("out", [4 + 0, 4 + 2])):
        layer = reference.get_layer(name)
        kernel = np.array(layer.kernel.numpy())
        kernel[..., channels, :] = 0.0
        layer.kernel.assign(kernel)
    x = _images(2)
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)


def test_uneven_keep_is_evened_out_per_section(float64):
    model = _split_model(2)
    # 5 asked of 2 sections: round(2.5) = 3 each; section 1 has only two
    # listed, completed with its lowest other channel (4).
    small = keras_adp.prune_channels(model, {"a": [0, 1, 2, 6, 7]})
    reference = _zeroed_reference(model, 2, [3, 5])
    np.testing.assert_allclose(
        small(_images()), reference(_images()), rtol=0, atol=1e-9
    )


def test_split_on_another_axis_keeps_the_channels(float64):
    inputs = keras.Input((6, 6, 3))
    x = L.ReLU(name="relu")(L.Conv2D(4, 1, name="a")(inputs))
    top, bottom = keras.ops.split(x, 2, axis=1)
    x = L.Concatenate(axis=1, name="rows")([bottom, top])
    x = L.Conv2D(3, 1, name="c")(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(x)))
    group = _groups(model)["a"]
    assert group.prunable and group.blocks == 1
    small = keras_adp.prune_channels(model, {"a": [1, 2]})
    reference = surgery.copy_model(model)
    kernel = np.array(reference.get_layer("c").kernel.numpy())
    kernel[..., [0, 3], :] = 0.0
    reference.get_layer("c").kernel.assign(kernel)
    np.testing.assert_allclose(
        small(_images()), reference(_images()), rtol=0, atol=1e-9
    )


def test_sections_merged_with_each_other_keep_the_same_channels(float64):
    """Adding section 0 to section 1 couples channel c of one to channel c
    of the other: one group of 4 whose kept channels are kept in both."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="a")(inputs)
    first, second = keras.ops.split(x, 2, axis=-1)
    x = L.Conv2D(3, 1, name="c")(L.Add(name="add")([first, second]))
    model = keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(x)))
    group = _groups(model)["a"]
    assert group.prunable and group.size == 4
    small = keras_adp.prune_channels(model, {"a": [0, 3]})
    assert small.get_layer("a").filters == 4
    reference = surgery.copy_model(model)
    kernel = np.array(reference.get_layer("c").kernel.numpy())
    kernel[..., [1, 2], :] = 0.0
    reference.get_layer("c").kernel.assign(kernel)
    np.testing.assert_allclose(
        small(_images()), reference(_images()), rtol=0, atol=1e-9
    )


# ------------------------------------------------ what blocks, and why
def _blocked_split(make_sections):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="a")(inputs)
    x = make_sections(x)
    x = L.Concatenate(name="cat")([L.Conv2D(2, 1)(part) for part in x])
    return keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(x)))


@pytest.mark.parametrize(
    "make_sections, expected",
    [
        (lambda x: keras.ops.split(x, [3], axis=-1), "explicit indices [3]"),
        (lambda x: keras.ops.split(x, [4], axis=-1), "explicit indices [4]"),
        (lambda x: keras.ops.array_split(x, 3, axis=-1),
         "unequal sections [3, 3, 2]"),
    ],
)
def test_unequal_or_fixed_sections_block_with_a_reason(make_sections, expected):
    group = _groups(_blocked_split(make_sections))["a"]
    assert not group.prunable
    assert expected in group.reason and "Split" in group.reason


def test_split_of_a_concatenation_blocks_with_a_reason():
    inputs = keras.Input((6, 6, 3))
    x = L.Concatenate()(
        [L.Conv2D(4, 1, name="p")(inputs), L.Conv2D(4, 1, name="q")(inputs)]
    )
    first, second = keras.ops.split(x, 2, axis=-1)
    x = L.Conv2D(3, 1)(L.Concatenate()([second, first]))
    groups = _groups(keras.Model(inputs, L.Dense(2)(L.Flatten()(x))))
    for name in ("p", "q"):
        assert not groups[name].prunable
        assert "several groups (a concatenation)" in groups[name].reason


def test_one_channel_per_section_blocks_with_a_reason():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(2, 1, name="a")(inputs)
    first, second = keras.ops.split(x, 2, axis=-1)
    x = L.Concatenate()([L.Conv2D(2, 1)(second), first])
    group = _groups(keras.Model(inputs, L.Dense(2)(L.Flatten()(x))))["a"]
    assert not group.prunable and "one channel in each" in group.reason


# ------------------------------------------- scores, policy and density
def test_l1_scores_add_each_section_producer_to_its_block():
    model = _split_model(2)
    group = _groups(model)["a"]
    expected = np.abs(model.get_layer("a").kernel.numpy()).sum(axis=(0, 1, 2))
    expected[WIDTH:] += np.abs(model.get_layer("c").kernel.numpy()).sum(
        axis=(0, 1, 2)
    )
    scores = scoring.channel_scores(model, [group], "l1")["a"]
    np.testing.assert_allclose(scores, expected)
    # bn carries every section: its gamma is the group's.
    gammas = scoring.channel_scores(model, [group], "bn_gamma")["a"]
    np.testing.assert_allclose(
        gammas, np.abs(model.get_layer("bn").gamma.numpy())
    )


def test_policy_keeps_equal_counts_in_every_section():
    model = _split_model(3)
    group = _groups(model)["a"]
    channels = np.random.default_rng(4).uniform(size=group.size)
    density = Density(
        overall=0.5, channels=channels, measured_at="relu", samples=8
    )
    keep = ADPPolicy(
        width_rule="density", selection="density", removal_scale=1.0
    ).plan([group], {"a": density}, {"a": np.ones(group.size)})["a"]
    assert np.bincount(keep // WIDTH, minlength=3).tolist() == [2, 2, 2]
    small = keras_adp.prune_channels(model, {"a": keep})
    assert small.get_layer("a").filters == 6


def test_density_of_the_split_group_is_measured_before_the_split():
    model = _split_model(2)
    x = _images(3).astype("float32")
    densities = keras_adp.measure_density(model, x)
    relu = keras.Model(model.inputs, model.get_layer("relu").output)(x)
    expected = (np.asarray(relu) > 0).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(densities["a"].channels, expected)
    assert densities["a"].measured_at == "relu"


# ---------------------------------------------------- keras-hub CSPNet
def _cspnet_under_head():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.CSPNetBackbone(
        stem_filters=16, stem_kernel_size=3, stem_strides=2,
        stackwise_depth=[2, 1], stackwise_strides=[1, 2],
        stackwise_num_filters=[64, 128], block_type="bottleneck_block",
        groups=8, stage_type="csp", bottle_ratio=[1.0], block_ratio=[0.5],
        expand_ratio=[1.0], image_shape=(32, 32, 3), name="csp",
    )
    inputs = keras.Input((32, 32, 3))
    x = L.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, L.Dense(4, name="head")(x))
    return zoo.randomize_batchnorm(model), (2, 1)


def _csp_consumers(model, stage, depth, removed):
    """Where the removed channels of stage `stage`'s `csp_conv_exp` enter,
    by CSPNet's structure: `ops.split` halves them; the first half goes
    (concatenated first) into `csp_conv_transition`; the second half is the
    input of every residual block's `conv_1` (added to each block's output)
    and of `csp_conv_transition_b`."""
    prefix = f"csp/stage_{stage}_"
    half = graph.get_layer(model, prefix + "csp_conv_exp").filters // 2
    first = [int(c) for c in removed if c < half]
    second = [int(c) - half for c in removed if c >= half]
    zero = {prefix + "csp_conv_transition": first,
            prefix + "csp_conv_transition_b": second}
    for block in range(depth):
        zero[prefix + f"block_{block}_bottleneck_block_conv_1"] = second
    return zero


def test_keras_hub_cspnet_split_is_pruned_in_equal_halves(float64):
    model, depths = _cspnet_under_head()
    groups = _groups(model)
    inner = [g for g in groups.values()
             if "reaches the model output" not in g.reason]
    assert all(g.prunable for g in inner), [
        g.reason for g in inner if not g.prunable
    ]
    rng = np.random.default_rng(6)
    keep, zero = {}, {}
    for stage, depth in enumerate(depths):
        name = f"csp/stage_{stage}_csp_conv_exp"
        size = graph.get_layer(model, name).filters
        assert groups[name].size == size and groups[name].blocks == 2
        # A quarter of each half, at random.
        keep[name] = np.concatenate([
            half * size // 2 + rng.choice(size // 2, size // 8, replace=False)
            for half in range(2)
        ])
        removed = np.setdiff1d(np.arange(size), keep[name])
        zero.update(_csp_consumers(model, stage, depth, removed))
    small = keras_adp.prune_channels(model, keep)
    reference = surgery.copy_model(model)
    for name, channels in zero.items():
        layer = graph.get_layer(reference, name)
        assert getattr(layer, "groups", 1) == 1
        kernel = np.array(layer.kernel.numpy())
        kernel[..., channels, :] = 0.0
        layer.kernel.assign(kernel)
    x = np.random.default_rng(7).standard_normal((2, 32, 32, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    assert np.max(np.abs(np.asarray(small(x)) - np.asarray(model(x)))) > 1e-3
    for stage in range(len(depths)):
        prefix = f"csp/stage_{stage}_"
        assert graph.get_layer(small, prefix + "csp_conv_exp").filters == (
            graph.get_layer(model, prefix + "csp_conv_exp").filters // 4
        )
