"""`keras-adp train`: check the run directory, run the experiment, print
the summary.

The handler checks what only the command line knows (`--resume`,
`--overwrite`, the options a resumed run was started with, recorded in
`OPTIONS_FILE`), then `keras_adp.experiment.run_training` trains and
prunes, trains the dense baseline, evaluates, exports and writes the
report; the handler prints where the files are and the summary table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shlex
import shutil
import sys

from keras_adp import checkpoints
from keras_adp import experiment
from keras_adp import report as report_lib
from keras_adp.litert_interpreter import one_line

__all__ = [
    "train",
    "OPTIONS_FILE",
    "RUN_DEFINING_OPTIONS",
    "say",
    "warn",
]

OPTIONS_FILE = "train_options.json"

# `train` options that define the model and the data; resuming a run with
# other values would silently train something else.
RUN_DEFINING_OPTIONS = (
    "model", "dataset", "data_dir", "width", "limit", "validation_split",
    "augment", "batch_size", "seed",
)



def train(args: argparse.Namespace) -> int:
    """Runs `keras-adp train` with the parsed `args`; returns 0."""
    options = _train_options(args)
    run_dir = pathlib.Path(options.run_dir)
    _prepare_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
    _record_or_check_options(run_dir, args)
    try:
        run = experiment.run_training(options, say=say, warn=warn)
    except experiment.RunInterrupted as interrupted:
        where = (
            "while the dense baseline trained (it is not checkpointed and "
            "trains again)"
            if interrupted.in_baseline
            else f"; the finished epochs are checkpointed in '{run_dir}'"
        )
        print(
            f"\n[keras-adp] stopped {where}. Continue with: "
            f"{_resume_command(args)}",
            file=sys.stderr,
        )
        raise
    print(
        f"\nReport: {run_dir / report_lib.REPORT_MD} (numbers in "
        f"{report_lib.REPORT_JSON}; plots "
        f"{', '.join(report_lib.PLOT_FILES.values())})"
    )
    print(f"Pruned model: {run_dir / checkpoints.FINAL_MODEL_FILE}\n")
    print(report_lib.summary_table(run.report))
    return 0


def _train_options(args: argparse.Namespace) -> experiment.TrainOptions:
    """The `train` options as the experiment's `TrainOptions`."""
    names = {
        field.name for field in dataclasses.fields(experiment.TrainOptions)
    } - {"run_dir", "export"}
    run_dir = args.run_dir or experiment.default_run_dir(
        args.model, args.dataset
    )
    return experiment.TrainOptions(
        **{name: getattr(args, name) for name in names},
        run_dir=str(run_dir),
        export=not args.no_export,
    )


def _prepare_run_dir(run_dir: pathlib.Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs' checkpoints in one directory; say when
    --resume finds nothing to resume."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(
            f"Expected --run-dir to be a directory. Received: '{run_dir}', "
            "which is a file. Pass another --run-dir."
        )
    if resume and not checkpoints.has_checkpoint(run_dir):
        say(
            f"nothing to resume in '{run_dir}' (no checkpoint); starting a "
            "new run there"
        )
    previous = _run_files(run_dir)
    if not previous or resume:
        return
    if not overwrite:
        raise ValueError(
            f"Run directory '{run_dir}' already holds a run "
            f"({', '.join(sorted(path.name for path in previous)[:3])}, ...). "
            "Pass --resume to continue it, --overwrite to delete it and start "
            "over, or another --run-dir."
        )
    for path in previous:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _record_or_check_options(run_dir: pathlib.Path, args: argparse.Namespace) -> None:
    """Save a new run's options; check a resumed run's against them."""
    path = run_dir / OPTIONS_FILE
    options = {
        name: value
        for name, value in vars(args).items()
        if name not in ("handler", "command_line")
    }
    if args.resume and path.is_file():
        try:
            started = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(started, dict):
                raise ValueError(f"a JSON {type(started).__name__}, not an object")
        except (ValueError, OSError) as error:
            problem = one_line(error, keep_period=True)
            raise ValueError(
                f"Could not read the options the run in '{run_dir}' was "
                f"started with, from '{path}' ({problem}). Delete "
                "that file to resume without the check, or pass --overwrite "
                "to start over."
            ) from error
        changed = [
            f"--{name.replace('_', '-')} {_shown(started.get(name))} "
            f"(now {_shown(options[name])})"
            for name in RUN_DEFINING_OPTIONS
            if started.get(name) != options[name]
        ]
        if changed:
            raise ValueError(
                f"Run directory '{run_dir}' was started with "
                f"{'; '.join(changed)}. Pass the same model and data options "
                "with --resume, or --overwrite to start over."
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(options, indent=1), encoding="utf-8")


def _shown(value) -> str:
    return "not set" if value is None else str(value)


def _run_files(run_dir: pathlib.Path) -> list[pathlib.Path]:
    """The files a `keras-adp train` run writes, where they exist."""
    if not run_dir.is_dir():
        return []
    names = {
        checkpoints.LATEST_FILE,
        checkpoints.FINAL_MODEL_FILE,
        OPTIONS_FILE,
        report_lib.REPORT_JSON,
        report_lib.REPORT_MD,
        *report_lib.PLOT_FILES.values(),
    }
    return [
        path
        for path in run_dir.iterdir()
        if path.name in names
        or path.name.startswith("checkpoint-")
        or (path.suffix == ".tflite" and path.stem.startswith(("model_", "dense_")))
    ]


def _resume_command(args: argparse.Namespace) -> str:
    """This command line, made to resume the run."""
    words = [word for word in args.command_line if word != "--overwrite"]
    if "--resume" not in words:
        words.append("--resume")
    return shlex.join(["keras-adp", *words])


def say(text: str) -> None:
    """Prints a `[keras-adp]` progress line."""
    print(f"[keras-adp] {text}", flush=True)


def warn(text: str) -> None:
    """Prints a warning line to standard error."""
    print(text, file=sys.stderr)
