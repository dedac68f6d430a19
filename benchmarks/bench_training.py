"""Dense baseline vs ADP vs ADP with re-initialisation, side by side.

On Fashion-MNIST (the full 60k/10k IDX files, found in `$KERAS_ADP_DATA`, the
Keras cache or `/usr/share/datasets/fashion-mnist`), for each model the three
runs use the same architecture, data, epochs, optimizer and seed:

- dense: plain `model.fit` for `--epochs` epochs;
- adp: `ADPTrainer` with the policy below, pruning while training;
- adp-reinit: the same with `reinitialize=True` (each compressed
  architecture re-initialised and trained from scratch);
- scratch (optional, `--runs ... scratch`): the final architecture ADP
  reached, freshly initialised and trained for all `--epochs` with plain
  `model.fit` -- what that small architecture reaches on this budget
  without any pruning, i.e. whether ADP's accuracy loss is the small
  architecture's or the method's.

Prints test accuracy, params, MACs, total training compute (3x forward MACs
per training sample, plus density measurement), training wall time and the
process's CPU time (less sensitive than wall time to other load on a shared
machine), each also as a ratio to dense. Writes the table as JSON with `--out`.

    python benchmarks/bench_training.py                 # full run
    python benchmarks/bench_training.py --quick         # minutes, subset
    python benchmarks/bench_training.py --table-from a.json b.json  # reprint
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import keras_adp
from keras_adp import data as data_lib
from keras_adp import metrics as metrics_lib
from keras_adp import models as models_lib


def load(train_samples, test_samples, source="idx"):
    if source == "embedded":  # the bundled 6k/1k subset: for smoke tests
        arrays = data_lib.load_embedded_arrays()
    else:
        arrays = data_lib.read_fashion_mnist_idx()
    x_train = arrays["x_train"][:train_samples, ..., None].astype("float32")
    x_test = arrays["x_test"][:test_samples, ..., None].astype("float32")
    mean, std = x_train.mean(), x_train.std()
    return (
        (x_train - mean) / std,
        arrays["y_train"][:train_samples].astype("int32"),
        (x_test - mean) / std,
        arrays["y_test"][:test_samples].astype("int32"),
    )


def build(args, name, width, steps_total, widths=None):
    keras.utils.set_random_seed(args.seed)
    if name.startswith("vgg"):
        model = models_lib.MODEL_BUILDERS[name](
            (28, 28, 1), 10, width, batch_norm=not args.no_batch_norm
        )
    else:
        model = models_lib.build_model(name, (28, 28, 1), 10, width)
    if widths:
        # The final ADP architecture, freshly initialised: prune to the
        # widths, then clone (clone_model gives new, re-initialised weights).
        small = keras_adp.prune_channels(
            model, {group: np.arange(w) for group, w in widths.items()}
        )
        keras.utils.set_random_seed(args.seed)
        model = keras.models.clone_model(small)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps_total)
    if args.weight_decay:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def evaluate(model, x_test, y_test):
    return float(model.evaluate(x_test, y_test, batch_size=256, verbose=0)[1])


def run_dense(args, name, width, data, widths=None):
    x, y, x_test, y_test = data
    steps = args.epochs * int(np.ceil(len(x) / args.batch_size))
    model = build(args, name, width, steps, widths)
    cost = metrics_lib.inference_cost(model)
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(args.epochs):
        keras.utils.set_random_seed(args.seed + epoch)
        model.fit(x, y, batch_size=args.batch_size, epochs=epoch + 1,
                  initial_epoch=epoch, verbose=0)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    _save(args, f"{name}-{'scratch' if widths else 'dense'}.keras", model)
    return {
        "cpu_s": cpu,
        "accuracy": evaluate(model, x_test, y_test),
        "params": cost.params,
        "macs": cost.macs,
        "flops": cost.flops,
        "training_macs": metrics_lib.training_macs(cost.macs, len(x) * args.epochs),
        "wall_s": wall,
    }


def run_adp(args, name, width, data, reinitialize):
    x, y, x_test, y_test = data
    steps = args.epochs * int(np.ceil(len(x) / args.batch_size))
    model = build(args, name, width, steps)
    policy = keras_adp.ADPPolicy(
        warmup_epochs=args.warmup_epochs,
        trigger=args.trigger,
        interval=args.interval,
        min_channels=args.min_channels,
        max_prune_steps=args.max_prune_steps,
        reinitialize=reinitialize,
        max_accuracy_drop=args.max_accuracy_drop,
        width_rule=args.width_rule,
        recovery_updates=args.recovery_updates,
    )
    trainer = keras_adp.ADPTrainer(policy, seed=args.seed, verbose=0)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = trainer.fit(model, x, y, epochs=args.epochs,
                         batch_size=args.batch_size)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    _save(args, f"{name}-{'adp-reinit' if reinitialize else 'adp'}.keras",
          result.model)
    final = result.history[-1]
    return {
        "cpu_s": cpu,
        "accuracy": evaluate(result.model, x_test, y_test),
        "params": final["params"],
        "macs": final["macs"],
        "flops": final["flops"],
        "training_macs": final["cumulative_macs"],
        "wall_s": wall,
        "widths": final["widths"],
        "prune_epochs": [step["epoch"] + 1 for step in result.steps],
    }


def _adp_widths(args, name, width, rows):
    if "adp" in rows:
        return rows["adp"]["widths"]
    if not args.widths_from:
        raise SystemExit(
            "The `scratch` run trains the final ADP architecture from scratch: "
            "list `adp` before it in --runs, or pass --widths-from with the "
            "--out JSON of an earlier run."
        )
    with open(args.widths_from) as handle:
        return json.load(handle)["results"][f"{name}@{width}"]["adp"]["widths"]


def _save(args, filename, model):
    if args.save_dir:
        os.makedirs(args.save_dir, exist_ok=True)
        model.save(os.path.join(args.save_dir, filename))


def print_table(name, rows):
    reference = "dense" if "dense" in rows else next(iter(rows))
    ref = rows[reference]
    ratio = "×dense" if reference == "dense" else "×ref"
    print(f"\n{name}: test accuracy, cost, and ratio to {reference}")
    print(f"{'run':<11} {'acc %':>6} {'Δacc pt':>8} {'params':>10} {'÷':>6} "
          f"{'MACs':>12} {'÷':>6} {'train GMAC':>11} {ratio:>7} "
          f"{'wall s':>7} {ratio:>7} {'CPU s':>7} {ratio:>7}")
    for run, row in rows.items():
        print(
            f"{run:<11} {100 * row['accuracy']:>6.2f} "
            f"{100 * (row['accuracy'] - ref['accuracy']):>+8.2f} "
            f"{row['params']:>10,} {ref['params'] / row['params']:>6.1f} "
            f"{row['macs']:>12,} {ref['macs'] / row['macs']:>6.1f} "
            f"{row['training_macs'] / 1e9:>11.1f} "
            f"{row['training_macs'] / ref['training_macs']:>7.2f} "
            f"{row['wall_s']:>7.1f} {row['wall_s'] / ref['wall_s']:>7.2f} "
            f"{row['cpu_s']:>7.1f} {row['cpu_s'] / ref['cpu_s']:>7.2f}"
        )
    for run, row in rows.items():
        if "widths" in row:
            print(f"  {run} pruned at epochs {row['prune_epochs']}; final "
                  f"widths {row['widths']}")


def _drop(text):
    return None if text.lower() == "none" else float(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["vgg_small", "resnet18"])
    parser.add_argument("--width", type=float, nargs="*", default=None,
                        help="width multiplier per model "
                        "(default 0.5 for vgg_small, 0.125 for resnet18)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--test-samples", type=int, default=10000)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--trigger", default="interval")
    parser.add_argument("--interval", type=int, default=1)
    parser.add_argument("--min-channels", type=int, default=4)
    parser.add_argument(
        "--width-rule", choices=keras_adp.policy.WIDTH_RULES,
        default="density",
        help="ADPPolicy.width_rule (default: the paper's 'density', with "
        "which README's figures of this benchmark were measured)",
    )
    parser.add_argument("--max-prune-steps", type=int, default=None)
    parser.add_argument(
        "--recovery-updates",
        type=lambda text: None if text.lower() == "none" else int(text),
        default=keras_adp.ADPPolicy.recovery_updates,
        help="ADPPolicy.recovery_updates: optimizer updates a step needs "
        "left after it for its full cut ('none': always the full cut)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-accuracy-drop", type=_drop, default=0.01,
        help="the accuracy guard's budget, or 'none' (no guard, as the "
        "results measured before the guard existed)")
    parser.add_argument("--no-batch-norm", action="store_true",
                        help="VGG models without BatchNormalization")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="AdamW weight decay (0: Adam)")
    parser.add_argument("--runs", nargs="*", default=["dense", "adp", "adp-reinit"],
                        choices=["dense", "adp", "adp-reinit", "scratch"],
                        help="among dense, adp, adp-reinit and scratch (the "
                        "final ADP architecture trained from scratch for all "
                        "epochs, as a plain model.fit)")
    parser.add_argument("--widths-from", default=None,
                        help="--out JSON whose adp widths the scratch run uses")
    parser.add_argument("--data", choices=["idx", "embedded"], default="idx",
                        help="idx: the full Fashion-MNIST IDX files (default); "
                        "embedded: the package's bundled 6k/1k subset")
    parser.add_argument("--quick", action="store_true",
                        help="10k train / 2k test samples, 6 epochs")
    parser.add_argument("--out", default=None, help="write results as JSON")
    parser.add_argument("--save-dir", default=None,
                        help="save the trained models here (for bench_tflite)")
    parser.add_argument("--table-from", nargs="*", default=None,
                        help="print one table per model from these --out JSON "
                        "files (rows merged in order; no training)")
    args = parser.parse_args(argv)
    if args.table_from:
        merged = {}
        for path in args.table_from:
            with open(path) as handle:
                for key, rows in json.load(handle)["results"].items():
                    merged.setdefault(key, {}).update(rows)
        for key, rows in merged.items():
            name, width = key.split("@")
            print_table(f"{name} (width x{width})", rows)
        return
    if args.quick:
        args.train_samples, args.test_samples, args.epochs = 10000, 2000, 6
    defaults = {"vgg_small": 0.5, "resnet18": 0.125, "vgg19": 0.25}
    widths = args.width or [defaults.get(m, 0.5) for m in args.models]
    data = load(args.train_samples, args.test_samples, args.data)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; TF {tf.__version__}, Keras {keras.__version__}")
    print(f"Fashion-MNIST {len(data[0])} train / {len(data[2])} test; "
          f"{args.epochs} epochs, batch {args.batch_size}, "
          f"{'AdamW wd ' + str(args.weight_decay) if args.weight_decay else 'Adam'} "
          f"lr {args.lr} cosine; "
          f"{'no BatchNormalization in VGG; ' if args.no_batch_norm else ''}"
          f"policy warmup={args.warmup_epochs} trigger={args.trigger} "
          f"interval={args.interval} min_channels={args.min_channels} "
          f"max_prune_steps={args.max_prune_steps}; seed {args.seed}")
    results = {}
    for name, width in zip(args.models, widths):
        rows = {}
        for run in args.runs:
            if run == "dense":
                rows[run] = run_dense(args, name, width, data)
            elif run == "scratch":
                rows[run] = run_dense(args, name, width, data,
                                      widths=_adp_widths(args, name, width, rows))
            else:
                rows[run] = run_adp(args, name, width, data,
                                    reinitialize=(run == "adp-reinit"))
            print(f"{name} x{width} {run}: done in {rows[run]['wall_s']:.0f}s, "
                  f"accuracy {100 * rows[run]['accuracy']:.2f}%", flush=True)
        print_table(f"{name} (width x{width})", rows)
        results[f"{name}@{width}"] = rows
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
