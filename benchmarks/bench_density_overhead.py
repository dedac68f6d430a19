"""Overhead of the `ActivationDensity` callback: epoch time and peak memory.

Trains `vgg_small(input_shape=(28, 28, 1), width_multiplier=0.5)` on
Fashion-MNIST (IDX files, see `keras_adp.data.read_fashion_mnist_idx`) one
epoch per `fit()` call, alternating epochs without (A) and with (B) the
callback at its default calibration size (512 samples, batch 64), after one
warm-up epoch with the callback (it traces both the train and the probe
functions). Prints each epoch's wall time and process CPU time (all threads;
less sensitive than wall time to other load on a shared machine) and the
median B/A ratio over the pairs (target <= 1.03).

Then compares the peak memory of one density measurement with a plain
`model.predict` on the same calibration batch (and with the naive
alternative: a model returning every measured activation map). Each
measurement runs in a fresh subprocess.

    python benchmarks/bench_density_overhead.py [--train-samples 20000]
        [--pairs 3] [--skip-timing] [--skip-memory]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import psutil

from keras_adp import callbacks
from keras_adp import data
from keras_adp import density
from keras_adp import graph
from keras_adp import models

CALIBRATION_SAMPLES = 512  # The callback's defaults.
CALIBRATION_BATCH = 64
MEMORY_MODES = ("predict", "probe", "maps")


def build_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = models.vgg_small(
        input_shape=(28, 28, 1), num_classes=10, width_multiplier=0.5
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def load_train(samples):
    arrays = data.read_fashion_mnist_idx()
    x = arrays["x_train"][:samples, :, :, None].astype("float32") / 255.0
    return x, arrays["y_train"][:samples].astype("int64")


class TimedActivationDensity(callbacks.ActivationDensity):
    """`ActivationDensity` that records the wall and CPU time of its work."""

    def on_train_begin(self, logs=None):
        self.costs = []
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = time.perf_counter(), time.process_time()
        super().on_epoch_end(epoch, logs)
        self.costs.append(
            (time.perf_counter() - wall, time.process_time() - cpu)
        )


def time_epochs(args):
    x, y = load_train(args.train_samples)
    model = build_model()
    callback = TimedActivationDensity(x)
    print(
        f"Epoch time: vgg_small(width 0.5), {len(x)} Fashion-MNIST samples, "
        f"batch {args.batch_size}; callback calibration "
        f"{len(callback.calibration_inputs)} samples, batch "
        f"{callback.batch_size}; {os.cpu_count()} CPU cores"
    )

    def epoch(index, with_callback):
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(
            x, y, batch_size=args.batch_size, epochs=index + 1,
            initial_epoch=index, verbose=0,
            callbacks=[callback] if with_callback else [],
        )
        return time.perf_counter() - wall, time.process_time() - cpu

    warmup, warmup_cpu = epoch(0, True)
    print(f"  warm-up epoch (B, traces train and probe functions): "
          f"{warmup:.2f} s wall, {warmup_cpu:.2f} s CPU")
    print(f"  load average before the timed epochs: {load_average()}")
    print(f"  {'epoch':>5}  {'arm':<16} {'wall s':>8} {'CPU s':>8}   "
          "callback's own on_epoch_end (wall s / CPU s)")
    seconds = {"A": [], "B": []}
    cpu_seconds = {"A": [], "B": []}
    own = []
    index = 1
    for _ in range(args.pairs):
        for arm in ("A", "B"):
            elapsed, cpu = epoch(index, arm == "B")
            seconds[arm].append(elapsed)
            cpu_seconds[arm].append(cpu)
            label = "A (no callback)" if arm == "A" else "B (callback)"
            line = f"  {index:>5}  {label:<16} {elapsed:>8.2f} {cpu:>8.2f}"
            if arm == "B":
                own.append(callback.costs[-1])
                line += f"   {own[-1][0]:.3f} / {own[-1][1]:.3f}"
            print(line, flush=True)
            index += 1
    print(f"  load average after: {load_average()}")
    for name, values in (("wall", seconds), ("CPU", cpu_seconds)):
        ratios = [b / a for a, b in zip(values["A"], values["B"])]
        print(f"  {name} B/A per pair: "
              f"{', '.join(f'{r:.4f}' for r in ratios)}; median "
              f"{statistics.median(ratios):.4f} (target <= 1.03)")
    for column, name, values in ((0, "wall", seconds), (1, "CPU", cpu_seconds)):
        base = statistics.median(values["A"])
        cost = statistics.median(wall_cpu[column] for wall_cpu in own)
        print(f"  callback's own {name} time: median {cost:.3f} s per "
              f"measured epoch; (median A + it) / median A = "
              f"{(base + cost) / base:.4f}")
    probe = density.DensityProbe(model)  # First call traces; median.
    walls, cpus = [], []
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        probe.measure(callback.calibration_inputs,
                      batch_size=callback.batch_size)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(f"  one measurement alone (probe.measure, median of 5): "
          f"{wall:.3f} s wall = {wall / statistics.median(seconds['A']):.2%}"
          f" of an A epoch; {cpu:.3f} s CPU = "
          f"{cpu / statistics.median(cpu_seconds['A']):.2%}")


def load_average():
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def memory_child(mode):
    """Runs one measurement in this (fresh) process and prints JSON."""
    x, _ = load_train(CALIBRATION_SAMPLES)
    model = build_model()
    if mode == "predict":
        def run():
            return model.predict(x, batch_size=CALIBRATION_BATCH, verbose=0)
    elif mode == "probe":
        probe = density.DensityProbe(model)

        def run():
            return probe.measure(x, batch_size=CALIBRATION_BATCH)
    else:
        tensors = [
            group.density_site.tensor
            for group in graph.channel_groups(model)
            if group.prunable and group.density_site is not None
        ]
        maps = keras.Model(model.inputs, tensors)

        def run():
            return maps.predict(x, batch_size=CALIBRATION_BATCH, verbose=0)

    process = psutil.Process()
    result = {}
    for call in ("first", "second"):
        result[call] = measure_peak(process, run)
    print(json.dumps(result))


def measure_peak(process, run):
    """Peak RSS and Python-heap increase during `run()`, in MiB."""
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    tracemalloc.start()
    sampler.start()
    start = time.perf_counter()
    output = run()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak[0] = max(peak[0], process.memory_info().rss)
    del output
    return {
        "rss_increase_mib": (peak[0] - baseline) / 2**20,
        "python_heap_peak_mib": heap_peak / 2**20,
        "process_peak_rss_mib": peak[0] / 2**20,
        "seconds": seconds,
    }


def compare_memory():
    print(
        f"Peak memory of one call on the same {CALIBRATION_SAMPLES} "
        f"calibration samples (batch {CALIBRATION_BATCH}), each mode in a "
        "fresh subprocess."
    )
    print(
        "  Method: on CPU TensorFlow has no allocator statistics "
        "(tf.config.experimental.get_memory_info is GPU-only), so the "
        "process RSS is sampled every 0.5 ms by a psutil thread during the "
        "call; 'RSS +' is that peak minus the RSS just before the call. "
        "'peak RSS' is the sampled peak itself; 'host heap' is the tracemalloc peak (Python/NumPy allocations, "
        "i.e. the outputs brought to the host). 'first' includes tracing "
        "the predict function; 'second' reuses it (RSS then mostly reuses "
        "memory the allocator kept, so it is a lower bound)."
    )
    print(f"  {'mode':<44} {'call':<6} {'RSS +':>9} {'host heap':>10} "
          f"{'peak RSS':>9} {'seconds':>8}")
    labels = {
        "predict": "model.predict (logits)",
        "probe": "DensityProbe.measure (per-channel counts)",
        "maps": "naive: predict returning activation maps",
    }
    for mode in MEMORY_MODES:
        completed = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--memory-child",
             mode],
            capture_output=True, text=True, check=False,
        )
        if completed.returncode != 0:
            print(f"  {mode}: failed\n{completed.stderr[-2000:]}")
            continue
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        for call in ("first", "second"):
            row = result[call]
            print(
                f"  {labels[mode]:<44} {call:<6} "
                f"{row['rss_increase_mib']:>6.1f} MiB "
                f"{row['python_heap_peak_mib']:>6.2f} MiB "
                f"{row['process_peak_rss_mib']:>5.0f} MiB "
                f"{row['seconds']:>8.3f}"
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", choices=MEMORY_MODES,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if not args.skip_timing:
        time_epochs(args)
    if not args.skip_memory:
        compare_memory()


if __name__ == "__main__":
    main()
