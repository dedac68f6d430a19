"""Is ADP better than just training a narrower model? Accuracy vs size.

On Fashion-MNIST, every run trains `--model` (vgg_small or resnet18, both
BN->ReLU, at `--base-width`: "dense" below is that width) from scratch on
the same training samples for the same epochs, batch size and optimizer
(Adam with cosine decay), for each seed:

- `dense`: width x1.0, plain `model.fit`;
- `uniform@W`: the same architecture at width multiplier W (every layer
  W times narrower), plain `model.fit` -- what a user who sweeps a width
  multiplier gets;
- `adp-paper`: `ADPTrainer` with the paper's width rule
  (`width_rule="density"`) at its full cut, no step limit
  (`removal_scale=1.0`, `max_prune_steps=None`), and the default accuracy
  guard;
- `adp`: `ADPTrainer` with `ADPPolicy()`'s defaults, or with the fields given
  by `--adp-policy` (JSON).

10% of the training samples are held out (the same for every run) as the
guard's validation data; accuracy is measured on the test set, which no run
sees before. Prints, per run, mean and spread (half the min-max range) over
the seeds of test accuracy, params, MACs, training compute (3x forward MACs
per training sample, plus density measurement for ADP), wall and CPU time,
and ADP's final widths; writes JSON (`--out`) and a Pareto plot of
accuracy vs parameters, log x (`--plot`).

    python benchmarks/bench_tradeoff.py --train-samples 20000 --seeds 0 1 2
    python benchmarks/bench_tradeoff.py --table-from a.json b.json --plot p.png
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp
from keras_adp import idx
from keras_adp import metrics as metrics_lib
from keras_adp import models as models_lib


def load(train_samples, test_samples, source):
    # keras_adp.idx needs no TensorFlow, so this runs on any Keras backend.
    if source == "embedded":
        from keras_adp import data_loaders
    arrays = (
        data_loaders.load_embedded_arrays()
        if source == "embedded"
        else idx.read_fashion_mnist_idx()
    )
    x = arrays["x_train"][:train_samples, ..., None].astype("float32")
    x_test = arrays["x_test"][:test_samples, ..., None].astype("float32")
    mean, std = x.mean(), x.std()
    x, x_test = (x - mean) / std, (x_test - mean) / std
    y = arrays["y_train"][:train_samples].astype("int32")
    train, held = keras_adp.guard.holdout_indices(len(x), 0.1, seed=1234)
    return {
        "x": x[train], "y": y[train],
        "x_val": x[held], "y_val": y[held],
        "x_test": x_test,
        "y_test": arrays["y_test"][:test_samples].astype("int32"),
    }


def build(args, width, seed):
    """`--model` at `--base-width` x `width`, compiled, seeded."""
    keras.utils.set_random_seed(seed)
    model = models_lib.build_model(
        args.model, (28, 28, 1), 10, args.base_width * width
    )
    steps = args.epochs * int(np.ceil(args.train_size / args.batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(args.lr, steps)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def run_plain(args, data, width, seed):
    model = build(args, width, seed)
    cost = metrics_lib.inference_cost(model)
    start, cpu_start = time.perf_counter(), time.process_time()
    val_accuracy = []
    for epoch in range(args.epochs):
        keras.utils.set_random_seed(seed + epoch)
        history = model.fit(
            data["x"], data["y"], batch_size=args.batch_size,
            epochs=epoch + 1, initial_epoch=epoch, verbose=0,
            validation_data=(data["x_val"], data["y_val"]),
        )
        val_accuracy.append(float(history.history["val_accuracy"][-1]))
    return {
        "accuracy": _accuracy(model, data),
        "params": cost.params,
        "macs": cost.macs,
        "training_macs": metrics_lib.training_macs(
            cost.macs, len(data["x"]) * args.epochs
        ),
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu_start,
        # The same held-out samples the guard judges ADP on: what a dense
        # (or uniform) model reaches epoch by epoch, to set the guard's
        # references against.
        "val_accuracy": val_accuracy,
    }


def run_adp(args, data, policy, seed):
    model = build(args, 1.0, seed)
    trainer = keras_adp.ADPTrainer(policy, seed=seed, verbose=0)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = trainer.fit(
        model, data["x"], data["y"], epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(data["x_val"], data["y_val"]),
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    # The returned model: after a rollback in the last epoch it is not the
    # one the last history record describes.
    final = metrics_lib.inference_cost(result.model)
    return {
        "accuracy": _accuracy(result.model, data),
        "params": final.params,
        "macs": final.macs,
        "training_macs": result.history[-1]["cumulative_macs"],
        "wall_s": wall,
        "cpu_s": cpu,
        "widths": {
            group.name: group.size
            for group in keras_adp.channel_groups(result.model)
            if group.prunable
        },
        "steps": [
            {"epoch": step["epoch"] + 1, "attempt": step["attempt"],
             "outcome": step["outcome"], "after": step["after"]}
            for step in result.steps
        ],
        # What the guard saw: each epoch's validation accuracy, and each
        # judgement (value, reference, action).
        "val_accuracy": [
            record["logs"].get("val_accuracy") for record in result.history
        ],
        "guard": [
            {key: record["guard"][key]
             for key in ("epoch", "step_epoch", "value", "reference",
                         "action")}
            for record in result.history
            if record.get("guard")
        ],
    }


def _accuracy(model, data):
    return float(model.evaluate(
        data["x_test"], data["y_test"], batch_size=256, verbose=0
    )[1])


def summarise(rows):
    """run -> {field: (mean, spread)} over seeds, plus per-seed values."""
    table = {}
    for run, per_seed in rows.items():
        values = list(per_seed.values())
        entry = {}
        for field in ("accuracy", "params", "macs", "training_macs",
                      "wall_s", "cpu_s"):
            column = np.array([value[field] for value in values], float)
            entry[field] = (
                float(column.mean()),
                float((column.max() - column.min()) / 2),
            )
        entry["seeds"] = sorted(per_seed)
        table[run] = entry
    return table


def print_table(rows, title="vgg_small on Fashion-MNIST"):
    table = summarise(rows)
    reference = table.get("dense") or next(iter(table.values()))
    print(f"\n{title}: mean ± half-range over seeds; ratios to dense")
    print(f"{'run':<13} {'seeds':>5} {'acc %':>13} {'Δ pt':>6} "
          f"{'params':>17} {'÷':>6} {'MACs':>12} {'÷':>6} "
          f"{'train GMAC':>10} {'×':>5} {'wall s':>13} {'×':>5} "
          f"{'CPU s':>7} {'×':>5}")
    for run, entry in sorted(
        table.items(), key=lambda item: -item[1]["params"][0]
    ):
        acc, acc_spread = entry["accuracy"]
        params, params_spread = entry["params"]
        print(
            f"{run:<13} {len(entry['seeds']):>5} "
            f"{100 * acc:>6.2f} ± {100 * acc_spread:<4.2f} "
            f"{100 * (acc - reference['accuracy'][0]):>+6.2f} "
            f"{params:>9,.0f} ± {params_spread:<5,.0f} "
            f"{reference['params'][0] / params:>6.1f} "
            f"{entry['macs'][0]:>12,.0f} "
            f"{reference['macs'][0] / entry['macs'][0]:>6.1f} "
            f"{entry['training_macs'][0] / 1e9:>10.1f} "
            f"{entry['training_macs'][0] / reference['training_macs'][0]:>5.2f} "
            f"{entry['wall_s'][0]:>6.1f} ± {entry['wall_s'][1]:<4.1f} "
            f"{entry['wall_s'][0] / reference['wall_s'][0]:>5.2f} "
            f"{entry['cpu_s'][0]:>7.1f} "
            f"{entry['cpu_s'][0] / reference['cpu_s'][0]:>5.2f}"
        )
    for field in ("params", "macs"):
        curve = sorted(
            (entry[field][0], entry["accuracy"][0])
            for run, entry in table.items()
            if run.startswith("uniform@") or run == "dense"
        )
        for run, per_seed in rows.items():
            gaps = [
                value["accuracy"] - uniform_at(curve, value[field])
                for value in per_seed.values()
                if "widths" in value
            ]
            if gaps and not any(np.isnan(gaps)):
                print(f"  {run}: accuracy minus uniform width's at the same "
                      f"{field} (log-linear between uniform runs' means), "
                      f"per seed: "
                      f"{' '.join(f'{100 * gap:+.2f}' for gap in gaps)}; "
                      f"mean {100 * np.mean(gaps):+.2f} pt")
    dense_val = [
        value["val_accuracy"] for value in rows.get("dense", {}).values()
        if value.get("val_accuracy")
    ]
    if dense_val:
        print("  dense validation accuracy by epoch (mean over seeds): "
              + " ".join(f"{100 * v:.2f}" for v in np.mean(dense_val, 0)))
    for run, per_seed in rows.items():
        for seed, value in sorted(per_seed.items()):
            if "widths" in value and dense_val and value.get("val_accuracy"):
                print(f"  {run} seed {seed} validation accuracy by epoch: "
                      + " ".join(f"{100 * v:.2f}" for v in value["val_accuracy"]))
            if "widths" in value:
                outcomes = ", ".join(
                    f"e{step['epoch']}:{step['outcome']}"
                    + (f"(retry {step['attempt']})" if step["attempt"] else "")
                    for step in value["steps"]
                )
                print(f"  {run} seed {seed}: widths "
                      f"{list(value['widths'].values())}; steps {outcomes}")


def uniform_at(curve, params):
    """Accuracy of uniform width at `params`, interpolated linearly in
    log(params) between the two nearest runs of `curve` ((params, mean
    accuracy) pairs, sorted); NaN outside its range."""
    sizes = np.log([point[0] for point in curve])
    if len(curve) < 2 or not sizes[0] <= np.log(params) <= sizes[-1]:
        return float("nan")
    return float(np.interp(
        np.log(params), sizes, [point[1] for point in curve]
    ))


def plot(rows, path, title="vgg_small on Fashion-MNIST"):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    table = summarise(rows)
    figure, axes = pyplot.subplots(figsize=(6.4, 4.4))
    uniform = sorted(
        (entry["params"][0], entry["accuracy"][0], entry["accuracy"][1], run)
        for run, entry in table.items()
        if run.startswith("uniform") or run == "dense"
    )
    axes.errorbar(
        [u[0] for u in uniform], [100 * u[1] for u in uniform],
        yerr=[100 * u[2] for u in uniform], marker="o", capsize=3,
        label="uniform width, from scratch (dense at x1.0)",
    )
    for params, acc, _, run in uniform:
        axes.annotate(run.replace("uniform@", "x"), (params, 100 * acc),
                      textcoords="offset points", xytext=(4, -10),
                      fontsize=8)
    markers = {"adp-paper": "s", "adp": "D", "adp-2pt": "^"}
    for run, entry in table.items():
        if run.startswith("adp"):
            axes.errorbar(
                entry["params"][0], 100 * entry["accuracy"][0],
                xerr=entry["params"][1], yerr=100 * entry["accuracy"][1],
                marker=markers.get(run, "^"), linestyle="none", capsize=3,
                label=run,
            )
    axes.set_xscale("log")
    axes.set_xlabel("parameters (log)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"{title}: accuracy vs size")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*",
                        default=["dense", "uniform", "adp-paper", "adp"])
    parser.add_argument("--uniform-widths", type=float, nargs="*",
                        default=[0.125, 0.25, 0.375, 0.5])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--model", choices=["vgg_small", "resnet18"],
                        default="vgg_small")
    parser.add_argument("--base-width", type=float, default=1.0,
                        help="width multiplier of the dense model")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--test-samples", type=int, default=10000)
    parser.add_argument("--data", choices=["idx", "embedded"], default="idx")
    parser.add_argument("--adp-policy", default="{}",
                        help="JSON of ADPPolicy fields for the `adp` run")
    parser.add_argument("--adp-name", default="adp",
                        help="name of the `adp` run in the table")
    parser.add_argument("--out", help="write per-seed results as JSON")
    parser.add_argument("--plot", help="write the Pareto plot (PNG)")
    parser.add_argument("--table-from", nargs="*",
                        help="merge earlier --out files and print, no training")
    parser.add_argument("--rename", nargs="*", default=[],
                        metavar="FILE:OLD=NEW",
                        help="with --table-from: show run OLD of the file "
                             "whose name ends in FILE as NEW")
    args = parser.parse_args(argv)
    rows = {}
    title = f"{args.model} x{args.base_width:g} on Fashion-MNIST"
    if args.table_from:
        renames = {}
        for item in args.rename:
            suffix, _, pair = item.partition(":")
            old, _, new = pair.partition("=")
            renames[(suffix, old)] = new
        for index, path in enumerate(args.table_from):
            with open(path) as handle:
                saved = json.load(handle)
            if index == 0 and "args" in saved:  # The model the runs trained.
                title = (
                    f"{saved['args'].get('model', args.model)} "
                    f"x{saved['args'].get('base_width', 1.0):g} on "
                    "Fashion-MNIST"
                )
            for run, per_seed in saved["rows"].items():
                for (suffix, old), new in renames.items():
                    if path.endswith(suffix) and run == old:
                        run = new
                rows.setdefault(run, {}).update(per_seed)
        print_table(rows, title)
        if args.plot:
            plot(rows, args.plot, title)
        return rows
    data = load(args.train_samples, args.test_samples, args.data)
    args.train_size = len(data["x"])
    print(f"{len(data['x'])} train / {len(data['x_val'])} validation / "
          f"{len(data['x_test'])} test samples; {args.epochs} epochs, batch "
          f"{args.batch_size}, Adam {args.lr:g} cosine; seeds {args.seeds}; "
          f"{platform.processor() or platform.machine()}; Keras backend "
          f"{keras.backend.backend()}", flush=True)
    adp_policy = keras_adp.ADPPolicy(**json.loads(args.adp_policy))
    # The paper's rule as published: its full cut, every step it allows.
    paper_policy = keras_adp.ADPPolicy(
        width_rule="density", removal_scale=1.0, max_prune_steps=None
    )
    jobs = []
    for seed in args.seeds:
        for run in args.runs:
            if run == "uniform":
                jobs += [(f"uniform@{w:g}", seed) for w in args.uniform_widths]
            else:
                jobs.append((run, seed))
    for run, seed in jobs:
        if run == "dense":
            row = run_plain(args, data, 1.0, seed)
        elif run.startswith("uniform@"):
            row = run_plain(args, data, float(run.split("@")[1]), seed)
        elif run == "adp-paper":
            row = run_adp(args, data, paper_policy, seed)
        elif run == "adp":
            run = args.adp_name
            row = run_adp(args, data, adp_policy, seed)
        else:
            raise SystemExit(f"unknown run {run!r}")
        rows.setdefault(run, {})[str(seed)] = row
        print(f"{run} seed {seed}: accuracy {100 * row['accuracy']:.2f} %, "
              f"{row['params']:,} params, {row['wall_s']:.0f} s wall, "
              f"{row['cpu_s']:.0f} s CPU", flush=True)
        if args.out:
            with open(args.out, "w") as handle:
                json.dump({"args": {k: v for k, v in vars(args).items()},
                           "backend": keras.backend.backend(),
                           "adp_policy": adp_policy.get_config(),
                           "rows": rows}, handle, indent=1)
    print_table(rows, title)
    if args.plot:
        plot(rows, args.plot, title)
    return rows


if __name__ == "__main__":
    main()
