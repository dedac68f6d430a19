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
the uninterrupted one): the global seeds and the state of every
`SeedGenerator` in the model (Dropout, random augmentation layers), which
`model.save` does not store, are reset at the start of each epoch. User
callbacks are wrapped so that they see one training run: `on_train_begin`/
`on_train_end` once, `params["epochs"]` the total, every other hook as
usual, `set_model` whenever the model is replaced, and `model.stop_training`
(e.g. from `EarlyStopping`) ends the run.

A checkpoint `run_dir/checkpoint-NNNN/` (NNNN: epochs completed) holds the
model to train next (`model.keras`, loaded without its compile settings),
its optimizer's variables (`optimizer.npz`) and the run state with the
history (`state.json`); `run_dir/LATEST` names the newest one. On resume the
model is compiled like the model passed to `fit` (so custom losses and
metrics need no registration), and an unreadable checkpoint is reported and
skipped for the previous one.

Distribution uses TensorFlow's own engines: build and compile the model
inside `strategy.scope()` (`tf.distribute.MirroredStrategy`,
`MultiWorkerMirroredStrategy`) and every rebuild, recompile and checkpoint
load happens inside `model.distribute_strategy.scope()`, so the new
variables and the optimizer state are distributed variables of the same
strategy. Density is measured with `predict`, whose outputs Keras gathers
from every replica and worker, so each worker sees the counts of the whole
calibration set and takes the same pruning decision. Only the chief writes
checkpoints (`strategy.extended.should_checkpoint`); the other workers of a
multi-worker run save into a temporary directory that is deleted at once,
as TensorFlow advises, because saving may read variables synchronised on
read, which takes every worker's part in an all-reduce. Keras 3's own `fit`
fails under a multi-worker strategy (keras-team/keras#20585); the trainer
works around its two bugs while its `fit` calls run
(`_distributed_fit_fixes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import random
import shutil
import tempfile
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_adp import density as density_lib
from keras_adp import graph as graph_lib
from keras_adp import guard as guard_lib
from keras_adp import metrics as metrics_lib
from keras_adp import optimizers as optimizers_lib
from keras_adp import rebuild as rebuild_lib
from keras_adp import validation
from keras_adp.policy import ADPPolicy

STATE_FILE = "state.json"
MODEL_FILE = "model.keras"
OPTIMIZER_FILE = "optimizer.npz"
LATEST_FILE = "LATEST"
PRE_STEP_DIR = "pre-step"
KEPT_CHECKPOINTS = 2


class TrainingDivergedError(RuntimeError):
    """The loss or a weight became NaN or infinite; the last good checkpoint
    is kept."""


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
            and `pruning`: the step taken at the end of the epoch (as in
            `steps`), `{"epoch": epoch, "stopped": True}` where pruning
            stopped because no group would shrink by `min_reduction`, or
            None.
        steps: the pruning steps: epoch, widths before and after, params and
            MACs before and after.
        dense: params, MACs and FLOPs of the model before pruning.
    """

    model: keras.Model
    history: list[dict]
    steps: list[dict]
    dense: dict

    def summary(self) -> dict:
        """Dense vs final params/MACs and total training compute.

        The final figures are those of `model`, the model returned (after a
        rollback in the last epoch it is not the one trained last).
        """
        last = self.history[-1]
        final = metrics_lib.inference_cost(self.model)
        return {
            "epochs": len(self.history),
            "dense_params": self.dense["params"],
            "final_params": final.params,
            "param_reduction": self.dense["params"] / max(1, final.params),
            "dense_macs": self.dense["macs"],
            "final_macs": final.macs,
            "mac_reduction": self.dense["macs"] / max(1, final.macs),
            "training_macs": last["cumulative_macs"],
            "prune_steps": sum(
                step.get("outcome") != "rolled back" for step in self.steps
            ),
            "rolled_back_steps": sum(
                step.get("outcome") == "rolled back" for step in self.steps
            ),
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
    # `model.stop_training` (e.g. EarlyStopping) ended the run: a resumed
    # run is finished too.
    training_stopped: bool = False
    # Training samples per epoch (datasets: counted in the first epoch).
    samples_per_epoch: int | None = None
    # What the run was started with, checked on resume.
    signature: dict = dataclasses.field(default_factory=dict)
    # The accuracy guard: the monitored key, the best value reached with an
    # accepted model, the step on trial (None when none) and every decision.
    monitor: str | None = None
    reference: float | None = None
    pending: dict | None = None
    guard: list = dataclasses.field(default_factory=list)


# Hooks passed straight to a user callback; `on_train_begin`/`on_train_end`
# are called once per ADP run by the trainer instead.
_FORWARDED_HOOKS = (
    "on_epoch_begin",
    "on_epoch_end",
    "on_batch_begin",
    "on_batch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
)


class _UserCallback(keras.callbacks.Callback):
    """Makes a user callback see one run across many `fit` calls.

    Each forwarded hook is the user callback's own bound method, so Keras
    sees exactly the hooks it overrides (and keeps asynchronous batch
    dispatch when it overrides none).
    """

    def __init__(self, callback, epochs):
        super().__init__()
        self.callback = callback
        self.epochs = epochs
        self.async_safe = getattr(callback, "async_safe", False)
        for hook in _FORWARDED_HOOKS:
            setattr(self, hook, getattr(callback, hook))

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        params = dict(params, epochs=self.epochs)
        super().set_params(params)
        self.callback.set_params(params)

    def rebuilt(self, old_model, surgery):
        """Adapts model-shaped state to the rebuilt model.

        `EarlyStopping(restore_best_weights=True)` keeps a copy of the best
        weights; they are sliced like the model so that they still fit it.
        """
        callback = self.callback
        if (
            isinstance(callback, keras.callbacks.EarlyStopping)
            and callback.best_weights is not None
        ):
            callback.best_weights = [
                surgery.slice_like(variable, value)
                for variable, value in zip(
                    old_model.weights, callback.best_weights
                )
            ]


class _Progbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, counting epochs out of the whole run."""

    def __init__(self, epochs):
        super().__init__()
        self.total_epochs = epochs

    def set_params(self, params):
        super().set_params(dict(params, epochs=self.total_epochs))


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
        safe_mode: Keras' safe mode when loading a checkpoint to resume:
            it refuses `Lambda` layers, whose Python code is stored in the
            file. A model with a `Lambda` layer resumes only with
            `safe_mode=False` (for run directories you trust). Defaults to
            `True`.

    Distributed training: build and compile the model inside the
    `strategy.scope()` of a `tf.distribute.MirroredStrategy` or
    `MultiWorkerMirroredStrategy` and call `fit` the same way on every
    worker. Rebuilds stay in that strategy; only the chief writes to
    `run_dir`, which must be storage shared by all workers for
    `resume=True`. Pass `seed` so that every worker shuffles the data the
    same way.

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

    def __init__(
        self, policy=None, *, run_dir=None, seed=None, verbose=1,
        safe_mode=True,
    ):
        if policy is None:
            policy = ADPPolicy()
        elif isinstance(policy, dict):
            policy = ADPPolicy.from_config(policy)
        elif not isinstance(policy, ADPPolicy):
            raise ValueError(
                "Expected `policy` to be an ADPPolicy or a dict of its "
                f"fields. Received: policy={policy!r}"
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
            or seed < 0
        ):
            raise ValueError(
                "Expected `seed` to be None or an integer >= 0. "
                f"Received: seed={seed!r}"
            )
        if verbose not in (0, 1, 2) or isinstance(verbose, bool):
            raise ValueError(
                "Expected `verbose` to be 0, 1 or 2. "
                f"Received: verbose={verbose!r}"
            )
        if not isinstance(safe_mode, bool):
            raise ValueError(
                "Expected `safe_mode` to be True or False. "
                f"Received: safe_mode={safe_mode!r}"
            )
        self.policy = policy
        self.run_dir = None if run_dir is None else os.fspath(run_dir)
        self.seed = None if seed is None else int(seed)
        self.verbose = verbose
        self.safe_mode = safe_mode

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
        steps_per_epoch: int | None = None,
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
                is one (a warning says when there is none and a new run
                starts). Defaults to `False`: start a new run, which needs a
                `run_dir` without checkpoints.
            steps_per_epoch: batches per epoch, as for `model.fit`; needed
                for an infinite dataset (e.g. after `.repeat()`). Defaults
                to `None` (one pass over `x`).

        Returns:
            An `ADPResult`.

        Raises:
            ValueError: invalid arguments or data (NaN/inf in arrays, labels
                outside the model's classes, an unbatched or infinite
                dataset without `steps_per_epoch`), a `run_dir` that holds a
                previous run while `resume=False`, a checkpoint of another
                architecture or optimizer, or no readable checkpoint.
            TypeError: `callbacks` is not a list of Keras callbacks.
            TrainingDivergedError: the loss or a weight became NaN or
                infinite.
        """
        resume = validation.check_bool(resume, "resume")
        self._validate(model, epochs, resume)
        epochs = int(epochs)
        callbacks = validation.check_callbacks(callbacks)
        validation.check_batch_size(batch_size)
        _check_steps("steps_per_epoch", steps_per_epoch)
        _check_training_data(model, x, y, steps_per_epoch)
        validation.check_validation_data(validation_data)
        x, y, validation_data = self._guard_validation(
            x, y, validation_data
        )
        if (
            self.seed is None
            and _is_multi_worker(model.distribute_strategy)
            and not isinstance(x, tf.data.Dataset)
        ):
            warnings.warn(
                "Multi-worker training without `seed`: each worker shuffles "
                "the arrays its own way before its shard is taken, so "
                "workers may train on overlapping samples. Fix: pass "
                "`ADPTrainer(seed=...)`.",
                stacklevel=2,
            )
        user_model = model
        signature = _signature(model)
        state = _RunState(signature=signature)
        if resume:
            loaded = self._load_checkpoint(model, signature, epochs)
            if loaded is not None:
                model, state = loaded
            else:
                warnings.warn(
                    f"resume=True, but '{self.run_dir}' holds no checkpoint "
                    "to resume: a new run starts.",
                    stacklevel=2,
                )
        calibration = _calibration_inputs(
            x if calibration_data is None else calibration_data,
            self.policy.calibration_samples,
        )
        probe = density_lib.DensityProbe(model, threshold=self.policy.threshold)
        probe.check_inputs(calibration)
        replicas = model.distribute_strategy.num_replicas_in_sync
        inputs = _ReplicaSafeInputs(
            x, y, batch_size, validation_data, steps_per_epoch, replicas
        )
        if state.samples_per_epoch is None:
            state.samples_per_epoch = inputs.samples_per_epoch()
        if not state.dense:
            cost = metrics_lib.inference_cost(model)
            state.dense = dataclasses.asdict(cost)
        wrapped = [_UserCallback(cb, epochs) for cb in (callbacks or [])]
        for callback in wrapped:
            callback.set_model(model)
            callback.callback.on_train_begin()
        progress = [_Progbar(epochs)] if self.verbose == 1 else []
        model.stop_training = False
        first_epoch = epochs if state.training_stopped else state.next_epoch
        self._epochs = epochs
        self._calibration = calibration
        self._pre_step = None
        self._user_model = user_model
        self._strategy = model.distribute_strategy
        try:
            for epoch in range(first_epoch, epochs):
                if self.seed is not None:
                    _seed_epoch(model, self.seed + epoch)
                measure = _Measure(probe, calibration)
                _set_gamma_l1(
                    model,
                    self.policy.gamma_l1
                    if _pruning_may_go_on(state, self.policy)
                    else 0.0,
                )
                count = state.samples_per_epoch is None
                with _distributed_fit_fixes(model):
                    model.fit(
                        inputs.x(count=count),
                        inputs.y,
                        batch_size=batch_size,
                        epochs=epoch + 1,
                        initial_epoch=epoch,
                        # A tf.data pipeline shuffles itself (Keras warns
                        # otherwise).
                        shuffle=not isinstance(x, tf.data.Dataset),
                        validation_data=inputs.validation_data,
                        validation_batch_size=inputs.validation_batch_size,
                        steps_per_epoch=inputs.steps_per_epoch,
                        callbacks=[measure, *wrapped, *progress],
                        verbose=1 if self.verbose == 1 else 0,
                    )
                if count:
                    state.samples_per_epoch = inputs.counted_samples()
                logs = measure.logs or {}
                problem = _divergence(logs, model)
                if problem:
                    for callback in wrapped:
                        callback.callback.on_train_end(logs)
                    kept = (
                        f" The last good checkpoint in '{self.run_dir}' is kept."
                        if self.run_dir and _checkpoints(self.run_dir)
                        else ""
                    )
                    raise TrainingDivergedError(
                        f"{problem} at epoch {epoch + 1}; training stopped."
                        f"{kept} Fix: lower the learning rate or check the "
                        "inputs for NaN/inf."
                    )
                stop = bool(model.stop_training)
                state.training_stopped = stop
                model, probe = self._end_of_epoch(
                    model, probe, state, epoch, logs, measure.densities,
                    state.samples_per_epoch,
                    _num_samples(calibration), wrapped,
                    final=(epoch + 1 == epochs or stop),
                )
                if self.run_dir:
                    self._save_checkpoint(model, state)
                if stop:
                    break
        finally:
            # The penalty is the trainer's: no model leaves with it.
            _set_gamma_l1(model, 0.0)
            _set_gamma_l1(user_model, 0.0)
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
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
            raise ValueError(
                "Expected `epochs` to be an integer. "
                f"Received: epochs={epochs!r}"
            )
        if epochs <= self.policy.warmup_epochs:
            raise ValueError(
                "Expected `epochs` > "
                f"warmup_epochs={self.policy.warmup_epochs} "
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
        if self.run_dir and not resume:
            previous = _run_entries(self.run_dir)
            if previous:
                raise ValueError(
                    f"Run directory '{self.run_dir}' holds a previous run "
                    f"({', '.join(previous[:3])}). Fix: pass `resume=True` "
                    "to continue it, or an empty `run_dir` to start a new "
                    "run."
                )
        if self.run_dir and _is_chief(model.distribute_strategy):
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
            "guard": None,
        }
        state.history.append(record)
        state.next_epoch = epoch + 1
        if self.verbose == 2:
            print(_epoch_line(record), flush=True)
        if self.policy.max_accuracy_drop is not None:
            model, probe, retry = self._judge(
                model, probe, state, epoch, record, wrapped, final
            )
            if retry is not None:
                return self._take_step(model, state, epoch, record, wrapped,
                                       **retry)
        if (
            final
            or state.pruning_stopped
            or state.pending is not None
            or not self._room_for_a_step(epoch)
            or not self.policy.should_prune(
                epoch, state.density_history, state.steps_done,
                state.last_prune_epoch,
            )
        ):
            return model, probe
        scores = channel_scores(model, groups, self.policy.selection)
        gammas = {
            group.name: _first_gamma(model, group)
            for group in groups if group.prunable
        }
        keep = self.policy.plan(groups, densities, scores, gammas)
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
        order = {
            name: self.policy.rank(
                densities[name].channels, scores.get(name), gammas.get(name)
            ).tolist()
            for name in keep
        }
        return self._take_step(
            model, state, epoch, record, wrapped, keep=keep, order=order,
            attempt=0,
        )

    def _room_for_a_step(self, epoch) -> bool:
        """Whether a step now leaves the guard epochs to judge it, and at
        least one epoch after the judgement to train the model it keeps (a
        step rolled back in the last epoch would waste that epoch)."""
        if self.policy.max_accuracy_drop is None:
            return True
        return epoch + 1 + self.policy.recovery_epochs < self._epochs

    def _take_step(
        self, model, state, epoch, record, wrapped, *, keep, order, attempt
    ):
        """Rebuild `model` keeping `keep`; the guard puts it on trial."""
        _set_gamma_l1(model, 0.0)  # The next epoch sets it on the new model.
        groups = {g.name: g for g in graph_lib.channel_groups(model)}
        cost = metrics_lib.inference_cost(model)
        new_model, surgery = self._rebuild(model, keep)
        new_cost = metrics_lib.inference_cost(new_model)
        step = {
            "epoch": epoch,
            "before": {name: groups[name].size for name in keep},
            "after": {name: int(len(idx)) for name, idx in keep.items()},
            "params_before": cost.params,
            "params_after": new_cost.params,
            "macs_before": cost.macs,
            "macs_after": new_cost.macs,
            "attempt": attempt,
            "outcome": None,
        }
        record["pruning"] = step
        state.steps.append(step)
        state.steps_done += 1
        if self.policy.max_accuracy_drop is not None:
            state.pending = {
                "epoch": epoch,
                "attempt": attempt,
                "epochs_trained": 0,
                "order": order,
                "before": step["before"],
                "after": step["after"],
                "last_prune_epoch": state.last_prune_epoch,
            }
            self._keep_pre_step(model, wrapped)
        else:
            step["outcome"] = "taken"
        state.last_prune_epoch = epoch
        if self.verbose:
            print(_step_line(step), flush=True)
        for callback in wrapped:
            callback.rebuilt(model, surgery)
            callback.set_model(new_model)
        new_model.stop_training = False
        probe = density_lib.DensityProbe(
            new_model, threshold=self.policy.threshold
        )
        return new_model, probe

    def _judge(self, model, probe, state, epoch, record, wrapped, final):
        """The guard at the end of an epoch.

        Returns:
            `(model, probe, retry)`: the model to train next (the pre-step
            one after a rollback) and its probe, and the keyword arguments
            of a gentler `_take_step`, or None.
        """
        logs = record["logs"]
        if state.monitor is None:
            state.monitor = guard_lib.resolve_monitor(
                self.policy.monitor, logs
            )
        monitor = state.monitor
        if monitor not in logs:
            guard_lib.resolve_monitor(monitor, logs)  # Raises.
        value = float(logs[monitor])
        pending = state.pending
        if pending is None:
            state.reference = guard_lib.better(monitor, state.reference, value)
            return model, probe, None
        pending["epochs_trained"] += 1
        if pending["epochs_trained"] < self.policy.recovery_epochs and not final:
            return model, probe, None
        budget = float(self.policy.max_accuracy_drop)
        decision = {
            "epoch": epoch,
            "step_epoch": pending["epoch"],
            "attempt": pending["attempt"],
            "monitor": monitor,
            "value": value,
            "reference": state.reference,
            "budget": budget,
        }
        record["guard"] = decision
        state.guard.append(decision)
        step = state.steps[-1]
        worse = state.reference is not None and guard_lib.is_worse_than_budget(
            monitor, value, state.reference, budget
        )
        if not worse:
            decision["action"] = "accepted"
            step["outcome"] = "accepted"
            state.pending = None
            state.reference = guard_lib.better(monitor, state.reference, value)
            self._drop_pre_step()
            if self.verbose:
                print(_guard_line(decision), flush=True)
            return model, probe, None
        restored = self._restore_pre_step(model, state, wrapped)
        step["outcome"] = "rolled back"
        state.steps_done -= 1
        state.last_prune_epoch = pending["last_prune_epoch"]
        state.pending = None
        probe = density_lib.DensityProbe(
            restored, threshold=self.policy.threshold
        )
        retry = None
        if (
            pending["attempt"] < self.policy.max_retries
            and not final
            and self._room_for_a_step(epoch)
        ):
            keep = guard_lib.gentler_keep(
                pending["order"], pending["before"], pending["after"]
            )
            if keep:
                retry = {
                    "keep": keep,
                    "order": pending["order"],
                    "attempt": pending["attempt"] + 1,
                }
        if retry is None:
            decision["action"] = "rolled back; pruning stops"
            state.pruning_stopped = True
        else:
            decision["action"] = "rolled back; retrying half the removal"
        if self.verbose:
            print(_guard_line(decision), flush=True)
        return restored, probe, retry

    # ----------------------------------------------------- pre-step model
    def _keep_pre_step(self, model, wrapped) -> None:
        """Keeps the model before a step (in memory and in `run_dir`)."""
        saved = [
            (callback.callback, list(callback.callback.best_weights))
            for callback in wrapped
            if isinstance(callback.callback, keras.callbacks.EarlyStopping)
            and callback.callback.best_weights is not None
        ]
        self._pre_step = (model, saved)
        if self.run_dir:
            self._save_model_dir(PRE_STEP_DIR, model)

    def _drop_pre_step(self) -> None:
        self._pre_step = None
        if self.run_dir and _is_chief(self._strategy):
            shutil.rmtree(
                os.path.join(self.run_dir, PRE_STEP_DIR), ignore_errors=True
            )

    def _restore_pre_step(self, model, state, wrapped):
        """The pre-step model, its optimizer slots exactly as they were.

        The optimizer's iteration count is set to the current one, so a
        learning-rate schedule keeps its place.
        """
        if self._pre_step is not None:
            restored, saved = self._pre_step
        else:  # Resumed during the trial: read it from `run_dir`.
            restored = self._read_model_dir(
                os.path.join(self.run_dir, PRE_STEP_DIR), self._user_model
            )
            saved = []
        restored.optimizer.iterations.assign(model.optimizer.iterations)
        for callback, best_weights in saved:
            callback.best_weights = best_weights
        for callback in wrapped:
            callback.set_model(restored)
        restored.stop_training = False
        self._drop_pre_step()
        return restored

    def _rebuild(self, model, keep):
        """The compiled smaller model to train next, and its `Rebuild`."""
        with model.distribute_strategy.scope():
            surgery = rebuild_lib.rebuild(model, keep)
            if not self.policy.reinitialize:
                new_model = surgery.model
                optimizers_lib.carry_over(model, new_model, surgery)
            else:
                # Same architecture, newly initialised weights, fresh
                # optimizer.
                new_model = keras.models.clone_model(
                    surgery.model,
                    clone_function=lambda layer: rebuild_lib.layer_from_config(
                        layer, layer.get_config()
                    ),
                )
                optimizers_lib.carry_over(model, new_model, surgery, reset=True)
            if self.policy.recalibrate_batch_norm:
                rebuild_lib.recalibrate_batch_norm(new_model, self._calibration)
            return new_model, surgery

    # ---------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model, state) -> None:
        """Checkpoint into `run_dir` on the chief, into scratch elsewhere.

        Every worker of a multi-worker run saves, so that variables
        synchronised on read (whose value is an all-reduce over workers) can
        be read; the non-chief workers write into a temporary directory
        that is deleted right after (TensorFlow's multi-worker guidance).
        """
        if _is_chief(model.distribute_strategy):
            self._write_checkpoint(self.run_dir, model, state)
            return
        scratch = tempfile.mkdtemp(prefix="keras_adp_worker_")
        try:
            self._write_checkpoint(scratch, model, state)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _write_checkpoint(self, run_dir, model, state) -> None:
        """Write checkpoint-NNNN/ then point LATEST at it (atomic rename)."""
        name = f"checkpoint-{state.next_epoch:04d}"
        final = os.path.join(run_dir, name)
        partial = final + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        _write_model(partial, model)
        payload = dataclasses.asdict(state)
        payload["policy"] = self.policy.get_config()
        payload["seed"] = self.seed
        with open(os.path.join(partial, STATE_FILE), "w") as handle:
            json.dump(payload, handle, default=_json_default)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        _atomic_write(os.path.join(run_dir, LATEST_FILE), name)
        for old in _checkpoints(run_dir)[:-KEPT_CHECKPOINTS]:
            if old != name:
                shutil.rmtree(os.path.join(run_dir, old), ignore_errors=True)

    def _load_checkpoint(self, user_model, signature, epochs):
        """The newest checkpoint that loads, or None when there is none.

        The model is compiled like `user_model` and its optimizer state is
        restored from `optimizer.npz`. A checkpoint of a run started with
        another architecture or optimizer, or that already trained more
        than `epochs` epochs, is an error (not skipped for an older one).
        """
        names = _checkpoints(self.run_dir)
        latest_file = os.path.join(self.run_dir, LATEST_FILE)
        if os.path.exists(latest_file):
            with open(latest_file) as handle:
                latest = handle.read().strip()
            if latest in names:
                names.remove(latest)
                names.append(latest)
        # Before any variable is created: under MultiWorkerMirroredStrategy
        # that is a collective op, which every worker must run alike.
        _check_workers_agree(
            user_model.distribute_strategy, names, self.run_dir
        )
        errors = []
        for name in reversed(names):
            path = os.path.join(self.run_dir, name)
            try:
                model, state = self._read_checkpoint(
                    path, user_model, signature, epochs
                )
            except _ResumeMismatchError:
                raise
            except Exception as error:  # noqa: BLE001 - report and fall back
                if self.safe_mode and "safe_mode=False" in str(error):
                    raise ValueError(
                        f"Checkpoint '{path}' holds a model with a `Lambda` "
                        "layer, whose Python code Keras' safe mode refuses "
                        "to load. Fix: if you trust this run directory, "
                        "pass `ADPTrainer(safe_mode=False)`."
                    ) from error
                errors.append(f"{name}: {type(error).__name__}: {error}")
                print(
                    f"[keras-adp] checkpoint '{path}' is unreadable "
                    f"({type(error).__name__}: {error}); trying an older one.",
                    flush=True,
                )
                continue
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
                + ". Fix: pass another `run_dir`, or `resume=False` to start "
                "over."
            )
        return None

    def _read_checkpoint(self, path, user_model, signature, epochs):
        with open(os.path.join(path, STATE_FILE)) as handle:
            payload = json.load(handle)
        payload.pop("policy", None)
        payload.pop("seed", None)
        state = _RunState(**payload)
        _check_resumable(state, signature, epochs, path)
        if state.pending is not None and not os.path.isdir(
            os.path.join(self.run_dir, PRE_STEP_DIR)
        ):
            raise ValueError(
                f"Checkpoint '{path}' has a pruning step on trial, but its "
                f"pre-step model '{PRE_STEP_DIR}' is missing from the run "
                "directory."
            )
        return self._read_model_dir(path, user_model), state

    def _read_model_dir(self, path, user_model):
        """The model saved by `_write_model` in `path`, compiled like
        `user_model`, with its optimizer state."""
        with user_model.distribute_strategy.scope():
            model = keras.saving.load_model(
                os.path.join(path, MODEL_FILE),
                compile=False,
                safe_mode=self.safe_mode,
            )
            optimizers_lib.compile_like(
                user_model,
                model,
                optimizers_lib.fresh_optimizer(user_model.optimizer),
            )
            model.optimizer.build(model.trainable_variables)
        with np.load(os.path.join(path, OPTIMIZER_FILE)) as stored:
            values = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        optimizers_lib.restore_optimizer_state(model.optimizer, values)
        return model

    def _save_model_dir(self, name, model) -> None:
        """Save `model` with its optimizer into `run_dir/name` atomically.

        As for checkpoints, the non-chief workers of a multi-worker run save
        into scratch space that is deleted at once.
        """
        if _is_chief(model.distribute_strategy):
            final = os.path.join(self.run_dir, name)
            partial = final + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            os.makedirs(partial)
            _write_model(partial, model)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            return
        scratch = tempfile.mkdtemp(prefix="keras_adp_worker_")
        try:
            _write_model(scratch, model)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _guard_validation(self, x, y, validation_data):
        """`x, y, validation_data`, with a held-out split when the guard
        needs one and `validation_data` is None."""
        if self.policy.max_accuracy_drop is None or validation_data is not None:
            return x, y, validation_data
        if isinstance(x, tf.data.Dataset):
            raise ValueError(
                "The accuracy guard (`ADPPolicy.max_accuracy_drop`) needs "
                "validation data. Received a tf.data.Dataset for `x` and no "
                "`validation_data`: a held-out part of a dataset that "
                "reshuffles would overlap the training samples. Fix: pass "
                "`validation_data`, or turn the guard off with "
                "`ADPPolicy(max_accuracy_drop=None)`."
            )
        samples = _num_samples(x)
        train, held = guard_lib.holdout_indices(
            samples, self.policy.validation_split,
            0 if self.seed is None else self.seed,
        )
        if self.verbose:
            print(
                f"[keras-adp] accuracy guard: holding out {len(held)} of "
                f"{samples} training samples for validation "
                "(pass `validation_data` to choose them).",
                flush=True,
            )
        return (
            _take(x, train), _take(y, train), (_take(x, held), _take(y, held))
        )


# -------------------------------------------------------------- helpers
def _write_model(directory: str, model) -> None:
    """`model.keras` and its optimizer's variables into `directory`."""
    model.save(os.path.join(directory, MODEL_FILE))
    np.savez(
        os.path.join(directory, OPTIMIZER_FILE),
        *optimizers_lib.optimizer_state(model.optimizer),
    )


def _take(data, indices):
    """Rows `indices` of an array, or of each array of a list/dict."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: _take(value, indices) for key, value in data.items()}
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        return [np.asarray(value)[indices] for value in data]
    return np.asarray(data)[indices]


def _guard_line(decision) -> str:
    return (
        f"[keras-adp] epoch {decision['epoch'] + 1}: step of epoch "
        f"{decision['step_epoch'] + 1} {decision['action']} "
        f"({decision['monitor']} {decision['value']:.4f}, reference "
        f"{decision['reference']:.4f}, budget {decision['budget']:g})"
    )


_SEED_STATE = "seed_generator_state"  # The variable of a `SeedGenerator`.


def _seed_epoch(model, seed: int) -> None:
    """Seeds everything random in an epoch from `seed` alone.

    `keras.utils.set_random_seed` seeds Python, NumPy and the backend (data
    shuffling, initializers). Each `SeedGenerator` of the model (Dropout,
    random augmentation layers) keeps its own state, which `model.save`
    does not store: it is reset here, in layer order, from the seeded
    Python generator.
    """
    keras.utils.set_random_seed(seed)
    weights = {id(weight) for weight in model.weights}
    for variable in model.variables:
        if id(variable) not in weights and variable.name == _SEED_STATE:
            variable.assign(
                np.array(
                    [random.randrange(1, 2**31), 0],
                    dtype=keras.backend.standardize_dtype(variable.dtype),
                )
            )


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
                np.asarray(weight.numpy())
                for weight in layer.weights
                if weight.name == kernel_name
            )
            other = tuple(
                a for a in range(kernel.ndim) if a != axis % kernel.ndim
            )
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


def _pruning_may_go_on(state, policy) -> bool:
    """Whether another pruning step may still be taken."""
    return not state.pruning_stopped and (
        policy.max_prune_steps is None
        or state.steps_done < policy.max_prune_steps
    )


_GAMMA_L1 = "_keras_adp_gamma_l1"  # Marks a regularizer the trainer set.


def _set_gamma_l1(model, strength: float) -> None:
    """Adds (or removes, at 0) an L1 penalty on every BatchNormalization
    gamma of `model`, as a regularizer of the gamma variable.

    A regularizer the user configured (`gamma_regularizer=`) is left alone.
    Keras reads variable regularizers when it traces the train function, so
    the function is re-made when anything changes.
    """
    changed = False
    for layer in graph_lib.all_layers(model):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        if not layer.scale:
            continue
        current = layer.gamma.regularizer
        ours = current is not None and getattr(current, _GAMMA_L1, False)
        if current is not None and not ours:
            continue
        if strength > 0:
            if ours and current.l1 == strength:
                continue
            regularizer = keras.regularizers.L1(strength)
            setattr(regularizer, _GAMMA_L1, True)
            layer.gamma.regularizer = regularizer
            changed = True
        elif ours:
            layer.gamma.regularizer = None
            changed = True
    if changed:
        model.train_function = None


def _first_gamma(model, group):
    for name in group.members:
        layer = graph_lib.get_layer(model, name)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
            return np.asarray(layer.gamma.numpy())
    return None


def _num_samples(inputs) -> int:
    return len(inputs[0] if isinstance(inputs, list) else inputs)


def _calibration_inputs(data, num_samples: int):
    """The first `num_samples` model inputs of `data`.

    One array, or a list of arrays for a multi-input model.
    """
    if data is None:
        raise ValueError(
            "Expected training data `x` (or `calibration_data`). Received None."
        )
    dataset = density_lib.as_input_dataset(data, batch_size=256)
    chunks, total = [], 0
    for batch in dataset:
        if isinstance(batch, tuple) and len(batch) == 1:
            batch = batch[0]  # ((x1, x2),): a multi-input batch
        parts = list(batch) if isinstance(batch, (tuple, list)) else [batch]
        chunks.append([np.asarray(part) for part in parts])
        total += len(chunks[-1][0])
        if total >= num_samples:
            break
    if not chunks or total == 0:
        raise ValueError("Received empty data: no samples to calibrate on.")
    inputs = [
        np.concatenate([chunk[i] for chunk in chunks])[:num_samples]
        for i in range(len(chunks[0]))
    ]
    return inputs[0] if len(inputs) == 1 else inputs

class _ResumeMismatchError(ValueError):
    """The checkpoint in `run_dir` belongs to another run."""


def _signature(model) -> dict:
    """What identifies the run a model starts: architecture and optimizer."""
    return {
        "model": model.name,
        "inputs": [list(tensor.shape) for tensor in model.inputs],
        "outputs": [list(tensor.shape) for tensor in model.outputs],
        # Classes and parameter counts, not names: Keras numbers the names
        # of unnamed layers per process.
        "layers": [[type(layer).__name__, int(layer.count_params())]
                   for layer in model.layers],
        "params": int(model.count_params()),
        "optimizer": type(model.optimizer).__name__,
    }


def _check_resumable(state, signature, epochs, path) -> None:
    """Raise `_ResumeMismatchError` unless `state` continues this run."""
    stored = state.signature
    if stored:
        if stored.get("optimizer") != signature["optimizer"]:
            raise _ResumeMismatchError(
                f"Checkpoint '{path}' was trained with the optimizer "
                f"{stored.get('optimizer')}. Received a model compiled with "
                f"{signature['optimizer']}. Expected the same optimizer as "
                "the run being resumed. Fix: compile with "
                f"{stored.get('optimizer')}, or start a new run in another "
                "`run_dir`."
            )
        changed = [
            key for key in ("inputs", "outputs", "layers", "params")
            if stored.get(key) != signature[key]
        ]
        if changed:
            raise _ResumeMismatchError(
                f"Checkpoint '{path}' continues a run started from model "
                f"'{stored.get('model')}' ({stored.get('params'):,} params, "
                f"{len(stored.get('layers', []))} layers). Received model "
                f"'{signature['model']}' ({signature['params']:,} params, "
                f"{len(signature['layers'])} layers), whose "
                f"{', '.join(changed)} differ. Expected the model the run "
                "was started with (the dense one). Fix: build the same "
                "model as the first `fit` call, or start a new run in "
                "another `run_dir`."
            )
    if state.next_epoch > epochs:
        raise _ResumeMismatchError(
            f"Checkpoint '{path}' has already trained {state.next_epoch} "
            f"epochs. Received epochs={epochs}. Expected epochs >= "
            f"{state.next_epoch} to resume. Fix: pass "
            f"epochs={state.next_epoch} (or more) to finish the run."
        )


def _check_steps(name: str, steps) -> None:
    if steps is None:
        return
    if (
        isinstance(steps, bool)
        or not isinstance(steps, (numbers.Integral, np.integer))
        or steps < 1
    ):
        raise ValueError(
            f"Expected `{name}` to be None or an integer >= 1. "
            f"Received: {name}={steps!r}"
        )


def _check_training_data(model, x, y, steps_per_epoch) -> None:
    """Everything about `x`/`y` that can fail before training starts."""
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                "Received a tf.data.Dataset for `x` and also `y`. Expected "
                "the dataset to yield (x, y) batches and `y=None`. Fix: "
                "drop `y`."
            )
        if (
            int(x.cardinality()) == tf.data.INFINITE_CARDINALITY
            and steps_per_epoch is None
        ):
            raise ValueError(
                "Received an infinite dataset (e.g. after `.repeat()`) "
                "without `steps_per_epoch`: an epoch would never end. Fix: "
                "pass `steps_per_epoch=N` (batches per epoch), or a finite "
                "dataset."
            )
        spec = x.element_spec
        if isinstance(spec, (tuple, list)):
            spec = spec[0]
        first = tf.nest.flatten(spec)[0]
        expected = len(model.inputs[0].shape)
        if getattr(first, "shape", None) is not None and (
            first.shape.rank == expected - 1
        ):
            raise ValueError(
                f"Received a dataset of single samples of shape "
                f"{tuple(first.shape)}; model '{model.name}' takes batches "
                f"of shape {tuple(model.inputs[0].shape)}. Expected a "
                "batched dataset. Fix: call `dataset.batch(batch_size)`."
            )
        return
    if x is None:
        raise ValueError(
            "Expected training data `x`. Received x=None. Fix: pass arrays "
            "`x, y` or a tf.data.Dataset of (x, y) batches."
        )
    validation.check_arrays(x, "x")
    validation.check_labels(model, y, "y")


class _ReplicaSafeInputs:
    """The training and validation inputs as handed to each `model.fit`.

    Under a strategy with `replicas` > 1, no replica may receive an empty
    batch (TensorFlow's oneDNN CPU kernels mis-shape one): a last training
    batch of fewer samples than replicas is left out of the epoch (the
    arrays are reshuffled every epoch, so other samples are left out each
    time), validation arrays get a batch size whose last batch is whole or
    has a sample per replica, and batches of datasets smaller than
    `replicas` are filtered out. With one replica everything passes as it
    is. Samples per epoch come from the arrays' length, or are counted
    while Keras reads a dataset in the first epoch (never by an extra
    pass).
    """

    def __init__(
        self, x, y, batch_size, validation_data, steps_per_epoch, replicas
    ):
        self.y = y
        self.replicas = replicas
        self.batch_size = 32 if batch_size is None else int(batch_size)
        self.steps_per_epoch = steps_per_epoch
        self.validation_data = validation_data
        self.validation_batch_size = None
        self._counter = [0, 0]  # samples, batches
        self._dataset = isinstance(x, tf.data.Dataset)
        self._x = x
        if replicas > 1:
            self._make_replica_safe()

    def _make_replica_safe(self) -> None:
        replicas = self.replicas
        if self._dataset:
            self._x = self._x.filter(_fills_every_replica(replicas))
        else:
            if _leaves_a_replica_empty(self.batch_size, replicas):
                raise ValueError(
                    f"Received batch_size={self.batch_size} for {replicas} "
                    "replicas: TensorFlow splits a batch in shares of "
                    f"ceil({self.batch_size}/{replicas}) samples, which "
                    "leaves a replica without any. Expected a batch size "
                    "that gives every replica samples. Fix: use a multiple "
                    f"of {replicas}, e.g. batch_size="
                    f"{-(-self.batch_size // replicas) * replicas}."
                )
            samples = _num_samples(self._x)
            remainder = samples % self.batch_size
            if self.steps_per_epoch is None and _leaves_a_replica_empty(
                remainder, replicas
            ):
                if samples < self.batch_size:
                    raise ValueError(
                        f"Received {samples} training samples for "
                        f"{replicas} replicas, too few to give each replica "
                        "a share. Fix: train on more samples."
                    )
                # The last batch is left out of each epoch (other samples
                # each time, since the arrays are reshuffled).
                self.steps_per_epoch = samples // self.batch_size
        data = self.validation_data
        if isinstance(data, tf.data.Dataset):
            self.validation_data = data.filter(_fills_every_replica(replicas))
        elif data is not None:
            samples = _num_samples(data[0])
            size = self.batch_size
            while size <= samples and (
                _leaves_a_replica_empty(size, replicas)
                or _leaves_a_replica_empty(samples % size, replicas)
            ):
                size += 1
            if size > samples and _leaves_a_replica_empty(samples, replicas):
                raise ValueError(
                    f"Received {samples} validation samples for {replicas} "
                    "replicas, too few to give each replica a share. Fix: "
                    "validate on more samples."
                )
            self.validation_batch_size = min(size, samples)

    def x(self, *, count: bool):
        """`x` for this epoch's `fit`; counting its samples when asked."""
        if not (count and self._dataset):
            return self._x
        self._counter = [0, 0]
        counter = self._counter

        def add(size):
            counter[0] += int(size)
            counter[1] += 1
            return np.int64(size)

        @tf.autograph.experimental.do_not_convert
        def counted(*element):
            first = tf.nest.flatten(element)[0]
            done = tf.numpy_function(add, [tf.shape(first)[0]], tf.int64)
            with tf.control_dependencies([done]):
                element = tf.nest.map_structure(tf.identity, element)
            return element if len(element) > 1 else element[0]

        return self._x.map(counted)

    def samples_per_epoch(self) -> int | None:
        """Known before training for arrays; None for datasets."""
        if self._dataset:
            return None
        samples = _num_samples(self._x)
        if self.steps_per_epoch is not None:
            samples = min(samples, self.steps_per_epoch * self.batch_size)
        return samples

    def counted_samples(self) -> int:
        """Samples of one epoch, from the count of the first one.

        With `steps_per_epoch`, Keras' prefetching may read a few batches
        more than it trains on: the count is scaled to the steps taken.
        """
        samples, batches = self._counter
        if self.steps_per_epoch is not None and batches > 0:
            return int(round(samples / batches * self.steps_per_epoch))
        return samples


def _leaves_a_replica_empty(samples: int, replicas: int) -> bool:
    """Whether a batch of `samples` leaves one of `replicas` with none.

    TensorFlow splits a batch into shares of `ceil(samples / replicas)` in
    replica order (e.g. 4 samples on 3 replicas: 2, 2, 0).
    """
    if samples == 0 or replicas == 1:
        return False
    return (replicas - 1) * -(-samples // replicas) >= samples


def _fills_every_replica(replicas: int):
    """A `Dataset.filter` predicate: the batch gives every replica samples."""

    @tf.autograph.experimental.do_not_convert
    def keep(*element):
        count = tf.shape(tf.nest.flatten(element)[0])[0]
        share = (count + replicas - 1) // replicas
        return (replicas - 1) * share < count

    return keep


def _divergence(logs, model) -> str | None:
    """Why training diverged this epoch, or None.

    The loss is checked, and every weight: some CPU kernels (oneDNN's ReLU
    and max-pooling) swallow NaN, so a finite loss does not prove finite
    weights.
    """
    loss = logs.get("loss")
    if loss is None or not math.isfinite(float(loss)):
        return f"Training loss is {loss}"
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight.value)
        if np.issubdtype(value.dtype, np.floating) and not np.all(
            np.isfinite(value)
        ):
            return f"Weight '{weight.path}' holds NaN or inf"
    return None


def _is_chief(strategy) -> bool:
    """Whether this worker writes checkpoints (True without multi-worker)."""
    return bool(strategy.extended.should_checkpoint)


def _check_workers_agree(strategy, names: list[str], run_dir: str) -> None:
    """Raise unless every worker sees the same newest checkpoint.

    A worker that cannot see the chief's checkpoints (a `run_dir` on local
    disks) would start over and train another model than the others, which
    ends in a hang or a crash inside a collective op. Every worker of a
    multi-worker run must call this (it all-gathers).
    """
    if not _is_multi_worker(strategy):
        return
    newest = _checkpoint_number(names[-1]) if names else -1

    @tf.function
    def gather():
        context = tf.distribute.get_replica_context()
        return context.all_gather(tf.constant([newest], tf.int64), axis=0)

    gathered = strategy.experimental_local_results(strategy.run(gather))[0]
    seen = sorted({int(number) for number in gathered.numpy()})
    if len(seen) > 1:
        shown = ", ".join(
            f"checkpoint-{number:04d}" if number >= 0 else "none"
            for number in seen
        )
        raise ValueError(
            f"Workers see different newest checkpoints in '{run_dir}' "
            f"({shown}; this worker: "
            f"{names[-1] if names else 'none'}), so they would resume "
            "different models. Fix: put `run_dir` on storage shared by "
            "every worker."
        )


def _checkpoint_number(name: str) -> int:
    """The epoch count in a checkpoint name ("checkpoint-0004" -> 4)."""
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _is_multi_worker(strategy) -> bool:
    """Whether `strategy` is a MultiWorkerMirroredStrategy over 2+ tasks."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs) > 1


@contextlib.contextmanager
def _distributed_fit_fixes(model):
    """Works around two Keras 3 bugs while `model.fit` runs distributed.

    1. Under any strategy with two or more replicas, Keras 3.15's
       `_maybe_symbolic_build` passes the first `(x, y)` batch to
       `strategy.reduce`, which fails when the replicas' shares differ in
       size (a batch of 13 on 2 replicas: "Inputs to operation AddN ...
       must have the same size and shape") and, multi-worker, before the
       first step (keras-team/keras#20585, tensorflow/tensorflow#72388):
       the model's compile state is built from this worker's first replica
       batch instead (only its shapes and dtypes are used).
    2. Under a `MultiWorkerMirroredStrategy` with two or more workers,
       `reduce_per_replica` averages the logs over replicas along axis 0,
       which scalars (loss, metrics) do not have: scalars are averaged
       with `axis=None`.

    Elsewhere (one replica, no strategy), and on a Keras without these
    functions, nothing is changed.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    strategy = model.distribute_strategy
    multi_worker = _is_multi_worker(strategy)
    if not (
        (multi_worker or strategy.num_replicas_in_sync > 1)
        and hasattr(type(model), "_maybe_symbolic_build")
        and hasattr(tf_trainer, "reduce_per_replica")
    ):
        yield
        return

    def first_replica(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    first_replica, next(batches)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    keras_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean"):
            return keras_reduce(values, strategy, reduction)
        return tf.nest.map_structure(
            lambda value: strategy.reduce(
                "MEAN", value, axis=0 if value.shape.rank else None
            ),
            values,
        )

    model._maybe_symbolic_build = symbolic_build
    if multi_worker:
        tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = keras_reduce
        del model._maybe_symbolic_build


def _run_entries(run_dir: str) -> list[str]:
    """What a previous run left in `run_dir`: checkpoints and LATEST."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(
        name
        for name in os.listdir(run_dir)
        if name == LATEST_FILE or name.startswith("checkpoint-")
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
    logs = record["logs"]
    loss = logs.get("loss", float("nan"))
    text = f"[keras-adp] epoch {record['epoch'] + 1}: loss {loss:.4f}"
    for key in ("accuracy", "val_accuracy"):
        if key in logs:
            text += f", {key} {logs[key]:.4f}"
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
