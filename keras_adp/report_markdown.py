"""The Markdown of a run report (`report.md`) and its summary table."""

from __future__ import annotations

import math
import os

from keras_adp import report_data as content

__all__ = ["render_markdown", "summary_table"]


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
        lines += [f"![{caption}]({report.get('plots', content.PLOT_FILES)[name]})", ""]
    lines += ["## Environment", "", _environment_table(report), ""]
    return "\n".join(lines)


def summary_table(report: dict) -> str:
    """The dense vs pruned summary as a Markdown table."""
    summary = report["summary"]
    dense = report.get("dense_baseline") or content.dense_column(
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
    for label, key, shown in (
        ("Parameters", "params", _count),
        ("MACs / inference", "macs", _si),
        ("FLOPs / inference", "flops", _si),
    ):
        rows.append(
            (
                label,
                shown(dense[key]),
                shown(final[key]),
                _reduction(dense[key], final[key]),
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
    rows += _tflite_rows(report.get("tflite") or {}, dense.get("tflite") or {})
    rows.append(("Pruning steps", "-", _steps_count(report), ""))
    budget = (report.get("extra") or {}).get("budget")
    if budget:
        rows.append(
            (
                f"Final {budget['monitor']} (accuracy budget "
                f"{budget['budget']:g})",
                f"{budget['dense']:.4f}",
                f"{budget['value']:.4f}",
                f"{'within' if budget['met'] else 'OUTSIDE'} the budget",
            )
        )
    return _table(rows)


def _tflite_rows(pruned_files: dict, dense_files: dict) -> list[tuple]:
    """Summary rows of the TFLite files: size, latency, parity per mode."""
    rows = []
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
    return rows


def _config_table(config: dict) -> str:
    rows = [("Setting", "Value")]
    for key, value in _flatten(config).items():
        rows.append((key, "-" if value is None else str(value)))
    return _table(rows)


def _steps_table(report: dict) -> str:
    steps = content.steps_with_decisions(report.get("steps") or [], report["history"])
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
                decision.get("action") or content.step_outcome(step),
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
    steps = content.steps_with_decisions(report.get("steps") or [], report["history"])
    if not any(step.get("guard") for step in steps):
        return None
    return (
        "Each step is a trial: after its recovery epochs, the accuracy guard "
        "compares the monitored value with its reference (the best value "
        "reached so far with a model it accepted, or a dense run's value at "
        "that epoch when `ADPPolicy.dense_reference` gives one and it is "
        "stricter) and rolls the step back, "
        "restoring the model from before it, when the value is worse by "
        "more than the budget. A rolled-back step is retried once with half "
        "the removal (attempt 2); if that is rolled back too, pruning stops."
    )


def _steps_count(report: dict) -> str:
    """'2 kept, 1 rolled back': the pruning steps by outcome."""
    outcomes = [content.step_outcome(step) for step in report.get("steps") or []]
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
    final_widths = content.final_widths(report)
    for name in content.group_names(history):
        original = content.series(history, "widths", name)[0]
        final = content.as_float(final_widths.get(name))
        density = content.series(history, "density", name)[-1]
        rows.append(
            (
                name,
                content.format_integer(original),
                content.format_integer(final),
                _percent(final / original if original else None, digits=0),
                "-" if math.isnan(density) else f"{density:.3f}",
            )
        )
    return _table(rows)


def _history_table(report: dict) -> str:
    history = report["history"]
    log_keys = content.plain_log_keys(history)
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
            if content.step_outcome(pruning) in ("rolled back", "on trial"):
                notes.append(content.step_outcome(pruning))
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
