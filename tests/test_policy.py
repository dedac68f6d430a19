import json
import math

import numpy as np
import pytest

from keras_adp.density import Density
from keras_adp.graph import ChannelGroup
from keras_adp.policy import ADPPolicy


def _group(name, size, prunable=True):
    return ChannelGroup(
        name=name,
        size=size,
        producers=(name,),
        consumers=(),
        members=(),
        prunable=prunable,
        reason="" if prunable else "reaches the model output",
    )


def _density(channels):
    channels = np.asarray(channels, dtype=np.float64)
    return Density(
        overall=float(channels.mean()),
        channels=channels,
        measured_at="relu",
        samples=16,
    )


def _prune_epochs(policy, epochs, densities=None, steps_limit=None):
    """Drive `should_prune` like the trainer does; return the pruning epochs."""
    history, pruned, last = [], [], None
    for epoch in range(epochs):
        history.append(densities[epoch] if densities else {"c": 0.5})
        if policy.should_prune(epoch, history, len(pruned), last):
            pruned.append(epoch)
            last = epoch
    return pruned


# ------------------------------------------------------------- new_width
@pytest.mark.parametrize(
    "width, density, min_channels, round_to, expected",
    [
        (16, 0.5, 4, 1, 8),
        (16, 0.51, 4, 1, 9),  # ceil(8.16)
        (16, 1.0, 4, 1, 16),
        (16, 0.1, 4, 1, 4),  # ceil(1.6) = 2 < min_channels
        (10, 0.3, 1, 1, 3),  # 0.3 * 10 is 3.0000000000000004 in floats
        (16, 0.3, 4, 8, 8),  # ceil(4.8) = 5 -> 8
        (16, 0.55, 4, 4, 12),  # ceil(8.8) = 9 -> 12
        (12, 0.7, 4, 8, 12),  # ceil(8.4) = 9 -> 16, capped at 12
        (3, 0.5, 4, 1, 3),  # min_channels above the width keeps the width
        (3, 0.0, 8, 8, 3),
        (16, 0.0, 4, 1, 4),  # a dead layer keeps min_channels
        (16, 0.0, 1, 1, 1),  # ... and never reaches 0
        (1, 0.0, 1, 1, 1),
    ],
)
def test_new_width_is_ceil_of_density_times_width_with_floor_rounding_and_cap(
    width, density, min_channels, round_to, expected
):
    policy = ADPPolicy(min_channels=min_channels, round_to=round_to)
    assert policy.new_width(width, density) == expected


@pytest.mark.parametrize("density", [-0.1, 1.5, math.nan])
def test_new_width_rejects_density_outside_unit_interval(density):
    with pytest.raises(ValueError, match="density"):
        ADPPolicy().new_width(8, density)


# ----------------------------------------------------------------- select
def test_select_by_density_breaks_ties_by_score():
    policy = ADPPolicy(selection="density")
    density = [0.9, 0.5, 0.5, 0.1, 0.5]
    score = [0.0, 1.0, 3.0, 9.0, 2.0]
    # 0 has the highest density; among the tied 1, 2, 4 the scores rank 2, 4.
    np.testing.assert_array_equal(policy.select(3, density, score), [0, 2, 4])
    np.testing.assert_array_equal(policy.select(2, density, score), [0, 2])


def test_select_by_density_without_scores_keeps_lowest_index_on_ties():
    policy = ADPPolicy(selection="density")
    kept = policy.select(2, [0.5, 0.5, 0.5, 0.9], None)
    np.testing.assert_array_equal(kept, [0, 3])


@pytest.mark.parametrize("selection", ["l1", "bn_gamma"])
def test_select_by_score_ignores_density(selection):
    policy = ADPPolicy(selection=selection)
    density = [0.9, 0.8, 0.1, 0.0]
    score = [0.1, 5.0, 3.0, 4.0]
    kept = policy.select(2, density, score)
    assert kept.dtype.kind == "i"
    np.testing.assert_array_equal(kept, [1, 3])


def test_select_returns_sorted_indices():
    kept = ADPPolicy(selection="density").select(
        3, [0.1, 0.9, 0.3, 0.8, 0.7], None
    )
    np.testing.assert_array_equal(kept, [1, 3, 4])


# ----------------------------------------------------------- should_prune
@pytest.mark.parametrize(
    "warmup, interval, epochs, expected",
    [
        (2, 1, 6, [1, 2, 3, 4, 5]),
        (1, 1, 3, [0, 1, 2]),
        (3, 2, 9, [2, 4, 6, 8]),
        (2, 3, 10, [1, 4, 7]),
        (0, 1, 2, [0, 1]),
    ],
)
def test_interval_trigger_prunes_after_warmup_then_every_interval(
    warmup, interval, epochs, expected
):
    policy = ADPPolicy(
        warmup_epochs=warmup, interval=interval, max_prune_steps=None
    )
    assert _prune_epochs(policy, epochs) == expected


def test_interval_trigger_is_not_due_before_warmup_ends():
    policy = ADPPolicy(warmup_epochs=3)
    assert not policy.should_prune(0, [{}], 0, None)
    assert not policy.should_prune(1, [{}, {}], 0, None)
    assert policy.should_prune(2, [{}, {}, {}], 0, None)


def test_max_prune_steps_stops_the_trigger():
    policy = ADPPolicy(warmup_epochs=1, max_prune_steps=2)
    assert _prune_epochs(policy, 6) == [0, 1]
    assert _prune_epochs(ADPPolicy(warmup_epochs=1, max_prune_steps=0), 4) == []


def test_converged_trigger_waits_for_stable_density_for_patience_epochs():
    policy = ADPPolicy(
        warmup_epochs=1, trigger="converged", tolerance=0.02, patience=2
    )
    densities = [
        {"a": 0.90, "b": 0.5},
        {"a": 0.70, "b": 0.5},  # a moved by 0.2
        {"a": 0.69, "b": 0.5},
        {"a": 0.68, "b": 0.51},  # two stable changes in a row: prune here
        {"a": 0.40, "b": 0.3},  # first epoch of the rebuilt model
        {"a": 0.41, "b": 0.3},
        {"a": 0.41, "b": 0.3},  # stable again for 2 changes since the prune
        {"a": 0.10, "b": 0.3},
    ]
    assert _prune_epochs(policy, len(densities), densities) == [3, 6]


def test_converged_trigger_resets_after_a_prune():
    policy = ADPPolicy(warmup_epochs=1, trigger="converged", patience=1)
    history = [{"a": 0.5}, {"a": 0.5}, {"a": 0.5}]
    assert policy.should_prune(1, history[:2], 0, None)
    # After pruning at epoch 1, densities up to it describe another model.
    assert not policy.should_prune(2, history, 1, 1)
    history.append({"a": 0.5})
    assert policy.should_prune(3, history, 1, 1)


def test_converged_trigger_counts_a_change_equal_to_tolerance_as_unstable():
    policy = ADPPolicy(
        warmup_epochs=1, trigger="converged", tolerance=0.25, patience=1
    )
    assert not policy.should_prune(1, [{"a": 0.5}, {"a": 0.75}], 0, None)
    assert policy.should_prune(1, [{"a": 0.5}, {"a": 0.7}], 0, None)


def test_converged_trigger_respects_warmup_and_max_prune_steps():
    stable = [{"a": 0.5}] * 4
    policy = ADPPolicy(warmup_epochs=4, trigger="converged", patience=1)
    assert not policy.should_prune(2, stable[:3], 0, None)
    assert policy.should_prune(3, stable, 0, None)
    capped = ADPPolicy(
        warmup_epochs=1, trigger="converged", patience=1, max_prune_steps=1
    )
    assert not capped.should_prune(3, stable, 1, None)


# ------------------------------------------------------------------- plan
def test_plan_keeps_densest_channels_of_each_shrinking_group():
    policy = ADPPolicy(
        width_rule="density", min_channels=1, selection="density",
        removal_scale=1.0,
    )
    groups = [_group("a", 4), _group("b", 4), _group("head", 3, False)]
    densities = {
        "a": _density([0.0, 1.0, 0.0, 1.0]),  # AD 0.5 -> 2 channels
        "b": _density([1.0, 1.0, 1.0, 1.0]),  # AD 1 -> unchanged
        "head": _density([0.0, 0.0, 0.0]),  # not prunable
    }
    keep = policy.plan(groups, densities, {"a": np.ones(4), "b": np.ones(4)})
    assert list(keep) == ["a"]
    np.testing.assert_array_equal(keep["a"], [1, 3])


def test_plan_skips_groups_without_density():
    policy = ADPPolicy(width_rule="density", min_channels=1)
    keep = policy.plan(
        [_group("a", 4), _group("b", 4)],
        {"a": _density([0.0, 1.0, 0.0, 1.0])},
        {},
    )
    assert list(keep) == ["a"]


@pytest.mark.parametrize(
    "min_reduction, expected",
    [(0.05, {"a"}), (0.1, {"a"}), (0.11, set()), (0.0, {"a"})],
)
def test_plan_stops_when_no_group_loses_min_reduction(min_reduction, expected):
    # 10 channels at AD 0.9 -> 9: a 10% reduction.
    policy = ADPPolicy(
        width_rule="density", min_channels=1, min_reduction=min_reduction,
        removal_scale=1.0,
    )
    channels = [1.0] * 9 + [0.0]
    keep = policy.plan([_group("a", 10)], {"a": _density(channels)}, {})
    assert set(keep) == expected


def test_plan_includes_small_reductions_when_another_group_is_worth_it():
    policy = ADPPolicy(
        width_rule="density", min_channels=1, min_reduction=0.2,
        removal_scale=1.0,
    )
    groups = [_group("big", 10), _group("small", 10)]
    densities = {
        "big": _density([1.0] * 5 + [0.0] * 5),  # 50% off
        "small": _density([1.0] * 9 + [0.0]),  # 10% off
    }
    keep = policy.plan(groups, densities, {})
    assert {name: len(kept) for name, kept in keep.items()} == {
        "big": 5,
        "small": 9,
    }


# ------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "field, value",
    [
        ("warmup_epochs", -1),
        ("warmup_epochs", 1.5),
        ("warmup_epochs", True),
        ("min_channels", 0),
        ("round_to", 0),
        ("round_to", "8"),
        ("selection", "random"),
        ("trigger", "always"),
        ("interval", 0),
        ("tolerance", -0.1),
        ("tolerance", 1.0),
        ("tolerance", math.nan),
        ("tolerance", "0.1"),
        ("patience", 0),
        ("min_reduction", 1.0),
        ("min_reduction", -0.01),
        ("min_reduction", True),
        ("max_prune_steps", -1),
        ("max_prune_steps", 2.0),
        ("reinitialize", "yes"),
        ("reinitialize", 1),
        ("threshold", math.inf),
        ("threshold", math.nan),
        ("threshold", "0"),
        ("threshold", True),
        ("calibration_samples", 0),
        ("calibration_samples", None),
    ],
)
def test_invalid_field_raises_value_error_naming_field_and_value(field, value):
    with pytest.raises(ValueError) as info:
        ADPPolicy(**{field: value})
    message = str(info.value)
    assert f"`{field}`" in message
    assert f"Received: {field}=" in message
    assert repr(value) in message or str(value) in message


def test_unknown_field_in_config_raises_value_error():
    with pytest.raises(ValueError, match="warmup"):
        ADPPolicy.from_config({"warmup": 3})


def test_default_selection_keeps_the_largest_l1_norms():
    # Measured (benchmarks/bench_selection.py): behind BatchNormalization a
    # channel's own density ranks channels worse than chance; L1 does not.
    kept = ADPPolicy().select(
        2, [0.9, 0.1, 0.8, 0.2], [1.0, 5.0, 0.5, 3.0]
    )
    np.testing.assert_array_equal(kept, [1, 3])


def test_defaults_match_the_documented_method():
    policy = ADPPolicy()
    assert policy.get_config() == {
        "warmup_epochs": 1,
        "min_channels": 4,
        "round_to": 1,
        "selection": "l1",
        "trigger": "interval",
        "interval": 1,
        "tolerance": 0.02,
        "patience": 2,
        "min_reduction": 0.05,
        "max_prune_steps": 2,
        "reinitialize": False,
        "threshold": 0.0,
        "calibration_samples": 512,
        "max_accuracy_drop": 0.01,
        "monitor": "auto",
        "recovery_epochs": 1,
        "max_retries": 1,
        "validation_split": 0.1,
        "width_rule": "density",
        "live_threshold": 0.01,
        "gamma_threshold": 0.05,
        "gamma_l1": 0.0,
        "recalibrate_batch_norm": True,
        "max_removal": None,
        "removal_scale": 0.66,
        "dense_reference": None,
        "trial": "rollback",
        "recovery_updates": 1600,
    }


def test_get_config_from_config_round_trip_through_json():
    policy = ADPPolicy(
        warmup_epochs=3,
        min_channels=2,
        round_to=8,
        selection="bn_gamma",
        trigger="converged",
        interval=2,
        tolerance=0.05,
        patience=3,
        min_reduction=0.1,
        max_prune_steps=4,
        reinitialize=True,
        threshold=0.01,
        calibration_samples=64,
    )
    config = json.loads(json.dumps(policy.get_config()))
    assert ADPPolicy.from_config(config) == policy


def test_numpy_scalars_are_accepted_and_configs_stay_json_serialisable():
    policy = ADPPolicy(
        warmup_epochs=np.int64(3),
        tolerance=np.float32(0.05),
        threshold=np.float32(0.1),
    )
    config = policy.get_config()
    assert type(config["warmup_epochs"]) is int
    assert type(config["threshold"]) is float
    assert ADPPolicy.from_config(json.loads(json.dumps(config))) == policy
