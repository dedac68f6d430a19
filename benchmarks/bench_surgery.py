"""Time `channel_groups` + `prune_channels` on large Keras applications.

Each model is built with `weights=None`; half of the channels of every
prunable group are removed. Prints seconds in total and per layer, median of
`--repeats` runs, and checks that the pruned model runs. `cpu s` is the
process CPU time of analysis + prune (`time.process_time()`), a steadier
figure than wall time when other jobs share the CPUs.

    python benchmarks/bench_surgery.py [--repeats 3] [--models ResNet50 ...]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp

MODELS = ["ResNet50", "ResNet101", "ResNet152",
          "DenseNet121", "DenseNet169", "DenseNet201"]


def count_layers(model):
    return sum(
        count_layers(layer) if isinstance(layer, keras.Model) else 1
        for layer in model.layers
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args(argv)
    print(f"{'model':<12} {'layers':>6} {'groups':>7} {'prunable':>8} "
          f"{'analyse s':>9} {'prune s':>8} {'total s':>8} {'cpu s':>6} "
          f"{'ms/layer':>8} {'params before':>13} {'after':>10}")
    for name in args.models:
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(args.input_size, args.input_size, 3)
        )
        analyse, prune, cpu = [], [], []
        for _ in range(args.repeats):
            cpu_start = time.process_time()
            start = time.perf_counter()
            groups = keras_adp.channel_groups(model)
            middle = time.perf_counter()
            keep = {g.name: np.arange(0, g.size, 2) for g in groups if g.prunable}
            pruned = keras_adp.prune_channels(model, keep)
            end = time.perf_counter()
            cpu.append(time.process_time() - cpu_start)
            analyse.append(middle - start)
            prune.append(end - middle)
            del pruned
            keras.backend.clear_session(free_memory=False)
        pruned = keras_adp.prune_channels(model, keep)
        pruned(np.zeros((1, 32, 32, 3), "float32")) if args.input_size == 32 else None
        layers = count_layers(model)
        total = statistics.median(a + p for a, p in zip(analyse, prune))
        print(f"{name:<12} {layers:>6} {len(groups):>7} "
              f"{sum(g.prunable for g in groups):>8} "
              f"{statistics.median(analyse):>9.3f} {statistics.median(prune):>8.3f} "
              f"{total:>8.3f} {statistics.median(cpu):>6.3f} "
              f"{1000 * total / layers:>8.2f} "
              f"{model.count_params():>13,} {pruned.count_params():>10,}",
              flush=True)


if __name__ == "__main__":
    main()
