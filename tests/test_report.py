"""Tests for keras_adp.report: report.json, report.md and plots of a run.

The runs are fake: `fake_result` writes an `ADPResult` history by hand (no
training), with widths that shrink at the given pruning epochs.
"""

from __future__ import annotations

import dataclasses
import json

import matplotlib
import numpy as np
import pytest
from matplotlib import image as mpimg

from keras_adp import checkpoints
from keras_adp import export
from keras_adp import report
from keras_adp import report_markdown
from keras_adp import report_plots
from keras_adp import training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# Fake runs.


def fake_result(
    num_groups: int = 3, epochs: int = 4, prune_after: tuple[int, ...] = (1,)
) -> training.ADPResult:
    """An `ADPResult` whose groups halve (at least to 4) after each epoch in
    `prune_after` (0-based); params are 9 * width^2 per group."""
    widths = {f"block{index}_conv": 16 * (1 + index % 3) for index in range(num_groups)}
    history, steps, cumulative = [], [], 0.0
    for epoch in range(epochs):
        params = sum(9 * width * width for width in widths.values())
        macs = params * 49
        cumulative += 3 * macs * 100 + macs * 10
        record = {
            "epoch": epoch,
            "logs": {
                "loss": 2.0 / (epoch + 1),
                "accuracy": 0.5 + 0.1 * epoch,
                "val_accuracy": 0.45 + 0.1 * epoch,
                "val_loss": 2.1 / (epoch + 1),
            },
            "widths": dict(widths),
            "density": {name: 0.5 + 0.05 * epoch for name in widths},
            "params": params,
            "macs": macs,
            "flops": 2 * macs,
            "train_macs": 3.0 * macs * 100,
            "measure_macs": 10.0 * macs,
            "cumulative_macs": cumulative,
            "pruning": None,
        }
        if epoch in prune_after and epoch + 1 < epochs:
            after = {name: max(4, width // 2) for name, width in widths.items()}
            new_params = sum(9 * width * width for width in after.values())
            step = {
                "epoch": epoch,
                "before": dict(widths),
                "after": after,
                "params_before": params,
                "params_after": new_params,
                "macs_before": macs,
                "macs_after": new_params * 49,
            }
            record["pruning"] = step
            steps.append(step)
            widths = after
        history.append(record)
    dense = {
        "params": history[0]["params"],
        "macs": history[0]["macs"],
        "flops": history[0]["flops"],
    }
    return training.ADPResult(model=None, history=history, steps=steps, dense=dense)


def guarded_result(final_rollback: bool = False) -> training.ADPResult:
    """An `ADPResult` of a run with the accuracy guard, built by hand.

    Epochs 1-2 train the dense widths (16, 32). The step after epoch 2 cuts
    them to (4, 8); after epoch 3 val_accuracy is 0.40, far below the
    reference 0.70, so it is rolled back and retried with half the removal,
    (10, 20), which is accepted after epoch 4 (0.72). With `final_rollback`,
    a third step after epoch 5 is rolled back after epoch 6, the last one.
    """
    logs = [0.50, 0.70, 0.40, 0.72, 0.75, 0.60]
    widths_per_epoch = [(16, 32), (16, 32), (4, 8), (10, 20), (10, 20), (6, 12)]
    epochs = 6 if final_rollback else 5

    def cost(widths):
        params = sum(9 * width * width for width in widths)
        return params, params * 49

    def step(epoch, before, after, attempt, outcome):
        params_before, macs_before = cost(before)
        params_after, macs_after = cost(after)
        return {
            "epoch": epoch,
            "before": dict(zip(("conv_a", "conv_b"), before)),
            "after": dict(zip(("conv_a", "conv_b"), after)),
            "params_before": params_before,
            "params_after": params_after,
            "macs_before": macs_before,
            "macs_after": macs_after,
            "attempt": attempt,
            "outcome": outcome,
        }

    def decision(epoch, step_epoch, attempt, action):
        return {
            "epoch": epoch,
            "step_epoch": step_epoch,
            "attempt": attempt,
            "monitor": "val_accuracy",
            "value": logs[epoch],
            "reference": 0.75 if epoch == 5 else 0.70,
            "budget": 0.01,
            "action": action,
        }

    steps = [
        step(1, (16, 32), (4, 8), 0, "rolled back"),
        step(2, (16, 32), (10, 20), 1, "accepted"),
    ]
    pruning = {1: steps[0], 2: steps[1]}
    guard = {
        2: decision(2, 1, 0, "rolled back; retrying half the removal"),
        3: decision(3, 2, 1, "accepted"),
    }
    if final_rollback:
        steps.append(step(4, (10, 20), (6, 12), 0, "rolled back"))
        pruning[4] = steps[2]
        guard[5] = decision(5, 4, 0, "rolled back; pruning stops")
    history, cumulative = [], 0.0
    for epoch in range(epochs):
        widths = widths_per_epoch[epoch]
        params, macs = cost(widths)
        cumulative += 3.0 * macs * 100
        history.append(
            {
                "epoch": epoch,
                "logs": {"loss": 1.0 - logs[epoch], "val_accuracy": logs[epoch]},
                "widths": dict(zip(("conv_a", "conv_b"), widths)),
                "density": {"conv_a": 0.5, "conv_b": 0.5},
                "params": params,
                "macs": macs,
                "flops": 2 * macs,
                "train_macs": 3.0 * macs * 100,
                "measure_macs": 0.0,
                "cumulative_macs": cumulative,
                "pruning": pruning.get(epoch),
                "guard": guard.get(epoch),
            }
        )
    params, macs = cost((16, 32))
    dense = {"params": params, "macs": macs, "flops": 2 * macs}
    return training.ADPResult(model=None, history=history, steps=steps, dense=dense)


def latency(size_bytes: int, median_ms: float) -> export.LatencyResult:
    return export.LatencyResult(
        median_ms=median_ms,
        p10_ms=median_ms * 0.9,
        p90_ms=median_ms * 1.2,
        runs=50,
        num_threads=1,
        size_bytes=size_bytes,
        gzip_size_bytes=size_bytes // 2,
    )


def parity(top1: float) -> export.VerifyResult:
    return export.VerifyResult(
        max_abs_error=0.05,
        top1_agreement=top1,
        num_samples=200,
        quantization="int8",
        atol=None,
        rtol=0.0,
        min_top1_agreement=0.9,
    )


def table_rows(markdown: str) -> dict[str, list[str]]:
    """First cell -> the other cells, for every Markdown table row."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def assert_png(path) -> None:
    content = path.read_bytes()
    assert content.startswith(PNG_MAGIC), path
    assert len(content) > 5000, path


# ---------------------------------------------------------------------------
# write_report.


def test_write_report_writes_json_markdown_and_four_plots(tmp_path):
    written = report.write_report(tmp_path, fake_result())

    on_disk = json.loads((tmp_path / report.REPORT_JSON).read_text())
    assert on_disk == written
    assert set(on_disk) >= {
        "format_version", "created", "summary", "dense", "dense_baseline",
        "history", "steps", "tflite", "environment", "extra", "plots",
    }
    assert on_disk["summary"]["epochs"] == 4
    assert on_disk["summary"]["prune_steps"] == 1
    assert len(on_disk["history"]) == 4
    assert on_disk["environment"]["cpu_count"] >= 1
    assert on_disk["environment"]["packages"]["keras"]
    assert on_disk["environment"]["packages"]["tensorflow"]
    assert (tmp_path / report.REPORT_MD).stat().st_size > 0
    for name in report.PLOT_FILES.values():
        assert_png(tmp_path / name)


def test_summary_table_shows_dense_architecture_as_not_trained():
    result = fake_result(num_groups=2, epochs=3, prune_after=(0,))
    written = report.build_report(result)

    rows = table_rows(report.render_markdown(written))
    dense_params = result.dense["params"]
    final_params = result.history[-1]["params"]
    assert rows["Accuracy (last epoch's val_accuracy)"][:2] == [
        "not trained", "65.00%",
    ]
    assert "Test accuracy" not in rows
    assert rows["Parameters"][:2] == [f"{dense_params:,}", f"{final_params:,}"]
    assert rows["Parameters"][2] == (
        f"{100 * (final_params / dense_params - 1):+.1f}% "
        f"({dense_params / final_params:.2f}x smaller)"
    )
    assert rows["MACs / inference"][0] == report_markdown._si(result.dense["macs"])
    assert rows["Pruning steps"][1] == "1 kept"
    # Estimated dense training compute: every epoch at dense cost.
    per_epoch = 3.0 * result.dense["macs"] * 100 + 10.0 * result.dense["macs"]
    assert written["dense_baseline"]["training_macs"] == pytest.approx(3 * per_epoch)
    assert rows["Training MACs (3 epochs)"][0].endswith("(est.)")


def test_pruned_accuracy_comes_from_evaluation_when_given():
    written = report.build_report(
        fake_result(),
        dense_baseline={"accuracy": 0.9},
        extra={"evaluation": {"accuracy": 0.875, "loss": 0.4}},
    )

    assert written["summary"]["accuracy"] == 0.875
    assert written["dense_baseline"]["trained"] is True
    rows = table_rows(report.render_markdown(written))
    assert rows["Test accuracy"] == ["90.00%", "87.50%", "-2.50 pts"]


def test_accuracy_falls_back_to_last_validation_accuracy():
    written = report.build_report(fake_result(epochs=4))

    assert written["summary"]["accuracy"] == pytest.approx(0.75)
    assert written["summary"]["accuracy_source"] == "last epoch's val_accuracy"


def test_tflite_dataclasses_are_stored_as_numbers_and_tabulated(tmp_path):
    tflite = {
        "float32": {"path": "model_float32.tflite", "latency": latency(40_000, 0.2)},
        "int8": {
            "path": "model_int8.tflite",
            "latency": latency(12_000, 0.1),
            "parity": parity(0.995),
        },
    }
    dense_tflite = {"float32": {"latency": latency(400_000, 0.8)}}
    written = report.write_report(
        tmp_path, fake_result(), tflite=tflite,
        dense_baseline={"tflite": dense_tflite},
    )

    stored = json.loads((tmp_path / report.REPORT_JSON).read_text())["tflite"]
    assert stored["int8"]["latency"]["size_bytes"] == 12_000
    assert stored["int8"]["parity"]["top1_agreement"] == 0.995
    rows = table_rows(report.render_markdown(written))
    assert rows["TFLite float32 size"] == [
        "390.6 KiB", "39.1 KiB", "-90.0% (10.00x smaller)",
    ]
    assert rows["TFLite float32 latency (median)"] == [
        "0.800 ms", "0.200 ms", "4.00x faster",
    ]
    assert rows["TFLite int8 size"][:2] == ["-", "11.7 KiB"]
    assert rows["TFLite int8 parity"][1].startswith("top-1 99.50%")


def test_failed_parity_is_marked_in_the_summary():
    tflite = {
        "int8": {
            "latency": latency(12_000, 0.1),
            "parity": {
                **dataclasses.asdict(parity(0.7)),
                "passed": False,
                "message": "low",
            },
        }
    }
    written = report.build_report(fake_result(), tflite=tflite)

    rows = table_rows(report.render_markdown(written))
    assert rows["TFLite int8 parity"][1].startswith("FAILED: top-1 70.00%")


def test_markdown_lists_steps_final_widths_history_and_plots():
    result = fake_result(num_groups=3, epochs=4, prune_after=(0, 2))
    markdown = report.render_markdown(
        report.build_report(result, extra={"config": {"model": "m", "dataset": "d"}})
    )

    assert markdown.startswith("# ADP run report: m on d")
    rows = table_rows(markdown)
    # Per-layer widths: block0 16 -> 8 -> 4.
    assert rows["block0_conv"][:3] == ["16", "4", "25%"]
    assert rows["2"][0] == "3"  # Step 2 taken after epoch 3.
    for name in report.PLOT_FILES.values():
        assert f"]({name})" in markdown


def test_steps_table_gives_each_steps_outcome_attempt_and_deciding_values():
    markdown = report.render_markdown(report.build_report(guarded_result()))

    rows = table_rows(markdown)
    assert rows["Step"][:7] == [
        "After epoch", "Attempt", "Outcome", "Judged after epoch",
        "Monitored value", "Reference", "Budget",
    ]
    assert rows["1"][:7] == [
        "2", "1", "rolled back; retrying half the removal", "3",
        "val_accuracy 0.4000", "0.7000", "0.01",
    ]
    assert rows["2"][:7] == [
        "3", "2", "accepted", "4", "val_accuracy 0.7200", "0.7000", "0.01",
    ]
    assert "accuracy guard compares the monitored value" in markdown
    assert rows["Pruning steps"][1] == "1 kept, 1 rolled back"


def test_report_json_attaches_the_guard_decision_to_each_step(tmp_path):
    report.write_report(tmp_path, guarded_result())

    written = json.loads((tmp_path / report.REPORT_JSON).read_text())
    rolled_back, retried = written["steps"]
    assert rolled_back["outcome"] == "rolled back"
    assert rolled_back["guard"] == {
        "epoch": 2, "step_epoch": 1, "attempt": 0, "monitor": "val_accuracy",
        "value": 0.40, "reference": 0.70, "budget": 0.01,
        "action": "rolled back; retrying half the removal",
    }
    assert (retried["attempt"], retried["guard"]["action"]) == (1, "accepted")
    assert written["summary"]["prune_steps"] == 1
    assert written["summary"]["rolled_back_steps"] == 1


def test_history_table_shows_rolled_back_steps_and_guard_actions():
    markdown = report.render_markdown(report.build_report(guarded_result()))

    history_rows = [
        line for line in markdown.split("## Per-epoch history")[1].splitlines()
        if line.startswith("| ")
    ]
    assert "Accuracy guard" in history_rows[0]
    assert "11,520 -> 720 (rolled back) |" in history_rows[2]  # After epoch 2.
    assert "(attempt 2) | step of epoch 2: rolled back; retrying" in history_rows[3]
    assert "step of epoch 3: accepted" in history_rows[4]


def test_final_figures_are_those_of_the_model_a_last_rollback_restored():
    result = guarded_result(final_rollback=True)
    written = report.build_report(result)

    # The last epoch trained (6, 12); its step was undone: (10, 20) remains.
    restored_params = 9 * (10 * 10 + 20 * 20)
    assert result.history[-1]["params"] != restored_params
    assert written["summary"]["final_params"] == restored_params
    assert written["summary"]["rolled_back_steps"] == 2
    rows = table_rows(report.render_markdown(written))
    assert rows["Parameters"][1] == f"{restored_params:,}"
    assert rows["conv_a"][:2] == ["16", "10"]
    assert rows["Pruning steps"][1] == "1 kept, 2 rolled back"


def test_old_histories_without_guard_keys_read_as_taken_steps():
    result = fake_result(epochs=3, prune_after=(0,))
    assert "outcome" not in result.steps[0] and "guard" not in result.history[0]

    written = report.build_report(result)

    assert written["steps"][0]["guard"] is None
    markdown = report.render_markdown(written)
    assert table_rows(markdown)["1"][1:7] == ["1", "taken", "-", "-", "-", "-"]
    assert "accuracy guard compares" not in markdown
    assert "Accuracy guard" not in markdown


def _marks(figure):
    """(x, colour, line style) of every vertical line, and the x-ranges of
    the shaded bands, in a figure's first axes."""
    axes = figure.axes[0]
    lines = [
        (line.get_xdata()[0], matplotlib.colors.to_hex(line.get_color()),
         line.get_linestyle())
        for line in axes.get_lines()
        if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2
    ]
    bands = [
        (patch.get_x(), patch.get_x() + patch.get_width())
        for patch in axes.patches
    ]
    return lines, bands, axes.get_legend_handles_labels()[1]


@pytest.mark.parametrize(
    "draw",
    [
        report_plots._plot_widths,
        report_plots._plot_density,
        report_plots._plot_accuracy_params,
    ],
)
def test_plots_mark_rolled_back_steps_apart_from_kept_ones(draw):
    written = report.build_report(guarded_result())

    lines, bands, labels = _marks(draw(written))

    red = matplotlib.colors.to_hex("tab:red")
    assert (2.5, red, "--") in lines  # Step after epoch 2, rolled back.
    assert (3.5, matplotlib.colors.to_hex("grey"), ":") in lines  # The retry.
    assert (2.5, 3.5) in bands  # Trained pruned in epoch 3, then undone.
    assert "pruning step, rolled back" in labels and "pruning step" in labels


def test_accuracy_plot_draws_the_dense_baseline_beside_the_pruned_run():
    dense_history = [
        {"epoch": epoch, "logs": {"val_accuracy": 0.6 + 0.05 * epoch}}
        for epoch in range(5)
    ]
    written = report.build_report(
        guarded_result(),
        dense_baseline={"accuracy": 0.8, "history": dense_history},
    )

    axes = report_plots._plot_accuracy_params(written).axes[0]

    by_label = {line.get_label(): line for line in axes.get_lines()}
    dense_line = by_label["val_accuracy, dense baseline"]
    np.testing.assert_allclose(dense_line.get_ydata(), [0.6, 0.65, 0.7, 0.75, 0.8])
    assert dense_line.get_linestyle() == "--"


def test_non_finite_numbers_are_written_as_null(tmp_path):
    result = fake_result()
    result.history[0]["logs"]["val_loss"] = float("nan")
    result.history[1]["logs"]["val_loss"] = np.float32("inf")

    report.write_report(tmp_path, result)

    history = json.loads((tmp_path / report.REPORT_JSON).read_text())["history"]
    assert history[0]["logs"]["val_loss"] is None
    assert history[1]["logs"]["val_loss"] is None


def test_empty_history_is_rejected():
    empty = training.ADPResult(model=None, history=[], steps=[], dense={})
    with pytest.raises(ValueError, match="at least one epoch"):
        report.build_report(empty)


@pytest.mark.parametrize("num_groups", [1, 9, 24])
def test_plots_render_for_any_number_of_groups(tmp_path, num_groups):
    written = report.write_report(
        tmp_path, fake_result(num_groups=num_groups, epochs=5, prune_after=(1, 3))
    )

    for name in written["plots"].values():
        assert_png(tmp_path / name)


def test_many_groups_put_the_legend_beside_the_axes(tmp_path):
    few, many = tmp_path / "few", tmp_path / "many"
    report.write_report(few, fake_result(num_groups=4))
    report.write_report(many, fake_result(num_groups=24))

    few_width = mpimg.imread(few / "widths.png").shape[1]
    many_width = mpimg.imread(many / "widths.png").shape[1]
    assert many_width > few_width * 1.2
    # One bar per group: the bar chart grows with the number of groups.
    assert (
        mpimg.imread(many / "final_widths.png").shape[0]
        > mpimg.imread(few / "final_widths.png").shape[0]
    )


# ---------------------------------------------------------------------------
# load_report and regenerate_report.


def test_load_report_returns_what_was_written(tmp_path):
    written = report.write_report(tmp_path, fake_result())

    loaded = report.load_report(tmp_path)

    assert loaded == written
    assert report.render_markdown(loaded) == (tmp_path / report.REPORT_MD).read_text()


def test_load_report_without_report_json_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="report.json"):
        report.load_report(tmp_path)


def test_regenerate_report_redraws_markdown_and_plots_from_json(tmp_path):
    report.write_report(tmp_path, fake_result())
    markdown = (tmp_path / report.REPORT_MD).read_text()
    for name in [report.REPORT_MD, *report.PLOT_FILES.values()]:
        (tmp_path / name).unlink()

    report.regenerate_report(tmp_path)

    assert (tmp_path / report.REPORT_MD).read_text() == markdown
    for name in report.PLOT_FILES.values():
        assert_png(tmp_path / name)


def write_checkpoint_state(run_dir, result, name="checkpoint-0003"):
    checkpoint = run_dir / name
    checkpoint.mkdir(parents=True)
    state = {
        "next_epoch": len(result.history),
        "history": result.history,
        "steps": result.steps,
        "dense": result.dense,
        "policy": {"warmup_epochs": 1, "interval": 1},
        "seed": 0,
    }
    (checkpoint / checkpoints.STATE_FILE).write_text(json.dumps(state))
    (run_dir / checkpoints.LATEST_FILE).write_text(name)


def test_regenerate_report_reads_the_latest_checkpoint_without_report_json(tmp_path):
    result = fake_result(epochs=3)
    write_checkpoint_state(tmp_path, result)

    regenerated = report.regenerate_report(tmp_path)

    assert regenerated["source"] == "checkpoint-0003/state.json"
    assert len(regenerated["history"]) == 3
    assert not (tmp_path / report.REPORT_JSON).exists()
    markdown = (tmp_path / report.REPORT_MD).read_text()
    assert "Built from checkpoint `checkpoint-0003/state.json`" in markdown
    assert table_rows(markdown)["policy.warmup_epochs"] == ["1"]
    for name in report.PLOT_FILES.values():
        assert_png(tmp_path / name)


def test_regenerate_report_without_report_or_checkpoint_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        report.regenerate_report(tmp_path)


