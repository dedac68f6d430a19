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
  (`removal_scale=1.0`, `max_prune_steps=None`, `recovery_updates=None`),
  and the default accuracy guard;
- `adp`: `ADPTrainer` with `ADPPolicy()`'s defaults, or with the fields given
  by `--adp-policy` (JSON);
- `tfmot-gradual`, `tfmot-matched`: tensorflow-model-optimization's
  `prune_low_magnitude` with a `PolynomialDecay` schedule, from the seed's
  dense initial weights, to the kernel sparsity that leaves a target number
  of non-zero parameters (`compare_tfmot.matching_sparsity`): `--tfmot-params
  N`, or the mean parameters of the `adp` rows of this invocation (run
  after every other run) or of `--tfmot-match FILE.json:RUN` (or `RUN` of
  this invocation). `tfmot-gradual` uses tfmot's recommended gradual
  schedule (`compare_tfmot.gradual_schedule`: one dense epoch, 0.5 -> the
  target, a quarter of the epochs of fine-tuning at the end);
  `tfmot-matched` ramps 0 -> the target within the epochs in which
  `--adp-policy` prunes (`compare_tfmot.adp_matched_schedule`: from the end
  of its warm-up to the epoch of its last step; for the defaults, over the
  second epoch, between ADP's steps after epochs 1 and 2). tfmot needs
  tf-keras, so these runs train in `tfmot_worker.py` subprocesses
  (`TF_USE_LEGACY_KERAS=1`) with this benchmark's samples, epochs, batch
  size, Adam cosine decay, model and per-epoch seeding; their wall and CPU
  times are the worker's `fit` (like the other runs'), and the whole
  subprocess's (from `RUSAGE_CHILDREN`) is kept as `process_wall_s`,
  `process_cpu_s`. After `strip_pruning` the model is still dense with
  zeros: its rows are placed by their non-zero parameters (`nonzero`,
  marked `*` in the table) with the dense MACs and training compute.

10% of the training samples are held out (the same for every run) as the
guard's validation data; accuracy is measured on the test set, which no run
sees before. Prints, per run, mean and spread (half the min-max range) over
the seeds of test accuracy, params, MACs, training compute (3x forward MACs
per training sample, plus density measurement for ADP), wall and CPU time,
and ADP's final widths; writes JSON (`--out`) and a Pareto plot of
accuracy vs parameters, log x (`--plot`).

    python benchmarks/bench_tradeoff.py --train-samples 20000 --seeds 0 1 2
    python benchmarks/bench_tradeoff.py --table-from a.json b.json --plot p.png
    python benchmarks/bench_tradeoff.py --runs dense adp tfmot-gradual \
        tfmot-matched --seeds 0
"""

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp
from keras_adp import idx
from keras_adp import metrics as metrics_lib
from keras_adp import models as models_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_tfmot  # noqa: E402  (its schedules and sparsity matching)

# Run name -> `compare_tfmot` schedule name.
TFMOT_RUNS = {"tfmot-gradual": "gradual", "tfmot-matched": "adp-matched"}


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
             "outcome": step["outcome"], "after": step["after"],
             # The share of its cut the updates left allowed (first tries).
             **{key: step[key] for key in ("updates_left", "cut_fraction")
                if key in step}}
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


def tfmot_schedule(args, run, steps_per_epoch, sparsity, policy):
    """The `compare_tfmot.TfmotSchedule` of tfmot run `run`.

    `tfmot-matched` mirrors `policy`'s steps, which only map to epochs for
    an interval-1 trigger with a step limit.
    """
    if TFMOT_RUNS[run] == "gradual":
        try:
            schedule = compare_tfmot.gradual_schedule(
                steps_per_epoch, args.epochs, sparsity
            )
        except ValueError as error:
            raise SystemExit(f"{run}: {error}") from error
    else:
        if (policy.trigger, policy.interval) != ("interval", 1) or (
            policy.max_prune_steps is None
        ):
            raise SystemExit(
                f"{run} mirrors ADP's pruning epochs, which are known ahead "
                "only for trigger='interval', interval=1 and a "
                "max_prune_steps limit. Received: trigger="
                f"{policy.trigger!r}, interval={policy.interval}, "
                f"max_prune_steps={policy.max_prune_steps}. Use "
                "tfmot-gradual, or change --adp-policy."
            )
        schedule = compare_tfmot.adp_matched_schedule(
            steps_per_epoch, policy.warmup_epochs, policy.max_prune_steps,
            sparsity,
        )
    if schedule.end_step > args.epochs * steps_per_epoch:
        raise SystemExit(
            f"{run}: the schedule ends at step {schedule.end_step}, but "
            f"{args.epochs} epochs have {args.epochs * steps_per_epoch} "
            "steps; tfmot would not reach the target sparsity. Expected more "
            f"--epochs. ({schedule.describe()})"
        )
    return schedule


def tfmot_target(args, rows):
    """(non-zero parameters the tfmot runs aim at, where that comes from).

    `--tfmot-params`, else the mean `params` (`nonzero` if it has them) of
    run `RUN` over the seeds of `--tfmot-match FILE.json:RUN`, or of `RUN`
    (`--tfmot-match RUN`, default `--adp-name`) in `rows`.

    Raises:
        SystemExit: when none of these gives a target, or when FILE's runs
            trained another `--model` or `--base-width`.
    """
    if args.tfmot_params is not None:
        return args.tfmot_params, "--tfmot-params"
    match = args.tfmot_match or args.adp_name
    path, _, run = match.rpartition(":")
    if path:
        with open(path) as handle:
            saved = json.load(handle)
        rows = saved["rows"]
        trained = saved.get("args", {})
        for key in ("model", "base_width"):
            if trained.get(key, getattr(args, key)) != getattr(args, key):
                raise SystemExit(
                    f"{path} was trained with --{key.replace('_', '-')} "
                    f"{trained[key]}, this invocation has "
                    f"{getattr(args, key)}: its parameter counts do not "
                    "apply. Expected the same model and base width."
                )
    if not rows.get(run):
        raise SystemExit(
            "The tfmot runs need a target number of non-zero parameters. "
            f"Expected --tfmot-params N, --tfmot-match FILE.json:RUN, or an "
            f"`{args.adp_name}` run before them. Received: no `{run}` rows "
            + (f"in {path}" if path else "in this invocation")
            + f" (runs: {sorted(rows)})."
        )
    params = [value.get("nonzero", value["params"])
              for value in rows[run].values()]
    return int(round(float(np.mean(params)))), (
        f"mean params of {run} ({len(params)} seeds"
        + (f", {path})" if path else ")")
    )


def run_tfmot(args, data_path, run, seed, target, policy, work_dir):
    """Tfmot run `run` for `seed` in a `tfmot_worker.py` subprocess.

    Args:
        data_path: `.npz` of `load()`'s arrays, keyed as the worker reads
            them (`x_train` is `load()`'s `x`: without the held-out part).
        target: the non-zero parameters to aim at.
        policy: the `adp` run's `ADPPolicy` (for `tfmot-matched`).
        work_dir: folder for the handover files.

    Returns:
        The row: the fields of the other runs, `nonzero`, `val_accuracy`,
        `process_wall_s`, `process_cpu_s` and `tfmot` (target, schedule,
        per-kernel non-zeros, versions).
    """
    work_dir = pathlib.Path(work_dir)
    # The seed's dense run starts from exactly this model's weights.
    dense = build(args, 1.0, seed)
    stem = f"{run}_s{seed}"
    np.savez(work_dir / f"{stem}_initial.npz", **{
        f"{layer.name}/{index}": value
        for layer in dense.layers
        for index, value in enumerate(layer.get_weights())
    })
    steps_per_epoch = compare_tfmot.steps_per_epoch(
        args.train_size, args.batch_size
    )
    sparsity = compare_tfmot.matching_sparsity(dense, target)
    kernels = compare_tfmot.kernel_params(dense)
    reachable = metrics_lib.count_params(dense) - kernels * sparsity
    if abs(reachable - target) > 1:  # matching_sparsity clamps to [0, 0.99].
        print(f"warning: {run} seed {seed}: {target:,} non-zero parameters "
              f"are out of reach (kernel sparsity in [0, 0.99]); it aims at "
              f"{reachable:,.0f}", flush=True)
    schedule = tfmot_schedule(args, run, steps_per_epoch, sparsity, policy)
    config = {
        "data": str(data_path),
        "initial_weights": str(work_dir / f"{stem}_initial.npz"),
        "loaded_weights_path": str(work_dir / f"{stem}_loaded.npz"),
        "keras3_model": dense.get_config(),
        "expected_params": metrics_lib.count_params(dense),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "cosine_decay_steps": args.epochs * steps_per_epoch,
        "validation": "val",
        "reseed_each_epoch": True,
        "seed": seed,
        "schedule": dataclasses.asdict(schedule),
        "result_path": str(work_dir / f"{stem}_result.json"),
    }
    config_path = work_dir / f"{stem}_config.json"
    config_path.write_text(json.dumps(config, indent=1))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    worker = subprocess.run(
        [sys.executable, str(compare_tfmot.WORKER), str(config_path)],
        env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if worker.returncode:
        raise SystemExit(
            f"{run} seed {seed}: tfmot_worker.py exited with "
            f"{worker.returncode}; its stderr ends with:\n"
            f"{worker.stderr[-3000:]}"
        )
    result = json.loads(pathlib.Path(config["result_path"]).read_text())
    cost = metrics_lib.inference_cost(dense)
    return {
        "accuracy": result["accuracy"],
        "params": result["params"],
        "nonzero": result["nonzero_params"],
        # The zeros are stored and multiplied: dense MACs, dense training.
        "macs": cost.macs,
        "training_macs": metrics_lib.training_macs(
            cost.macs, args.train_size * args.epochs
        ),
        "wall_s": result["train_seconds"],
        "cpu_s": result["train_cpu_seconds"],
        "process_wall_s": wall,
        "process_cpu_s": (after.ru_utime - children.ru_utime)
        + (after.ru_stime - children.ru_stime),
        "val_accuracy": result["history"]["val_accuracy"],
        "tfmot": {
            "target_params": target,
            "target_sparsity": sparsity,
            "schedule": result["schedule"],
            "kernel_nonzero": result["kernel_nonzero"],
            "framework": result["framework"],
            "tfmot_version": result["tfmot_version"],
        },
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
        if all("nonzero" in value for value in values):
            column = np.array([value["nonzero"] for value in values], float)
            entry["nonzero"] = (
                float(column.mean()),
                float((column.max() - column.min()) / 2),
            )
        entry["seeds"] = sorted(per_seed)
        table[run] = entry
    return table


def size(entry):
    """(mean, spread) of the parameters that place a `summarise` entry:
    its non-zero ones for tfmot rows (stored dense, with zeros), else all."""
    return entry.get("nonzero", entry["params"])


def print_table(rows, title="vgg_small on Fashion-MNIST"):
    table = summarise(rows)
    reference = table.get("dense") or next(iter(table.values()))
    print(f"\n{title}: mean ± half-range over seeds; ratios to dense")
    print(f"{'run':<13} {'seeds':>5} {'acc %':>13} {'Δ pt':>6} "
          f"{'params':>18} {'÷':>6} {'MACs':>12} {'÷':>6} "
          f"{'train GMAC':>10} {'×':>5} {'wall s':>13} {'×':>5} "
          f"{'CPU s':>7} {'×':>5}")
    for run, entry in sorted(
        table.items(), key=lambda item: -size(item[1])[0]
    ):
        acc, acc_spread = entry["accuracy"]
        params, params_spread = size(entry)
        mark = "*" if "nonzero" in entry else " "
        print(
            f"{run:<13} {len(entry['seeds']):>5} "
            f"{100 * acc:>6.2f} ± {100 * acc_spread:<4.2f} "
            f"{100 * (acc - reference['accuracy'][0]):>+6.2f} "
            f"{params:>9,.0f}{mark} ± {params_spread:<5,.0f} "
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
    sparse = [run for run, entry in table.items() if "nonzero" in entry]
    if sparse:
        print("  * non-zero parameters after tfmot's strip_pruning (the "
              "stored model is dense, with zeros): placed by these; MACs and "
              "training compute are dense's")
    for run in sparse:
        for seed, value in sorted(rows[run].items()):
            tfmot = value.get("tfmot", {})
            print(f"  {run} seed {seed}: target {tfmot.get('target_params')} "
                  f"non-zero, kernel sparsity "
                  f"{tfmot.get('target_sparsity', float('nan')):.4f}, "
                  f"reached {value['nonzero']:,}; whole subprocess "
                  f"{value.get('process_wall_s', float('nan')):.1f} s wall, "
                  f"{value.get('process_cpu_s', float('nan')):.1f} s CPU")
    for field in ("params", "macs"):
        curve = sorted(
            (entry[field][0], entry["accuracy"][0])
            for run, entry in table.items()
            if run.startswith("uniform@") or run == "dense"
        )
        for run, per_seed in rows.items():
            # tfmot rows at their non-zero parameters; not by MACs (dense).
            gaps = [
                value["accuracy"]
                - uniform_at(curve, value.get("nonzero", value[field]))
                for value in per_seed.values()
                if "widths" in value
                or ("nonzero" in value and field == "params")
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
            if ("widths" in value or "nonzero" in value) and dense_val \
                    and value.get("val_accuracy"):
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
    markers = {"adp-paper": "s", "adp": "D", "adp-2pt": "^",
               "tfmot-gradual": "v", "tfmot-matched": "P"}
    for run, entry in table.items():
        if run.startswith("adp") or "nonzero" in entry:
            axes.errorbar(
                size(entry)[0], 100 * entry["accuracy"][0],
                xerr=size(entry)[1], yerr=100 * entry["accuracy"][1],
                marker=markers.get(run, "^"), linestyle="none", capsize=3,
                label=f"{run} (non-zero params)" if "nonzero" in entry
                else run,
            )
    axes.set_xscale("log")
    axes.set_xlabel("parameters (non-zero for tfmot; log)")
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
    parser.add_argument("--tfmot-params", type=int,
                        help="non-zero parameters the tfmot runs aim at "
                             "(default: the mean params of --tfmot-match)")
    parser.add_argument("--tfmot-match", metavar="[FILE.json:]RUN",
                        help="aim the tfmot runs at the mean params of RUN in "
                             "FILE (an --out file) or in this invocation "
                             "(default: the `adp` run, --adp-name)")
    parser.add_argument("--tfmot-work-dir",
                        help="keep the tfmot handover files (data, weights, "
                             "configs, results) here (default: a temporary "
                             "folder)")
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
    unknown = [
        run for run in args.runs
        if run not in ("dense", "uniform", "adp-paper", "adp", *TFMOT_RUNS)
    ]
    if unknown:
        raise SystemExit(
            f"Unknown runs {unknown}. Expected among dense, uniform, "
            f"adp-paper, adp, {', '.join(TFMOT_RUNS)}."
        )
    tfmot_runs = [run for run in args.runs if run in TFMOT_RUNS]
    if tfmot_runs and args.tfmot_params is None:
        match = args.tfmot_match or args.adp_name
        if ":" in match:
            tfmot_target(args, {})  # Fails now if the file lacks the run.
        elif match not in {
            args.adp_name if run == "adp" else run for run in args.runs
        }:
            raise SystemExit(
                f"{tfmot_runs} need a target number of non-zero parameters. "
                "Expected --tfmot-params N, --tfmot-match FILE.json:RUN, or "
                f"the `adp` run in --runs. Received: --runs {args.runs}, "
                f"--tfmot-match {args.tfmot_match}."
            )
    if not tfmot_runs:
        return train_and_print(args, None)
    if args.tfmot_work_dir:
        os.makedirs(args.tfmot_work_dir, exist_ok=True)
        return train_and_print(args, args.tfmot_work_dir)
    with tempfile.TemporaryDirectory(prefix="bench_tradeoff_") as work_dir:
        return train_and_print(args, work_dir)


def train_and_print(args, work_dir):
    """Trains `args.runs` for `args.seeds`, prints the table; returns rows.

    The tfmot runs (which write their handover files to `work_dir`) come
    after all others, so that the `adp` rows they aim at are known.
    """
    rows = {}
    title = f"{args.model} x{args.base_width:g} on Fashion-MNIST"
    data = load(args.train_samples, args.test_samples, args.data)
    args.train_size = len(data["x"])
    print(f"{len(data['x'])} train / {len(data['x_val'])} validation / "
          f"{len(data['x_test'])} test samples; {args.epochs} epochs, batch "
          f"{args.batch_size}, Adam {args.lr:g} cosine; seeds {args.seeds}; "
          f"{platform.processor() or platform.machine()}; Keras backend "
          f"{keras.backend.backend()}", flush=True)
    adp_policy = keras_adp.ADPPolicy(**json.loads(args.adp_policy))
    # The paper's rule as published: its full cut, every step it allows,
    # however little training is left after it.
    paper_policy = keras_adp.ADPPolicy(
        width_rule="density", removal_scale=1.0, max_prune_steps=None,
        recovery_updates=None,
    )
    jobs = []
    for seed in args.seeds:
        for run in args.runs:
            if run == "uniform":
                jobs += [(f"uniform@{w:g}", seed) for w in args.uniform_widths]
            else:
                jobs.append((run, seed))
    jobs.sort(key=lambda job: job[0] in TFMOT_RUNS)  # Stable: tfmot last.
    target = None
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
            if target is None:
                target, source = tfmot_target(args, rows)
                print(f"tfmot target: {target:,} non-zero parameters "
                      f"({source})", flush=True)
                data_path = os.path.join(work_dir, "data.npz")
                np.savez(data_path, x_train=data["x"], y_train=data["y"],
                         x_val=data["x_val"], y_val=data["y_val"],
                         x_test=data["x_test"], y_test=data["y_test"])
            row = run_tfmot(
                args, data_path, run, seed, target, adp_policy, work_dir
            )
        rows.setdefault(run, {})[str(seed)] = row
        print(f"{run} seed {seed}: accuracy {100 * row['accuracy']:.2f} %, "
              f"{row['params']:,} params"
              + (f" ({row['nonzero']:,} non-zero)" if "nonzero" in row else "")
              + f", {row['wall_s']:.0f} s wall, "
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
