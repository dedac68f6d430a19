"""The same ADP run on TensorFlow, JAX and PyTorch, side by side (issue 13).

Each backend runs in a subprocess of its own (Keras picks its backend once
per process), with TensorFlow blocked (`sys.modules["tensorflow"] = None`)
off TensorFlow. Interpreters: `sys.executable` for tensorflow and jax unless
`--tensorflow-python` / `--jax-python` say otherwise; for torch
`--torch-python` or `KERAS_ADP_TORCH_PYTHON` (e.g. a venv with torch, keras
and numpy and no TensorFlow). A backend whose interpreter is missing, or
cannot import keras on that backend, is reported as skipped with the reason.

The run: `vgg_small((28, 28, 1), 10, --width)` on the first
`--train-samples` Fashion-MNIST training images (official IDX files read
with `keras_adp.idx.read_fashion_mnist_idx`, no TensorFlow needed), the
next `--validation-samples` training images as the held-out validation
data of the accuracy guard (`validation_data`, the same on every backend),
the first `--test-samples` test images for test accuracy; SGD(0.05,
momentum 0.9), `--epochs` epochs at `--batch-size`, `ADPPolicy()`'s
defaults, `ADPTrainer(seed=--seed)`. The initial weights are built once (on
the first backend listed) and saved as `.npz` in `model.weights` order;
every backend loads them with `set_weights` (initializers draw differently
per backend).

Per backend: widths per group at every epoch and at the end, the steps and
the guard's outcome, test accuracy, the train-only time of each epoch
(`on_epoch_begin` to the validation's `on_test_begin`, after reading
the weights, since JAX dispatches steps asynchronously) and their mean, the
rebuild time of one pruning step (the trainer's history does not record
it: `keras_adp.rebuild.rebuild` + `keras_adp.optimizers.carry_over` of the
final model, keeping the first 3/4 of every prunable group, median of 3;
beside it BatchNormalization recalibration and the rebuilt model's first
`train_on_batch`, i.e. the re-trace; this undercounts on JAX, where the
median hides the first rebuild's compilations of new-shaped initializer
ops and an epoch compiles more than one train step: see
`bench_retrace.py` for the whole cost of a step, phase by phase),
`measure_density` on the calibration
set (the trainer's default: the first 512 training images; median of 3)
of the dense model after its epoch and of the final model, as a % of the
mean epoch, and the subprocess's wall and CPU time (user + system).

Training diverges numerically across backends (float summation order), so
the widths of the runs may differ. The decisions-only check takes the
reference run's model at the end of every epoch (the `.keras` files it
saves; reference: the TensorFlow run, else the first that ran), measures
it on each backend and plans a step with `ADPPolicy().plan`: identical
per-channel densities and plans on every backend mean identical pruning
decisions for the same weights.

    nice -n 10 python benchmarks/bench_backends.py --train-samples 2000 \
        --torch-python /opt/venv-torch-cpu/bin/python \
        --out benchmarks/results/bench_backends.txt

Run on the dev box (2 loaded cores, 14 minutes with 2,000 training images):
benchmarks/results/bench_backends.txt.
"""

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

if os.environ.get("KERAS_ADP_BENCH_BLOCK_TF") == "1":
    sys.modules["tensorflow"] = None
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BACKENDS = ("tensorflow", "jax", "torch")
_MARK = "BENCH_JSON "


# ----------------------------------------------------------------- workers


def _compiled(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _build(args):
    from keras_adp import models

    return models.build_model("vgg_small", (28, 28, 1), 10, args.width)


def worker_init(args):
    """Writes the data subset and the initial weights to `--work-dir`."""
    import keras
    import numpy as np

    from keras_adp import idx

    arrays = idx.read_fashion_mnist_idx()
    n, v = args.train_samples, args.validation_samples
    x = arrays["x_train"][: n + v, ..., None].astype("float32") / 255.0
    y = arrays["y_train"][: n + v].astype("int32")
    np.savez(
        os.path.join(args.work_dir, "data.npz"),
        x=x[:n], y=y[:n], x_val=x[n:], y_val=y[n:],
        x_test=arrays["x_test"][: args.test_samples, ..., None].astype(
            "float32"
        ) / 255.0,
        y_test=arrays["y_test"][: args.test_samples].astype("int32"),
    )
    keras.utils.set_random_seed(args.seed)
    model = _build(args)
    np.savez(
        os.path.join(args.work_dir, "weights.npz"),
        *[np.asarray(w) for w in model.get_weights()],
    )
    return {"paths": [w.path for w in model.weights],
            "params": int(model.count_params())}


def _load_data(args):
    import numpy as np

    with np.load(os.path.join(args.work_dir, "data.npz")) as arrays:
        return {key: arrays[key] for key in arrays.files}


def _epoch_clock(save_dir):
    """A callback timing each epoch's training part; saves every epoch's
    model (before the trainer's pruning step) to `save_dir`."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds, self._start, self._epoch = [], None, 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._start = epoch, time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._start is not None:
                # JAX dispatches the steps asynchronously: wait for the
                # last step's weights before reading the clock.
                for variable in self.model.trainable_variables:
                    keras.ops.convert_to_numpy(variable)
                self.seconds.append(time.perf_counter() - self._start)
                self._start = None

        def on_epoch_end(self, epoch, logs=None):
            self.on_test_begin()
            self.model.save(os.path.join(save_dir, f"epoch{epoch}.keras"))

    return EpochClock()


def _median_seconds(function, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rebuild_seconds(model, calibration, x, y, batch_size):
    """Median seconds of a rebuild + optimizer carry-over of `model` keeping
    the first 3/4 of every prunable group; then BN recalibration and the
    first `train_on_batch` (re-trace) of one rebuilt copy."""
    import numpy as np

    from keras_adp import graph, optimizers, rebuild

    keep = {
        group.name: np.arange(max(1, (3 * group.size) // 4))
        for group in graph.channel_groups(model) if group.prunable
    }
    built = []

    def step():
        surgery = rebuild.rebuild(model, keep)
        optimizers.carry_over(model, surgery.model, surgery)
        built.append(surgery.model)

    seconds = _median_seconds(step)
    new_model = built[-1]
    start = time.perf_counter()
    rebuild.recalibrate_batch_norm(new_model, calibration)
    recalibrate = time.perf_counter() - start
    start = time.perf_counter()
    new_model.train_on_batch(x[:batch_size], y[:batch_size])
    first_step = time.perf_counter() - start
    return {"rebuild_s": seconds, "recalibrate_s": recalibrate,
            "first_train_step_s": first_step}


def worker_train(args):
    """One ADP run on this process's backend; returns its figures."""
    import keras
    import numpy as np

    import keras_adp
    from keras_adp import graph

    data = _load_data(args)
    with np.load(os.path.join(args.work_dir, "weights.npz")) as weights:
        initial = [weights[f"arr_{i}"] for i in range(len(weights.files))]
    keras.utils.set_random_seed(args.seed)
    model = _compiled(_build(args))
    model.set_weights(initial)
    save_dir = os.path.join(args.work_dir, keras.backend.backend())
    os.makedirs(save_dir, exist_ok=True)
    clock = _epoch_clock(save_dir)
    policy = keras_adp.ADPPolicy()
    calibration = data["x"][: policy.calibration_samples]
    cpu, wall = time.process_time(), time.perf_counter()
    result = keras_adp.ADPTrainer(policy, seed=args.seed, verbose=0).fit(
        model, data["x"], data["y"], epochs=args.epochs,
        batch_size=args.batch_size, callbacks=[clock],
        validation_data=(data["x_val"], data["y_val"]),
    )
    fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    final = result.model
    test = final.evaluate(
        data["x_test"], data["y_test"], batch_size=256, verbose=0,
        return_dict=True,
    )
    measure = {
        name: _median_seconds(
            lambda m=m: keras_adp.measure_density(m, calibration)
        )
        for name, m in (("dense", model), ("final", final))
    }
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "widths": [record["widths"] for record in result.history],
        "final_widths": {
            g.name: g.size for g in graph.channel_groups(final) if g.prunable
        },
        "steps": [
            {"epoch": s["epoch"], "after": s["after"],
             "outcome": s.get("outcome"), "attempt": s.get("attempt")}
            for s in result.steps
        ],
        "val_accuracy": [
            record["logs"].get("val_accuracy") for record in result.history
        ],
        "test_accuracy": float(test["accuracy"]),
        "params": int(final.count_params()),
        "epoch_s": clock.seconds,
        "measure_s": measure,
        "fit_wall_s": fit_wall,
        "fit_cpu_s": fit_cpu,
        **_rebuild_seconds(final, calibration, data["x"], data["y"],
                           args.batch_size),
    }


def worker_decide(args):
    """Densities and `ADPPolicy().plan` of each saved epoch model of the
    reference run, measured on this process's backend."""
    import keras

    import keras_adp
    from keras_adp import scoring

    data = _load_data(args)
    policy = keras_adp.ADPPolicy()
    calibration = data["x"][: policy.calibration_samples]
    epochs = []
    for epoch in range(args.epochs):
        path = os.path.join(args.reference_dir, f"epoch{epoch}.keras")
        if not os.path.exists(path):
            break
        model = keras.saving.load_model(path, compile=False)
        densities = keras_adp.measure_density(model, calibration)
        groups = keras_adp.channel_groups(model)
        scores = scoring.channel_scores(model, groups, policy.selection)
        gammas = {g.name: scoring.first_gamma(model, g)
                  for g in groups if g.prunable}
        plan = policy.plan(groups, densities, scores, gammas)
        epochs.append({
            "channels": {k: d.channels.tolist() for k, d in densities.items()},
            "samples": {k: int(d.samples) for k, d in densities.items()},
            "plan": {k: [int(i) for i in v] for k, v in plan.items()},
        })
    return {"backend": keras.backend.backend(), "epochs": epochs}


# ------------------------------------------------------------------ parent


def _interpreters(args):
    """backend -> (interpreter or None, reason when None)."""
    torch = args.torch_python or os.environ.get("KERAS_ADP_TORCH_PYTHON")
    chosen = {
        "tensorflow": args.tensorflow_python or sys.executable,
        "jax": args.jax_python or sys.executable,
        "torch": torch,
    }
    found = {}
    for backend in args.backends:
        path = chosen[backend]
        if not path:
            found[backend] = (None, "no --torch-python and "
                              "KERAS_ADP_TORCH_PYTHON is not set")
        elif not os.access(path, os.X_OK):
            found[backend] = (None, f"interpreter {path} is not executable")
        else:
            probe = subprocess.run(
                [path, "-c", f"import {backend}, keras_adp"],
                capture_output=True, text=True, env=_environment(backend),
            )
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            found[backend] = (
                (path, "") if probe.returncode == 0
                else (None, f"{path} cannot import {backend} and keras_adp "
                      f"({last})")
            )
    return found


def _environment(backend):
    environment = dict(
        os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join(
            filter(None, [_REPO, os.environ.get("PYTHONPATH")])
        ),
    )
    environment.pop("KERAS_ADP_BENCH_BLOCK_TF", None)
    if backend != "tensorflow":
        environment["KERAS_ADP_BENCH_BLOCK_TF"] = "1"
    return environment


def _call(python, backend, kind, args, extra=()):
    """Runs worker `kind` on `backend`; returns (result or None, error,
    wall s, CPU s)."""
    command = [python, os.path.abspath(__file__), "--worker", kind,
               "--work-dir", args.work_dir, *_run_flags(args), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env=_environment(backend), cwd=_REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime
           + after.ru_stime - before.ru_stime)
    lines = [
        line for line in done.stdout.splitlines() if line.startswith(_MARK)
    ]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip() or done.stdout.strip())[-1500:]
        return None, f"exit {done.returncode}: {tail}", wall, cpu
    return json.loads(lines[-1][len(_MARK):]), "", wall, cpu


def _run_flags(args):
    return ["--train-samples", str(args.train_samples),
            "--validation-samples", str(args.validation_samples),
            "--test-samples", str(args.test_samples),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--seed", str(args.seed), "--width", str(args.width)]


def _widths_line(widths):
    return " ".join(str(widths[name]) for name in sorted(widths))


def _first_difference(runs):
    """'identical' or the first epoch/group where the widths differ."""
    names = list(runs)
    reference = runs[names[0]]["widths"]
    for name in names[1:]:
        other = runs[name]["widths"]
        if len(other) != len(reference):
            return (f"{names[0]} has {len(reference)} epochs, {name} "
                    f"{len(other)}")
    for epoch in range(len(reference)):
        for group in sorted(reference[epoch]):
            values = {n: runs[n]["widths"][epoch].get(group) for n in names}
            if len(set(values.values())) > 1:
                shown = ", ".join(f"{n} {v}" for n, v in values.items())
                return f"first difference: epoch {epoch + 1}, {group}: {shown}"
    return "identical"


def _report_run(out, backend, run, wall, cpu):
    mean_epoch = statistics.mean(run["epoch_s"])
    out(f"\n[{backend}] Keras {run['keras']}; wall {wall:.1f} s, CPU "
        f"{cpu:.1f} s (subprocess); fit {run['fit_wall_s']:.1f} s wall, "
        f"{run['fit_cpu_s']:.1f} s CPU")
    groups = sorted(run["final_widths"])
    out(f"  widths per epoch ({' '.join(groups)}):")
    for epoch, widths in enumerate(run["widths"]):
        val = run["val_accuracy"][epoch]
        out(f"    epoch {epoch + 1}: {_widths_line(widths)}   "
            f"val_accuracy {val:.4f}   train {run['epoch_s'][epoch]:.2f} s")
    out(f"    final:   {_widths_line(run['final_widths'])}   "
        f"({run['params']:,} params)")
    for step in run["steps"]:
        out(f"  step after epoch {step['epoch'] + 1} (attempt "
            f"{step['attempt']}): {step['outcome']}")
    out(f"  test accuracy {run['test_accuracy']:.4f}; mean epoch (train "
        f"only) {mean_epoch:.2f} s")
    out(f"  rebuild + optimizer carry-over {run['rebuild_s']:.3f} s; BN "
        f"recalibration {run['recalibrate_s']:.3f} s; first train step "
        f"(re-trace) {run['first_train_step_s']:.3f} s")
    for which, seconds in run["measure_s"].items():
        out(f"  measure_density ({which} model, 512 samples) {seconds:.3f} s"
            f" = {seconds / mean_epoch:.2%} of the mean epoch")


def _summary_table(out, runs, costs):
    header = ("backend", "test acc", "params", "epoch s", "rebuild s",
              "+retrace s", "density %", "wall s", "CPU s")
    out("\n" + " ".join(f"{h:>11}" for h in header))
    for backend, run in runs.items():
        mean_epoch = statistics.mean(run["epoch_s"])
        wall, cpu = costs[backend]
        cells = (backend, f"{run['test_accuracy']:.4f}", f"{run['params']:,}",
                 f"{mean_epoch:.2f}", f"{run['rebuild_s']:.3f}",
                 f"{run['rebuild_s'] + run['first_train_step_s']:.3f}",
                 f"{run['measure_s']['dense'] / mean_epoch:.2%}",
                 f"{wall:.1f}", f"{cpu:.1f}")
        out(" ".join(f"{c:>11}" for c in cells))
    out("  (density %: measure_density of the dense model / mean epoch; "
        "+retrace: rebuild + the rebuilt model's first train step)")


def _compare_decisions(out, decisions, steps):
    """Prints whether every backend measured and planned alike."""
    names = list(decisions)
    reference = decisions[names[0]]["epochs"]
    out(f"\nDecisions-only check: the {names[0]} run's model at the end of "
        f"each of its {len(reference)} epochs, measured and planned "
        f"(ADPPolicy().plan) on {', '.join(names)}")
    for epoch, base in enumerate(reference):
        worst, same_plan = 0.0, True
        for name in names[1:]:
            other = decisions[name]["epochs"][epoch]
            same_plan &= other["plan"] == base["plan"]
            for group, channels in base["channels"].items():
                difference = max(abs(a - b) for a, b in zip(
                    channels, other["channels"][group], strict=True))
                worst = max(worst, difference)
        widths = {k: len(v) for k, v in base["plan"].items()}
        taken = [s for s in steps if s["epoch"] == epoch and not s["attempt"]]
        trainer = ("" if not taken else "; the trainer's step: " + (
            "same widths" if taken[0]["after"] == widths else
            f"widths {taken[0]['after']}"))
        out(f"  epoch {epoch + 1}: max |density difference| {worst:.3g}; "
            f"plans {'identical' if same_plan else 'DIFFER'} "
            f"({_named_widths(widths) if widths else 'no step'}){trainer}")


def _named_widths(widths):
    return " ".join(f"{name}={widths[name]}" for name in sorted(widths))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(_BACKENDS),
                        choices=_BACKENDS)
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--validation-samples", type=int, default=500)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--tensorflow-python")
    parser.add_argument("--jax-python")
    parser.add_argument("--torch-python")
    parser.add_argument("--out", help="also write the printed table here")
    parser.add_argument("--worker", choices=("init", "train", "decide"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--reference-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        work = {"init": worker_init, "train": worker_train,
                "decide": worker_decide}[args.worker]
        print(_MARK + json.dumps(work(args)), flush=True)
        return
    nice = os.nice(0)
    lines = [("$ " + (f"nice -n {nice} " if nice else "")
              + shlex.join(["python", *sys.argv]))]

    def out(text=""):
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as work_dir:
        args.work_dir = work_dir
        _run_all(args, out)
    if args.out:
        with open(args.out, "w") as file:
            file.write("\n".join(lines) + "\n")


def _run_all(args, out):
    found = _interpreters(args)
    out(f"vgg_small x{args.width} (28x28x1), Fashion-MNIST IDX: "
        f"{args.train_samples} train, {args.validation_samples} validation "
        f"(the guard's), {args.test_samples} test; {args.epochs} epochs, "
        f"batch {args.batch_size}, seed {args.seed}, SGD(0.05, momentum "
        f"0.9), ADPPolicy() defaults; {os.cpu_count()} CPU cores, load "
        f"average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for backend, (path, reason) in found.items():
        out(f"  {backend}: {path if path else 'skipped: ' + reason}")
    ready = {b: p for b, (p, _) in found.items() if p}
    if not ready:
        return
    first = next(iter(ready))
    init, error, _, _ = _call(ready[first], first, "init", args)
    if init is None:
        out(f"  initial weights on {first} failed: {error}")
        return
    out(f"  initial weights built on {first}: {init['params']:,} params, "
        f"{len(init['paths'])} arrays, loaded with set_weights everywhere")
    runs, costs = {}, {}
    for backend, python in ready.items():
        run, error, wall, cpu = _call(python, backend, "train", args)
        if run is None:
            out(f"\n[{backend}] failed: {error}")
            continue
        runs[backend], costs[backend] = run, (wall, cpu)
        _report_run(out, backend, run, wall, cpu)
    if not runs:
        return
    _summary_table(out, runs, costs)
    out(f"\nWidths at every epoch across {', '.join(runs)}: "
        f"{_first_difference(runs)}")
    _decide_all(args, out, ready, runs)
    out(f"\nload average after: "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")


def _decide_all(args, out, ready, runs):
    reference = "tensorflow" if "tensorflow" in runs else next(iter(runs))
    extra = ["--reference-dir", os.path.join(args.work_dir, reference)]
    decisions = {}
    for backend in [reference, *(b for b in ready if b != reference)]:
        result, error, _, _ = _call(ready[backend], backend, "decide", args,
                                    extra)
        if result is None:
            out(f"  decisions on {backend} failed: {error}")
            continue
        decisions[backend] = result
    if reference in decisions and len(decisions) > 1:
        _compare_decisions(out, decisions, runs[reference]["steps"])


if __name__ == "__main__":
    main()
