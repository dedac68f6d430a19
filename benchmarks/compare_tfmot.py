"""Compare activation-density pruning with tensorflow-model-optimization.

Runs of the same VGG-style CNN (`keras_adp.models.vgg_small` at `--width`)
on the same Fashion-MNIST samples, from the same initial weights, for the
same epochs, batch size, optimizer (Adam), batch-norm momentum
(`--bn-momentum`, 0.9) and seed:

1. dense baseline: Keras 3, plain `model.fit`.
2. ADP: Keras 3, `keras_adp.ADPTrainer` (channels are removed while
   training; the result is a physically smaller model). Policy: after
   `--warmup-epochs` dense epochs, prune at the end of each epoch, at most
   `--prune-steps` times. (With batch normalization before each ReLU the
   density stays near 0.5, so each step roughly halves every layer; without
   the cap, pruning would go on until the 4-channel minimum.) keras_adp's
   accuracy guard is off here by default (`--max-accuracy-drop none`): this
   benchmark compares the two methods at whatever size ADP's capped steps
   reach, and the guard would judge the steps on `validation_data`, which
   here are the test samples. `--max-accuracy-drop 0.01` turns it on.
3. tfmot: tf-keras (Keras 2) with `prune_low_magnitude` and a
   `PolynomialDecay` schedule to the sparsity that leaves exactly as many
   non-zero parameters as the ADP model has parameters, then
   `strip_pruning` (the result is the dense architecture with zeros). Two
   schedules, chosen with `--tfmot-schedule {adp-matched,gradual,both}`
   (default `both`, one tfmot run and one table row each):

   - `adp-matched`: from 0 to the target sparsity within the epochs in
     which ADP prunes (from the end of the warm-up to the end of the epoch
     of ADP's last step, at least one epoch), every quarter epoch. This
     mirrors ADP's steps, but ramps to e.g. 94 % sparsity within a single
     epoch, much faster than tfmot recommends.
   - `gradual`: tfmot's own recommendation. The "Pruning in Keras example"
     (https://www.tensorflow.org/model_optimization/guide/pruning/pruning_with_keras)
     prunes with `PolynomialDecay(initial_sparsity=0.50, final_sparsity=...,
     begin_step=0, end_step=...)` and the default `frequency=100` (the
     `PolynomialDecay` API page,
     https://www.tensorflow.org/model_optimization/api_docs/python/tfmot/sparsity/keras/PolynomialDecay,
     whose docstring cites the gradual schedule of Zhu & Gupta, "To prune
     or not to prune", arXiv:1710.01878); the pruning comprehensive guide
     (https://www.tensorflow.org/model_optimization/guide/pruning/comprehensive_guide)
     advises not to prune too often, so that the model recovers between
     mask updates. The guide prunes a trained model; here tfmot trains from
     the same random initial weights as the other runs, so the gradual
     schedule (`gradual_schedule`) trains one dense epoch first (when there
     are at least 3 epochs), then ramps from `min(0.5, target)` to the
     target, and reaches it a quarter of the epochs (at least one) before
     the end, so that the last epochs train at the final sparsity. It
     prunes every 100 steps, or more often when the ramp has fewer than
     1,000 steps, so that the sparsity still rises in at least 10 mask
     updates.

tfmot only runs on tf-keras, which cannot share a process with Keras 3, so
the tfmot runs happen in `benchmarks/tfmot_worker.py`, started with
`TF_USE_LEGACY_KERAS=1`, one process per schedule; data, initial weights and
the schedule are handed over in `.npz` and `.json` files. All models are
exported to float32 TFLite and all files are measured here with
`keras_adp.export.benchmark_tflite` (one thread).

Requires `pip install "tensorflow-model-optimization>=0.8" tf-keras` with
the tf-keras release matching TensorFlow (tf-keras 2.21.* for TF 2.21), and
the Fashion-MNIST IDX files (`keras_adp.data.read_fashion_mnist_idx`, e.g.
Debian's `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist), or
`--dataset embedded` for the 6,000-image subset bundled with keras_adp.

    python benchmarks/compare_tfmot.py                  # ~15-20 min, 2 cores
    python benchmarks/compare_tfmot.py --quick          # ~3-5 min
    python benchmarks/compare_tfmot.py --out result.json --train-samples 60000
    python benchmarks/compare_tfmot.py --tfmot-schedule gradual

Matching the sparsity. tfmot prunes the kernels of `Conv2D` and `Dense`
layers; batch-norm parameters and biases stay. With `K` dense kernel
parameters, `F` other parameters and `P` parameters left in the ADP model,
the target sparsity is `s = 1 - (P - F) / K`, so that `F + (1 - s) K = P`
non-zero parameters remain (up to tfmot's per-layer rounding).

Training wall time covers `fit` only (per-epoch validation on the test
samples included for all runs; for ADP also its density measurements and
rebuilds; for tfmot the mask updates).
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
    tfmot_schedule: str = "both"
    max_accuracy_drop: float | None = None
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


# ------------------------------------------------------ tfmot schedules
TFMOT_SCHEDULES = ("adp-matched", "gradual")
TFMOT_SCHEDULE_CHOICES = TFMOT_SCHEDULES + ("both",)
# tfmot's `PolynomialDecay(frequency=100)` default, and the initial sparsity of
# its "Pruning in Keras example".
TFMOT_DEFAULT_FREQUENCY = 100
GRADUAL_INITIAL_SPARSITY = 0.5
# The gradual ramp updates the masks at least this many times.
GRADUAL_MIN_PRUNING_EVENTS = 10


@dataclasses.dataclass(frozen=True)
class TfmotSchedule:
    """Arguments of one `tfmot.sparsity.keras.PolynomialDecay`, in steps.

    `end_step - begin_step` is a multiple of `frequency`, so that the last
    mask update happens at `end_step` and reaches `final_sparsity` (tfmot
    only prunes on steps `begin_step + k * frequency <= end_step`).
    """

    name: str
    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    steps_per_epoch: int

    def describe(self) -> str:
        """E.g. "gradual: 0.5000 -> 0.7453 from step 24 to 48 (epochs 1-2),
        every 2 steps"."""
        begin_epoch = self.begin_step / self.steps_per_epoch
        end_epoch = self.end_step / self.steps_per_epoch
        return (
            f"{self.name}: {self.initial_sparsity:.4f} -> "
            f"{self.final_sparsity:.4f} from step {self.begin_step} to "
            f"{self.end_step} (epochs {begin_epoch:.3g}-{end_epoch:.3g}), "
            f"every {self.frequency} steps"
        )


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Batches in one epoch of `model.fit`, the last one partial."""
    return -(-num_samples // batch_size)


def _aligned_end_step(begin_step: int, span: int, frequency: int) -> int:
    """The last pruning step at most `span` after `begin_step` (>= 1 update)."""
    return begin_step + max(frequency, span // frequency * frequency)


def adp_matched_schedule(
    steps_per_epoch: int,
    warmup_epochs: int,
    prune_steps: int,
    final_sparsity: float,
) -> TfmotSchedule:
    """0 -> `final_sparsity` within the epochs in which ADP prunes.

    From the end of the warm-up to the end of the epoch of ADP's last
    pruning step (at least one epoch), with a mask update every quarter
    epoch.
    """
    frequency = max(1, steps_per_epoch // 4)
    begin_step = warmup_epochs * steps_per_epoch
    span = max(1, prune_steps - 1) * steps_per_epoch
    return TfmotSchedule(
        name="adp-matched",
        initial_sparsity=0.0,
        final_sparsity=float(final_sparsity),
        begin_step=begin_step,
        end_step=_aligned_end_step(begin_step, span, frequency),
        frequency=frequency,
        steps_per_epoch=steps_per_epoch,
    )


def gradual_schedule(
    steps_per_epoch: int,
    epochs: int,
    final_sparsity: float,
    initial_sparsity: float = GRADUAL_INITIAL_SPARSITY,
) -> TfmotSchedule:
    """tfmot's recommended gradual `PolynomialDecay` for training from scratch.

    Args:
        steps_per_epoch: batches per epoch.
        epochs: training epochs, at least 2.
        final_sparsity: the kernel sparsity to reach, in `[0, 1)`.
        initial_sparsity: the sparsity of the first mask, capped at
            `final_sparsity`. Defaults to `0.5`, as in tfmot's "Pruning in
            Keras example".

    Returns:
        A `TfmotSchedule` that starts after one dense epoch (at step 0 when
        `epochs` is 2), reaches `final_sparsity` `max(1, epochs // 4)` epochs
        before the end, so that the last epochs fine-tune at the final
        sparsity, and updates the masks every 100 steps (tfmot's default),
        or every `ramp // 10` steps when the ramp has fewer than 1,000 steps.
    """
    if epochs < 2:
        raise ValueError(
            "Expected `epochs` >= 2, so that the gradual schedule has a ramp "
            f"and a fine-tuning epoch. Received: epochs={epochs}."
        )
    if steps_per_epoch < 1:
        raise ValueError(
            f"Expected `steps_per_epoch` >= 1. Received: "
            f"steps_per_epoch={steps_per_epoch}."
        )
    begin_epoch = 1 if epochs >= 3 else 0
    end_epoch = epochs - max(1, epochs // 4)
    begin_step = begin_epoch * steps_per_epoch
    span = (end_epoch - begin_epoch) * steps_per_epoch
    frequency = max(
        1, min(TFMOT_DEFAULT_FREQUENCY, span // GRADUAL_MIN_PRUNING_EVENTS)
    )
    return TfmotSchedule(
        name="gradual",
        initial_sparsity=float(min(initial_sparsity, final_sparsity)),
        final_sparsity=float(final_sparsity),
        begin_step=begin_step,
        end_step=_aligned_end_step(begin_step, span, frequency),
        frequency=frequency,
        steps_per_epoch=steps_per_epoch,
    )


def tfmot_schedules(
    settings: Settings, num_train: int, final_sparsity: float
) -> list[TfmotSchedule]:
    """The schedules `settings.tfmot_schedule` asks for, in table order."""
    if settings.tfmot_schedule not in TFMOT_SCHEDULE_CHOICES:
        raise ValueError(
            f"Expected `tfmot_schedule` in {TFMOT_SCHEDULE_CHOICES}. "
            f"Received: tfmot_schedule={settings.tfmot_schedule!r}."
        )
    steps = steps_per_epoch(num_train, settings.batch_size)
    schedules = []
    if settings.tfmot_schedule in ("adp-matched", "both"):
        schedules.append(adp_matched_schedule(
            steps, settings.warmup_epochs, settings.prune_steps, final_sparsity
        ))
    if settings.tfmot_schedule in ("gradual", "both"):
        schedules.append(
            gradual_schedule(steps, settings.epochs, final_sparsity)
        )
    return schedules


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
            max_accuracy_drop=settings.max_accuracy_drop,
            # The paper's rule, as this comparison documents (each step
            # roughly halves every layer behind BatchNormalization).
            width_rule="density",
            removal_scale=1.0,
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


def train_tfmot(settings, arrays, initial, schedule, work_dir) -> dict:
    """Run 3 with `schedule`, in a tf-keras subprocess; returns its JSON result.

    `initial` is an untrained Keras 3 model holding the shared initial
    weights; `schedule` a `TfmotSchedule`. The data, the weights, the
    worker's config, its result and its `tfmot_<schedule>.tflite` file are
    written to `work_dir`.
    """
    work_dir = pathlib.Path(work_dir)
    np.savez(work_dir / "data.npz", **arrays)
    weights = {
        f"{layer.name}/{index}": value
        for layer in initial.layers
        for index, value in enumerate(layer.get_weights())
    }
    np.savez(work_dir / "initial_weights.npz", **weights)
    stem = f"tfmot_{schedule.name}"
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
        "schedule": dataclasses.asdict(schedule),
        "tflite_path": str(work_dir / f"{stem}.tflite"),
        "result_path": str(work_dir / f"{stem}_result.json"),
        "verbose": settings.verbose,
    }
    config_path = work_dir / f"{stem}_config.json"
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
    cells = [
        [fmt.format(row[key]) for key, fmt, _ in COLUMNS] for row in rows
    ]
    widths = [
        max([width, len(header)] + [len(line[index]) for line in cells])
        for index, ((_, _, width), header) in enumerate(zip(COLUMNS, HEADERS))
    ]
    lines = [" | ".join(h.rjust(w) for h, w in zip(HEADERS, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    for line in cells:
        lines.append(" | ".join(c.rjust(w) for c, w in zip(line, widths)))
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
        "run": f"tfmot ({tfmot['schedule']['name']} schedule)",
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
    """Runs the trainings and measurements; returns the JSON report."""
    arrays = load_arrays(settings)
    initial = build_model(settings)
    initial_weights = initial.get_weights()

    print("== dense baseline (Keras 3) ==", flush=True)
    dense, dense_seconds = train_dense(settings, arrays, initial_weights)
    print("== ADP (Keras 3, keras_adp.ADPTrainer) ==", flush=True)
    adp, adp_seconds = train_adp(settings, arrays, initial_weights)
    target = matching_sparsity(dense, metrics_lib.count_params(adp.model))
    tfmot_results = {}
    for schedule in tfmot_schedules(settings, len(arrays["x_train"]), target):
        print(
            "== tfmot (tf-keras, prune_low_magnitude, PolynomialDecay "
            f"{schedule.describe()}) ==",
            flush=True,
        )
        tfmot_results[schedule.name] = train_tfmot(
            settings, arrays, initial, schedule, work_dir
        )

    rows = [
        keras_row("dense", dense, dense_seconds, arrays, settings, work_dir),
        keras_row("ADP", adp.model, adp_seconds, arrays, settings, work_dir),
    ] + [
        tfmot_row(tfmot, dense, arrays, settings)
        for tfmot in tfmot_results.values()
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
        # Per schedule: its PolynomialDecay arguments (`schedule`), the
        # sparsity reached per kernel, the TFLite check and the history.
        "tfmot": {
            name: {
                key: tfmot[key]
                for key in (
                    "tfmot_version", "schedule", "kernel_sparsity",
                    "tflite_max_abs_error", "history",
                )
            }
            for name, tfmot in tfmot_results.items()
        },
    }


def describe(report: dict) -> str:
    """Lines saying what the table compares."""
    settings = report["settings"]
    lines = [
        f"Fashion-MNIST ({settings['dataset']}), vgg_small width "
        f"{settings['width']}, {report['num_train']} train / "
        f"{report['num_test']} test samples, {settings['epochs']} epochs, "
        f"batch {settings['batch_size']}, seed {settings['seed']}; tfmot "
        f"target sparsity {report['target_sparsity']:.4f}; latency: median "
        f"of {settings['latency_runs']} single-thread invokes, batch 1"
    ]
    for tfmot in report["tfmot"].values():
        schedule = TfmotSchedule(**tfmot["schedule"])
        lines.append(f"tfmot PolynomialDecay {schedule.describe()}")
    return "\n".join(lines)


def _accuracy_drop(text: str) -> float | None:
    """`--max-accuracy-drop` value: a float, or "none" for no guard."""
    return None if text.lower() == "none" else float(text)


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
    parser.add_argument("--tfmot-schedule", choices=TFMOT_SCHEDULE_CHOICES,
                        default=defaults.tfmot_schedule,
                        help="tfmot's PolynomialDecay: 'adp-matched' ramps "
                        "from 0 within ADP's pruning epochs, 'gradual' "
                        "follows tfmot's guide (from 0.5, every 100 steps, "
                        "fine-tuning at the end), 'both' runs and reports "
                        "each (default %(default)s)")
    parser.add_argument("--max-accuracy-drop", type=_accuracy_drop,
                        default=defaults.max_accuracy_drop,
                        help="ADP's accuracy guard budget (ADPPolicy."
                        "max_accuracy_drop), judged on the test samples "
                        "passed as validation_data, or 'none' (default): "
                        "no guard, every capped step is kept")
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
        dataset=args.dataset, data_dir=args.data_dir,
        tfmot_schedule=args.tfmot_schedule,
        max_accuracy_drop=args.max_accuracy_drop, verbose=args.verbose,
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
