"""What one pruning step costs after the rebuild: every compilation, timed (issue 13).

Runs, on the process's Keras backend (`KERAS_BACKEND`; TensorFlow is not
imported off TensorFlow), the sequence `ADPTrainer` runs around a pruning
step of `vgg_small((28, 28, 1), 10)` on Fashion-MNIST (IDX files read with
`keras_adp.idx`, no TensorFlow needed):

1. a warm-up epoch of the dense model (compiles its functions), then one
   timed dense epoch on `--train-samples` images: the epoch the density
   measurement is compared with;
2. the step as `pruning_steps.PruningSteps._rebuild` takes it: `rebuild`
   keeping the first 3/4 of every prunable group, `optimizers.carry_over`,
   `recalibrate_batch_norm` on the 512 calibration samples, a new
   `DensityProbe`;
3. two epochs of the rebuilt model on `--step-samples` images, each as
   `EpochLoop._train` runs it (`build_training_state` off TensorFlow,
   `seed_epoch`, `fit` with validation data and the density probe's
   callback). The first pays for the new architecture's compilations,
   the second does not: the difference, phase by phase, is the re-trace.

Each phase is timed in wall and CPU (user + system) seconds; the training
part of an epoch ends when its weights are read back (JAX dispatches steps
asynchronously). On JAX every compilation is listed (from
`jax.monitoring`: the function's name, its shapes count, and the seconds
spent tracing, lowering and in the XLA backend compiler), grouped by the
phase it happened in.

    KERAS_BACKEND=jax python benchmarks/bench_retrace.py
    KERAS_BACKEND=jax python benchmarks/bench_retrace.py --train-samples 20000

Results: benchmarks/results/bench_retrace.txt.
"""

import argparse
import collections
import os
import sys
import time

if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
    sys.modules["tensorflow"] = None
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_adp import density  # noqa: E402
from keras_adp import epoch_loop  # noqa: E402
from keras_adp import graph  # noqa: E402
from keras_adp import idx  # noqa: E402
from keras_adp import keras_graph  # noqa: E402
from keras_adp import models  # noqa: E402
from keras_adp import optimizers  # noqa: E402
from keras_adp import rebuild  # noqa: E402

# The compile settings of the cross-backend benchmark, which this one
# breaks down (its script sits beside this one).
from bench_backends import _compiled  # noqa: E402

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"


class Clock:
    """Wall and CPU seconds of named phases, and the JAX compilations that
    happened in each."""

    def __init__(self):
        self.phases = []  # (name, wall, cpu, start, end)
        self.events = []  # (time, event, fun_name, seconds)
        self._open = None
        if keras.backend.backend() == "jax":
            import jax

            jax.monitoring.register_event_duration_secs_listener(
                self._listen
            )

    def _listen(self, event, seconds, fun_name="?", **kwargs):
        if event in (_BACKEND_COMPILE, _TRACE, _LOWER):
            # Tracing names the function, lowering and compiling "jit(it)".
            name = fun_name[4:-1] if fun_name.startswith("jit(") else fun_name
            self.events.append((time.time(), event, name, seconds))

    def start(self, name):
        self._open = (name, time.perf_counter(), time.process_time(),
                      time.time())

    def stop(self):
        name, wall, cpu, start = self._open
        self.phases.append((name, time.perf_counter() - wall,
                            time.process_time() - cpu, start, time.time()))
        self._open = None

    def run(self, name, function):
        self.start(name)
        result = function()
        self.stop()
        return result

    def compiles(self, start, end):
        """fun_name -> [backend compiles, backend s, trace + lower s]."""
        found = collections.OrderedDict()
        for moment, event, name, seconds in self.events:
            if not start <= moment <= end:
                continue
            entry = found.setdefault(name, [0, 0.0, 0.0])
            if event == _BACKEND_COMPILE:
                entry[0] += 1
                entry[1] += seconds
            else:
                entry[2] += seconds
        return found


def _sync(model):
    for variable in model.trainable_variables:
        keras.ops.convert_to_numpy(variable)


class PhaseCallback(keras.callbacks.Callback):
    """Splits a `fit` epoch into train / validation / density phases."""

    def __init__(self, clock, prefix, probe, calibration):
        super().__init__()
        self.clock, self.prefix = clock, prefix
        self.probe, self.calibration = probe, calibration

    def on_epoch_begin(self, epoch, logs=None):
        self.clock.start(f"{self.prefix} train")

    def on_test_begin(self, logs=None):
        _sync(self.model)
        self.clock.stop()
        self.clock.start(f"{self.prefix} validation")

    def on_epoch_end(self, epoch, logs=None):
        self.clock.stop()
        # As `training_callbacks.EpochDensity` measures, at the epoch's end.
        self.clock.run(f"{self.prefix} density",
                       lambda: self.probe.measure(self.calibration))


def _epoch(clock, prefix, model, probe, data, samples, args, seed):
    """One epoch as `EpochLoop._train` runs it, split into phases."""
    x, y = data["x"][:samples], data["y"][:samples]
    if keras.backend.backend() != "tensorflow":
        first = np.arange(1)
        clock.run(f"{prefix} build_training_state",
                  lambda: keras_graph.build_training_state(
                      model, x[first], y[first]))
    epoch_loop.seed_epoch(model, seed)
    model.fit(
        x, y, epochs=1, batch_size=args.batch_size, verbose=0,
        validation_data=(data["x_val"], data["y_val"]),
        callbacks=[PhaseCallback(clock, prefix, probe, data["calibration"])],
    )


def _data(args):
    arrays = idx.read_fashion_mnist_idx()
    n, v = args.train_samples, args.validation_samples
    x = arrays["x_train"][: n + v, ..., None].astype("float32") / 255.0
    y = arrays["y_train"][: n + v].astype("int32")
    return {"x": x[:n], "y": y[:n], "x_val": x[n:], "y_val": y[n:],
            "calibration": x[: args.calibration_samples]}


def _step(clock, model, calibration):
    """The pruning step as `PruningSteps._rebuild` takes it."""
    keep = {
        group.name: np.arange(max(1, (3 * group.size) // 4))
        for group in graph.channel_groups(model) if group.prunable
    }

    def surgery():
        result = rebuild.rebuild(model, keep)
        optimizers.carry_over(model, result.model, result)
        return result.model

    new_model = clock.run("step: rebuild + carry_over", surgery)
    clock.run("step: recalibrate_batch_norm",
              lambda: rebuild.recalibrate_batch_norm(new_model, calibration))
    probe = clock.run("step: DensityProbe", lambda: density.DensityProbe(
        new_model))
    return new_model, probe


def _warm_up_samples(args):
    """A short epoch whose last batch has the timed epoch's size, so that
    the timed dense epoch compiles nothing."""
    batch, remainder = args.batch_size, args.train_samples % args.batch_size
    return min(args.train_samples, 10 * batch + remainder)


def run(args, out):
    clock = Clock()
    data = _data(args)
    keras.utils.set_random_seed(args.seed)
    model = _compiled(models.build_model("vgg_small", (28, 28, 1), 10, 1.0))
    probe = density.DensityProbe(model)
    _epoch(clock, "dense warm-up", model, probe, data,
           _warm_up_samples(args), args, args.seed)
    _epoch(clock, "dense", model, probe, data, args.train_samples, args,
           args.seed + 1)
    new_model, new_probe = _step(clock, model, data["calibration"])
    step_samples = min(args.step_samples, args.train_samples)
    _epoch(clock, "after step", new_model, new_probe, data, step_samples,
           args, args.seed + 2)
    _epoch(clock, "compiled", new_model, new_probe, data, step_samples,
           args, args.seed + 3)
    _report(clock, args, out, step_samples, model, new_model)


def _phase(clock, name):
    for phase in clock.phases:
        if phase[0] == name:
            return phase
    return None


def _report(clock, args, out, step_samples, model, new_model):
    widths = lambda m: " ".join(  # noqa: E731
        str(g.size) for g in graph.channel_groups(m) if g.prunable)
    out(f"  vgg_small {widths(model)} -> {widths(new_model)}; batch "
        f"{args.batch_size}; validation {args.validation_samples}; "
        f"calibration {args.calibration_samples}")
    out(f"  {'phase':<40}{'wall s':>9}{'CPU s':>9}   JAX compilations: "
        "function x count: XLA s + trace/lower s")
    for name, wall, cpu, start, end in clock.phases:
        if name.startswith("dense warm-up"):
            continue
        listed = clock.compiles(start, end)
        text = "; ".join(
            f"{fun} x{count}: {backend:.2f}+{other:.2f}"
            for fun, (count, backend, other) in listed.items()
            if backend + other >= 0.05
        )
        small = [v for v in listed.values() if v[1] + v[2] < 0.05]
        if sum(v[0] for v in small):
            text += (f"{'; ' if text else ''}{sum(v[0] for v in small)} "
                     f"small ({sum(v[1] + v[2] for v in small):.2f} s)")
        out(f"  {name:<40}{wall:>9.3f}{cpu:>9.3f}   {text}")
    out("")
    totals = [0.0, 0.0]
    out(f"  re-trace per step, wall s and CPU s ({step_samples} training "
        "images per epoch after the step):")
    for part in ("step: rebuild + carry_over", "step: recalibrate_batch_norm",
                 "step: DensityProbe"):
        _, wall, cpu, _, _ = _phase(clock, part)
        totals[0] += wall
        totals[1] += cpu
        out(f"    {part:<46}{wall:>9.3f}{cpu:>9.3f}")
    for part in ("build_training_state", "train", "validation", "density"):
        first, again = (_phase(clock, f"{p} {part}")
                        for p in ("after step", "compiled"))
        if first is None:
            continue
        wall, cpu = first[1] - again[1], first[2] - again[2]
        totals[0] += wall
        totals[1] += cpu
        out(f"    {'first ' + part + ' - compiled one':<46}"
            f"{wall:>9.3f}{cpu:>9.3f}")
    out(f"    {'total':<46}{totals[0]:>9.3f}{totals[1]:>9.3f}")
    _, epoch_wall, epoch_cpu, _, _ = _phase(clock, "dense train")
    _, dens_wall, dens_cpu, _, _ = _phase(clock, "dense density")
    out(f"\n  density measurement of the dense model (compiled): "
        f"{dens_wall:.3f} s wall, {dens_cpu:.3f} s CPU = "
        f"{dens_wall / epoch_wall:.2%} / {dens_cpu / epoch_cpu:.2%} of "
        f"its training epoch on {args.train_samples} images "
        f"({epoch_wall:.2f} s wall, {epoch_cpu:.2f} s CPU)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=2000,
                        help="images of the timed dense epoch")
    parser.add_argument("--step-samples", type=int, default=2000,
                        help="images of each epoch after the step")
    parser.add_argument("--validation-samples", type=int, default=500)
    parser.add_argument("--calibration-samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="append the printed lines here")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    lines = []

    def out(text=""):
        print(text, flush=True)
        lines.append(text)

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    out(f"$ KERAS_BACKEND={keras.backend.backend()} python "
        f"{' '.join(['benchmarks/bench_retrace.py', *sys.argv[1:]])}")
    out(f"backend {keras.backend.backend()}, Keras {keras.__version__}; "
        f"{os.cpu_count()} CPU cores, load average {load}")
    run(args, out)
    out("  load average after: "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.out:
        with open(args.out, "a") as file:
            file.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
