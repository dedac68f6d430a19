"""The `keras-adp` subcommands: their argument parsers and handlers.

`keras_adp.cli.main(argv)` (the console script) hides TensorFlow's log
lines, then calls `run(argv)` here. Each handler parses, checks what only
the command line knows, calls the library and prints:

- `train`: checks the run directory (`--resume`, `--overwrite`, the options
  a resumed run was started with), then `keras_adp.experiment.run_training`
  trains and prunes, trains the dense baseline, evaluates, exports and
  writes the report; the handler prints the summary.
- `export`: `keras_adp.export` converts, checks parity and times a model.
- `report`: `keras_adp.report.regenerate_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import shlex
import shutil
import sys
import zipfile

import keras
import numpy as np

from keras_adp import checkpoints
from keras_adp import cli
from keras_adp import data
from keras_adp import experiment
from keras_adp import export
from keras_adp import inputs as inputs_lib
from keras_adp import models
from keras_adp import report as report_lib
from keras_adp import training
from keras_adp.policy import ADPPolicy, SELECTIONS, TRIGGERS, WIDTH_RULES

__all__ = [
    "run",
    "build_parser",
    "OPTIONS_FILE",
]

OPTIONS_FILE = "train_options.json"
EXPORT_SAMPLES = 200
RANDOM_PARITY_SAMPLES = 64
_MAX_SEED = 2**31 - 1

# `train` options that define the model and the data; resuming a run with
# other values would silently train something else.
_RUN_DEFINING_OPTIONS = (
    "model", "dataset", "data_dir", "width", "limit", "validation_split",
    "augment", "batch_size", "seed",
)

# Exceptions whose message says what went wrong and how to fix it: printed
# as one line, without a traceback.
_USER_ERRORS = (ValueError, OSError, training.TrainingDivergedError)

_MAIN_DESCRIPTION = """\
Activation Density driven Pruning in training (arXiv 2002.02949) for Keras 3:
train a model from scratch while physically removing the channels it does
not use, then export the smaller model to TFLite.
"""

_MAIN_EPILOG = """\
Start with `keras-adp train` (no options: the whole job in a few minutes on
a CPU), then read the report it points to. `keras-adp COMMAND --help`
describes each command.
"""

_TRAIN_DESCRIPTION = """\
Train a reference model from scratch with activation-density driven pruning:
after a few dense warm-up epochs, each pruning step measures every layer's
activation density (the fraction of its ReLU outputs that are non-zero) and
rebuilds the model with that fraction of the layer's channels. Each step is
a trial: after a recovery epoch the accuracy guard compares the validation
accuracy with the best one so far and rolls the step back if it dropped by
more than --max-accuracy-drop (then retries half the removal once, then
stops pruning).

Validation uses --validation-split of the training data, held out and never
trained on; the test split is only used at the end. The same model is also
trained without pruning, with the same data, seed and epochs (the dense
baseline; --no-dense-baseline skips it), and the summary puts the two side
by side: test accuracy, parameters, MACs, TFLite size and latency. Then both
are exported to TFLite (float32 and int8) and the report is written.

The pruning options default to ADPPolicy's: after one dense epoch, every
epoch each layer shrinks by its activation density relative to the densest
layer's, each step on trial before the accuracy guard.
"""

_EXPORT_DESCRIPTION = """\
Convert a saved Keras model to a TFLite file, check that the file computes
what the model computes (parity), and time single-sample inference.
"""

_TRAIN_EPILOG = """\
examples:
  keras-adp train
      the default job: vgg_small (width 0.5) on the bundled Fashion-MNIST
      subset, 8 epochs, pruned after epochs 2 and 4 (as the accuracy guard
      allows), then the dense baseline; a few minutes on CPU
  keras-adp train --epochs 3 --limit 512 --no-dense-baseline --run-dir runs/smoke
      a quick smoke run on the first 512 samples, without the baseline
  keras-adp train --model vgg19 --dataset cifar10 --width 1 --epochs 60 \\
      --batch-size 128 --lr 1e-3 --trigger converged --max-prune-steps none \\
      --round-to 8 --augment
      closer to the paper's setting (needs tensorflow_datasets' CIFAR-10)
  keras-adp train --epochs 5 --limit 512 --run-dir runs/smoke --resume
      continue that run (killed, or to train longer) from its last
      checkpoint; options that define the model and data must not change

files in the run directory:
  checkpoint-NNNN/, LATEST   per-epoch checkpoints (the last two), for --resume
  train_options.json         the options the run was started with
  model.keras                the final pruned model, with its optimizer
  model_float32.tflite, model_int8.tflite
                             the pruned model in TFLite (unless --no-export)
  dense_float32.tflite, dense_int8.tflite
                             the dense baseline in TFLite (with
                             --no-dense-baseline, the dense architecture),
                             for the size and latency comparison
  report.json, report.md     every number of the run; summary tables
  widths.png, density.png, accuracy_params.png, final_widths.png
                             per-layer width and density over epochs,
                             accuracy and size over epochs, final widths

A failed TFLite parity check is a warning here (it is recorded in the
report); `keras-adp export` treats it as an error.

TensorFlow's own log lines (C++ and Python) are hidden; --tf-logs shows them.
"""

_EXPORT_EPILOG = """\
examples:
  keras-adp export runs/adp-vgg_small-embedded/model.keras --quantization int8 \\
      --calibration embedded
  keras-adp export model.keras --quantization float16 --out model_fp16.tflite
  keras-adp export model.keras --quantization int8 --calibration inputs.npy

--calibration is a .npy file holding an array of model inputs
(N, height, width, channels), preprocessed exactly as in training; a .npz
file holding one array (or an array named "x"); or a dataset name, whose
training split calibrates and whose test split checks parity. Without it,
parity is checked on random inputs (and int8 is refused).
"""

_REPORT_EPILOG = """\
examples:
  keras-adp report runs/adp-vgg_small-embedded

Reads RUN_DIR/report.json, or, for a run that has not finished, the newest
checkpoint's state.json, and rewrites report.md and the four PNG plots.
"""


def run(argv: list[str]) -> int:
    """Parse `argv` and run the command; return the exit status.

    Returns:
        0 on success, 2 for usage errors (argparse prints them), 1 for
        errors the library explains (printed as one `error: ...` line), 130
        when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error.
        return exit_request.code if isinstance(exit_request.code, int) else 2
    args.command_line = list(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-adp` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="keras-adp",
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=_HelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        cli.TF_LOGS_OPTION, action="store_true",
        help="show TensorFlow's own log lines (C++ and Python), hidden by "
        "default",
    )
    _add_train_parser(commands, common)
    _add_export_parser(commands, common)
    _add_report_parser(commands, common)
    return parser


# ---------------------------------------------------------------------------
# keras-adp train


def _add_train_parser(commands, common) -> None:
    parser = commands.add_parser(
        "train",
        parents=[common],
        help="train from scratch with ADP, evaluate, export, report",
        description=_TRAIN_DESCRIPTION,
        epilog=_TRAIN_EPILOG,
        formatter_class=_HelpFormatter,
    )
    setup = parser.add_argument_group("model and data")
    setup.add_argument(
        "--model", choices=sorted(models.MODEL_BUILDERS), default="vgg_small",
        help="reference architecture",
    )
    setup.add_argument(
        "--dataset", choices=data.DATASET_NAMES, default="embedded",
        help="'embedded' is the bundled 6k/1k Fashion-MNIST subset",
    )
    setup.add_argument(
        "--data-dir", metavar="DIR",
        help="folder of the dataset's files (fashion_mnist_idx, "
        "tiny_imagenet) or tensorflow_datasets' data_dir",
    )
    setup.add_argument(
        "--width", type=_positive_float, default=0.5, metavar="W",
        help="width multiplier of the dense model's layers",
    )
    setup.add_argument(
        "--limit", type=_positive_int, metavar="N",
        help="use only the first N samples of each split",
    )
    setup.add_argument(
        "--validation-split", type=_fraction, default=0.1, metavar="F",
        help="fraction of the training samples held out for validation (a "
        "fixed subset, never trained on); the test split is only used for "
        "the final evaluation",
    )
    setup.add_argument(
        "--augment", action="store_true",
        help="random crop and flip of the training images",
    )
    fitting = parser.add_argument_group("training")
    fitting.add_argument(
        "--epochs", type=_positive_int, default=8, metavar="N",
        help="total epochs, warm-up included",
    )
    fitting.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="B",
        help="training batch size",
    )
    fitting.add_argument(
        "--lr", type=_positive_float, default=1e-3,
        help="Adam learning rate (on --resume, the checkpoint's optimizer "
        "is restored instead)",
    )
    fitting.add_argument(
        "--seed", type=_seed, default=0,
        help="seed of weights, shuffling and each epoch's randomness",
    )
    fitting.add_argument(
        "--dense-baseline", action=argparse.BooleanOptionalAction,
        default=True,
        help="also train the dense model without pruning (same data, seed "
        "and epochs) to compare with; --no-dense-baseline skips it (it "
        "about doubles the training time and is not checkpointed)",
    )
    fitting.add_argument(
        "--verbose", type=_integer, choices=(0, 1, 2), default=1,
        help="0 silent, 1 progress bars, 2 one line per epoch",
    )
    pruning = parser.add_argument_group("pruning policy (see keras_adp.ADPPolicy)")
    pruning.add_argument(
        "--warmup-epochs", type=_non_negative_int,
        default=ADPPolicy.warmup_epochs, metavar="N",
        help="dense epochs before the first pruning step",
    )
    pruning.add_argument(
        "--width-rule", choices=WIDTH_RULES, default=ADPPolicy.width_rule,
        help="how density sets a layer's width: 'relative' (to the densest "
        "layer's), the paper's 'density' (keep that fraction) or 'live'",
    )
    pruning.add_argument(
        "--trigger", choices=TRIGGERS, default=ADPPolicy.trigger,
        help="prune every --interval epochs, or once densities stop changing",
    )
    pruning.add_argument(
        "--interval", type=_positive_int, default=ADPPolicy.interval,
        metavar="N",
        help="epochs between pruning steps (trigger 'interval')",
    )
    pruning.add_argument(
        "--max-prune-steps", type=_optional_count,
        default=ADPPolicy.max_prune_steps, metavar="N",
        help="most pruning steps, or 'none'",
    )
    pruning.add_argument(
        "--max-accuracy-drop", type=_optional_fraction,
        default=ADPPolicy.max_accuracy_drop, metavar="D",
        help="accuracy guard: roll a pruning step back when the validation "
        "accuracy after its recovery epoch is more than D below the best so "
        "far (0.01: one point); 'none' turns the guard off",
    )
    pruning.add_argument(
        "--min-channels", type=_positive_int, default=4, metavar="N",
        help="no layer shrinks below N channels",
    )
    pruning.add_argument(
        "--round-to", type=_positive_int, default=1, metavar="N",
        help="round widths up to a multiple of N (8 suits mobile kernels)",
    )
    pruning.add_argument(
        "--selection", choices=SELECTIONS, default="density",
        help="which channels survive",
    )
    pruning.add_argument(
        "--calibration-samples", type=_positive_int, default=512, metavar="N",
        help="training samples that density is measured on",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--run-dir", metavar="DIR",
        help="where checkpoints, model, TFLite files and report go "
        "(default: runs/adp-MODEL-DATASET)",
    )
    resume = output.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", action="store_true",
        help="continue the run in --run-dir from its last checkpoint; "
        "pass the same model and data options as when it started",
    )
    resume.add_argument(
        "--overwrite", action="store_true",
        help="delete a previous run's files in --run-dir and start over",
    )
    output.add_argument(
        "--no-export", action="store_true", help="skip the TFLite export"
    )
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    options = _train_options(args)
    run_dir = pathlib.Path(options.run_dir)
    _prepare_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
    _record_or_check_options(run_dir, args)
    try:
        run = experiment.run_training(options, say=_say, warn=_warn)
    except experiment.RunInterrupted:
        print(
            f"\n[keras-adp] stopped; the finished epochs are checkpointed in "
            f"'{run_dir}'. Continue with: {_resume_command(args)}",
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
        _say(
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
            raise ValueError(
                f"Could not read the options the run in '{run_dir}' was "
                f"started with, from '{path}' ({_one_line(error)}). Delete "
                "that file to resume without the check, or pass --overwrite "
                "to start over."
            ) from error
        changed = [
            f"--{name.replace('_', '-')} {_shown(started.get(name))} "
            f"(now {_shown(options[name])})"
            for name in _RUN_DEFINING_OPTIONS
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


# ---------------------------------------------------------------------------
# keras-adp export


def _add_export_parser(commands, common) -> None:
    parser = commands.add_parser(
        "export",
        parents=[common],
        help="convert a saved .keras model to TFLite; print size, parity, latency",
        description=_EXPORT_DESCRIPTION,
        epilog=_EXPORT_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.keras", help="a saved Keras model")
    parser.add_argument(
        "--quantization", choices=export.QUANTIZATION_MODES, default="float32",
        help="float32: none; float16: float16 weights; dynamic: int8 "
        "weights; int8: int8 weights and activations (needs --calibration)",
    )
    parser.add_argument(
        "--calibration", metavar="DATA",
        help="model inputs (.npy/.npz) or a dataset name, for int8 "
        "calibration and the parity check",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR",
        help="with a dataset name in --calibration: the dataset's folder",
    )
    parser.add_argument(
        "--out", metavar="FILE.tflite",
        help="output file (default: MODEL_<quantization>.tflite beside MODEL)",
    )
    parser.add_argument(
        "--samples", type=_positive_int, default=EXPORT_SAMPLES, metavar="N",
        help="calibration and parity samples",
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=1, metavar="N",
        help="interpreter threads for the latency benchmark",
    )
    parser.add_argument(
        "--runs", type=_positive_int, default=50, metavar="N",
        help="timed inferences in the latency benchmark",
    )
    parser.add_argument(
        "--unsafe-deserialization", action="store_true",
        help="load models containing Lambda layers (runs code stored in the "
        "file: only for files you trust). Off by default: Keras' safe mode",
    )
    parser.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    model_path = pathlib.Path(args.model)
    _check_model_file(model_path)
    if args.quantization == "int8" and args.calibration is None:
        raise ValueError(
            "Received --quantization int8 without --calibration; int8 needs "
            "sample inputs to calibrate on. Pass --calibration embedded (or "
            "the dataset the model was trained on), or a .npy file of inputs."
        )
    model = _load_model(model_path, safe_mode=not args.unsafe_deserialization)
    out = pathlib.Path(
        args.out
        or model_path.with_name(f"{model_path.stem}_{args.quantization}.tflite")
    )
    calibration, parity_inputs, parity_source = _export_inputs(args, model)
    export.export_tflite(
        model,
        out,
        quantization=args.quantization,
        representative_data=calibration if args.quantization == "int8" else None,
        num_calibration_samples=args.samples,
    )
    latency = export.benchmark_tflite(out, num_threads=args.threads, runs=args.runs)
    print(f"wrote {out}")
    print(
        f"size: {latency.size_bytes:,} bytes ({latency.size_bytes / 1024:.1f} "
        f"KiB), {latency.gzip_size_bytes:,} gzipped"
    )
    print(
        f"latency: {latency.median_ms:.3f} ms median (p10 {latency.p10_ms:.3f}, "
        f"p90 {latency.p90_ms:.3f}) over {latency.runs} runs, "
        f"{latency.num_threads} thread(s)"
    )
    verified = export.verify_tflite(out, model, parity_inputs)
    tolerance = (
        f"atol {verified.atol:g}, rtol {verified.rtol:g}"
        if verified.atol is not None
        else f"top-1 agreement >= {verified.min_top1_agreement:g}"
    )
    print(
        f"parity ({verified.quantization}, {verified.num_samples} "
        f"{parity_source}): ok, top-1 agreement "
        f"{100 * verified.top1_agreement:.1f}%, max abs error "
        f"{verified.max_abs_error:.3g} ({tolerance})"
    )
    return 0


_MODEL_FILE_HINT = (
    "Pass a `.keras` file saved by `model.save(...)`; `keras-adp train` "
    f"saves one as <run dir>/{checkpoints.FINAL_MODEL_FILE}."
)


def _check_model_file(model_path: pathlib.Path) -> None:
    """Refuse, before Keras sees it, a path that cannot be a saved model."""
    if model_path.suffix not in (".keras", ".h5"):
        raise ValueError(
            f"Expected a saved Keras model file (.keras). Received: "
            f"'{model_path}'. {_MODEL_FILE_HINT}"
        )
    if model_path.is_dir():
        raise ValueError(
            f"Expected a saved Keras model file. Received: '{model_path}', "
            f"which is a directory. {_MODEL_FILE_HINT}"
        )
    if not model_path.is_file():
        raise FileNotFoundError(
            f"Expected a saved Keras model file. Received: '{model_path}', "
            f"which does not exist. {_MODEL_FILE_HINT}"
        )
    if model_path.suffix == ".keras" and not zipfile.is_zipfile(model_path):
        raise ValueError(
            f"Expected a saved Keras model file. Received: '{model_path}', "
            "which is not a valid `.keras` file (not a zip archive). "
            f"{_MODEL_FILE_HINT}"
        )


def _load_model(model_path: pathlib.Path, *, safe_mode: bool) -> keras.Model:
    try:
        model = keras.saving.load_model(
            model_path, compile=False, safe_mode=safe_mode
        )
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable file
        if safe_mode and "lambda" in str(error).lower():
            raise ValueError(
                f"'{model_path}' contains a Lambda layer, whose Python code "
                "Keras refuses to load in safe mode. If you trust the file, "
                "pass --unsafe-deserialization."
            ) from error
        raise ValueError(
            f"Could not load '{model_path}' as a Keras model "
            f"({type(error).__name__}: {_one_line(error)}). {_MODEL_FILE_HINT}"
        ) from error
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected '{model_path}' to hold a Keras model. Received: a "
            f"{type(model).__name__}. {_MODEL_FILE_HINT}"
        )
    return model


def _random_input_shape(model: keras.Model) -> tuple[int, ...]:
    """The sample shape random parity inputs are drawn with."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    shape = tuple(inputs[0].shape[1:]) if inputs else None
    if shape is None or any(size is None for size in shape):
        raise ValueError(
            f"Cannot draw random parity inputs for model '{model.name}': "
            f"its input shape is {'unknown' if shape is None else shape}. "
            "Pass --calibration with sample inputs (a .npy file or a dataset "
            "name)."
        )
    return shape


def _export_inputs(args, model) -> tuple[np.ndarray | None, np.ndarray, str]:
    """Calibration inputs, parity inputs and a description of the latter."""
    if args.calibration is None:
        shape = _random_input_shape(model)
        rng = np.random.default_rng(0)
        inputs = rng.standard_normal((RANDOM_PARITY_SAMPLES, *shape)).astype("float32")
        return None, inputs, "random inputs"
    if args.calibration in data.DATASET_NAMES:
        splits = data.load_dataset(
            args.calibration, **experiment.dataset_location(args.calibration, args.data_dir)
        )
        calibration = data.calibration_batch(splits, num_samples=args.samples)
        parity_inputs = inputs_lib.calibration_inputs(splits.test, args.samples)
        return calibration, parity_inputs, "test samples"
    inputs = _load_array(pathlib.Path(args.calibration))[: args.samples]
    return inputs, inputs, "calibration samples"


def _load_array(path: pathlib.Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected --calibration to be a .npy/.npz file or a dataset name "
            f"({', '.join(data.DATASET_NAMES)}). Received: '{path}', which is "
            "neither."
        )
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(
            f"Expected a .npy or .npz calibration file. Received: '{path}'."
        )
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as arrays:
                names = arrays.files
                name = names[0] if len(names) == 1 else "x"
                array = arrays[name] if name in names else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"Could not read --calibration '{path}' as a NumPy {path.suffix} "
            f"file ({_one_line(error)}). Save the inputs with "
            "`np.save(path, inputs)`."
        ) from error
    if array is None:
        raise ValueError(
            f"Expected '{path}' to hold one array, or an array named 'x'. "
            f"Received arrays {names}. Save the inputs alone, e.g. "
            "`np.savez(path, x=inputs)`."
        )
    if array.ndim == 0 or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise ValueError(
            f"Expected --calibration '{path}' to hold an array of numeric "
            f"model inputs. Received: an array of dtype {array.dtype} and "
            f"shape {array.shape}."
        )
    if np.issubdtype(array.dtype, np.inexact):
        non_finite = ~np.isfinite(array)
        if non_finite.any():
            index = [int(i) for i in np.argwhere(non_finite)[0]]
            raise ValueError(
                f"Expected --calibration '{path}' to hold finite values. "
                f"Received: element {index} is {array[tuple(index)]}. "
                "Remove or repair the non-finite samples."
            )
    return array


# ---------------------------------------------------------------------------
# keras-adp report


def _add_report_parser(commands, common) -> None:
    parser = commands.add_parser(
        "report",
        parents=[common],
        help="rewrite a run's report.md and plots",
        description="Rewrite report.md and the plots of a training run.",
        epilog=_REPORT_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a `keras-adp train` run directory"
    )
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    run_dir = pathlib.Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"Expected a run directory. Received: '{run_dir}', which "
            f"{'is a file' if run_dir.exists() else 'does not exist'}. Pass "
            "the --run-dir of a `keras-adp train` run."
        )
    report = report_lib.regenerate_report(run_dir)
    if report.get("source"):
        print(f"no {report_lib.REPORT_JSON} yet; read {report['source']}")
    print(
        f"wrote {run_dir / report_lib.REPORT_MD} and "
        f"{', '.join(report_lib.PLOT_FILES.values())}"
    )
    print()
    print(report_lib.summary_table(report))
    return 0


# ---------------------------------------------------------------------------
# Helpers.


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and examples as written; shows set defaults."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default is not None
            and default is not False
            and default is not argparse.SUPPRESS
            and "(default" not in help_text
        ):
            help_text += " (default: %(default)s)"
        return help_text


# Option types. Each raises `ArgumentTypeError`, whose message argparse
# prints as is ("argument --epochs: expected an integer >= 1, received
# 'abc'"); any other exception would make it print the function's name.


def _integer_at_least(
    text: str, minimum: int, expected: str, maximum: int | None = None
) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if (
        value is None
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise argparse.ArgumentTypeError(f"expected {expected}, received {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _integer_at_least(text, 1, "an integer >= 1")


def _non_negative_int(text: str) -> int:
    return _integer_at_least(text, 0, "an integer >= 0")


def _optional_count(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    return _integer_at_least(text, 0, "an integer >= 0 or 'none'")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer, received {text!r}"
        ) from None


def _seed(text: str) -> int:
    # NumPy seeds are < 2**32, and each epoch uses seed + epoch.
    return _integer_at_least(
        text, 0, f"an integer from 0 to {_MAX_SEED}", maximum=_MAX_SEED
    )


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number between 0 and 1 (exclusive), received {text!r}"
        )
    return value


def _optional_fraction(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number from 0 to 1 (exclusive) or 'none', received "
            f"{text!r}"
        )
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"expected a finite number > 0, received {text!r}"
        )
    return value


def _say(text: str) -> None:
    print(f"[keras-adp] {text}", flush=True)


def _warn(text: str) -> None:
    print(text, file=sys.stderr)


def _one_line(error) -> str:
    return " ".join(str(error).split())
