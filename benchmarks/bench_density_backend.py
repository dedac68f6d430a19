"""What a density measurement costs next to a training epoch, on any backend.

Runs on the Keras backend of the process (`KERAS_BACKEND`), without
TensorFlow when the backend is not TensorFlow. Trains `vgg_small(input_shape=
(28, 28, 1))` on the first `--train-samples` images of the bundled
Fashion-MNIST subset (`keras_adp/data_files/fashion_mnist_subset.npz`), one
epoch per `fit()` call, and times (process CPU time, all threads, and wall
time; median of `--repeats`):

- a training epoch (batch `--batch-size`), after one warm-up epoch;
- `DensityProbe.measure` on the calibration set (`--calibration` samples, the
  `ADPPolicy.calibration_samples` and `ActivationDensity` default of 512) at
  batch 32 (`ADPTrainer`'s per-epoch measurement), 64 (`ActivationDensity`'s
  default) and 256; the probe is built and its first call made beforehand;
- `measure_density` (builds a new probe every call) at batch 64;
- `model.predict` on the same calibration set at batch 64: the forward pass
  any measurement of these samples needs, i.e. the floor.

Each figure is also printed as a share of the median epoch (issue 13's
target: <= 3 % of an epoch).

    KERAS_BACKEND=torch python benchmarks/bench_density_backend.py \
        [--train-samples 2000] [--calibration 512] [--repeats 3]

Runs on the dev box: benchmarks/results/bench_density_backend.txt. The
measurement costs about what `model.predict` on the same samples costs, so
its share of an epoch scales with calibration / training samples.
"""

import argparse
import importlib.resources
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from keras_adp import density
from keras_adp import models


def load_train(samples):
    """The first `samples` training images (float32 in [0, 1]) and labels."""
    path = importlib.resources.files("keras_adp") / (
        "data_files/fashion_mnist_subset.npz"
    )
    with np.load(str(path)) as arrays:
        x = arrays["x_train"][:samples, :, :, None].astype("float32") / 255.0
        y = arrays["y_train"][:samples].astype("int64")
    return x, y


def build_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = models.vgg_small(input_shape=(28, 28, 1), num_classes=10)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def timed(function, repeats):
    """Median (wall s, CPU s) of `repeats` calls of `function`."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    x, y = load_train(args.train_samples)
    calibration = x[: args.calibration]
    model = build_model()
    print(
        f"backend {keras.backend.backend()}, Keras {keras.__version__}; "
        f"vgg_small(28x28x1), {len(x)} training images, batch "
        f"{args.batch_size}; calibration {len(calibration)} samples; "
        f"{os.cpu_count()} CPU cores; load average "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )

    def epoch():
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)

    warm_wall, warm_cpu = timed(epoch, 1)
    print(f"  warm-up epoch: {warm_wall:.2f} s wall, {warm_cpu:.2f} s CPU")
    epoch_wall, epoch_cpu = timed(epoch, args.repeats)
    rows = [("training epoch", epoch_wall, epoch_cpu)]
    probe = density.DensityProbe(model)
    for batch_size in (32, 64, 256):
        probe.measure(calibration, batch_size=batch_size)  # Warm-up.
        wall, cpu = timed(
            lambda: probe.measure(calibration, batch_size=batch_size),
            args.repeats,
        )
        rows.append((f"probe.measure, batch {batch_size}", wall, cpu))
    wall, cpu = timed(
        lambda: density.measure_density(model, calibration, batch_size=64),
        args.repeats,
    )
    rows.append(("measure_density (new probe), batch 64", wall, cpu))
    model.predict(calibration, batch_size=64, verbose=0)  # Warm-up.
    wall, cpu = timed(
        lambda: model.predict(calibration, batch_size=64, verbose=0),
        args.repeats,
    )
    rows.append(("model.predict (floor), batch 64", wall, cpu))
    print(f"  {'median of ' + str(args.repeats):<40} {'wall s':>8} "
          f"{'% epoch':>8} {'CPU s':>8} {'% epoch':>8}")
    for label, wall, cpu in rows:
        print(f"  {label:<40} {wall:>8.3f} {wall / epoch_wall:>8.2%} "
              f"{cpu:>8.3f} {cpu / epoch_cpu:>8.2%}")
    print(f"  load average after: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
