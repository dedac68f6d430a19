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

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg canvas,
never through `pyplot`, so writing a report neither needs a display nor
changes matplotlib's global state.

Example:

```python
result = keras_adp.ADPTrainer(policy, run_dir="runs/demo").fit(model, ...)
keras_adp.report.write_report("runs/demo", result)
print(keras_adp.report.summary_table(keras_adp.report.load_report("runs/demo")))
```
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
from typing import Any, Union

import keras
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from keras_adp import metrics
from keras_adp import checkpoints
from keras_adp import training

PathLike = Union[str, os.PathLike]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_FORMAT_VERSION = 1
PLOT_FILES = {
    "widths": "widths.png",
    "density": "density.png",
    "accuracy_params": "accuracy_params.png",
    "final_widths": "final_widths.png",
}

_PACKAGES = (
    "keras-adp",
    "keras",
    "tensorflow",
    "numpy",
    "ai-edge-litert",
    "matplotlib",
)
# Legends with more entries than this go outside the axes.
_LEGEND_INSIDE_MAX = 8
_DPI = 120
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


# ---------------------------------------------------------------------------
# Public API.


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


def build_report(
    result: Any,
    *,
    dense_baseline: dict | None = None,
    tflite: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """The report dict of `write_report`, without writing anything."""
    history = checkpoints.jsonable(list(result.history))
    if not history:
        raise ValueError(
            "Expected a result with at least one epoch of history. "
            "Received: an empty history. Train for at least one epoch first."
        )
    extra = checkpoints.jsonable(dict(extra or {}))
    dense = checkpoints.jsonable(dict(result.dense))
    steps = _steps_with_decisions(checkpoints.jsonable(list(result.steps)), history)
    summary = checkpoints.jsonable(_summary(result, history, steps, dense))
    accuracy_key = _accuracy_key(history[-1]["logs"])
    evaluation = extra.get("evaluation") or {}
    if evaluation.get("accuracy") is not None:
        summary["accuracy"] = evaluation["accuracy"]
        summary["accuracy_source"] = "evaluation on the test split"
    else:
        summary["accuracy"] = (
            history[-1]["logs"].get(accuracy_key) if accuracy_key else None
        )
        summary["accuracy_source"] = (
            f"last epoch's {accuracy_key}" if accuracy_key else None
        )
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "summary": summary,
        "dense": dense,
        "dense_baseline": _dense_column(dense, dense_baseline, history),
        "history": history,
        "steps": steps,
        "tflite": checkpoints.jsonable(tflite or {}),
        "environment": environment(),
        "extra": extra,
        "plots": dict(PLOT_FILES),
    }


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
            "to rebuild the report from the run's checkpoints."
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


def render_markdown(report: dict) -> str:
    """The `report.md` text of a report dict."""
    extra = report.get("extra") or {}
    config = extra.get("config") or {}
    title = "ADP run report"
    if config.get("model") and config.get("dataset"):
        title += f": {config['model']} on {config['dataset']}"
    lines = [f"# {title}", ""]
    lines.append(f"Created {report.get('created', 'unknown')}.")
    if report.get("source"):
        lines.append(
            f"Built from checkpoint `{report['source']}`: the run has not "
            "finished (no report.json yet)."
        )
    lines += ["", "## Summary", "", summary_table(report), ""]
    if (report.get("dense_baseline") or {}).get("trained"):
        lines += [
            "Dense: the same model trained without pruning, with the same "
            "data, seed and epochs. Change: pruned relative to dense.",
            "",
        ]
    else:
        lines += [
            "Dense: the dense architecture, not trained. Its training MACs "
            "are estimated for the same epochs and samples; its TFLite size "
            "and latency, where shown, are those of the dense architecture "
            "(they do not depend on the weights).",
            "",
        ]
    accuracy_source = report["summary"].get("accuracy_source")
    if accuracy_source:
        lines += [f"Pruned accuracy: {accuracy_source}.", ""]
    if config:
        lines += ["## Settings", "", _config_table(config), ""]
    lines += ["## Pruning steps", ""]
    guard_note = _guard_note(report)
    if guard_note:
        lines += [guard_note, ""]
    lines += [_steps_table(report), ""]
    lines += ["## Per-layer widths", "", _widths_table(report), ""]
    lines += ["## Per-epoch history", "", _history_table(report), ""]
    if report.get("tflite") or (report.get("dense_baseline") or {}).get("tflite"):
        lines += ["## TFLite", "", _tflite_table(report), ""]
    lines += ["## Plots", ""]
    for name, caption in (
        ("widths", "Per-layer width over epochs"),
        ("density", "Per-layer activation density over epochs"),
        ("accuracy_params", "Accuracy and model size over epochs"),
        ("final_widths", "Final vs original width per layer"),
    ):
        lines += [f"![{caption}]({report.get('plots', PLOT_FILES)[name]})", ""]
    lines += ["## Environment", "", _environment_table(report), ""]
    return "\n".join(lines)


def summary_table(report: dict) -> str:
    """The dense vs pruned summary as a Markdown table."""
    summary = report["summary"]
    dense = report.get("dense_baseline") or _dense_column(
        report["dense"], None, report["history"]
    )
    last = report["history"][-1]
    final = {
        "params": summary.get("final_params", last["params"]),
        "macs": summary.get("final_macs", last["macs"]),
        "flops": summary.get("final_flops", last["flops"]),
    }
    rows = [("", "Dense", "Pruned (ADP)", "Change")]
    accuracy = summary.get("accuracy")
    dense_accuracy = dense.get("accuracy")
    source = summary.get("accuracy_source")
    rows.append(
        (
            "Test accuracy"
            if source in (None, "evaluation on the test split")
            else f"Accuracy ({source})",
            _percent(dense_accuracy) if dense_accuracy is not None else "not trained",
            _percent(accuracy),
            _points(accuracy, dense_accuracy),
        )
    )
    rows.append(
        (
            "Parameters",
            _count(dense["params"]),
            _count(final["params"]),
            _reduction(dense["params"], final["params"]),
        )
    )
    rows.append(
        (
            "MACs / inference",
            _si(dense["macs"]),
            _si(final["macs"]),
            _reduction(dense["macs"], final["macs"]),
        )
    )
    rows.append(
        (
            "FLOPs / inference",
            _si(dense["flops"]),
            _si(final["flops"]),
            _reduction(dense["flops"], final["flops"]),
        )
    )
    training_macs = summary.get("training_macs")
    if dense.get("trained"):
        dense_training = _si(dense.get("training_macs"))
    else:
        dense_training = f"{_si(dense.get('training_macs'))} (est.)"
    rows.append(
        (
            f"Training MACs ({len(report['history'])} epochs)",
            dense_training,
            _si(training_macs),
            _reduction(dense.get("training_macs"), training_macs),
        )
    )
    pruned_files = report.get("tflite") or {}
    dense_files = dense.get("tflite") or {}
    for mode in _modes(pruned_files, dense_files):
        pruned_file = pruned_files.get(mode) or {}
        dense_file = dense_files.get(mode) or {}
        rows.append(
            (
                f"TFLite {mode} size",
                _bytes(_size(dense_file)),
                _bytes(_size(pruned_file)),
                _reduction(_size(dense_file), _size(pruned_file)),
            )
        )
        rows.append(
            (
                f"TFLite {mode} latency (median)",
                _ms(_latency(dense_file)),
                _ms(_latency(pruned_file)),
                _ratio(_latency(dense_file), _latency(pruned_file), "faster"),
            )
        )
        if pruned_file.get("parity"):
            rows.append(
                (f"TFLite {mode} parity", "-", _parity(pruned_file["parity"]), "")
            )
    rows.append(("Pruning steps", "-", _steps_count(report), ""))
    return _table(rows)


def write_plots(report: dict, directory: PathLike) -> list[pathlib.Path]:
    """Draw the four plots of a report into `directory`; return their paths."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = {**PLOT_FILES, **(report.get("plots") or {})}
    paths = []
    for key, draw in (
        ("widths", _plot_widths),
        ("density", _plot_density),
        ("accuracy_params", _plot_accuracy_params),
        ("final_widths", _plot_final_widths),
    ):
        figure = draw(report)
        path = directory / names[key]
        FigureCanvasAgg(figure)
        figure.savefig(path, dpi=_DPI, bbox_inches="tight")
        paths.append(path)
    return paths


def environment() -> dict:
    """Python, platform, CPU count and versions of the packages in use."""
    packages = {}
    for package in _PACKAGES:
        try:
            packages[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            packages[package] = None
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        usable_cpus = os.cpu_count()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "keras_backend": keras.config.backend(),
        "packages": packages,
    }


# ---------------------------------------------------------------------------
# Report content.


def _summary(result: Any, history: list, steps: list, dense: dict) -> dict:
    """`result.summary()` plus the final FLOPs; for a result without a model
    (a checkpoint's), the same figures from the history."""
    model = getattr(result, "model", None)
    if model is not None:
        summary = dict(result.summary())
        summary["final_flops"] = metrics.inference_cost(model).flops
        return summary
    final = _final_cost(history, steps)
    outcomes = [_outcome(step) for step in steps]
    return {
        "epochs": len(history),
        "dense_params": dense.get("params"),
        "final_params": final["params"],
        "param_reduction": _quotient(dense.get("params"), final["params"]),
        "dense_macs": dense.get("macs"),
        "final_macs": final["macs"],
        "mac_reduction": _quotient(dense.get("macs"), final["macs"]),
        "final_flops": final["flops"],
        "training_macs": history[-1].get("cumulative_macs"),
        "prune_steps": sum(outcome != "rolled back" for outcome in outcomes),
        "rolled_back_steps": outcomes.count("rolled back"),
    }


def _final_cost(history: list, steps: list) -> dict:
    """Params, MACs and FLOPs of the model after the last epoch.

    That is the model trained in the last epoch, unless the accuracy guard
    rolled a step back at its end (then it is the model from before that
    step), or a step was taken at its end (a run that has not finished).
    """
    last = history[-1]
    cost = {key: last.get(key) for key in ("params", "macs", "flops")}
    step = _rolled_back_at_the_end(history, steps)
    if step is not None:
        cost = _cost_before(history, step)
    pruning = last.get("pruning") or {}
    if pruning.get("params_after") is not None and _outcome(pruning) != (
        "rolled back"
    ):
        cost = {
            "params": pruning["params_after"],
            "macs": pruning["macs_after"],
            "flops": None,  # Not trained yet, so not in the history.
        }
    return cost


def _final_widths(report: dict) -> dict:
    """Group widths of the model after the last epoch (see `_final_cost`)."""
    history = report["history"]
    last = history[-1]
    widths = dict(last.get("widths") or {})
    step = _rolled_back_at_the_end(history, report.get("steps") or [])
    if step is not None:
        widths.update(step["before"])
    pruning = last.get("pruning") or {}
    if pruning.get("after") and _outcome(pruning) != "rolled back":
        widths.update(pruning["after"])
    return widths


def _rolled_back_at_the_end(history: list, steps: list) -> dict | None:
    """The step the guard rolled back at the end of the last epoch, if any."""
    decision = history[-1].get("guard") or {}
    if not str(decision.get("action", "")).startswith("rolled back"):
        return None
    for step in steps:
        if (step["epoch"], step.get("attempt", 0)) == (
            decision["step_epoch"], decision.get("attempt", 0)
        ):
            return step
    return None


def _cost_before(history: list, step: dict) -> dict:
    """The cost of the model a step started from: the latest epoch that
    trained an architecture of its params and MACs."""
    for record in reversed(history):
        if (record.get("params"), record.get("macs")) == (
            step["params_before"], step["macs_before"]
        ):
            return {key: record.get(key) for key in ("params", "macs", "flops")}
    return {
        "params": step["params_before"], "macs": step["macs_before"],
        "flops": None,
    }


def _quotient(numerator, denominator) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _dense_column(dense: dict, dense_baseline: dict | None, history: list) -> dict:
    """The dense column: a trained baseline or the dense architecture."""
    column = {
        "trained": False,
        "accuracy": None,
        "params": dense.get("params"),
        "macs": dense.get("macs"),
        "flops": dense.get("flops"),
        "training_macs": _dense_training_estimate(dense, history),
        "tflite": {},
    }
    column.update(checkpoints.jsonable(dict(dense_baseline or {})))
    if dense_baseline and "trained" not in dense_baseline:
        column["trained"] = column["accuracy"] is not None
    return column


def _dense_training_estimate(dense: dict, history: list) -> float | None:
    """Training MACs of the dense model over the same epochs and samples.

    Each epoch's training compute scales with the forward MACs of the model
    trained in it, so the dense estimate is that epoch's `train_macs` times
    dense MACs / trained MACs (density measurements included likewise).
    """
    if not dense.get("macs"):
        return None
    total = 0.0
    for record in history:
        if not record.get("macs"):
            return None
        spent = (record.get("train_macs") or 0) + (record.get("measure_macs") or 0)
        total += spent * dense["macs"] / record["macs"]
    return total


def _accuracy_key(logs: dict) -> str | None:
    """The logged accuracy to report: validation first."""
    for key in ("val_accuracy", "accuracy"):
        if key in logs:
            return key
    candidates = [key for key in logs if key.endswith("accuracy")]
    validation = [key for key in candidates if key.startswith("val_")]
    return (validation or candidates or [None])[0]


def _group_names(history: list) -> list[str]:
    """Prunable group names in network order, as first recorded."""
    names: dict[str, None] = {}
    for record in history:
        for name in record.get("widths") or {}:
            names.setdefault(name)
    return list(names)


def _series(history: list, field: str, name: str) -> np.ndarray:
    return np.array(
        [_as_float((record.get(field) or {}).get(name)) for record in history]
    )


def _epochs(history: list) -> np.ndarray:
    """1-based epoch numbers."""
    return np.array([record["epoch"] + 1 for record in history])


# ---------------------------------------------------------------------------
# Markdown pieces.


def _config_table(config: dict) -> str:
    rows = [("Setting", "Value")]
    for key, value in _flatten(config).items():
        rows.append((key, "-" if value is None else str(value)))
    return _table(rows)


def _steps_table(report: dict) -> str:
    steps = _steps_with_decisions(report.get("steps") or [], report["history"])
    if not steps:
        return "No pruning step was taken."
    rows = [
        (
            "Step", "After epoch", "Attempt", "Outcome", "Judged after epoch",
            "Monitored value", "Reference", "Budget", "Params", "MACs",
            "Widths (before -> after)",
        )
    ]
    for number, step in enumerate(steps, start=1):
        decision = step.get("guard") or {}
        changes = ", ".join(
            f"{name} {step['before'][name]}->{width}"
            for name, width in step["after"].items()
        )
        judged = decision.get("epoch")
        rows.append(
            (
                str(number),
                str(step["epoch"] + 1),
                str(step.get("attempt", 0) + 1),
                decision.get("action") or _outcome(step),
                "-" if judged is None else str(judged + 1),
                _monitored(decision.get("monitor"), decision.get("value")),
                _decimal(decision.get("reference")),
                "-" if decision.get("budget") is None else f"{decision['budget']:g}",
                f"{step['params_before']:,} -> {step['params_after']:,}",
                f"{_si(step['macs_before'])} -> {_si(step['macs_after'])}",
                changes,
            )
        )
    return _table(rows)


def _guard_note(report: dict) -> str | None:
    """How the guard judged the steps, when it judged any."""
    steps = _steps_with_decisions(report.get("steps") or [], report["history"])
    if not any(step.get("guard") for step in steps):
        return None
    return (
        "Each step is a trial: after its recovery epochs, the accuracy guard "
        "compares the monitored value with its reference (the best value "
        "reached so far with a model it accepted) and rolls the step back, "
        "restoring the model from before it, when the value is worse by "
        "more than the budget. A rolled-back step is retried once with half "
        "the removal (attempt 2); if that is rolled back too, pruning stops."
    )


def _steps_with_decisions(steps: list, history: list) -> list:
    """`steps`, each with `"guard"`: the accuracy guard's decision on it,
    from the history (None when it was not judged, or the run predates the
    guard)."""
    decisions = {}
    for record in history:
        decision = record.get("guard")
        if decision:
            decisions[(decision["step_epoch"], decision.get("attempt", 0))] = decision
    return [
        step
        if "guard" in step
        else {
            **step,
            "guard": decisions.get((step["epoch"], step.get("attempt", 0))),
        }
        for step in steps
    ]


def _outcome(step: dict) -> str:
    """"accepted", "rolled back", "taken" (no guard, or a run from before
    the guard) or "on trial" (not judged yet)."""
    if "outcome" not in step:
        return "taken"
    return step["outcome"] or "on trial"


def _steps_count(report: dict) -> str:
    """'2 kept, 1 rolled back': the pruning steps by outcome."""
    outcomes = [_outcome(step) for step in report.get("steps") or []]
    kept = sum(outcome in ("accepted", "taken") for outcome in outcomes)
    parts = [f"{kept} kept"]
    for outcome in ("rolled back", "on trial"):
        if outcome in outcomes:
            parts.append(f"{outcomes.count(outcome)} {outcome}")
    return ", ".join(parts)


def _monitored(monitor, value) -> str:
    if monitor is None:
        return "-"
    return f"{monitor} {_decimal(value)}"


def _decimal(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _widths_table(report: dict) -> str:
    history = report["history"]
    rows = [("Group", "Original", "Final", "Kept", "Final density")]
    final_widths = _final_widths(report)
    for name in _group_names(history):
        original = _series(history, "widths", name)[0]
        final = _as_float(final_widths.get(name))
        density = _series(history, "density", name)[-1]
        rows.append(
            (
                name,
                _integer(original),
                _integer(final),
                _percent(final / original if original else None, digits=0),
                "-" if math.isnan(density) else f"{density:.3f}",
            )
        )
    return _table(rows)


def _history_table(report: dict) -> str:
    history = report["history"]
    log_keys = _plain_log_keys(history)
    with_guard = any(record.get("guard") for record in history)
    rows = [
        (
            "Epoch",
            *log_keys,
            "Params",
            "MACs",
            "Training MACs (cumulative)",
            "Pruned after",
            *(("Accuracy guard",) if with_guard else ()),
        )
    ]
    for record in history:
        pruning = record.get("pruning") or {}
        if pruning.get("stopped"):
            pruned = "stopped"
        elif pruning:
            pruned = f"{pruning['params_before']:,} -> {pruning['params_after']:,}"
            notes = []
            if pruning.get("attempt"):
                notes.append(f"attempt {pruning['attempt'] + 1}")
            if _outcome(pruning) in ("rolled back", "on trial"):
                notes.append(_outcome(pruning))
            if notes:
                pruned += f" ({', '.join(notes)})"
        else:
            pruned = ""
        logs = record.get("logs") or {}
        decision = record.get("guard")
        guard_cell = ()
        if with_guard:
            guard_cell = (
                f"step of epoch {decision['step_epoch'] + 1}: "
                f"{decision.get('action', '-')}"
                if decision
                else "",
            )
        rows.append(
            (
                str(record["epoch"] + 1),
                *(_number(logs.get(key)) for key in log_keys),
                f"{record['params']:,}",
                _si(record["macs"]),
                _si(record.get("cumulative_macs")),
                pruned,
                *guard_cell,
            )
        )
    return _table(rows)


def _tflite_table(report: dict) -> str:
    rows = [
        ("Model", "Mode", "File", "Size", "gzip", "Latency median (p10-p90)",
         "Parity")
    ]
    dense_files = (report.get("dense_baseline") or {}).get("tflite") or {}
    pruned_files = report.get("tflite") or {}
    for label, files in (("pruned", pruned_files), ("dense", dense_files)):
        for mode, entry in files.items():
            latency = entry.get("latency") or {}
            spread = ""
            if latency.get("p10_ms") is not None:
                spread = f" ({latency['p10_ms']:.3f}-{latency['p90_ms']:.3f})"
            rows.append(
                (
                    label,
                    mode,
                    f"`{os.path.basename(entry['path'])}`"
                    if entry.get("path")
                    else "-",
                    _bytes(_size(entry)),
                    _bytes(latency.get("gzip_size_bytes")),
                    _ms(latency.get("median_ms")) + spread,
                    _parity(entry.get("parity")) if entry.get("parity") else "-",
                )
            )
    return _table(rows)


def _environment_table(report: dict) -> str:
    env = report.get("environment") or {}
    rows = [("Item", "Value")]
    for key in ("python", "platform", "cpu_count", "usable_cpus", "keras_backend"):
        if key in env:
            rows.append((key, str(env[key])))
    for package, version in (env.get("packages") or {}).items():
        rows.append((package, version or "not installed"))
    return _table(rows)


def _plain_log_keys(history: list) -> list[str]:
    """Loss and metric keys, without the per-group density logs."""
    keys: dict[str, None] = {}
    for record in history:
        for key in record.get("logs") or {}:
            if not key.startswith("density/"):
                keys.setdefault(key)
    return list(keys)


def _parity(parity: dict) -> str:
    text = (
        f"top-1 {_percent(parity.get('top1_agreement'))}, "
        f"max err {_number(parity.get('max_abs_error'))}, "
        f"n={parity.get('num_samples')}"
    )
    if parity.get("passed") is False:
        text = "FAILED: " + text
    return text


def _modes(*file_maps: dict) -> list[str]:
    modes: dict[str, None] = {}
    for files in file_maps:
        for mode in files:
            modes.setdefault(mode)
    return list(modes)


def _size(entry: dict) -> int | None:
    if entry.get("size_bytes") is not None:
        return entry["size_bytes"]
    return (entry.get("latency") or {}).get("size_bytes")


def _latency(entry: dict) -> float | None:
    return (entry.get("latency") or {}).get("median_ms")


def _table(rows: list[tuple]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in body:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------------------
# Number formatting.


def _si(value) -> str:
    """1234567 -> '1.23 M'."""
    if value is None:
        return "-"
    value = float(value)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.3g}"


def _count(value) -> str:
    return "-" if value is None else f"{value:,}"


def _bytes(value) -> str:
    if value is None:
        return "-"
    if value >= 1024 * 1024:
        return f"{value / (1024 * 1024):.2f} MiB"
    if value >= 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value} B"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def _percent(value, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _points(value, reference) -> str:
    if value is None or reference is None:
        return ""
    return f"{100 * (value - reference):+.2f} pts"


def _reduction(before, after) -> str:
    """'-75.0% (4.00x smaller)': the change from `before` to `after`."""
    if not before or not after:
        return ""
    return f"{100 * (after / before - 1):+.1f}% ({before / after:.2f}x smaller)"


def _ratio(before, after, word: str = "smaller") -> str:
    if not before or not after:
        return ""
    return f"{before / after:.2f}x {word}"


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def _integer(value: float) -> str:
    return "-" if math.isnan(value) else str(int(value))


def _as_float(value) -> float:
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------------------
# Plots.


def _plot_widths(report: dict) -> Figure:
    history = report["history"]
    names = _group_names(history)
    figure, axes = _figure_for_groups(len(names))
    epochs = _epochs(history)
    for index, name in enumerate(names):
        axes.plot(
            epochs,
            _series(history, "widths", name),
            label=name,
            drawstyle="steps-mid",
            **_group_style(index, len(names)),
        )
    _mark_pruning_steps(axes, report)
    widths = [
        value
        for name in names
        for value in _series(history, "widths", name)
        if not math.isnan(value)
    ]
    if widths and max(widths) / max(1, min(widths)) > 16:
        axes.set_yscale("log", base=2)
        axes.yaxis.set_major_formatter(ScalarFormatter())
    axes.set_title("Per-layer width over epochs")
    axes.set_xlabel("epoch (width trained in that epoch)")
    axes.set_ylabel("channels")
    _epoch_ticks(axes)
    _legend(axes, len(names))
    return figure


def _plot_density(report: dict) -> Figure:
    history = report["history"]
    names = _group_names(history)
    figure, axes = _figure_for_groups(len(names))
    epochs = _epochs(history)
    for index, name in enumerate(names):
        axes.plot(
            epochs,
            _series(history, "density", name),
            label=name,
            **_group_style(index, len(names)),
        )
    _mark_pruning_steps(axes, report)
    axes.set_ylim(0, 1.02)
    axes.set_title("Per-layer activation density over epochs")
    axes.set_xlabel("epoch (measured at its end)")
    axes.set_ylabel("activation density (fraction of non-zero outputs)")
    _epoch_ticks(axes)
    _legend(axes, len(names))
    return figure


def _plot_accuracy_params(report: dict) -> Figure:
    history = report["history"]
    epochs = _epochs(history)
    figure = Figure(figsize=(7, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    log_keys = _plain_log_keys(history)
    quantity = "accuracy" if any(key.endswith("accuracy") for key in log_keys) else "loss"
    dense_history = (report.get("dense_baseline") or {}).get("history") or []
    for key in log_keys:
        if key.endswith(quantity):
            values = [_as_float(record["logs"].get(key)) for record in history]
            (line,) = top.plot(epochs, values, marker="o", markersize=3, label=key)
            if any(key in (record.get("logs") or {}) for record in dense_history):
                top.plot(
                    _epochs(dense_history),
                    [
                        _as_float((record.get("logs") or {}).get(key))
                        for record in dense_history
                    ],
                    color=line.get_color(),
                    linestyle="--",
                    linewidth=1,
                    label=f"{key}, dense baseline",
                )
    _mark_pruning_steps(top, report)
    top.set_ylabel(quantity)
    top.set_title("Accuracy and model size over epochs")
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize="small")
    params = [record["params"] for record in history]
    macs = [record["macs"] for record in history]
    bottom.plot(
        epochs, params, marker="o", markersize=3, drawstyle="steps-mid",
        label="parameters",
    )
    bottom.plot(
        epochs, macs, marker="s", markersize=3, drawstyle="steps-mid",
        label="MACs / inference",
    )
    _mark_pruning_steps(bottom, report)
    bottom.set_yscale("log")
    bottom.set_ylabel("count (log scale)")
    bottom.set_xlabel("epoch")
    bottom.legend(fontsize="small")
    _epoch_ticks(bottom)
    return figure


def _plot_final_widths(report: dict) -> Figure:
    history = report["history"]
    names = _group_names(history)
    original = np.array([_series(history, "widths", name)[0] for name in names])
    final_widths = _final_widths(report)
    final = np.array([_as_float(final_widths.get(name)) for name in names])
    height = max(3.0, 0.32 * len(names) + 1.5)
    figure = Figure(figsize=(7, height), layout="constrained")
    axes = figure.subplots()
    positions = np.arange(len(names))
    axes.barh(positions, original, color="#c9d3e0", label="original (dense)")
    axes.barh(positions, final, height=0.55, color="#1f5fa8", label="final (ADP)")
    for position, kept, total in zip(positions, final, original):
        if not math.isnan(kept):
            axes.text(
                total, position, f" {int(kept)}/{_integer(total)}",
                va="center", fontsize="x-small",
            )
    axes.set_yticks(
        positions, names, fontsize="small" if len(names) <= 20 else "x-small"
    )
    axes.invert_yaxis()
    axes.set_xlim(0, np.nanmax(original) * 1.18 if len(names) else 1)
    axes.set_xlabel("channels")
    figure.suptitle("Final vs original width per layer")
    figure.legend(loc="outside lower center", ncol=2, fontsize="small", frameon=False)
    return figure


def _figure_for_groups(count: int) -> tuple[Figure, Any]:
    """A figure wide enough for an outside legend when there are many groups."""
    width = 7.0 if count <= _LEGEND_INSIDE_MAX else 7.0 + 1.8 * _legend_columns(count)
    figure = Figure(figsize=(width, 4.5), layout="constrained")
    return figure, figure.subplots()


def _group_style(index: int, count: int) -> dict:
    """Distinct colours and markers (groups with equal values overlap);
    past 10 groups also line styles, past 20 a colour map."""
    if count <= 10:
        colour = f"C{index}"
    elif count <= 20:
        colour = matplotlib.colormaps["tab20"](index)
    else:
        colour = matplotlib.colormaps["viridis"](index / max(1, count - 1))
    linestyle = ("-", "--", ":", "-.")[(index // 10) % 4] if count > 10 else "-"
    return {
        "color": colour,
        "linestyle": linestyle,
        "marker": _MARKERS[index % len(_MARKERS)],
        "markersize": 4,
    }


def _legend_columns(count: int) -> int:
    return max(1, math.ceil(count / 18))


def _legend(axes, count: int) -> None:
    if count <= _LEGEND_INSIDE_MAX:
        axes.legend(fontsize="small")
    else:
        axes.legend(
            fontsize="x-small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=_legend_columns(count),
            title="group",
            title_fontsize="small",
        )


def _mark_pruning_steps(axes, report: dict) -> None:
    """A line after each epoch that ended with a pruning step: dotted grey
    for a step that was kept (or is still on trial), dashed red for one
    that was rolled back, with a red band over the epochs it was on trial
    (trained pruned, then undone)."""
    labelled = set()

    def label(text):
        if text in labelled:
            return None
        labelled.add(text)
        return text

    steps = _steps_with_decisions(report.get("steps") or [], report["history"])
    for step in steps:
        position = step["epoch"] + 1.5
        if _outcome(step) != "rolled back":
            axes.axvline(
                position, color="grey", linestyle=":", linewidth=1,
                label=label("pruning step"), zorder=0,
            )
            continue
        axes.axvline(
            position, color="tab:red", linestyle="--", linewidth=1.2,
            label=label("pruning step, rolled back"), zorder=0,
        )
        judged = (step.get("guard") or {}).get("epoch")
        if judged is not None:
            axes.axvspan(
                position, judged + 1.5, color="tab:red", alpha=0.08,
                linewidth=0, zorder=0,
                label=label("epochs on trial before the rollback"),
            )


def _epoch_ticks(axes) -> None:
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


# ---------------------------------------------------------------------------
# Files.


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
