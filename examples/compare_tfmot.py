"""
Title: Activation-density pruning vs. magnitude pruning (tensorflow-model-optimization)
Author: keras-adp contributors
Date created: 2026/11/25
Last modified: 2026/11/29
Description: Train the same CNN dense, with ADP and with tfmot's prune_low_magnitude (two sparsity schedules) at the same non-zero parameter count, and compare accuracy, TFLite size, latency and training time.
Accelerator: None
"""

"""
## Introduction

Two ways to make a CNN smaller while it trains:

- **Activation-density pruning (ADP)**, this package: remove whole channels
  whose activations are rarely non-zero. The model becomes a narrower dense
  network: fewer parameters, fewer MACs, on any runtime.
- **Magnitude pruning** with
  [tensorflow-model-optimization](https://www.tensorflow.org/model_optimization)
  (tfmot) `prune_low_magnitude`: set the smallest weights to zero following a
  sparsity schedule. The architecture is unchanged; the zeros compress well
  (gzip) but a dense runtime still stores and multiplies them.

This example trains one architecture four times, from the same initial
weights, on the same data, for the same epochs: dense, with ADP, and twice
with tfmot pruned to the sparsity that leaves exactly as many non-zero
parameters as ADP kept, once with a schedule that mirrors ADP's pruning
epochs and once with tfmot's own recommended gradual schedule. Then it
exports the four models to float32 TFLite and compares them.

One practical difference shows before any number: tfmot only supports
tf-keras (Keras 2), which cannot be imported next to Keras 3. The tfmot run
therefore happens in a separate Python process, started with
`TF_USE_LEGACY_KERAS=1`, which rebuilds the network in tf-keras with the same
layer names and widths and loads the same initial weights.

The logic lives in `benchmarks/compare_tfmot.py` (the benchmark) and
`benchmarks/tfmot_worker.py` (the tf-keras side); this example walks through
it step by step with shorter settings. It needs
`pip install "tensorflow-model-optimization>=0.8" tf-keras` (the tf-keras
release matching TensorFlow, e.g. 2.21.* for TensorFlow 2.21). It uses the
full Fashion-MNIST from local IDX files when they are found (for example
Debian's `dataset-fashion-mnist` package) and the 6,000-image subset bundled
with `keras_adp` otherwise. It takes about 4 minutes on 2 CPU cores
(`--smoke`: about a minute).
"""

"""
## Setup
"""

import argparse
import importlib.util
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_adp

parser = argparse.ArgumentParser(description="ADP vs tfmot magnitude pruning")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument(
    "--smoke",
    action="store_true",
    help="tiny run for tests: 256 train / 128 test bundled samples, 3 epochs",
)
args = parser.parse_args()

for package in ("tensorflow_model_optimization", "tf_keras"):
    if importlib.util.find_spec(package) is None:
        sys.exit(
            f"This example needs `{package}`: pip install "
            '"tensorflow-model-optimization>=0.8" tf-keras'
        )

"""
The benchmark module is loaded from its file (the `benchmarks/` folder is not
a package).
"""

benchmark_path = (
    pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "compare_tfmot.py"
)
spec = importlib.util.spec_from_file_location("tfmot_benchmark", benchmark_path)
benchmark = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = benchmark
spec.loader.exec_module(benchmark)

"""
## Data

`benchmark.Settings` holds everything the runs share. The data are the
first training and test images of Fashion-MNIST, standardized with the mean
and standard deviation of the training images used.
"""

if args.smoke:
    settings = benchmark.Settings(
        dataset="embedded", train_samples=256, test_samples=128, epochs=3,
        warmup_epochs=1, prune_steps=1, width=0.25, latency_runs=10, verbose=0,
    )
else:
    try:
        keras_adp.data.read_fashion_mnist_idx()
        dataset = "fashion_mnist_idx"
    except FileNotFoundError:
        dataset = "embedded"
    settings = benchmark.Settings.quick(
        dataset=dataset, epochs=args.epochs, verbose=2
    )
arrays = benchmark.load_arrays(settings)
print({name: array.shape for name, array in arrays.items()})
work_dir = tempfile.TemporaryDirectory(prefix="compare_tfmot_")

"""
## Model

`keras_adp.models.vgg_small` at `settings.width`: six Conv-BN-ReLU layers and
a dense classifier. The tf-keras twin in `benchmarks/tfmot_worker.py` is
built from the same configuration, and the worker checks that it has the
same number of parameters before training. All runs start from these
initial weights:
"""

print("configuration:", benchmark.vgg_cfg(settings.width))
initial = benchmark.build_model(settings)
initial_weights = initial.get_weights()
print(f"{keras_adp.metrics.count_params(initial):,} parameters")

"""
## Train

First the dense baseline and ADP, both in this process (Keras 3). ADP trains
`warmup_epochs` dense epochs, then prunes at the end of each epoch, at most
`prune_steps` times (`ADPPolicy(max_prune_steps=...)`): with batch
normalization before each ReLU the density stays near 0.5, so every step
about halves each layer.
"""

dense, dense_seconds = benchmark.train_dense(settings, arrays, initial_weights)
adp, adp_seconds = benchmark.train_adp(settings, arrays, initial_weights)
adp_params = keras_adp.metrics.count_params(adp.model)
print(f"ADP kept {adp_params:,} parameters in {len(adp.steps)} pruning step(s)")

"""
tfmot prunes the kernels of `Conv2D` and `Dense` layers and leaves batch
normalization and biases alone. To leave `adp_params` non-zero parameters,
the kernel sparsity is `1 - (adp_params - other_params) / kernel_params`:
"""

target_sparsity = benchmark.matching_sparsity(dense, adp_params)
print(f"tfmot target sparsity: {target_sparsity:.4f}")

"""
The worker does what a tfmot user would do, in tf-keras:

```python
schedule = tfmot.sparsity.keras.PolynomialDecay(
    initial_sparsity=..., final_sparsity=target_sparsity,
    begin_step=..., end_step=..., frequency=...,
)
pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
pruned.compile(...)  # Same optimizer, loss and metrics.
pruned.fit(x_train, y_train, ...,
           callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
final = tfmot.sparsity.keras.strip_pruning(pruned)
```

with two schedules, each in its own run:

- **adp-matched**: sparsity ramps from 0 over the epochs in which ADP
  prunes, from the end of the same warm-up; the remaining epochs train at
  the final sparsity. A fair mirror of ADP's steps, but a much faster ramp
  than tfmot recommends.
- **gradual**: what tfmot's pruning guide does: start at 50 % sparsity,
  prune every 100 steps (or more often on short runs), and reach the final
  sparsity before the end of training, so that the last epochs fine-tune
  the sparse model. Here it starts after one dense epoch, because the guide
  prunes a trained model and these runs train from scratch.
"""

schedules = benchmark.tfmot_schedules(
    settings, len(arrays["x_train"]), target_sparsity
)
tfmot_runs = []
for schedule in schedules:
    print("tfmot PolynomialDecay", schedule.describe())
    tfmot = benchmark.train_tfmot(
        settings, arrays, initial, schedule, work_dir.name
    )
    print(
        f"  {tfmot['nonzero_params']:,} non-zero of {tfmot['params']:,} "
        "parameters; kernel sparsity per layer:",
        {
            name: round(value, 3)
            for name, value in tfmot["kernel_sparsity"].items()
        },
    )
    tfmot_runs.append(tfmot)

"""
## Evaluate

Each model is exported to a float32 `.tflite` file; all files are measured
the same way: test accuracy in the LiteRT interpreter, file size raw
and gzipped, and the median latency of single-image `invoke()` calls on one
thread (`keras_adp.benchmark_tflite`).
"""

rows = [
    benchmark.keras_row(
        "dense", dense, dense_seconds, arrays, settings, work_dir.name
    ),
    benchmark.keras_row(
        "ADP", adp.model, adp_seconds, arrays, settings, work_dir.name
    ),
] + [benchmark.tfmot_row(tfmot, dense, arrays, settings) for tfmot in tfmot_runs]
print(benchmark.format_table(rows))
work_dir.cleanup()

"""
## Conclusion

At the same number of non-zero parameters, the two methods deliver
different things. The tfmot models keep the dense architecture: their
`.tflite` files are as large as the dense one until compressed, and they
run as many MACs, so they are no faster in a standard runtime. The
schedule matters for tfmot's accuracy: compare its two rows. The ADP model
is a smaller dense network: smaller file, fewer MACs, lower latency, and
cheaper training epochs once pruned (training time also includes ADP's
per-epoch density measurement and its rebuilds, a fixed cost that matters
most for small models and short runs).

Accuracy after a few CPU epochs says little about either method; run
`python benchmarks/compare_tfmot.py` (about 15-20 minutes on 2 cores, or
`--train-samples 60000 --epochs 20` for a longer run) for the full
comparison, and `--out report.json` to keep the numbers.
"""
