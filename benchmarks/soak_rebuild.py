"""Soak test: hundreds of consecutive prune/rebuild steps on one model.

Starts from a VGG-style model whose groups have `--start` channels and, at
every step, removes one channel from every prunable group with
`prune_channels`, dropping the previous model. Prints resident memory (RSS)
and the time per step every `--every` steps, then the growth between the
first and last quarter: memory must stay flat (old models and graphs are
freed) and time per step must not grow (it shrinks with the model).

    python benchmarks/soak_rebuild.py [--steps 200] [--clear-session]
"""

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import psutil

import keras_adp

L = keras.layers


def build(width):
    inputs = keras.Input((8, 8, 3), name="image")
    x = inputs
    for block in range(3):
        x = L.Conv2D(width, 3, padding="same", name=f"conv{block}")(x)
        x = L.BatchNormalization(name=f"bn{block}")(x)
        x = L.ReLU(name=f"relu{block}")(x)
    skip = x
    x = L.Conv2D(width, 3, padding="same", name="res_conv")(x)
    x = L.Add(name="add")([x, skip])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x), name="soak")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--start", type=int, default=210)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--clear-session", action="store_true",
                        help="call keras.backend.clear_session() every step")
    parser.add_argument("--clear-kernel-cache", action="store_true",
                        help="only clear TensorFlow's eager kernel cache")
    args = parser.parse_args(argv)
    process = psutil.Process()
    model = build(args.start)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    times, rss = [], []
    print(f"{'step':>5} {'params':>9} {'RSS MiB':>8} {'ms/step (last block)':>21}")
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        groups = keras_adp.channel_groups(model)
        keep = {g.name: np.arange(g.size - 1) for g in groups if g.prunable}
        new_model = keras_adp.prune_channels(model, keep)
        del model
        model = new_model
        if args.clear_session:
            keras.backend.clear_session()
        if args.clear_kernel_cache:
            from tensorflow.python.eager import context

            context.context().clear_kernel_cache()
        gc.collect()
        times.append(time.perf_counter() - start)
        rss.append(process.memory_info().rss / 2**20)
        if step % args.every == 0 or step == 1:
            block = times[-args.every:]
            print(f"{step:>5} {model.count_params():>9,} {rss[-1]:>8.1f} "
                  f"{1000 * statistics.median(block):>21.1f}", flush=True)
    model(x)  # the final model still runs
    quarter = max(1, args.steps // 4)
    print(f"\nRSS first quarter median {statistics.median(rss[:quarter]):.1f} MiB, "
          f"last quarter median {statistics.median(rss[-quarter:]):.1f} MiB "
          f"(growth {statistics.median(rss[-quarter:]) - statistics.median(rss[:quarter]):+.1f} MiB)")
    print(f"time per step: first quarter median "
          f"{1000 * statistics.median(times[:quarter]):.1f} ms, last quarter "
          f"median {1000 * statistics.median(times[-quarter:]):.1f} ms")
    print(f"final group widths: "
          f"{sorted({g.size for g in keras_adp.channel_groups(model) if g.prunable})}")


if __name__ == "__main__":
    main()
