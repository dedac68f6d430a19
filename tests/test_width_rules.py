"""Width rules on hand-built densities, and the gamma L1 pressure."""

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp.density import Density

L = keras.layers


def _density(channels):
    channels = np.asarray(channels, dtype=np.float64)
    return Density(float(channels.mean()), channels, "relu", 10)


class _Group:
    def __init__(self, name, size):
        self.name, self.size, self.prunable = name, size, True


def test_live_channels_fire_and_have_a_gamma():
    policy = keras_adp.ADPPolicy(width_rule="live")
    channels = [0.0, 0.005, 0.5, 1.0, 0.3, 0.02]
    gamma = [1.0, 1.0, 0.01, 1.0, -2.0, 0.2]
    # Dead (<= 0.01): 0, 1. |gamma| <= 0.05 * 2 = 0.1: channel 2.
    np.testing.assert_array_equal(
        policy.live(channels, gamma), [False, False, False, True, True, True]
    )
    # Without a BatchNormalization only firing counts.
    np.testing.assert_array_equal(
        policy.live(channels), [False, False, True, True, True, True]
    )


@pytest.mark.parametrize(
    "rule, expected",
    [("density", 4), ("live", 3)],  # ceil(0.3033 * 6) = 2 -> min 4; 3 live
)
def test_group_width_by_rule(rule, expected):
    policy = keras_adp.ADPPolicy(
        width_rule=rule, min_channels=2, removal_scale=1.0
    )
    density = _density([0.0, 0.0, 0.9, 0.9, 0.02, 0.0])
    # AD = 1.82 / 6 = 0.3033: ceil(1.82) = 2, raised to min_channels only
    # when below it.
    assert policy.group_width(6, density) == (2 if rule == "density" else 3)
    assert keras_adp.ADPPolicy(
        width_rule=rule, min_channels=4, removal_scale=1.0
    ).group_width(6, density) == 4
    del expected


def test_live_rule_keeps_exactly_the_live_channels_in_each_group():
    policy = keras_adp.ADPPolicy(
        width_rule="live", min_channels=1, removal_scale=1.0
    )
    groups = [_Group("a", 6), _Group("b", 4)]
    densities = {
        "a": _density([0.5, 0.0, 0.5, 0.5, 0.0, 0.5]),
        "b": _density([0.5, 0.5, 0.5, 0.5]),
    }
    gammas = {"a": np.ones(6), "b": np.array([1.0, 0.0, 1.0, 1.0])}
    keep = policy.plan(groups, densities, {}, gammas)
    np.testing.assert_array_equal(keep["a"], [0, 2, 3, 5])
    np.testing.assert_array_equal(keep["b"], [0, 2, 3])
    # The paper's rule halves both whatever is live.
    paper = keras_adp.ADPPolicy(
        width_rule="density", min_channels=1, removal_scale=1.0
    ).plan(groups, densities, {}, gammas)
    assert {name: len(idx) for name, idx in paper.items()} == {"a": 2, "b": 2}


def test_live_ranking_puts_live_channels_first():
    policy = keras_adp.ADPPolicy(width_rule="live", selection="density")
    order = policy.rank([0.9, 0.0, 0.4, 0.7], None, [0.0, 1.0, 1.0, 1.0])
    # Channel 0 fires most but its gamma is 0: it ranks after live ones.
    np.testing.assert_array_equal(order, [3, 2, 0, 1])


@pytest.mark.parametrize(
    "field, value",
    [("width_rule", "median"), ("live_threshold", 1.0),
     ("gamma_threshold", -0.1), ("gamma_l1", -1e-4), ("gamma_l1", True)],
)
def test_bad_width_rule_fields_raise(field, value):
    with pytest.raises(ValueError, match=field):
        keras_adp.ADPPolicy(**{field: value})


def _bn_model(channels=6, seed=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(channels, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3)(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    return model


class _Penalties(keras.callbacks.Callback):
    """Records, per epoch, the regularization losses the model holds."""

    def __init__(self):
        super().__init__()
        self.counts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.counts.append(len(self.model.losses))


def test_gamma_l1_applies_while_pruning_may_happen_and_is_released():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = np.arange(64) % 3
    model = _bn_model()
    penalties = _Penalties()
    policy = keras_adp.ADPPolicy(
        warmup_epochs=1, min_channels=2, max_prune_steps=1,
        width_rule="density", recovery_updates=None,
        max_accuracy_drop=None, gamma_l1=1e-2,
    )
    result = keras_adp.ADPTrainer(policy, verbose=0).fit(
        model, x, y, epochs=3, batch_size=16, callbacks=[penalties]
    )
    # Epoch 1: dense, penalised. The one allowed step follows it; pruning
    # cannot go on after it, so epochs 2 and 3 train without the penalty.
    assert penalties.counts == [1, 0, 0]
    assert len(result.steps) == 1
    # The model passed in is left as it was given.
    assert model.get_layer("bn1").gamma.regularizer is None
    assert result.model.get_layer("bn1").gamma.regularizer is None


def test_gamma_l1_leaves_a_users_own_regularizer_alone():
    from keras_adp import pruning_steps

    model = _bn_model()
    own = keras.regularizers.L2(0.5)
    model.get_layer("bn1").gamma.regularizer = own
    pruning_steps.set_gamma_l1(model, 1e-3)
    assert model.get_layer("bn1").gamma.regularizer is own
    pruning_steps.set_gamma_l1(model, 0.0)
    assert model.get_layer("bn1").gamma.regularizer is own


def test_relative_rule_keeps_the_densest_group_whole_and_scales_the_others():
    policy = keras_adp.ADPPolicy(
        width_rule="relative", min_channels=1, removal_scale=1.0
    )
    groups = [_Group("a", 10), _Group("b", 8), _Group("c", 20)]
    densities = {
        "a": _density([0.6] * 10),  # AD 0.6: the densest, kept whole
        "b": _density([0.3] * 8),  # 0.3 / 0.6 = 0.5 -> ceil(4.0) = 4
        "c": _density([0.45] * 20),  # 0.75 -> ceil(15.0) = 15
    }
    keep = policy.plan(groups, densities, {})
    assert {name: len(idx) for name, idx in keep.items()} == {"b": 4, "c": 15}
    # Without the relative rule the same densities cut every group.
    paper = keras_adp.ADPPolicy(
        width_rule="density", min_channels=1, removal_scale=1.0
    ).plan(groups, densities, {})
    assert {name: len(idx) for name, idx in paper.items()} == {
        "a": 6, "b": 3, "c": 9,
    }


def test_relative_rule_with_equal_densities_stops_pruning():
    policy = keras_adp.ADPPolicy(width_rule="relative", min_channels=1)
    groups = [_Group("a", 10), _Group("b", 8)]
    densities = {"a": _density([0.5] * 10), "b": _density([0.5] * 8)}
    assert policy.plan(groups, densities, {}) == {}


@pytest.mark.parametrize(
    "rule, width, channels, cap, expected",
    [
        # Paper's rule: AD 0.25 -> 4 of 16; capped at 25% removal -> 12.
        ("density", 16, [0.25] * 16, 0.25, 12),
        # A cut smaller than the cap is unchanged: AD 0.9 -> ceil(9.0) = 9.
        ("density", 10, [0.9] * 10, 0.25, 9),
        # ceil((1 - 0.3) * 7) = ceil(4.9) = 5; the rule alone gives 1.
        ("density", 7, [0.1] * 7, 0.3, 5),
        # Live rule: 1 live of 8 -> 1; cap 0.5 -> 4.
        ("live", 8, [0.9] + [0.0] * 7, 0.5, 4),
        # max_removal=1.0 never binds.
        ("density", 16, [0.25] * 16, 1.0, 4),
    ],
)
def test_max_removal_caps_each_step(rule, width, channels, cap, expected):
    policy = keras_adp.ADPPolicy(
        width_rule=rule, min_channels=1, max_removal=cap, removal_scale=1.0
    )
    assert policy.group_width(width, _density(channels)) == expected


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, True, "0.5", float("nan")])
def test_max_removal_rejects_values_outside_the_unit_interval(bad):
    with pytest.raises(ValueError, match="max_removal"):
        keras_adp.ADPPolicy(max_removal=bad)


@pytest.mark.parametrize(
    "rule, width, channels, scale, expected",
    [
        # Paper's rule: AD 0.75 of 16 -> 12 (4 removed); x2 -> 8 removed.
        ("density", 16, [0.75] * 16, 2.0, 8),
        # x0.5 -> 2 removed -> 14.
        ("density", 16, [0.75] * 16, 0.5, 14),
        # ceil(10 - 1.5 * (10 - 9)) = ceil(8.5) = 9.
        ("density", 10, [0.9] * 10, 1.5, 9),
        # A scale that would remove everything stops at min_channels (1).
        ("density", 8, [0.5] * 8, 3.0, 1),
        # Live rule: 6 live of 8 -> 6; x2 -> 4.
        ("live", 8, [0.9] * 6 + [0.0] * 2, 2.0, 4),
        # No cut stays no cut.
        ("density", 8, [1.0] * 8, 4.0, 8),
    ],
)
def test_removal_scale_multiplies_each_groups_cut(
    rule, width, channels, scale, expected
):
    policy = keras_adp.ADPPolicy(
        width_rule=rule, min_channels=1, removal_scale=scale
    )
    assert policy.group_width(width, _density(channels)) == expected


def test_removal_scale_on_the_relative_rule_keeps_proportions():
    # AD 0.6 / 0.8 -> ratio 0.75 of 16 -> 12; x2 -> 16 - 8 = 8. The densest
    # group (AD 0.8) is never cut, whatever the scale.
    policy = keras_adp.ADPPolicy(
        width_rule="relative", min_channels=1, removal_scale=2.0
    )
    assert policy.group_width(16, _density([0.6] * 16), densest=0.8) == 8
    assert policy.group_width(16, _density([0.8] * 16), densest=0.8) == 16


def test_removal_scale_then_max_removal_caps():
    policy = keras_adp.ADPPolicy(
        width_rule="density", min_channels=1, removal_scale=2.0,
        max_removal=0.25,
    )
    # 0.75 of 16 -> x2 cut -> 8; capped at 25% removal -> 12.
    assert policy.group_width(16, _density([0.75] * 16)) == 12


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("inf"), float("nan"),
                                 True, "2"])
def test_removal_scale_rejects_non_positive_or_non_numbers(bad):
    with pytest.raises(ValueError, match="removal_scale"):
        keras_adp.ADPPolicy(removal_scale=bad)


def test_dense_reference_is_kept_as_a_tuple_and_round_trips_through_json():
    import json

    policy = keras_adp.ADPPolicy(dense_reference=[0.8, np.float32(0.9)])
    assert policy.dense_reference == (0.8, pytest.approx(0.9))
    config = json.loads(json.dumps(policy.get_config()))
    assert config["dense_reference"] == [0.8, pytest.approx(0.9)]
    assert keras_adp.ADPPolicy.from_config(config) == policy


@pytest.mark.parametrize(
    "bad", [[], [0.5, float("nan")], ["0.9"], 0.9, "0.9", [True]]
)
def test_dense_reference_rejects_what_is_not_a_sequence_of_numbers(bad):
    with pytest.raises(ValueError, match="dense_reference"):
        keras_adp.ADPPolicy(dense_reference=bad)


@pytest.mark.parametrize(
    "recovery_updates, updates_left, expected",
    [
        (1600, 3200, 1.0),  # More than enough: the full cut, never more.
        (1600, 1600, 1.0),
        (1600, 400, 0.25),
        (1000, 705, 0.705),
        (1600, 0, 0.0),
        (1600, None, 1.0),  # Unknown: the full cut.
        (None, 10, 1.0),  # Turned off.
    ],
)
def test_recovery_is_the_share_of_the_updates_a_full_cut_needs(
    recovery_updates, updates_left, expected
):
    policy = keras_adp.ADPPolicy(recovery_updates=recovery_updates)
    assert policy.recovery(updates_left) == pytest.approx(expected, abs=0)


@pytest.mark.parametrize(
    "width, ad, scale, recovery, expected",
    [
        # AD 0.5 of 64 -> rule cut 32; x0.66 x0.5 = 10.56 removed -> 53.44,
        # rounded up to 54.
        (64, 0.5, 0.66, 0.5, 54),
        # Full recovery: x0.66 -> 21.12 removed -> 42.88 -> 43.
        (64, 0.5, 0.66, 1.0, 43),
        # Scale 1, recovery 0.25 of a 16-channel cut of 32 -> 4 removed.
        (32, 0.5, 1.0, 0.25, 28),
        # No training left: no cut.
        (64, 0.5, 0.66, 0.0, 64),
    ],
)
def test_recovery_multiplies_the_removal_scale(
    width, ad, scale, recovery, expected
):
    policy = keras_adp.ADPPolicy(
        width_rule="density", min_channels=1, removal_scale=scale
    )
    density = _density([ad] * width)
    assert policy.group_width(width, density, recovery=recovery) == expected


def test_a_cut_shrunk_below_min_reduction_plans_nothing():
    # AD 0.5, scale 0.66, recovery 0.1: 2.1 of 64 removed (3%) < 5%.
    policy = keras_adp.ADPPolicy(width_rule="density", min_channels=1)
    groups = [_Group("a", 64)]
    densities = {"a": _density([0.5] * 64)}
    scores = {"a": np.arange(64.0)}
    assert policy.plan(groups, densities, scores, recovery=0.1) == {}
    kept = policy.plan(groups, densities, scores, recovery=1.0)["a"]
    assert len(kept) == 43


@pytest.mark.parametrize("bad", [0, -5, 1.5, "100", True])
def test_recovery_updates_rejects_what_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match="recovery_updates"):
        keras_adp.ADPPolicy(recovery_updates=bad)


def _recovery_run(recovery_updates, verbose=0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = np.arange(64) % 3
    policy = keras_adp.ADPPolicy(
        warmup_epochs=1, min_channels=1, max_prune_steps=1,
        width_rule="density", removal_scale=1.0, max_accuracy_drop=None,
        recovery_updates=recovery_updates,
    )
    return keras_adp.ADPTrainer(policy, verbose=verbose).fit(
        _bn_model(channels=16, seed=5), x, y, epochs=3, batch_size=16
    )


def test_a_step_takes_the_share_of_its_cut_the_updates_left_allow(capsys):
    result = _recovery_run(recovery_updates=16, verbose=2)
    # 64 samples in batches of 16: 4 updates per epoch.
    assert [record["updates"] for record in result.history] == [4, 4, 4]
    (step,) = result.steps
    # After epoch 1 of 3: 2 epochs x 4 updates left, half of 16.
    assert step["updates_left"] == 8
    assert step["cut_fraction"] == 0.5
    density = result.history[0]["density"]["c1"]
    rule = max(1, math.ceil(density * 16 - 1e-9))  # The paper's rule.
    expected = math.ceil(16 - 0.5 * (16 - rule) - 1e-9)  # Half its cut.
    assert rule < expected < 16
    assert step["after"] == {"c1": expected}
    assert result.model.get_layer("c1").filters == expected
    assert "50% of the rule's cut (8 optimizer updates left)" in (
        capsys.readouterr().out
    )


def test_too_few_updates_left_for_a_worthwhile_cut_stops_pruning(capsys):
    result = _recovery_run(recovery_updates=10**6, verbose=2)
    assert result.steps == []
    assert result.history[0]["pruning"] == {"epoch": 0, "stopped": True}
    assert result.model.get_layer("c1").filters == 16
    assert "too little training is left to recover from a cut (8 " in (
        capsys.readouterr().out
    )
