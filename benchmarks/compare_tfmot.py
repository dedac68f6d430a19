"""Compare activation-density pruning with tensorflow-model-optimization.

Three runs of the same VGG-style CNN (`keras_adp.models.vgg_small` at
`--width`) on the same Fashion-MNIST samples, from the same initial weights,
for the same epochs, batch size, optimizer (Adam), batch-norm momentum
(`--bn-momentum`, 0.9) and seed:

1. dense baseline: Keras 3, plain `model.fit`.
2. ADP: Keras 3, `keras_adp.ADPTrainer` (channels are removed while
   training; the result is a physically smaller model). Policy: after
   `--warmup-epochs` dense epochs, prune at the end of each epoch, at most
   `--prune-steps` times. (With batch normalization before each ReLU the
   density stays near 0.5, so each step roughly halves every layer; without
   the cap, pruning would go on until the 4-channel minimum.)
3. tfmot: tf-keras (Keras 2) with `prune_low_magnitude` and a
   `PolynomialDecay` schedule from 0 to the sparsity that leaves exactly as
   many non-zero parameters as the ADP model has parameters, ramped up over
   the epochs in which ADP prunes, then `strip_pruning` (the result is the
   dense architecture with zeros).

tfmot only runs on tf-keras, which cannot share a process with Keras 3, so
run 3 happens in `benchmarks/tfmot_worker.py`, started with
`TF_USE_LEGACY_KERAS=1`; data and initial weights are handed over in `.npz`
files. The three models are exported to float32 TFLite and all three files
are measured here with `keras_adp.export.benchmark_tflite` (one thread).

Requires `pip install "tensorflow-model-optimization>=0.8" tf-keras` with
the tf-keras release matching TensorFlow (tf-keras 2.21.* for TF 2.21), and
the Fashion-MNIST IDX files (`keras_adp.data.read_fashion_mnist_idx`, e.g.
Debian's `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist), or
`--dataset embedded` for the 6,000-image subset bundled with keras_adp.

    python benchmarks/compare_tfmot.py                  # ~10-15 min, 2 cores
    python benchmarks/compare_tfmot.py --quick          # ~2-3 min
    python benchmarks/compare_tfmot.py --out result.json --train-samples 60000

Matching the sparsity. tfmot prunes the kernels of `Conv2D` and `Dense`
layers; batch-norm parameters and biases stay. With `K` dense kernel
parameters, `F` other parameters and `P` parameters left in the ADP model,
the target sparsity is `s = 1 - (P - F) / K`, so that `F + (1 - s) K = P`
non-zero parameters remain (up to tfmot's per-layer rounding).

Training wall time covers `fit` only (per-epoch validation on the test
samples included for all three runs; for ADP also its density measurements
and rebuilds; for tfmot the mask updates).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_adp  # noqa: E402
from keras_adp import data as data_lib  # noqa: E402
from keras_adp import export as export_lib  # noqa: E402
from keras_adp import metrics as metrics_lib  # noqa: E402
from keras_adp import models as models_lib  # noqa: E402

WORKER = pathlib.Path(__file__).resolve().with_name("tfmot_worker.py")


@dataclasses.dataclass
class Settings:
    """What every run shares. `quick()` gives the 2-3 minute variant."""

    train_samples: int = 15000
    test_samples: int = 10000
    epochs: int = 6
    warmup_epochs: int = 2
    prune_steps: int = 2
    width: float = 0.5
    batch_size: int = 128
    learning_rate: float = 1e-3
    bn_momentum: float = 0.9
    seed: int = 0
    latency_runs: int = 200
    dataset: str = "fashion_mnist_idx"
    data_dir: str | None = None
    verbose: int = 2

    @classmethod
    def quick(cls, **overrides) -> "Settings":
        values = dict(
            train_samples=3000, test_samples=2000, epochs=3, warmup_epochs=1,
            prune_steps=1, latency_runs=100,
        )
        values.update(overrides)
        return cls(**values)


# ----------------------------------------------------------------- data
DATASETS = ("fashion_mnist_idx", "embedded")


def load_arrays(settings: Settings) -> dict[str, np.ndarray]:
    """The first `train_samples` / `test_samples` Fashion-MNIST samples.

    `settings.dataset` is "fashion_mnist_idx" (the full 60,000 / 10,000 from
    the IDX files) or "embedded" (the 6,000 / 1,000 subset inside
    keras_adp, for runs without the files).

    Returns float32 images `(n, 28, 28, 1)` standardized with the mean and
    standard deviation of the training samples used, and int64 labels.
    """
    if settings.dataset == "embedded":
        raw = data_lib.load_embedded_arrays()
    else:
        raw = data_lib.read_fashion_mnist_idx(settings.data_dir)
    x_train = raw["x_train"][: settings.train_samples, ..., np.newaxis]
    x_test = raw["x_test"][: settings.test_samples, ..., np.newaxis]
    x_train = x_train.astype("float32")
    x_test = x_test.astype("float32")
    mean, std = float(x_train.mean()), float(x_train.std())
    return {
        "x_train": (x_train - mean) / std,
        "y_train": raw["y_train"][: settings.train_samples].astype("int64"),
        "x_test": (x_test - mean) / std,
        "y_test": raw["y_test"][: settings.test_samples].astype("int64"),
    }


# --------------------------------------------------------------- models
def vgg_cfg(width: float) -> list:
    """`keras_adp.models.VGG_SMALL_CFG` with the widths at `width`."""
    return [
        entry if entry == "M" else models_lib.scaled_width(entry, width)
        for entry in models_lib.VGG_SMALL_CFG
    ]


def build_model(settings: Settings, initial_weights=None) -> keras.Model:
    """The compiled dense Keras 3 model, with `initial_weights` if given.

    Batch normalization uses `settings.bn_momentum` (0.9, PyTorch's default
    as in the paper, instead of Keras' 0.99) so that the moving statistics
    settle within the few hundred steps of a CPU run.
    """
    keras.utils.set_random_seed(settings.seed)
    model = models_lib.vgg_small(
        (28, 28, 1), 10, width_multiplier=settings.width
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Read by `call` and kept by `get_config`, hence by ADP rebuilds.
            layer.momentum = settings.bn_momentum
    if initial_weights is not None:
        model.set_weights(initial_weights)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def kernel_params(model: keras.Model) -> int:
    """Parameters in `Conv2D` and `Dense` kernels: what tfmot prunes."""
    return sum(
        int(np.prod(layer.kernel.shape))
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    )


def nonzero_params(model: keras.Model) -> int:
    return int(sum(np.count_nonzero(w) for w in model.get_weights()))


def matching_sparsity(dense: keras.Model, adp_params: int) -> float:
    """Kernel sparsity leaving `adp_params` non-zero parameters in `dense`."""
    kernels = kernel_params(dense)
    others = metrics_lib.count_params(dense) - kernels
    return float(min(0.99, max(0.0, 1.0 - (adp_params - others) / kernels)))


# ----------------------------------------------------------------- runs
def train_dense(settings, arrays, initial_weights):
    """Run 1: returns (trained model, fit wall seconds)."""
    model = build_model(settings, initial_weights)
    keras.utils.set_random_seed(settings.seed)
    start = time.perf_counter()
    model.fit(
        arrays["x_train"],
        arrays["y_train"],
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        validation_data=(arrays["x_test"], arrays["y_test"]),
        verbose=settings.verbose,
    )
    return model, time.perf_counter() - start


def train_adp(settings, arrays, initial_weights):
    """Run 2: returns (`ADPResult`, fit wall seconds)."""
    model = build_model(settings, initial_weights)
    trainer = keras_adp.ADPTrainer(
        keras_adp.ADPPolicy(
            warmup_epochs=settings.warmup_epochs,
            max_prune_steps=settings.prune_steps,
        ),
        seed=settings.seed,
        verbose=settings.verbose,
    )
    start = time.perf_counter()
    result = trainer.fit(
        model,
        arrays["x_train"],
        arrays["y_train"],
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        validation_data=(arrays["x_test"], arrays["y_test"]),
    )
    return result, time.perf_counter() - start


def train_tfmot(settings, arrays, initial, target_sparsity, work_dir) -> dict:
    """Run 3, in a tf-keras subprocess; returns the worker's JSON result.

    `initial` is an untrained Keras 3 model holding the shared initial
    weights. The data, the weights, the worker's config, its result and its
    `tfmot.tflite` file are written to `work_dir`.
    """
    work_dir = pathlib.Path(work_dir)
    np.savez(work_dir / "data.npz", **arrays)
    weights = {
        f"{layer.name}/{index}": value
        for layer in initial.layers
        for index, value in enumerate(layer.get_weights())
    }
    np.savez(work_dir / "initial_weights.npz", **weights)
    config = {
        "data": str(work_dir / "data.npz"),
        "initial_weights": str(work_dir / "initial_weights.npz"),
        "cfg": vgg_cfg(settings.width),
        "input_shape": [28, 28, 1],
        "num_classes": 10,
        "expected_params": metrics_lib.count_params(initial),
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "bn_momentum": settings.bn_momentum,
        "seed": settings.seed,
        "target_sparsity": target_sparsity,
        # Sparsity ramps up while ADP prunes: from the end of the warm-up to
        # the end of the epoch of ADP's last pruning step (at least one epoch).
        "begin_epoch": settings.warmup_epochs,
        "end_epoch": settings.warmup_epochs + max(1, settings.prune_steps - 1),
        "pruning_frequency": max(
            1, -(-settings.train_samples // settings.batch_size) // 4
        ),
        "tflite_path": str(work_dir / "tfmot.tflite"),
        "result_path": str(work_dir / "tfmot_result.json"),
        "verbose": settings.verbose,
    }
    config_path = work_dir / "tfmot_config.json"
    config_path.write_text(json.dumps(config, indent=2))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    completed = subprocess.run(
        [sys.executable, str(WORKER), str(config_path)],
        env=env,
        stdout=None if settings.verbose else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"The tfmot worker failed (exit code {completed.returncode}). "
            f"Its stderr ends with:\n{completed.stderr[-3000:]}"
        )
    return json.loads(pathlib.Path(config["result_path"]).read_text())


# --------------------------------------------------------------- TFLite
def tflite_accuracy(path, x, y) -> float:
    """Top-1 accuracy of a float-input `.tflite` file, one sample at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    correct = 0
    for sample, label in zip(x, y):
        interpreter.set_tensor(input_index, sample[np.newaxis])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(output_index)) == label)
    return correct / len(x)


def tflite_columns(path, arrays, settings) -> dict:
    latency = export_lib.benchmark_tflite(
        path, num_threads=1, runs=settings.latency_runs, warmup=20
    )
    return {
        "tflite_accuracy": tflite_accuracy(
            path, arrays["x_test"], arrays["y_test"]
        ),
        "tflite_bytes": latency.size_bytes,
        "tflite_gzip_bytes": latency.gzip_size_bytes,
        "latency_median_ms": latency.median_ms,
        "latency_p10_ms": latency.p10_ms,
        "latency_p90_ms": latency.p90_ms,
    }


# ---------------------------------------------------------------- table
COLUMNS = (
    ("run", "{}", 6),
    ("framework", "{}", 19),
    ("accuracy", "{:.4f}", 8),
    ("tflite_accuracy", "{:.4f}", 9),
    ("params", "{:,}", 9),
    ("nonzero_params", "{:,}", 9),
    ("macs", "{:,}", 11),
    ("tflite_bytes", "{:,}", 10),
    ("tflite_gzip_bytes", "{:,}", 10),
    ("latency_median_ms", "{:.3f}", 8),
    ("train_seconds", "{:.1f}", 7),
)
HEADERS = (
    "run", "framework", "accuracy", "TFLite acc", "params", "non-zero",
    "MACs", "TFLite B", "gzip B", "lat. ms", "train s",
)


def format_table(rows: list[dict]) -> str:
    widths = [
        max(width, len(header)) for (_, _, width), header in zip(COLUMNS, HEADERS)
    ]
    lines = [" | ".join(h.rjust(w) for h, w in zip(HEADERS, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        cells = [
            fmt.format(row[key]).rjust(w)
            for (key, fmt, _), w in zip(COLUMNS, widths)
        ]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


# ----------------------------------------------------------------- main
def keras_row(name, model, seconds, arrays, settings, work_dir) -> dict:
    """Table row of a Keras 3 model: accuracy, counts, TFLite measurements."""
    path = export_lib.export_tflite(
        model, pathlib.Path(work_dir) / f"{name.lower()}.tflite"
    )
    export_lib.verify_tflite(path, model, arrays["x_test"][:32])
    _, accuracy = model.evaluate(
        arrays["x_test"], arrays["y_test"], batch_size=256, verbose=0
    )
    return {
        "run": name,
        "framework": f"Keras {keras.__version__}",
        "accuracy": float(accuracy),
        "params": metrics_lib.count_params(model),
        "nonzero_params": nonzero_params(model),
        "macs": metrics_lib.inference_cost(model).macs,
        "train_seconds": seconds,
        **tflite_columns(path, arrays, settings),
    }


def tfmot_row(tfmot, dense, arrays, settings) -> dict:
    """Table row of the worker's result; `dense` gives the MAC count."""
    return {
        "run": "tfmot",
        "framework": tfmot["framework"],
        "accuracy": tfmot["accuracy"],
        "params": tfmot["params"],
        "nonzero_params": tfmot["nonzero_params"],
        # The zeros are stored and multiplied: TFLite runs the dense MACs.
        "macs": metrics_lib.inference_cost(dense).macs,
        "train_seconds": tfmot["train_seconds"],
        **tflite_columns(tfmot["tflite_path"], arrays, settings),
    }


def run(settings: Settings, work_dir) -> dict:
    """Runs the three trainings and measurements; returns the JSON report."""
    arrays = load_arrays(settings)
    initial = build_model(settings)
    initial_weights = initial.get_weights()

    print("== dense baseline (Keras 3) ==", flush=True)
    dense, dense_seconds = train_dense(settings, arrays, initial_weights)
    print("== ADP (Keras 3, keras_adp.ADPTrainer) ==", flush=True)
    adp, adp_seconds = train_adp(settings, arrays, initial_weights)
    target = matching_sparsity(dense, metrics_lib.count_params(adp.model))
    print(
        f"== tfmot (tf-keras, prune_low_magnitude to sparsity {target:.4f}) ==",
        flush=True,
    )
    tfmot = train_tfmot(settings, arrays, initial, target, work_dir)

    rows = [
        keras_row("dense", dense, dense_seconds, arrays, settings, work_dir),
        keras_row("ADP", adp.model, adp_seconds, arrays, settings, work_dir),
        tfmot_row(tfmot, dense, arrays, settings),
    ]
    return {
        "settings": dataclasses.asdict(settings),
        "num_train": len(arrays["x_train"]),
        "num_test": len(arrays["x_test"]),
        "rows": rows,
        "target_sparsity": target,
        "adp": {
            "summary": adp.summary(),
            "steps": adp.steps,
            "final_widths": adp.history[-1]["widths"],
        },
        "tfmot": {
            key: tfmot[key]
            for key in (
                "tfmot_version", "kernel_sparsity", "schedule",
                "tflite_max_abs_error",
            )
        },
    }


def describe(report: dict) -> str:
    """One line saying what the table compares."""
    settings = report["settings"]
    return (
        f"Fashion-MNIST ({settings['dataset']}), vgg_small width "
        f"{settings['width']}, {report['num_train']} train / "
        f"{report['num_test']} test samples, {settings['epochs']} epochs, "
        f"batch {settings['batch_size']}, seed {settings['seed']}; tfmot "
        f"target sparsity {report['target_sparsity']:.4f}; latency: median "
        f"of {settings['latency_runs']} single-thread invokes, batch 1"
    )


def parse_args(argv=None) -> tuple[Settings, argparse.Namespace]:
    defaults, quick = Settings(), Settings.quick()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{quick.train_samples:,} training / {quick.test_samples:,} test "
        f"samples, {quick.epochs} epochs (about 2-3 minutes on 2 cores); "
        "explicit options still apply",
    )

    def default(name):
        return f"default {getattr(defaults, name)}, {getattr(quick, name)} with --quick"

    parser.add_argument("--train-samples", type=int, help=default("train_samples"))
    parser.add_argument("--test-samples", type=int, help=default("test_samples"))
    parser.add_argument("--epochs", type=int, help=default("epochs"))
    parser.add_argument("--warmup-epochs", type=int,
                        help=default("warmup_epochs") + "; dense epochs before "
                        "ADP's first pruning step and tfmot's first mask")
    parser.add_argument("--prune-steps", type=int,
                        help=default("prune_steps") + "; most ADP pruning "
                        "steps (ADPPolicy.max_prune_steps), one per epoch "
                        "after the warm-up")
    parser.add_argument("--latency-runs", type=int, help=default("latency_runs"))
    parser.add_argument("--width", type=float, default=defaults.width,
                        help="vgg_small width multiplier (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="default %(default)s")
    parser.add_argument("--learning-rate", type=float,
                        default=defaults.learning_rate,
                        help="Adam learning rate (default %(default)s)")
    parser.add_argument("--bn-momentum", type=float,
                        default=defaults.bn_momentum,
                        help="BatchNormalization momentum (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="default %(default)s")
    parser.add_argument("--dataset", choices=DATASETS, default=defaults.dataset,
                        help="'fashion_mnist_idx' (default): the full IDX "
                        "files; 'embedded': the 6,000/1,000-sample subset "
                        "bundled with keras_adp (no files needed)")
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX "
                        "files (default: keras_adp's search path)")
    parser.add_argument("--work-dir", help="keep data, weights and .tflite "
                        "files here (default: a temporary folder)")
    parser.add_argument("--out", help="write the report as JSON here")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="Keras fit verbosity (default %(default)s)")
    args = parser.parse_args(argv)
    overrides = {
        key: getattr(args, key)
        for key in ("train_samples", "test_samples", "epochs", "warmup_epochs",
                    "prune_steps", "latency_runs")
        if getattr(args, key) is not None
    }
    overrides.update(
        width=args.width, batch_size=args.batch_size,
        learning_rate=args.learning_rate, bn_momentum=args.bn_momentum,
        seed=args.seed,
        dataset=args.dataset, data_dir=args.data_dir, verbose=args.verbose,
    )
    settings = Settings.quick(**overrides) if args.quick else Settings(**overrides)
    for name in ("train_samples", "test_samples", "epochs", "prune_steps",
                 "batch_size", "latency_runs"):
        if getattr(settings, name) < 1:
            parser.error(f"Expected --{name.replace('_', '-')} >= 1. Received: "
                         f"{getattr(settings, name)}.")
    needed = settings.warmup_epochs + settings.prune_steps + 1
    if settings.epochs < needed:
        parser.error(
            f"Expected --epochs >= --warmup-epochs + --prune-steps + 1 = "
            f"{needed}, so that every pruning step is followed by training. "
            f"Received: epochs={settings.epochs}."
        )
    return settings, args


def main(argv=None) -> dict:
    settings, args = parse_args(argv)
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
        report = run(settings, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="compare_tfmot_") as work_dir:
            report = run(settings, work_dir)
    print()
    print(describe(report))
    print(format_table(report["rows"]))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"Report written to {args.out}")
    return report


if __name__ == "__main__":
    main()
