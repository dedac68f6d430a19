"""The plots of a run report.

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg canvas,
never through `pyplot`, so writing a report neither needs a display nor
changes matplotlib's global state.
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Union

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from keras_adp import report_data as content

__all__ = ["write_plots"]

PathLike = Union[str, os.PathLike]

# Legends with more entries than this go outside the axes.
_LEGEND_INSIDE_MAX = 8
_DPI = 120
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def write_plots(report: dict, directory: PathLike) -> list[pathlib.Path]:
    """Draw the four plots of a report into `directory`; return their paths."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = {**content.PLOT_FILES, **(report.get("plots") or {})}
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


def _plot_widths(report: dict) -> Figure:
    figure, axes, values = _plot_group_series(
        report,
        "widths",
        title="Per-layer width over epochs",
        xlabel="epoch (width trained in that epoch)",
        ylabel="channels",
        drawstyle="steps-mid",
    )
    widths = values[~np.isnan(values)]
    if widths.size and widths.max() / max(1, widths.min()) > 16:
        axes.set_yscale("log", base=2)
        axes.yaxis.set_major_formatter(ScalarFormatter())
    return figure


def _plot_density(report: dict) -> Figure:
    figure, axes, _ = _plot_group_series(
        report,
        "density",
        title="Per-layer activation density over epochs",
        xlabel="epoch (measured at its end)",
        ylabel="activation density (fraction of non-zero outputs)",
    )
    axes.set_ylim(0, 1.02)
    return figure


def _plot_group_series(
    report: dict, field: str, *, title: str, xlabel: str, ylabel: str,
    **line_options,
) -> tuple[Figure, Any, np.ndarray]:
    """One line per group of the history's `field` over epochs, with the
    pruning steps marked.

    Returns:
        `(figure, axes, values)`: `values` holds every plotted value (NaN
        where a group has none), flattened.
    """
    history = report["history"]
    names = content.group_names(history)
    figure, axes = _figure_for_groups(len(names))
    epochs = content.epoch_numbers(history)
    values = []
    for index, name in enumerate(names):
        values.append(content.series(history, field, name))
        axes.plot(
            epochs,
            values[-1],
            label=name,
            **line_options,
            **_group_style(index, len(names)),
        )
    _mark_pruning_steps(axes, report)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    _epoch_ticks(axes)
    _legend(axes, len(names))
    return figure, axes, np.concatenate(values) if values else np.array([])


def _plot_accuracy_params(report: dict) -> Figure:
    history = report["history"]
    epochs = content.epoch_numbers(history)
    figure = Figure(figsize=(7, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    log_keys = content.plain_log_keys(history)
    quantity = "accuracy" if any(key.endswith("accuracy") for key in log_keys) else "loss"
    dense_history = (report.get("dense_baseline") or {}).get("history") or []
    for key in log_keys:
        if key.endswith(quantity):
            values = [content.as_float(record["logs"].get(key)) for record in history]
            (line,) = top.plot(epochs, values, marker="o", markersize=3, label=key)
            if any(key in (record.get("logs") or {}) for record in dense_history):
                top.plot(
                    content.epoch_numbers(dense_history),
                    [
                        content.as_float((record.get("logs") or {}).get(key))
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
    names = content.group_names(history)
    original = np.array([content.series(history, "widths", name)[0] for name in names])
    final_widths = content.final_widths(report)
    final = np.array([content.as_float(final_widths.get(name)) for name in names])
    height = max(3.0, 0.32 * len(names) + 1.5)
    figure = Figure(figsize=(7, height), layout="constrained")
    axes = figure.subplots()
    positions = np.arange(len(names))
    axes.barh(positions, original, color="#c9d3e0", label="original (dense)")
    axes.barh(positions, final, height=0.55, color="#1f5fa8", label="final (ADP)")
    for position, kept, total in zip(positions, final, original):
        if not math.isnan(kept):
            axes.text(
                total, position, f" {int(kept)}/{content.format_integer(total)}",
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

    steps = content.steps_with_decisions(report.get("steps") or [], report["history"])
    for step in steps:
        position = step["epoch"] + 1.5
        if content.step_outcome(step) != "rolled back":
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
