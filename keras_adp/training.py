"""The driver: train from scratch and prune by activation density while
training.

`ADPTrainer(policy).fit(model, x, y, epochs=...)` trains the user's compiled
model epoch by epoch with `model.fit`. After each epoch it measures every
prunable channel group's activation density on a fixed calibration set; when
the policy says so it rebuilds the model physically smaller
(`keras_adp.rebuild`), carries the compile settings and the optimizer state
across (`keras_adp.optimizers`) and goes on training. With `run_dir`, every
completed epoch is checkpointed atomically and `resume=True` continues a run
that was killed.

Each epoch is one `model.fit(initial_epoch=e, epochs=e + 1)` call, so that a
rebuilt model can take over between any two epochs and that, with `seed`,
epoch `e` draws its randomness from `seed + e` only (a resumed run repeats
the uninterrupted one). User callbacks are wrapped so that they see one
training run: `on_train_begin`/`on_train_end` once, `set_model` whenever the
model is replaced, and `model.stop_training` (e.g. from `EarlyStopping`)
ends the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Any

import keras
import numpy as np

from keras_adp import density as density_lib
from keras_adp import graph as graph_lib
from keras_adp import metrics as metrics_lib
from keras_adp import optimizers as optimizers_lib
from keras_adp import rebuild as rebuild_lib
from keras_adp.policy import ADPPolicy

STATE_FILE = "state.json"
MODEL_FILE = "model.keras"
LATEST_FILE = "LATEST"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class ADPResult:
    """What `ADPTrainer.fit` returns.

    Attributes:
        model: the final, trained, pruned model.
        history: one dict per epoch: `epoch`, `logs` (loss, metrics, val_*),
            `widths` and `density` per group, `params`, `macs`, `flops` of
            the model trained in that epoch, `train_macs` (that epoch's
            training compute, 3x forward MACs per sample), `measure_macs`
            (the density measurement's forward passes), `cumulative_macs`
            and `pruning` (the step taken at the end of the epoch, or None).
        steps: the pruning steps: epoch, widths before and after, params and
            MACs before and after.
        dense: params, MACs and FLOPs of the model before pruning.
    """

    model: keras.Model
    history: list[dict]
    steps: list[dict]
    dense: dict

    def summary(self) -> dict:
        """Dense vs final params/MACs and total training compute."""
        last = self.history[-1]
        return {
            "epochs": len(self.history),
            "dense_params": self.dense["params"],
            "final_params": last["params"],
            "param_reduction": self.dense["params"] / max(1, last["params"]),
            "dense_macs": self.dense["macs"],
            "final_macs": last["macs"],
            "mac_reduction": self.dense["macs"] / max(1, last["macs"]),
            "training_macs": last["cumulative_macs"],
            "prune_steps": len(self.steps),
        }


@dataclasses.dataclass
class _RunState:
    next_epoch: int = 0
    steps_done: int = 0
    last_prune_epoch: int | None = None
    history: list = dataclasses.field(default_factory=list)
    steps: list = dataclasses.field(default_factory=list)
    density_history: list = dataclasses.field(default_factory=list)
    dense: dict = dataclasses.field(default_factory=dict)
    cumulative_macs: float = 0.0
    pruning_stopped: bool = False


class _UserCallback(keras.callbacks.Callback):
    """Makes a user callback see one run across many `fit` calls."""

    def __init__(self, callback):
        super().__init__()
        self.callback = callback

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def on_epoch_begin(self, epoch, logs=None):
        self.callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.callback.on_epoch_end(epoch, logs)

    def on_test_begin(self, logs=None):
        self.callback.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.callback.on_test_end(logs)


class _Measure(keras.callbacks.Callback):
    """Measures density at epoch end and writes it into the epoch logs."""

    def __init__(self, probe, calibration):
        super().__init__()
        self.probe = probe
        self.calibration = calibration
        self.logs = None
        self.densities = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        loss = logs.get("loss")
        if loss is None or math.isfinite(float(loss)):
            self.densities = self.probe.measure(self.calibration)
            for name, value in self.densities.items():
                logs[f"density/{name}"] = value.layer
        self.logs = dict(logs)


class ADPTrainer:
    """Trains a model from scratch and prunes it by activation density.

    Args:
        policy: an `ADPPolicy` (or a dict of its fields). Defaults to
            `ADPPolicy()`.
        run_dir: directory for per-epoch checkpoints (model with optimizer,
            pruning state, history), written atomically. Defaults to `None`
            (no checkpoints).
        seed: if set, epoch `e` is run after `keras.utils.set_random_seed(
            seed + e)`, which makes runs and resumed runs repeatable.
            Defaults to `None`.
        verbose: 0 silent, 1 Keras progress bars and one line per pruning
            step, 2 one line per epoch. Defaults to `1`.

    Example:

    ```python
    model = keras_adp.models.vgg_small((28, 28, 1), 10)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    result = keras_adp.ADPTrainer(keras_adp.ADPPolicy(warmup_epochs=1)).fit(
        model, x_train, y_train, epochs=5, validation_data=(x_test, y_test)
    )
    small = result.model
    ```
    """

    def __init__(self, policy=None, *, run_dir=None, seed=None, verbose=1):
        if policy is None:
            policy = ADPPolicy()
        elif isinstance(policy, dict):
            policy = ADPPolicy(**policy)
        elif not isinstance(policy, ADPPolicy):
            raise ValueError(
                "Expected `policy` to be an ADPPolicy or a dict of its "
                f"fields. Received: {type(policy).__name__}."
            )
        self.policy = policy
        self.run_dir = None if run_dir is None else os.fspath(run_dir)
        self.seed = seed
        self.verbose = verbose

    # ----------------------------------------------------------------- fit
    def fit(
        self,
        model: keras.Model,
        x: Any = None,
        y: Any = None,
        *,
        epochs: int,
        batch_size: int | None = None,
        validation_data: Any = None,
        callbacks: list | None = None,
        calibration_data: Any = None,
        resume: bool = False,
    ) -> ADPResult:
        """Train `model` for `epochs` epochs, pruning as the policy says.

        Args:
            model: a compiled functional or Sequential model. Not modified
                by pruning (rebuilds are new models); it is trained in the
                epochs before the first pruning step, as `model.fit` would.
            x, y, batch_size, validation_data: as for `model.fit`.
            epochs: total epochs, more than `policy.warmup_epochs`.
            callbacks: Keras callbacks; they follow the model across
                rebuilds.
            calibration_data: inputs to measure density on. Defaults to the
                first `policy.calibration_samples` samples of `x`.
            resume: continue from the last checkpoint in `run_dir` if there
                is one. Defaults to `False`.

        Returns:
            An `ADPResult`.
        """
        self._validate(model, epochs, resume)
        state = _RunState()
        if resume:
            loaded = self._load_checkpoint()
            if loaded is not None:
                model, state = loaded
        calibration = _calibration_inputs(
            x if calibration_data is None else calibration_data,
            self.policy.calibration_samples,
        )
        samples = _count_samples(x)
        probe = density_lib.DensityProbe(model, threshold=self.policy.threshold)
        if not state.dense:
            cost = metrics_lib.inference_cost(model)
            state.dense = dataclasses.asdict(cost)
        wrapped = [_UserCallback(cb) for cb in (callbacks or [])]
        for callback in wrapped:
            callback.set_model(model)
            callback.callback.on_train_begin()
        model.stop_training = False
        for epoch in range(state.next_epoch, epochs):
            if self.seed is not None:
                keras.utils.set_random_seed(self.seed + epoch)
            measure = _Measure(probe, calibration)
            model.fit(
                x,
                y,
                batch_size=batch_size,
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=validation_data,
                callbacks=[measure, *wrapped],
                verbose=1 if self.verbose == 1 else 0,
            )
            logs = measure.logs or {}
            if not math.isfinite(float(logs.get("loss", float("nan")))):
                raise TrainingDivergedError(
                    f"Training loss is {logs.get('loss')} at epoch {epoch + 1}; "
                    "stopped. "
                    + (
                        f"The last good checkpoint in '{self.run_dir}' is kept."
                        if self.run_dir
                        else ""
                    )
                    + " Lower the learning rate or check the inputs for "
                    "NaN/inf."
                )
            stop = bool(model.stop_training)
            model, probe = self._end_of_epoch(
                model, probe, state, epoch, logs, measure.densities, samples,
                len(calibration), wrapped, final=(epoch + 1 == epochs or stop),
            )
            if self.run_dir:
                self._save_checkpoint(model, state)
            if stop:
                break
        for callback in wrapped:
            callback.callback.on_train_end()
        return ADPResult(model, state.history, state.steps, state.dense)

    # ------------------------------------------------------------ internals
    def _validate(self, model, epochs, resume) -> None:
        graph_lib._check_model(model)
        if not getattr(model, "compiled", False) or model.optimizer is None:
            raise ValueError(
                f"Expected a compiled model. Received model '{model.name}' "
                "that was not compiled. Fix: call `model.compile(optimizer="
                "..., loss=..., metrics=...)` first; ADPTrainer reuses those "
                "settings after every rebuild."
            )
        if isinstance(epochs, bool) or not isinstance(epochs, int):
            raise ValueError(f"Expected `epochs` to be an integer. Received: {epochs!r}")
        if epochs <= self.policy.warmup_epochs:
            raise ValueError(
                f"Expected `epochs` > warmup_epochs={self.policy.warmup_epochs} "
                f"so that pruning can happen. Received: epochs={epochs}. Fix: "
                "train longer or lower `ADPPolicy(warmup_epochs=...)`."
            )
        groups = graph_lib.channel_groups(model)
        if not any(g.prunable for g in groups):
            reasons = "; ".join(f"{g.name}: {g.reason}" for g in groups)
            raise ValueError(
                f"Model '{model.name}' has no prunable channel group, so "
                f"there is nothing to prune. Groups: {reasons or 'none'}."
            )
        if resume and not self.run_dir:
            raise ValueError(
                "Received resume=True without a `run_dir`. Fix: pass "
                "`ADPTrainer(run_dir=...)` where the run was checkpointed."
            )
        if self.run_dir:
            try:
                os.makedirs(self.run_dir, exist_ok=True)
                probe_file = os.path.join(self.run_dir, ".write_test")
                with open(probe_file, "w") as handle:
                    handle.write("ok")
                os.remove(probe_file)
            except OSError as error:
                raise ValueError(
                    f"Run directory '{self.run_dir}' is not writable "
                    f"({error}). Fix: pass a run_dir you can write to."
                ) from error

    def _end_of_epoch(
        self, model, probe, state, epoch, logs, densities, samples,
        calibration_size, wrapped, final,
    ):
        cost = metrics_lib.inference_cost(model)
        groups = graph_lib.channel_groups(model)
        densities = densities or {}
        train_macs = metrics_lib.training_macs(cost.macs, samples)
        measure_macs = float(cost.macs) * calibration_size
        state.cumulative_macs += train_macs + measure_macs
        density_now = {name: d.layer for name, d in densities.items()}
        state.density_history.append(density_now)
        record = {
            "epoch": epoch,
            "logs": {k: float(v) for k, v in logs.items() if _is_number(v)},
            "widths": {g.name: g.size for g in groups if g.prunable},
            "density": density_now,
            "params": cost.params,
            "macs": cost.macs,
            "flops": cost.flops,
            "train_macs": train_macs,
            "measure_macs": measure_macs,
            "cumulative_macs": state.cumulative_macs,
            "pruning": None,
        }
        state.history.append(record)
        state.next_epoch = epoch + 1
        if self.verbose == 2:
            print(_epoch_line(record), flush=True)
        if (
            final
            or state.pruning_stopped
            or not self.policy.should_prune(
                epoch, state.density_history, state.steps_done,
                state.last_prune_epoch,
            )
        ):
            return model, probe
        scores = channel_scores(model, groups, self.policy.selection)
        keep = self.policy.plan(groups, densities, scores)
        if not keep:
            # No group would lose `min_reduction` of its channels: stop.
            state.pruning_stopped = True
            record["pruning"] = {"epoch": epoch, "stopped": True}
            if self.verbose:
                print(
                    f"[keras-adp] epoch {epoch + 1}: widths have converged; "
                    "pruning stops, training goes on.",
                    flush=True,
                )
            return model, probe
        new_model = self._rebuild(model, keep)
        new_cost = metrics_lib.inference_cost(new_model)
        step = {
            "epoch": epoch,
            "before": {g.name: g.size for g in groups if g.name in keep},
            "after": {name: int(len(idx)) for name, idx in keep.items()},
            "params_before": cost.params,
            "params_after": new_cost.params,
            "macs_before": cost.macs,
            "macs_after": new_cost.macs,
        }
        record["pruning"] = step
        state.steps.append(step)
        state.steps_done += 1
        state.last_prune_epoch = epoch
        if self.verbose:
            print(_step_line(step), flush=True)
        for callback in wrapped:
            callback.set_model(new_model)
        new_model.stop_training = False
        probe = density_lib.DensityProbe(
            new_model, threshold=self.policy.threshold
        )
        return new_model, probe

    def _rebuild(self, model, keep) -> keras.Model:
        with model.distribute_strategy.scope():
            surgery = rebuild_lib.rebuild(model, keep)
            if not self.policy.reinitialize:
                optimizers_lib.carry_over(model, surgery.model, surgery)
                return surgery.model
            fresh = keras.models.clone_model(surgery.model)
            optimizers_lib.compile_like(
                model, fresh, optimizers_lib.fresh_optimizer(model.optimizer)
            )
            return fresh

    # ---------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model, state) -> None:
        """Write checkpoint-NNNN/ then point LATEST at it (atomic rename)."""
        name = f"checkpoint-{state.next_epoch:04d}"
        final = os.path.join(self.run_dir, name)
        partial = final + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        model.save(os.path.join(partial, MODEL_FILE))
        payload = dataclasses.asdict(state)
        payload["policy"] = self.policy.get_config()
        payload["seed"] = self.seed
        with open(os.path.join(partial, STATE_FILE), "w") as handle:
            json.dump(payload, handle, default=_json_default)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        _atomic_write(os.path.join(self.run_dir, LATEST_FILE), name)
        for old in _checkpoints(self.run_dir)[:-2]:
            shutil.rmtree(os.path.join(self.run_dir, old), ignore_errors=True)

    def _load_checkpoint(self):
        """The newest checkpoint that loads, or None when there is none."""
        names = _checkpoints(self.run_dir)
        latest_file = os.path.join(self.run_dir, LATEST_FILE)
        if os.path.exists(latest_file):
            with open(latest_file) as handle:
                latest = handle.read().strip()
            if latest in names:
                names.remove(latest)
                names.append(latest)
        errors = []
        for name in reversed(names):
            path = os.path.join(self.run_dir, name)
            try:
                with open(os.path.join(path, STATE_FILE)) as handle:
                    payload = json.load(handle)
                model = keras.saving.load_model(os.path.join(path, MODEL_FILE))
            except Exception as error:  # noqa: BLE001 - report and fall back
                errors.append(f"{name}: {type(error).__name__}: {error}")
                print(
                    f"[keras-adp] checkpoint '{path}' is unreadable "
                    f"({type(error).__name__}); trying an older one.",
                    flush=True,
                )
                continue
            payload.pop("policy", None)
            payload.pop("seed", None)
            state = _RunState(**payload)
            if self.verbose:
                print(
                    f"[keras-adp] resuming from '{path}' at epoch "
                    f"{state.next_epoch + 1}",
                    flush=True,
                )
            return model, state
        if errors:
            raise ValueError(
                f"No readable checkpoint in '{self.run_dir}': "
                + "; ".join(errors)
            )
        return None


# -------------------------------------------------------------- helpers
def channel_scores(model, groups, selection: str) -> dict[str, np.ndarray]:
    """Per-channel importance used to rank (or break ties between) channels.

    `"bn_gamma"`: |gamma| of the group's first BatchNormalization member.
    Otherwise (and when a group has no BatchNormalization): the L1 norm of
    each output channel's weights, summed over the group's producers.
    """
    scores = {}
    for group in groups:
        if not group.prunable:
            continue
        if selection == "bn_gamma":
            gamma = _first_gamma(model, group)
            if gamma is not None:
                scores[group.name] = np.abs(gamma)
                continue
        total = np.zeros(group.size)
        for name in group.producers:
            layer = graph_lib.get_layer(model, name)
            kernel_name, axis = _OUTPUT_AXIS.get(
                type(layer).__name__, ("kernel", -1)
            )
            kernel = next(
                np.asarray(w.numpy()) for w in layer.weights if w.name == kernel_name
            )
            other = tuple(a for a in range(kernel.ndim) if a != axis % kernel.ndim)
            total += np.abs(kernel).sum(axis=other)
        scores[group.name] = total
    return scores


_OUTPUT_AXIS = {
    "Conv1DTranspose": ("kernel", -2),
    "Conv2DTranspose": ("kernel", -2),
    "Conv3DTranspose": ("kernel", -2),
    "SeparableConv1D": ("pointwise_kernel", -1),
    "SeparableConv2D": ("pointwise_kernel", -1),
}


def _first_gamma(model, group):
    for name in group.members:
        layer = graph_lib.get_layer(model, name)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
            return np.asarray(layer.gamma.numpy())
    return None


def _calibration_inputs(data, num_samples: int) -> np.ndarray:
    """The first `num_samples` model inputs of `data`, as one array."""
    if data is None:
        raise ValueError(
            "Expected training data `x` (or `calibration_data`). Received None."
        )
    dataset = density_lib.as_input_dataset(data, batch_size=256)
    chunks, total = [], 0
    for batch in dataset:
        batch = np.asarray(batch)
        chunks.append(batch)
        total += len(batch)
        if total >= num_samples:
            break
    if not chunks or total == 0:
        raise ValueError("Received empty data: no samples to calibrate on.")
    return np.concatenate(chunks)[:num_samples]


def _count_samples(x) -> int:
    """Training samples per epoch (arrays: length; datasets: one pass)."""
    dataset = density_lib.as_input_dataset(x, batch_size=1024)
    return int(
        dataset.reduce(np.int64(0), lambda n, b: n + keras.ops.cast(
            keras.ops.shape(b)[0], "int64"
        )).numpy()
    )


def _checkpoints(run_dir: str) -> list[str]:
    if not os.path.isdir(run_dir):
        return []
    return sorted(
        name
        for name in os.listdir(run_dir)
        if name.startswith("checkpoint-") and not name.endswith(".partial")
    )


def _atomic_write(path: str, text: str) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Cannot serialise {type(value).__name__}")


def _epoch_line(record) -> str:
    accuracy = record["logs"].get("val_accuracy", record["logs"].get("accuracy"))
    text = f"[keras-adp] epoch {record['epoch'] + 1}: loss {record['logs'].get('loss', float('nan')):.4f}"
    if accuracy is not None:
        text += f", accuracy {accuracy:.4f}"
    return text + f", params {record['params']:,}, MACs {record['macs']:,}"


def _step_line(step) -> str:
    changes = ", ".join(
        f"{name} {step['before'][name]}->{step['after'][name]}"
        for name in step["after"]
    )
    return (
        f"[keras-adp] epoch {step['epoch'] + 1}: pruned {len(step['after'])} "
        f"groups ({changes}); params {step['params_before']:,} -> "
        f"{step['params_after']:,}, MACs {step['macs_before']:,} -> "
        f"{step['macs_after']:,}"
    )
