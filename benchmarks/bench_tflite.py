"""TFLite size and latency: dense vs ADP-pruned, float32 and int8.

Takes the models saved by `bench_training.py --save-dir DIR` (pairs
`NAME-dense.keras` / `NAME-adp.keras`), exports each to float32 and int8
TFLite (int8 calibrated on Fashion-MNIST training images), verifies each
file against its Keras model, and times single-image inference in the LiteRT
interpreter on one thread. Dense and pruned are timed alternately (A B A B,
`--rounds` rounds) and medians are compared, so machine noise hits both.
Prints size, latency, the latency speed-up and the FLOP reduction, and their
ratio (speed-up / FLOP reduction; 1.0 means the runtime realises all of the
FLOP reduction).

    python benchmarks/bench_training.py --save-dir runs/bench
    python benchmarks/bench_tflite.py runs/bench
"""

import argparse
import glob
import json
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp
from keras_adp import data as data_lib
from keras_adp import metrics as metrics_lib


def calibration(samples):
    arrays = data_lib.read_fashion_mnist_idx()
    x = arrays["x_train"][..., None].astype("float32")
    x = (x - x.mean()) / x.std()
    return x[:samples], x[-samples:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200,
                        help="timed invocations per round")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    calib, held_out = calibration(200)
    results = {}
    work = tempfile.mkdtemp(prefix="bench_tflite_")
    for dense_path in sorted(glob.glob(os.path.join(args.model_dir, "*-dense.keras"))):
        name = os.path.basename(dense_path)[: -len("-dense.keras")]
        pruned_path = os.path.join(args.model_dir, f"{name}-adp.keras")
        models = {"dense": keras.saving.load_model(dense_path),
                  "adp": keras.saving.load_model(pruned_path)}
        flops = {k: metrics_lib.inference_cost(m).flops for k, m in models.items()}
        for mode in ("float32", "int8"):
            files, verify = {}, {}
            for kind, model in models.items():
                path = os.path.join(work, f"{name}-{kind}-{mode}.tflite")
                keras_adp.export_tflite(
                    model, path, quantization=mode,
                    representative_data=calib if mode == "int8" else None,
                )
                verify[kind] = keras_adp.verify_tflite(path, model, held_out)
                files[kind] = path
            timings = {kind: [] for kind in files}
            for _ in range(args.rounds):
                for kind, path in files.items():
                    result = keras_adp.benchmark_tflite(path, runs=args.runs,
                                                        warmup=10)
                    timings[kind].append(result.median_ms)
            sizes = {kind: os.path.getsize(path) for kind, path in files.items()}
            median = {kind: statistics.median(t) for kind, t in timings.items()}
            speedup = median["dense"] / median["adp"]
            reduction = flops["dense"] / flops["adp"]
            results[f"{name}/{mode}"] = {
                "size_bytes": sizes, "median_ms": median, "speedup": speedup,
                "flop_reduction": reduction, "ratio": speedup / reduction,
                "max_abs_error": {k: v.max_abs_error for k, v in verify.items()},
                "top1_agreement": {k: v.top1_agreement for k, v in verify.items()},
            }
    print(f"{'model/mode':<20} {'dense KB':>9} {'adp KB':>8} {'dense ms':>9} "
          f"{'adp ms':>8} {'speed-up':>9} {'FLOP ÷':>7} {'ratio':>6} "
          f"{'top-1 agree (d/a)':>18}")
    for key, row in results.items():
        print(f"{key:<20} {row['size_bytes']['dense'] / 1024:>9.1f} "
              f"{row['size_bytes']['adp'] / 1024:>8.1f} "
              f"{row['median_ms']['dense']:>9.3f} {row['median_ms']['adp']:>8.3f} "
              f"{row['speedup']:>9.2f} {row['flop_reduction']:>7.2f} "
              f"{row['ratio']:>6.2f} "
              f"{row['top1_agreement']['dense']:>8.3f}/{row['top1_agreement']['adp']:.3f}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
