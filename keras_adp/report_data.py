"""The content of a run report: the `report.json` dict and the figures
the Markdown and the plots read from it (`keras_adp.report` writes the
files).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import platform
from typing import Any

import keras
import numpy as np

from keras_adp import checkpoints
from keras_adp import metrics

__all__ = [
    "REPORT_FORMAT_VERSION",
    "PLOT_FILES",
    "build_report",
    "environment",
    "steps_with_decisions",
    "step_outcome",
    "final_widths",
    "dense_column",
    "group_names",
    "series",
    "epoch_numbers",
    "plain_log_keys",
    "as_float",
    "format_integer",
]

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
    steps = steps_with_decisions(checkpoints.jsonable(list(result.steps)), history)
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
        "dense_baseline": dense_column(dense, dense_baseline, history),
        "history": history,
        "steps": steps,
        "tflite": checkpoints.jsonable(tflite or {}),
        "environment": environment(),
        "extra": extra,
        "plots": dict(PLOT_FILES),
    }


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


def _summary(result: Any, history: list, steps: list, dense: dict) -> dict:
    """`result.summary()` plus the final FLOPs; for a result without a model
    (a checkpoint's), the same figures from the history."""
    model = getattr(result, "model", None)
    if model is not None:
        summary = dict(result.summary())
        summary["final_flops"] = metrics.inference_cost(model).flops
        return summary
    final = _final_cost(history, steps)
    outcomes = [step_outcome(step) for step in steps]
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
    if pruning.get("params_after") is not None and step_outcome(pruning) != (
        "rolled back"
    ):
        cost = {
            "params": pruning["params_after"],
            "macs": pruning["macs_after"],
            "flops": None,  # Not trained yet, so not in the history.
        }
    return cost


def final_widths(report: dict) -> dict:
    """Group widths of the model after the last epoch (see `_final_cost`)."""
    history = report["history"]
    last = history[-1]
    widths = dict(last.get("widths") or {})
    step = _rolled_back_at_the_end(history, report.get("steps") or [])
    if step is not None:
        widths.update(step["before"])
    pruning = last.get("pruning") or {}
    if pruning.get("after") and step_outcome(pruning) != "rolled back":
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


def dense_column(dense: dict, dense_baseline: dict | None, history: list) -> dict:
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


def group_names(history: list) -> list[str]:
    """Prunable group names in network order, as first recorded."""
    names: dict[str, None] = {}
    for record in history:
        for name in record.get("widths") or {}:
            names.setdefault(name)
    return list(names)


def series(history: list, field: str, name: str) -> np.ndarray:
    """`record[field][name]` of each epoch record, NaN where missing."""
    return np.array(
        [as_float((record.get(field) or {}).get(name)) for record in history]
    )


def epoch_numbers(history: list) -> np.ndarray:
    """1-based epoch numbers."""
    return np.array([record["epoch"] + 1 for record in history])


def steps_with_decisions(steps: list, history: list) -> list:
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


def step_outcome(step: dict) -> str:
    """"accepted", "rolled back", "taken" (no guard, or a run from before
    the guard) or "on trial" (not judged yet)."""
    if "outcome" not in step:
        return "taken"
    return step["outcome"] or "on trial"


def plain_log_keys(history: list) -> list[str]:
    """Loss and metric keys, without the per-group density logs."""
    keys: dict[str, None] = {}
    for record in history:
        for key in record.get("logs") or {}:
            if not key.startswith("density/"):
                keys.setdefault(key)
    return list(keys)


def format_integer(value: float) -> str:
    """`value` as an integer, or "-" for NaN."""
    return "-" if math.isnan(value) else str(int(value))


def as_float(value) -> float:
    """`value` as a float, NaN for None."""
    return float("nan") if value is None else float(value)
