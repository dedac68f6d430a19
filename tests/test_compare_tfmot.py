"""The tfmot pruning schedules of `benchmarks/compare_tfmot.py`, step by step.

Pure arithmetic: no training, no tfmot import. The expected steps are
computed by hand from tfmot's rule that a `PolynomialDecay` only updates the
masks on steps `begin_step + k * frequency <= end_step`.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmark():
    path = REPO / "benchmarks" / "compare_tfmot.py"
    spec = importlib.util.spec_from_file_location("tfmot_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def mask_update_steps(schedule) -> list[int]:
    """The steps on which tfmot's `PolynomialDecay` prunes."""
    return list(
        range(schedule.begin_step, schedule.end_step + 1, schedule.frequency)
    )


def test_steps_per_epoch_counts_the_partial_last_batch(benchmark):
    assert benchmark.steps_per_epoch(3000, 128) == 24
    assert benchmark.steps_per_epoch(60000, 128) == 469
    assert benchmark.steps_per_epoch(256, 128) == 2


def test_gradual_schedule_uses_tfmot_defaults_on_a_long_run(benchmark):
    # 60k samples, batch 128, 20 epochs: one dense epoch, a ramp up to the
    # end of epoch 15 (20 // 4 = 5 fine-tuning epochs), every 100 steps.
    schedule = benchmark.gradual_schedule(469, 20, 0.9)
    assert schedule.name == "gradual"
    assert schedule.initial_sparsity == 0.5
    assert schedule.final_sparsity == 0.9
    assert schedule.begin_step == 469
    assert schedule.frequency == 100
    # 14 epochs of ramp = 6,566 steps, rounded down to whole frequencies.
    assert schedule.end_step == 469 + 6500
    assert schedule.steps_per_epoch == 469


def test_gradual_schedule_prunes_more_often_on_a_short_ramp(benchmark):
    # --quick: 3,000 samples, batch 128, 3 epochs -> a 24-step ramp in
    # epoch 2, updated every 2 steps so that it still has >= 10 updates.
    schedule = benchmark.gradual_schedule(24, 3, 0.94)
    assert (schedule.begin_step, schedule.end_step) == (24, 48)
    assert schedule.frequency == 2
    assert len(mask_update_steps(schedule)) == 13


def test_gradual_schedule_starts_at_step_zero_with_two_epochs(benchmark):
    schedule = benchmark.gradual_schedule(50, 2, 0.8)
    assert (schedule.begin_step, schedule.end_step) == (0, 50)
    assert schedule.frequency == 5


@pytest.mark.parametrize(
    "steps_per_epoch, epochs",
    [(1, 2), (2, 3), (24, 3), (118, 6), (469, 6), (469, 20), (1000, 40)],
)
def test_gradual_schedule_reaches_the_target_before_fine_tuning(
    benchmark, steps_per_epoch, epochs
):
    schedule = benchmark.gradual_schedule(steps_per_epoch, epochs, 0.9)
    fine_tune_epochs = max(1, epochs // 4)
    updates = mask_update_steps(schedule)
    # The last mask update is at `end_step`, where the sparsity is final.
    assert updates[-1] == schedule.end_step
    assert schedule.end_step <= (epochs - fine_tune_epochs) * steps_per_epoch
    assert schedule.begin_step == (steps_per_epoch if epochs >= 3 else 0)
    assert 1 <= schedule.frequency <= 100
    ramp = (epochs - fine_tune_epochs) * steps_per_epoch - schedule.begin_step
    assert len(updates) >= min(10, ramp)


def test_gradual_schedule_never_starts_above_the_target(benchmark):
    schedule = benchmark.gradual_schedule(24, 3, 0.3)
    assert schedule.initial_sparsity == schedule.final_sparsity == 0.3


@pytest.mark.parametrize("epochs, steps", [(1, 24), (3, 0)])
def test_gradual_schedule_rejects_too_short_runs(benchmark, epochs, steps):
    with pytest.raises(ValueError, match="Expected"):
        benchmark.gradual_schedule(steps, epochs, 0.9)


def test_adp_matched_schedule_ramps_within_the_pruning_epochs(benchmark):
    # Default settings: 15,000 samples (118 steps), warm-up 2, 2 ADP steps:
    # 0 -> target from the end of epoch 2 to the end of epoch 3, every
    # quarter epoch (29 steps), ending on the last update (4 * 29 = 116).
    schedule = benchmark.adp_matched_schedule(118, 2, 2, 0.94)
    assert schedule.initial_sparsity == 0.0
    assert (schedule.begin_step, schedule.end_step) == (236, 352)
    assert schedule.frequency == 29
    assert mask_update_steps(schedule)[-1] == schedule.end_step


def test_both_schedules_run_adp_matched_first(benchmark):
    settings = benchmark.Settings.quick()
    schedules = benchmark.tfmot_schedules(settings, 3000, 0.9)
    assert [s.name for s in schedules] == ["adp-matched", "gradual"]
    assert all(s.final_sparsity == 0.9 for s in schedules)
    only = benchmark.Settings.quick(tfmot_schedule="gradual")
    assert [s.name for s in benchmark.tfmot_schedules(only, 3000, 0.9)] == [
        "gradual"
    ]
    with pytest.raises(ValueError, match="tfmot_schedule"):
        benchmark.tfmot_schedules(
            benchmark.Settings(tfmot_schedule="cubic"), 3000, 0.9
        )


def test_format_table_widens_columns_for_long_run_names(benchmark):
    row = {
        "framework": "tf-keras 2.21.0", "accuracy": 0.5, "tflite_accuracy": 0.5,
        "params": 10, "nonzero_params": 5, "macs": 100, "tflite_bytes": 1000,
        "tflite_gzip_bytes": 500, "latency_median_ms": 0.1,
        "train_seconds": 1.0,
    }
    rows = [dict(row, run="dense"), dict(row, run="tfmot (gradual schedule)")]
    lines = benchmark.format_table(rows).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[-1].split("|")[0].strip() == "tfmot (gradual schedule)"
