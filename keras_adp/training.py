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

Each epoch's pruning decision, the rebuild and the accuracy guard's trial
of a step are `keras_adp.pruning_steps`'s. With `run_dir`, a checkpoint is
written after every epoch (`keras_adp.checkpoints` owns the format); on
resume the model is compiled like the model passed to `fit` (so custom
losses and metrics need no registration), and an unreadable checkpoint is
reported and skipped for the previous one.

Distribution uses TensorFlow's own engines: build and compile the model
inside `strategy.scope()` (`tf.distribute.MirroredStrategy`,
`MultiWorkerMirroredStrategy`) and every rebuild, recompile and checkpoint
load happens inside `model.distribute_strategy.scope()`, so the new
variables and the optimizer state are distributed variables of the same
strategy. Density is measured with `predict`, whose outputs Keras gathers
from every replica and worker, so each worker sees the counts of the whole
calibration set and takes the same pruning decision. Only the chief writes
checkpoints; what distribution adds (and the workaround for Keras' `fit`
under a multi-worker strategy) is `keras_adp.distribute`'s.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import random
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_adp import checkpoints
from keras_adp import density as density_lib
from keras_adp import distribute
from keras_adp import graph as graph_lib
from keras_adp import guard as guard_lib
from keras_adp import inputs as inputs_lib
from keras_adp import metrics as metrics_lib
from keras_adp import pruning_steps as steps_lib
from keras_adp import validation
from keras_adp.policy import ADPPolicy

__all__ = [
    "ADPTrainer",
    "ADPResult",
    "TrainingDivergedError",
]

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
        self._verbose = verbose  # This `fit` call's (`fit(verbose=...)`).
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
        verbose: int | str | None = None,
        callbacks: list | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool | str = True,
        class_weight: dict | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_freq: int = 1,
        calibration_data: Any = None,
        resume: bool = False,
    ) -> ADPResult:
        """Train `model` for `epochs` epochs, pruning as the policy says.

        The keywords shared with `model.fit` mean what they mean there;
        each epoch is one `model.fit` call that receives them.

        Args:
            model: a compiled functional or Sequential model. Not modified
                by pruning (rebuilds are new models); it is trained in the
                epochs before the first pruning step, as `model.fit` would.
            x, y, batch_size, shuffle, class_weight, sample_weight,
                steps_per_epoch, validation_steps: as for `model.fit`.
                `steps_per_epoch` is needed for an infinite dataset (e.g.
                after `.repeat()`).
            epochs: total epochs, more than `policy.warmup_epochs`.
            verbose: 0 silent, 1 (or `"auto"`) Keras progress bars and one
                line per pruning step, 2 one line per epoch. Defaults to
                `None`: the trainer's `verbose`.
            callbacks: Keras callbacks; they follow the model across
                rebuilds.
            validation_split: as for `model.fit`: the last fraction of `x`,
                `y` (and `sample_weight`), taken before shuffling, is not
                trained on and is the validation data, which the accuracy
                guard then judges on (instead of holding out
                `policy.validation_split` of the samples at random).
                Ignored when `validation_data` is given. Defaults to `0.0`.
            validation_data: as for `model.fit`; the accuracy guard judges
                each pruning step on it.
            initial_epoch: as for `model.fit`: the epoch to start at, the
                epochs before it counting as trained (for the warm-up and
                the numbering). Cannot be combined with `resume=True`,
                whose checkpoint says where to start. Defaults to `0`.
            validation_freq: as for `model.fit`. With the accuracy guard on
                it must be 1: the guard reads the validation metrics of
                every epoch. Defaults to `1`.
            calibration_data: inputs to measure density on. Defaults to the
                first `policy.calibration_samples` samples of `x`.
            resume: continue from the last checkpoint in `run_dir` if there
                is one (a warning says when there is none and a new run
                starts). Defaults to `False`: start a new run, which needs a
                `run_dir` without checkpoints.

        Returns:
            An `ADPResult`.

        Raises:
            ValueError: invalid arguments or data (NaN/inf in arrays, labels
                outside the model's classes, an unbatched or infinite
                dataset without `steps_per_epoch`, a `model.fit` keyword
                that cannot apply), a `run_dir` that holds a previous run
                while `resume=False`, a checkpoint of another architecture
                or optimizer, or no readable checkpoint.
            TypeError: `callbacks` is not a list of Keras callbacks.
            TrainingDivergedError: the loss or a weight became NaN or
                infinite.
        """
        resume = validation.check_bool(resume, "resume")
        self._verbose = _check_fit_verbose(verbose, self.verbose)
        self._validate(model, epochs, resume)
        epochs = int(epochs)
        callbacks = validation.check_callbacks(callbacks)
        validation.check_batch_size(batch_size)
        inputs_lib.check_steps("steps_per_epoch", steps_per_epoch)
        inputs_lib.check_training_data(model, x, y, steps_per_epoch)
        validation.check_validation_data(validation_data)
        guard_on = self.policy.max_accuracy_drop is not None
        fit_options = inputs_lib.check_fit_keywords(
            x, epochs=epochs, resume=resume, initial_epoch=initial_epoch,
            validation_split=validation_split, shuffle=shuffle,
            class_weight=class_weight, sample_weight=sample_weight,
            validation_steps=validation_steps,
            validation_freq=validation_freq, guard_on=guard_on,
        )
        x, y, sample_weight, validation_data = inputs_lib.split_validation(
            x, y, sample_weight, validation_data, validation_split,
            self._guard_holdout if guard_on else None,
        )
        fit_options.update(batch_size=batch_size, sample_weight=sample_weight)
        distribute.warn_if_unseeded(model.distribute_strategy, self.seed, x)
        user_model = model
        model, state = self._start_state(model, epochs, resume, initial_epoch)
        probe, inputs, wrapped = self._set_up_run(
            model, user_model, state, epochs, x, y, batch_size,
            validation_data, steps_per_epoch, calibration_data, callbacks,
        )
        first_epoch = epochs if state.training_stopped else state.next_epoch
        try:
            for epoch in range(first_epoch, epochs):
                model, probe, stop = self._run_epoch(
                    model, probe, state, epoch, inputs, wrapped, fit_options
                )
                if stop:
                    break
        finally:
            # The penalty is the trainer's: no model leaves with it.
            steps_lib.set_gamma_l1(model, 0.0)
            steps_lib.set_gamma_l1(user_model, 0.0)
        for callback in wrapped:
            callback.callback.on_train_end()
        return ADPResult(model, state.history, state.steps, state.dense)

    def _set_up_run(
        self, model, user_model, state, epochs, x, y, batch_size,
        validation_data, steps_per_epoch, calibration_data, callbacks,
    ):
        """The calibration set, the density probe, the inputs each epoch's
        `model.fit` gets, the wrapped callbacks (told the run begins) and
        the run's `PruningSteps`.

        Returns:
            `(probe, inputs, wrapped)`.
        """
        calibration = inputs_lib.calibration_inputs(
            x if calibration_data is None else calibration_data,
            self.policy.calibration_samples,
        )
        probe = density_lib.DensityProbe(model, threshold=self.policy.threshold)
        probe.check_inputs(calibration)
        replicas = model.distribute_strategy.num_replicas_in_sync
        inputs = distribute.ReplicaSafeInputs(
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
        self._callbacks = [*wrapped]
        if self._verbose == 1:
            self._callbacks.append(_Progbar(epochs))
        model.stop_training = False
        self._epochs = epochs
        self._calibration = calibration
        self._steps = steps_lib.PruningSteps(
            self.policy,
            epochs=epochs,
            calibration=calibration,
            run_dir=self.run_dir,
            verbose=self._verbose,
            strategy=model.distribute_strategy,
            read_pre_step=lambda: checkpoints.read_model(
                os.path.join(self.run_dir, checkpoints.PRE_STEP_DIR),
                user_model,
                safe_mode=self.safe_mode,
            ),
        )
        return probe, inputs, wrapped

    def _run_epoch(
        self, model, probe, state, epoch, inputs, wrapped, fit_options
    ):
        """Train one epoch, measure, judge, maybe prune and checkpoint.

        Returns:
            `(model, probe, stop)`: the model to train next, its probe, and
            whether `model.stop_training` ended the run.
        """
        if self.seed is not None:
            _seed_epoch(model, self.seed + epoch)
        measure = _Measure(probe, self._calibration)
        steps_lib.set_gamma_l1(
            model,
            self.policy.gamma_l1
            if steps_lib.pruning_may_go_on(state, self.policy)
            else 0.0,
        )
        count = state.samples_per_epoch is None
        with distribute.distributed_fit_fixes(model):
            model.fit(
                inputs.x(count=count),
                inputs.y,
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=inputs.validation_data,
                validation_batch_size=inputs.validation_batch_size,
                steps_per_epoch=inputs.steps_per_epoch,
                callbacks=[measure, *self._callbacks],
                verbose=1 if self._verbose == 1 else 0,
                **fit_options,
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
                if self.run_dir and checkpoints.checkpoint_names(self.run_dir)
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
            inputs_lib.num_samples(self._calibration), wrapped,
            final=(epoch + 1 == self._epochs or stop),
        )
        if self.run_dir:
            self._save_checkpoint(model, state)
        return model, probe, stop

    def _start_state(self, model, epochs, resume, initial_epoch):
        """`(model, state)` to start from: a new run's, or the newest
        checkpoint's when resuming."""
        signature = checkpoints.run_signature(model)
        state = checkpoints.RunState(
            signature=signature,
            next_epoch=int(initial_epoch),
            first_epoch=int(initial_epoch),
        )
        if not resume:
            return model, state
        loaded = checkpoints.load_run(
            self.run_dir, model, signature, epochs, safe_mode=self.safe_mode
        )
        if loaded is not None:
            path, model, state = loaded
            if self._verbose:
                print(
                    f"[keras-adp] resuming from '{path}' at epoch "
                    f"{state.next_epoch + 1}",
                    flush=True,
                )
            return model, state
        warnings.warn(
            f"resume=True, but '{self.run_dir}' holds no checkpoint "
            "to resume: a new run starts.",
            stacklevel=3,
        )
        return model, state

    # ------------------------------------------------------------ internals
    def _validate(self, model, epochs, resume) -> None:
        inputs_lib.check_model_and_epochs(
            model, epochs, warmup_epochs=self.policy.warmup_epochs
        )
        checkpoints.check_run_dir(
            self.run_dir, resume,
            writes=distribute.is_chief(model.distribute_strategy),
        )

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
        if self._verbose == 2:
            print(_epoch_line(record), flush=True)
        return self._steps.after_epoch(
            model, probe, state, epoch, record, groups, densities, wrapped,
            final,
        )

    # ---------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model, state) -> None:
        """Checkpoint into `run_dir` (on the chief; see
        `distribute.write_on_chief`)."""
        extra = {"policy": self.policy.get_config(), "seed": self.seed}
        distribute.write_on_chief(
            model.distribute_strategy,
            self.run_dir,
            lambda directory: checkpoints.write_checkpoint(
                directory, model, state, extra
            ),
        )

    def _guard_holdout(self, x):
        """The guard's random split of `x`'s indices: (train, held out)."""
        if isinstance(x, tf.data.Dataset):
            raise ValueError(
                "The accuracy guard (`ADPPolicy.max_accuracy_drop`) needs "
                "validation data. Received a tf.data.Dataset for `x` and no "
                "`validation_data`: a held-out part of a dataset that "
                "reshuffles would overlap the training samples. Fix: pass "
                "`validation_data`, or turn the guard off with "
                "`ADPPolicy(max_accuracy_drop=None)`."
            )
        samples = inputs_lib.num_samples(x)
        train, held = guard_lib.holdout_indices(
            samples, self.policy.validation_split,
            0 if self.seed is None else self.seed,
        )
        if self._verbose:
            print(
                f"[keras-adp] accuracy guard: holding out {len(held)} of "
                f"{samples} training samples for validation "
                "(pass `validation_data` to choose them).",
                flush=True,
            )
        return train, held

    def _guard_validation(self, x, y, validation_data):
        """`x, y, validation_data`, with a held-out split when the guard
        needs one and `validation_data` is None."""
        x, y, _, validation_data = inputs_lib.split_validation(
            x, y, None, validation_data, 0.0,
            None if self.policy.max_accuracy_drop is None
            else self._guard_holdout,
        )
        return x, y, validation_data


# -------------------------------------------------------------- helpers
def _check_fit_verbose(verbose, default) -> int:
    """`fit(verbose=...)`: None is the trainer's, `"auto"` is 1."""
    if verbose is None:
        return default
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(
            "Expected `verbose` to be 0, 1, 2, 'auto' or None. "
            f"Received: verbose={verbose!r}"
        )
    return int(verbose)


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


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _epoch_line(record) -> str:
    logs = record["logs"]
    loss = logs.get("loss", float("nan"))
    text = f"[keras-adp] epoch {record['epoch'] + 1}: loss {loss:.4f}"
    for key in ("accuracy", "val_accuracy"):
        if key in logs:
            text += f", {key} {logs[key]:.4f}"
    return text + f", params {record['params']:,}, MACs {record['macs']:,}"
