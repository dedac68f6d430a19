"""The argument parsers of `keras-adp` and its subcommands.

`build_parser()` builds them; each subcommand's parser names its handler
(`keras_adp.command_train.train`, `keras_adp.command_export.export_model`,
`keras_adp.command_report.report`) as `args.handler`. The option types are
`keras_adp.command_options`'.
"""

from __future__ import annotations

import argparse

from keras_adp import cli
from keras_adp import data
from keras_adp import export
from keras_adp import models
from keras_adp import command_options as types
from keras_adp.command_export import EXPORT_SAMPLES
from keras_adp.command_export import export_model
from keras_adp.command_report import report
from keras_adp.command_train import train
from keras_adp.policy import ADPPolicy, SELECTIONS, TRIALS, TRIGGERS
from keras_adp.policy import WIDTH_RULES

__all__ = [
    "build_parser",
]

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
accuracy with the best one so far (with --dense-reference, also with the
dense baseline's at the same epoch) and rolls the step back if it dropped
by more than --max-accuracy-drop (then retries half the removal once, then
stops pruning).

Validation uses --validation-split of the training data, held out and never
trained on; the test split is only used at the end. The same model is also
trained without pruning, with the same data, seed and epochs (the dense
baseline; --no-dense-baseline skips it; --dense-reference trains it first),
and the summary puts the two side by side: test accuracy, parameters, MACs,
TFLite size and latency. Then both are exported to TFLite (float32 and
int8) and the report is written.

The pruning options default to ADPPolicy's: after one dense epoch, every
epoch each layer shrinks by its activation density relative to the densest
layer's, each step on trial before the accuracy guard.
"""

_EXPORT_DESCRIPTION = """\
Convert a saved Keras model to a TFLite file (or, with --format onnx, an
ONNX file), check that the file computes what the model computes (parity),
and time single-sample inference (LiteRT or ONNX Runtime).
"""

_TRAIN_EPILOG = """\
examples:
  keras-adp train
      the default job: vgg_small (width 0.5) on the bundled Fashion-MNIST
      subset, 8 epochs, pruned after epochs 1 and 2 (as the accuracy guard
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
  keras-adp export model.keras --format onnx
      float32 ONNX (needs `pip install -e ".[onnx]"`), written as model.onnx

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-adp` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="keras-adp",
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=types.HelpFormatter,
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


def _subcommand(commands, common, name, *, help, description, epilog):
    """A subcommand's parser, with the common options and our formatter."""
    return commands.add_parser(
        name,
        parents=[common],
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=types.HelpFormatter,
    )


def _add_train_parser(commands, common) -> None:
    """`keras-adp train` and its four option groups."""
    parser = _subcommand(
        commands, common, "train",
        help="train from scratch with ADP, evaluate, export, report",
        description=_TRAIN_DESCRIPTION,
        epilog=_TRAIN_EPILOG,
    )
    _add_model_and_data_options(parser.add_argument_group("model and data"))
    _add_training_options(parser.add_argument_group("training"))
    _add_pruning_options(
        parser.add_argument_group("pruning policy (see keras_adp.ADPPolicy)")
    )
    _add_output_options(parser.add_argument_group("output"))
    parser.set_defaults(handler=train)


def _add_model_and_data_options(setup) -> None:
    """`--model`, `--dataset` and what to load of it."""
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
        "--width", type=types.positive_float, default=0.5, metavar="W",
        help="width multiplier of the dense model's layers",
    )
    setup.add_argument(
        "--limit", type=types.positive_int, metavar="N",
        help="use only the first N samples of each split",
    )
    setup.add_argument(
        "--validation-split", type=types.fraction, default=0.1, metavar="F",
        help="fraction of the training samples held out for validation (a "
        "fixed subset, never trained on); the test split is only used for "
        "the final evaluation",
    )
    setup.add_argument(
        "--augment", action="store_true",
        help="random crop and flip of the training images",
    )


def _add_training_options(fitting) -> None:
    """Epochs, batch size, learning rate, seed, baseline, verbosity."""
    fitting.add_argument(
        "--epochs", type=types.positive_int, default=8, metavar="N",
        help="total epochs, warm-up included",
    )
    fitting.add_argument(
        "--batch-size", type=types.positive_int, default=64, metavar="B",
        help="training batch size",
    )
    fitting.add_argument(
        "--lr", type=types.positive_float, default=1e-3,
        help="Adam learning rate (on --resume, the checkpoint's optimizer "
        "is restored instead)",
    )
    fitting.add_argument(
        "--seed", type=types.seed, default=0,
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
        "--dense-reference", action=argparse.BooleanOptionalAction,
        default=False,
        help="train the dense baseline first and hold each pruning step to "
        "its validation accuracy at the same epoch (ADPPolicy."
        "dense_reference) instead of only the best value so far, which "
        "trails it while the network still learns (each rolled-back step "
        "costs an epoch)",
    )
    fitting.add_argument(
        "--verbose", type=types.integer, choices=(0, 1, 2), default=1,
        help="0 silent, 1 progress bars, 2 one line per epoch",
    )


def _add_pruning_options(pruning) -> None:
    """The `ADPPolicy` fields the command line sets."""
    pruning.add_argument(
        "--warmup-epochs", type=types.non_negative_int,
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
        "--interval", type=types.positive_int, default=ADPPolicy.interval,
        metavar="N",
        help="epochs between pruning steps (trigger 'interval')",
    )
    pruning.add_argument(
        "--max-prune-steps", type=types.optional_count,
        default=ADPPolicy.max_prune_steps, metavar="N",
        help="most pruning steps, or 'none'",
    )
    pruning.add_argument(
        "--max-accuracy-drop", type=types.optional_fraction,
        default=ADPPolicy.max_accuracy_drop, metavar="D",
        help="accuracy guard: roll a pruning step back when the validation "
        "accuracy after its recovery epoch is more than D below the best so "
        "far (0.01: one point); 'none' turns the guard off",
    )
    pruning.add_argument(
        "--removal-scale", type=types.positive_float,
        default=ADPPolicy.removal_scale, metavar="S",
        help="multiply each pruning step's cut by S (2: twice the width "
        "rule's removal, same proportions between layers)",
    )
    pruning.add_argument(
        "--recovery-updates", type=types.optional_positive_int,
        default=ADPPolicy.recovery_updates, metavar="N",
        help="a pruning step takes its full cut only with N optimizer "
        "updates left after it, and that share of it with fewer; 'none': "
        "always the full cut",
    )
    pruning.add_argument(
        "--trial", choices=TRIALS, default=ADPPolicy.trial,
        help="how the accuracy guard tries a step: 'rollback' judges it "
        "against the best value so far and, if it fails, restores the model "
        "from before it (that epoch is lost); 'twin' also trains the model "
        "from before the step for the trial epoch, judges against it with "
        "one budget for all steps, and goes on from it after a rollback",
    )
    pruning.add_argument(
        "--min-channels", type=types.positive_int, default=4, metavar="N",
        help="no layer shrinks below N channels",
    )
    pruning.add_argument(
        "--round-to", type=types.positive_int, default=1, metavar="N",
        help="round widths up to a multiple of N (8 suits mobile kernels)",
    )
    pruning.add_argument(
        "--selection", choices=SELECTIONS, default="l1",
        help="which channels survive",
    )
    pruning.add_argument(
        "--calibration-samples", type=types.positive_int, default=512, metavar="N",
        help="training samples that density is measured on",
    )


def _add_output_options(output) -> None:
    """`--run-dir`, `--resume`/`--overwrite` and `--no-export`."""
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


def _add_export_parser(commands, common) -> None:
    """`keras-adp export MODEL.keras` and its options."""
    parser = _subcommand(
        commands, common, "export",
        help="convert a saved .keras model to TFLite or ONNX; print size, "
        "parity, latency",
        description=_EXPORT_DESCRIPTION,
        epilog=_EXPORT_EPILOG,
    )
    parser.add_argument("model", metavar="MODEL.keras", help="a saved Keras model")
    parser.add_argument(
        "--format", choices=("tflite", "onnx"), default="tflite",
        help="tflite: LiteRT, any --quantization; onnx: float32 ONNX, checked "
        "and timed in ONNX Runtime",
    )
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
        "--out", metavar="FILE",
        help="output file (default: MODEL_<quantization>.tflite, or "
        "MODEL.onnx with --format onnx, beside MODEL)",
    )
    parser.add_argument(
        "--samples", type=types.positive_int, default=EXPORT_SAMPLES, metavar="N",
        help="calibration and parity samples",
    )
    parser.add_argument(
        "--threads", type=types.positive_int, default=1, metavar="N",
        help="interpreter (or ONNX Runtime intra-op) threads for the latency "
        "benchmark",
    )
    parser.add_argument(
        "--runs", type=types.positive_int, default=50, metavar="N",
        help="timed inferences in the latency benchmark",
    )
    parser.add_argument(
        "--unsafe-deserialization", action="store_true",
        help="load models containing Lambda layers (runs code stored in the "
        "file: only for files you trust). Off by default: Keras' safe mode",
    )
    parser.set_defaults(handler=export_model)


def _add_report_parser(commands, common) -> None:
    """`keras-adp report RUN_DIR`."""
    parser = _subcommand(
        commands, common, "report",
        help="rewrite a run's report.md and plots",
        description="Rewrite report.md and the plots of a training run.",
        epilog=_REPORT_EPILOG,
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a `keras-adp train` run directory"
    )
    parser.set_defaults(handler=report)
