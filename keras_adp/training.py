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

Distribution uses the backend's own engine: on TensorFlow, build and
compile the model inside `strategy.scope()` (`tf.distribute.
MirroredStrategy`, `MultiWorkerMirroredStrategy`); on JAX, set a
`keras.distribution` (e.g. `DataParallel`). Every rebuild, recompile and
checkpoint load happens inside `keras_adp.distribution.scope(model)`, so
the new variables and the optimizer state are distributed like the
model's. Density is measured with `predict`, whose outputs Keras gathers
from every replica and worker, so each worker sees the counts of the whole
calibration set and takes the same pruning decision. Only the chief writes
checkpoints; what distribution adds (and the workaround for Keras' `fit`
under a multi-worker strategy) is `keras_adp.distribution`'s (on
TensorFlow, `keras_adp.distribute`'s).

Modules: `ADPTrainer` checks the arguments, starts or resumes the run and
hands it to `keras_adp.epoch_loop.EpochLoop`, which runs the epochs with
the callback adapters of `keras_adp.training_callbacks`; the result is
`keras_adp.training_result.ADPResult`. This module re-exports `ADPResult`
and `TrainingDivergedError`.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import warnings
from typing import Any

import keras

from keras_adp import checkpoints
from keras_adp import density as density_lib
from keras_adp import distribution
from keras_adp import guard as guard_lib
from keras_adp import inputs as inputs_lib
from keras_adp import metrics as metrics_lib
from keras_adp import pruning_steps as steps_lib
from keras_adp import validation
from keras_adp.epoch_inputs import ReplicaSafeInputs
from keras_adp.epoch_loop import EpochLoop
from keras_adp.epoch_loop import TrainingDivergedError
from keras_adp.policy import ADPPolicy
from keras_adp.training_callbacks import UserCallback
from keras_adp.training_result import ADPResult

__all__ = [
    "ADPTrainer",
    "ADPResult",
    "TrainingDivergedError",
]


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
        self.policy = _validate_trainer_arguments(
            policy, seed, verbose, safe_mode
        )
        self.run_dir = None if run_dir is None else os.fspath(run_dir)
        self.seed = None if seed is None else int(seed)
        self.verbose = verbose
        self._verbose = verbose  # This `fit` call's (`fit(verbose=...)`).
        self.safe_mode = safe_mode

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

        Each epoch is one `model.fit` call; the keywords shared with
        `model.fit` mean what they mean there.

        Args:
            model: a compiled functional or Sequential model. Not modified
                by pruning (rebuilds are new models); it is trained in the
                epochs before the first pruning step, as `model.fit` would.
            x, y, batch_size, shuffle, class_weight, sample_weight,
                steps_per_epoch (needed for an infinite dataset),
                validation_steps: as for `model.fit`.
            epochs: total epochs, more than `policy.warmup_epochs`.
            verbose: 0, 1 (or `"auto"`) or 2, as the trainer's `verbose`.
                Defaults to `None`: the trainer's.
            callbacks: Keras callbacks; they follow the model across rebuilds.
            validation_split, validation_data: as for `model.fit` (the split
                is of the last samples, before shuffling). The accuracy guard
                judges each step on them; without them it holds out
                `policy.validation_split` of the samples at random.
            initial_epoch: as for `model.fit` (the epochs before it count as
                trained); not with `resume=True`. Defaults to `0`.
            validation_freq: as for `model.fit`; 1 while the accuracy guard
                is on (it reads every epoch's metrics). Defaults to `1`.
            calibration_data: inputs to measure density on. Defaults to the
                first `policy.calibration_samples` samples of `x`.
            resume: continue from the last checkpoint in `run_dir` (a new
                run, with a warning, when there is none). Defaults to
                `False`: a new run, which needs a `run_dir` without one.

        Returns:
            An `ADPResult`.

        Raises:
            ValueError: invalid arguments or data (NaN/inf, labels outside
                the model's classes, an unbatched or infinite dataset without
                `steps_per_epoch`, a `model.fit` keyword that cannot apply),
                a `run_dir` holding a run while `resume=False`, or a
                checkpoint of another architecture or optimizer, or none.
            TypeError: `callbacks` is not a list of Keras callbacks.
            TrainingDivergedError: the loss or a weight became NaN or inf.
        """
        resume = validation.check_bool(resume, "resume")
        self._verbose = _check_fit_verbose(verbose, self.verbose)
        callbacks, x, y, validation_data, fit_options = self._checked_inputs(
            model, x, y, epochs=epochs, resume=resume, callbacks=callbacks,
            batch_size=batch_size, steps_per_epoch=steps_per_epoch,
            validation_data=validation_data, validation_split=validation_split,
            shuffle=shuffle, class_weight=class_weight,
            sample_weight=sample_weight, initial_epoch=initial_epoch,
            validation_steps=validation_steps, validation_freq=validation_freq,
        )
        epochs = int(epochs)
        distribution.warn_if_unseeded(model, self.seed, x)
        start, state = self._start_state(model, epochs, resume, initial_epoch)
        loop = self._epoch_loop(
            start, model, state, epochs, x, y, batch_size, validation_data,
            steps_per_epoch, calibration_data, callbacks, fit_options,
        )
        return loop.run(model)

    def _checked_inputs(
        self, model, x, y, *, epochs, resume, callbacks, batch_size,
        steps_per_epoch, validation_data, validation_split, sample_weight,
        **fit_keywords,
    ):
        """Check `fit`'s arguments; split the validation data off.

        `fit_keywords` are the other keywords passed on to `model.fit`
        (`shuffle`, `class_weight`, `initial_epoch`, `validation_steps`,
        `validation_freq`).

        Returns:
            `(callbacks, x, y, validation_data, fit_options)`: the checked
            callbacks, the data to train and validate on (with the user's
            `validation_split` or the accuracy guard's held-out samples)
            and the keywords of each epoch's `model.fit`.
        """
        inputs_lib.check_model_and_epochs(
            model, epochs, warmup_epochs=self.policy.warmup_epochs
        )
        checkpoints.check_run_dir(
            self.run_dir, resume,
            writes=distribution.is_chief(model),
        )
        callbacks = validation.check_callbacks(callbacks)
        validation.check_batch_size(batch_size)
        inputs_lib.check_steps("steps_per_epoch", steps_per_epoch)
        inputs_lib.check_training_data(model, x, y, steps_per_epoch)
        validation.check_validation_data(validation_data)
        guard_on = self.policy.max_accuracy_drop is not None
        if guard_on and not resume:
            inputs_lib.warn_if_batch_norm_lags(model)
        fit_options = inputs_lib.check_fit_keywords(
            x, epochs=int(epochs), resume=resume,
            validation_split=validation_split, sample_weight=sample_weight,
            guard_on=guard_on, **fit_keywords,
        )
        x, y, sample_weight, validation_data = inputs_lib.split_validation(
            x, y, sample_weight, validation_data, validation_split,
            self._guard_holdout if guard_on else None,
        )
        fit_options.update(batch_size=batch_size, sample_weight=sample_weight)
        return callbacks, x, y, validation_data, fit_options

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

    def _epoch_loop(
        self, model, user_model, state, epochs, x, y, batch_size,
        validation_data, steps_per_epoch, calibration_data, callbacks,
        fit_options,
    ) -> EpochLoop:
        """The run's `EpochLoop`: its calibration set, density probe,
        per-epoch inputs, wrapped callbacks and `PruningSteps`."""
        calibration = inputs_lib.calibration_inputs(
            x if calibration_data is None else calibration_data,
            self.policy.calibration_samples,
        )
        probe = density_lib.DensityProbe(model, threshold=self.policy.threshold)
        probe.check_inputs(calibration)
        replicas = distribution.replicas(model)
        inputs = ReplicaSafeInputs(
            x, y, batch_size, validation_data, steps_per_epoch, replicas
        )
        if state.samples_per_epoch is None:
            state.samples_per_epoch = inputs.samples_per_epoch()
        if not state.dense:
            state.dense = dataclasses.asdict(metrics_lib.inference_cost(model))
        pruning = steps_lib.PruningSteps(
            self.policy,
            epochs=epochs,
            calibration=calibration,
            run_dir=self.run_dir,
            verbose=self._verbose,
            model=model,
            read_pre_step=lambda: checkpoints.read_model(
                os.path.join(self.run_dir, checkpoints.PRE_STEP_DIR),
                user_model,
                safe_mode=self.safe_mode,
            ),
        )
        return EpochLoop(
            model, probe, state, policy=self.policy, epochs=epochs,
            seed=self.seed, verbose=self._verbose, run_dir=self.run_dir,
            inputs=inputs, calibration=calibration,
            callbacks=[UserCallback(cb, epochs) for cb in callbacks or []],
            pruning=pruning, fit_options=fit_options,
        )

    def _guard_holdout(self, x):
        """The guard's random split of `x`'s indices: (train, held out)."""
        if inputs_lib.is_dataset(x):
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


def _validate_trainer_arguments(policy, seed, verbose, safe_mode) -> ADPPolicy:
    """Check `ADPTrainer`'s arguments; returns the policy as an
    `ADPPolicy`."""
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
    return policy


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
