"""TFLite (and ONNX) size and latency: dense vs ADP-pruned.

Takes the models saved by `bench_training.py --save-dir DIR` (pairs
`NAME-dense.keras` / `NAME-adp.keras`), exports each to float32 and int8
TFLite (int8 calibrated on Fashion-MNIST training images), verifies each
file against its Keras model, and times single-image inference in the LiteRT
interpreter on one thread. When the `onnx` extra is installed
(`pip install -e ".[onnx]"`) each model is also exported to float32 ONNX,
verified and timed in ONNX Runtime (one intra-op thread), in a row beside
the TFLite float32 one. Dense and pruned are timed alternately (A B A B,
`--rounds` rounds) and medians are compared, so machine noise hits both.
Prints size, latency, the latency speed-up and the FLOP reduction, and their
ratio (speed-up / FLOP reduction; 1.0 means the runtime realises all of the
FLOP reduction), and parity with Keras (largest absolute output error and
top-1 agreement on 200 held-out images).

    python benchmarks/bench_training.py --save-dir runs/bench
    python benchmarks/bench_tflite.py runs/bench
"""

import argparse
import glob
import importlib.util
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


def onnx_available():
    """Whether the `onnx` extra (converter and ONNX Runtime) is installed."""
    needed = ("onnx", "onnxruntime", "tf2onnx")
    return all(importlib.util.find_spec(name) is not None for name in needed)


def export_tflite(mode, calib):
    def export(model, path):
        keras_adp.export_tflite(
            model, path, quantization=mode,
            representative_data=calib if mode == "int8" else None,
        )
    return export


def export_onnx(model, path):
    keras_adp.export_onnx(model, path)


# Row suffix -> (file suffix, export(model, path), verify, benchmark).
def formats(calib, with_onnx):
    rows = {
        mode: (".tflite", export_tflite(mode, calib), keras_adp.verify_tflite,
               keras_adp.benchmark_tflite)
        for mode in ("float32", "int8")
    }
    if with_onnx:
        rows = {"float32": rows["float32"],
                "onnx": (".onnx", export_onnx, keras_adp.verify_onnx,
                         keras_adp.benchmark_onnx),
                "int8": rows["int8"]}
    return rows


def measure(name, row, fmt, models, flops, held_out, work, args):
    """Export, verify and time one format for dense and pruned."""
    suffix, export, verify_fn, benchmark = fmt
    files, verify = {}, {}
    for kind, model in models.items():
        path = os.path.join(work, f"{name}-{kind}-{row}{suffix}")
        export(model, path)
        verify[kind] = verify_fn(path, model, held_out)
        files[kind] = path
    timings = {kind: [] for kind in files}
    for _ in range(args.rounds):
        for kind, path in files.items():
            result = benchmark(path, runs=args.runs, warmup=10)
            timings[kind].append(result.median_ms)
    sizes = {kind: os.path.getsize(path) for kind, path in files.items()}
    median = {kind: statistics.median(t) for kind, t in timings.items()}
    speedup = median["dense"] / median["adp"]
    reduction = flops["dense"] / flops["adp"]
    return {
        "size_bytes": sizes, "median_ms": median, "speedup": speedup,
        "flop_reduction": reduction, "ratio": speedup / reduction,
        "max_abs_error": {k: v.max_abs_error for k, v in verify.items()},
        "top1_agreement": {k: v.top1_agreement for k, v in verify.items()},
    }


def print_table(results):
    print(f"{'model/format':<20} {'dense KB':>9} {'adp KB':>8} {'dense ms':>9} "
          f"{'adp ms':>8} {'speed-up':>9} {'FLOP ÷':>7} {'ratio':>6} "
          f"{'max |err| (d/a)':>19} {'top-1 agree (d/a)':>18}")
    for key, row in results.items():
        error = row["max_abs_error"]
        agree = row["top1_agreement"]
        print(f"{key:<20} {row['size_bytes']['dense'] / 1024:>9.1f} "
              f"{row['size_bytes']['adp'] / 1024:>8.1f} "
              f"{row['median_ms']['dense']:>9.3f} {row['median_ms']['adp']:>8.3f} "
              f"{row['speedup']:>9.2f} {row['flop_reduction']:>7.2f} "
              f"{row['ratio']:>6.2f} "
              f"{error['dense']:>9.1e}/{error['adp']:<9.1e} "
              f"{agree['dense']:>8.3f}/{agree['adp']:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200,
                        help="timed invocations per round")
    parser.add_argument("--no-onnx", action="store_true",
                        help="skip the ONNX rows even if the onnx extra is "
                        "installed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    with_onnx = not args.no_onnx and onnx_available()
    if not with_onnx and not args.no_onnx:
        print('ONNX rows skipped: pip install -e ".[onnx]" to add them')
    calib, held_out = calibration(200)
    results = {}
    work = tempfile.mkdtemp(prefix="bench_tflite_")
    for dense_path in sorted(glob.glob(os.path.join(args.model_dir, "*-dense.keras"))):
        name = os.path.basename(dense_path)[: -len("-dense.keras")]
        pruned_path = os.path.join(args.model_dir, f"{name}-adp.keras")
        models = {"dense": keras.saving.load_model(dense_path),
                  "adp": keras.saving.load_model(pruned_path)}
        flops = {k: metrics_lib.inference_cost(m).flops for k, m in models.items()}
        for row, fmt in formats(calib, with_onnx).items():
            results[f"{name}/{row}"] = measure(
                name, row, fmt, models, flops, held_out, work, args
            )
    print_table(results)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
