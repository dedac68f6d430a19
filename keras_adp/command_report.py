"""`keras-adp report`: rewrite a run's report.md and plots, print the
summary (`keras_adp.report.regenerate_report`)."""

from __future__ import annotations

import argparse
import pathlib

from keras_adp import report as report_lib

__all__ = [
    "report",
]


def report(args: argparse.Namespace) -> int:
    """Runs `keras-adp report` with the parsed `args`; returns 0."""
    run_dir = pathlib.Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"Expected a run directory. Received: '{run_dir}', which "
            f"{'is a file' if run_dir.exists() else 'does not exist'}. Pass "
            "the --run-dir of a `keras-adp train` run."
        )
    rewritten = report_lib.regenerate_report(run_dir)
    if rewritten.get("source"):
        print(f"no {report_lib.REPORT_JSON} yet; read {rewritten['source']}")
    print(
        f"wrote {run_dir / report_lib.REPORT_MD} and "
        f"{', '.join(report_lib.PLOT_FILES.values())}"
    )
    print()
    print(report_lib.summary_table(rewritten))
    return 0
