"""Run reports: `report.json`, `report.md` and plots of an ADP training run.

`write_report(run_dir, result)` writes into `run_dir`:

- `report.json`: every number of the run: a summary (dense vs final params,
  MACs, accuracy, training compute), the per-epoch history (logs, per-group
  widths and activation densities, cost, accuracy-guard decisions), the
  pruning steps, each with the accuracy guard's decision on it (`"guard"`:
  the monitored value, its reference and budget, and the action; None when
  the step was not judged), TFLite size, latency and parity when given, and
  the environment (package versions, CPU count).
- `report.md`: a summary table (dense vs pruned, with the difference), the
  pruning steps with their outcome (accepted, rolled back and retried,
  rolled back and pruning stopped), attempt and the values that decided it,
  the final per-layer widths, the per-epoch history, the TFLite files and
  the environment, with the plots embedded.
- Four PNG plots (`PLOT_FILES`): per-layer width over epochs, per-layer
  activation density over epochs, accuracy and cost over epochs, and final
  vs original width per layer. The first three mark each pruning step: a
  dotted grey line for a step that was kept, a dashed red line and a red
  band over its trial epochs for a step that was rolled back.

Histories written before the accuracy guard existed (no `"guard"`,
`"attempt"` or `"outcome"` keys) are read as steps that were taken.

`load_report(run_dir)` reads `report.json` back, `render_markdown(report)`
turns it into the Markdown text and `write_plots(report, directory)` redraws
the plots. `regenerate_report(run_dir)` does all three, and while a run has
no `report.json` yet (training still going, or killed) it builds the report
from the newest checkpoint's `state.json`; `keras-adp report RUN_DIR` calls
it.

This module reads and writes the files; the content is
`keras_adp.report_data`'s (`build_report`), the Markdown
`keras_adp.report_markdown`'s and the plots `keras_adp.report_plots`'s
(drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never
through `pyplot`, so writing a report neither needs a display nor changes
matplotlib's global state).

Example:

```python
result = keras_adp.ADPTrainer(policy, run_dir="runs/demo").fit(model, ...)
keras_adp.report.write_report("runs/demo", result)
print(keras_adp.report.summary_table(keras_adp.report.load_report("runs/demo")))
```
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Union

from keras_adp import checkpoints
from keras_adp import training
from keras_adp.report_data import PLOT_FILES, build_report, environment
from keras_adp.report_markdown import render_markdown, summary_table
from keras_adp.report_plots import write_plots

__all__ = [
    "REPORT_JSON",
    "REPORT_MD",
    "PLOT_FILES",
    "write_report",
    "build_report",
    "load_report",
    "regenerate_report",
    "report_from_checkpoint",
    "render_markdown",
    "summary_table",
    "write_plots",
    "environment",
]

PathLike = Union[str, os.PathLike]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def write_report(
    run_dir: PathLike,
    result: Any,
    *,
    dense_baseline: dict | None = None,
    tflite: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Write `report.json`, `report.md` and the plots of a run into `run_dir`.

    Args:
        run_dir: the run directory; created if missing.
        result: an `ADPResult` (anything with `history`, `steps`, `dense`
            and `summary()` like it).
        dense_baseline: the dense model to compare with, as a dict with any
            of `accuracy` (None: not trained), `params`, `macs`, `flops`
            (default: `result.dense`, the dense architecture),
            `training_macs`, `tflite` (same layout as `tflite`) and
            `history` (`[{"epoch": int, "logs": dict}, ...]`, drawn beside
            the pruned run's accuracy). Defaults to `None`: the dense column
            shows the dense architecture's params and MACs, accuracy "not
            trained".
        tflite: the pruned model's TFLite files, as
            `{mode: {"path": str, "size_bytes": int, "latency":
            LatencyResult | dict, "parity": VerifyResult | dict}}` (each
            key optional; the size defaults to the latency's) with mode
            `"float32"`,
            `"int8"`, ...; a parity dict may add `"passed": False` and a
            `"message"`. Defaults to `None`.
        extra: more JSON-serialisable facts, stored under `"extra"`. Two
            keys are rendered: `extra["config"]` (a dict of run settings)
            and `extra["evaluation"]` (`{"accuracy": ..., "loss": ...}` of
            the final model on the test split, which then is the pruned
            accuracy in the summary). Defaults to `None`.

    Returns:
        The report as a dict (the content of `report.json`).
    """
    report = build_report(
        result, dense_baseline=dense_baseline, tflite=tflite, extra=extra
    )
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.atomic_write(
        run_dir / REPORT_JSON, json.dumps(report, indent=1, allow_nan=False)
    )
    _write_views(run_dir, report)
    return report


def load_report(run_dir: PathLike) -> dict:
    """Read `run_dir/report.json`.

    Raises:
        FileNotFoundError: if the run has no `report.json`.
        ValueError: if the file is not a keras-adp report.
    """
    path = pathlib.Path(run_dir) / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected a report at '{path}'. Received: no such file. It is "
            "written when `keras-adp train` finishes; `keras-adp report "
            f"{run_dir}` also reads the checkpoints of an unfinished run."
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"Expected '{path}' to be JSON. Received a file that does not "
            f"parse ({error}). Delete it and run `keras-adp report {run_dir}` "
            "to regenerate the report from the run's checkpoints."
        ) from error
    if not isinstance(report, dict) or "history" not in report:
        raise ValueError(
            f"Expected '{path}' to be a keras-adp report (with a `history`). "
            f"Received: JSON without one."
        )
    return report


def regenerate_report(run_dir: PathLike) -> dict:
    """Redraw `report.md` and the plots of `run_dir`.

    Reads `report.json`; without one, builds the report from the newest
    checkpoint's `state.json` (`report.json` is then not written, it stays
    the mark of a finished run).

    Returns:
        The report dict that was rendered.

    Raises:
        FileNotFoundError: if `run_dir` has neither a report nor a
            checkpoint.
    """
    run_dir = pathlib.Path(run_dir)
    if (run_dir / REPORT_JSON).is_file():
        report = load_report(run_dir)
    else:
        report = report_from_checkpoint(run_dir)
    _write_views(run_dir, report)
    return report


def report_from_checkpoint(run_dir: PathLike) -> dict:
    """The report of an unfinished run, from its newest `state.json`."""
    run_dir = pathlib.Path(run_dir)
    checkpoint = _newest_checkpoint(run_dir)
    state_path = checkpoint / checkpoints.STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"Expected a readable checkpoint state at '{state_path}'. "
            f"Received: {type(error).__name__}: {error}."
        ) from error
    result = training.ADPResult(
        model=None,
        history=state["history"],
        steps=state["steps"],
        dense=state["dense"],
    )
    config = {f"policy.{key}": value for key, value in state["policy"].items()}
    config["seed"] = state.get("seed")
    report = build_report(result, extra={"config": config})
    report["source"] = f"{checkpoint.name}/{checkpoints.STATE_FILE}"
    return report


def _write_views(run_dir: pathlib.Path, report: dict) -> None:
    """Write report.md and the plots."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_plots(report, run_dir)
    checkpoints.atomic_write(run_dir / REPORT_MD, render_markdown(report))


def _newest_checkpoint(run_dir: pathlib.Path) -> pathlib.Path:
    checkpoint = checkpoints.newest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(
            f"Expected a run directory with report.json or checkpoints. "
            f"Received: '{run_dir}', which has neither. Pass the --run-dir "
            "of a `keras-adp train` run."
        )
    return checkpoint
