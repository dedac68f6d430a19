"""The epochs of one `ADPTrainer.fit` call.

`EpochLoop.run` trains the epochs left in the run, one `model.fit` call
each. An epoch is: seed it (`seed_epoch`), train it with the density
probe's callback, stop the run if the loss or a weight diverged
(`TrainingDivergedError`), with `ADPPolicy(trial="twin")` train the model
kept from before the step on trial for the same epoch (same seed, same
batches; no density, no user callbacks), append its history record, let
`pruning_steps.PruningSteps` judge the step on trial and maybe take the
next one (which replaces the model), and checkpoint.
"""

from __future__ import annotations

import math
import random

import keras
import numpy as np

from keras_adp import checkpoints
from keras_adp import distribution
from keras_adp import graph as graph_lib
from keras_adp import inputs as inputs_lib
from keras_adp import keras_graph
from keras_adp import metrics as metrics_lib
from keras_adp import pruning_steps as steps_lib
from keras_adp.training_callbacks import EpochDensity
from keras_adp.training_callbacks import RunProgbar
from keras_adp.training_result import ADPResult

__all__ = [
    "EpochLoop",
    "TrainingDivergedError",
    "seed_epoch",
    "divergence",
    "epoch_line",
]


class TrainingDivergedError(RuntimeError):
    """The loss or a weight became NaN or infinite; the last good checkpoint
    is kept."""


class EpochLoop:
    """Trains, measures, prunes and checkpoints the epochs of one run.

    Args:
        model: the model to train first: the one passed to `fit`, or the
            resumed checkpoint's.
        probe: `model`'s `density.DensityProbe`.
        state: the run's `checkpoints.RunState`, updated epoch by epoch.
        policy: the run's `ADPPolicy`.
        epochs: the run's total number of epochs.
        seed: the trainer's `seed` (epoch `e` is seeded with `seed + e`), or
            None.
        verbose: this `fit` call's verbosity: 0, 1 or 2.
        run_dir: where checkpoints go, or None.
        inputs: the `epoch_inputs.ReplicaSafeInputs` each epoch trains on.
        calibration: the inputs density is measured on.
        callbacks: the user's callbacks, each wrapped in a
            `training_callbacks.UserCallback`.
        pruning: the run's `pruning_steps.PruningSteps`.
        fit_options: the other keywords of each epoch's `model.fit`.
    """

    def __init__(
        self, model, probe, state, *, policy, epochs, seed, verbose,
        run_dir, inputs, calibration, callbacks, pruning, fit_options,
    ):
        self.model = model
        self.probe = probe
        self.state = state
        self.policy = policy
        self.epochs = epochs
        self.seed = seed
        self.verbose = verbose
        self.run_dir = run_dir
        self.inputs = inputs
        self.calibration = calibration
        self.callbacks = callbacks
        self.pruning = pruning
        self.fit_options = fit_options

    def run(self, user_model: keras.Model) -> ADPResult:
        """Trains the epochs left in the run.

        The user's callbacks are told the run begins and, unless an error
        ends it, that it ends. Whatever happens, no model keeps the
        trainer's L1 penalty on BatchNormalization scales.

        Args:
            user_model: the model passed to `fit` (its penalty is reset
                too).

        Returns:
            The run's `ADPResult`.
        """
        for callback in self.callbacks:
            callback.set_model(self.model)
            callback.callback.on_train_begin()
        fit_callbacks = [*self.callbacks]
        if self.verbose == 1:
            fit_callbacks.append(RunProgbar(self.epochs))
        self.model.stop_training = False
        state = self.state
        first_epoch = (
            self.epochs if state.training_stopped else state.next_epoch
        )
        try:
            for epoch in range(first_epoch, self.epochs):
                if self._run_epoch(epoch, fit_callbacks):
                    break
        finally:
            # The penalty is the trainer's: no model leaves with it.
            steps_lib.set_gamma_l1(self.model, 0.0)
            steps_lib.set_gamma_l1(user_model, 0.0)
        for callback in self.callbacks:
            callback.callback.on_train_end()
        return ADPResult(self.model, state.history, state.steps, state.dense)

    def _run_epoch(self, epoch: int, fit_callbacks: list) -> bool:
        """Train one epoch, measure, judge, maybe prune and checkpoint.

        Returns:
            Whether `model.stop_training` ended the run.
        """
        model = self.model
        measure = self._train(model, epoch, fit_callbacks, self.probe)
        logs = measure.logs or {}
        self._stop_if_diverged(model, logs, epoch)
        stop = bool(model.stop_training)
        self.state.training_stopped = stop
        twin = self.pruning.twin_model(self.state)
        twin_logs = None
        if twin is not None:
            twin_logs = self._train(twin, epoch, [], None).logs or {}
        groups = graph_lib.channel_groups(model)
        densities = measure.densities or {}
        record = self._record_epoch(model, epoch, logs, densities, groups)
        record["updates"] = measure.updates
        if twin is not None:
            self._record_twin(record, twin, twin_logs)
        model, probe = self.pruning.after_epoch(
            model, self.probe, self.state, epoch, record, groups, densities,
            self.callbacks, final=(epoch + 1 == self.epochs or stop),
        )
        if self.run_dir:
            self._save_checkpoint(model)
        self.model, self.probe = model, probe
        return stop

    def _train(
        self, model, epoch: int, fit_callbacks: list, probe
    ) -> EpochDensity:
        """One `model.fit` epoch, seeded, with the L1 penalty while pruning
        may go on; returns the callback holding its logs and the densities
        `probe` measured (None: no measurement, for a twin epoch)."""
        x = self.inputs.x(count=False)
        if not distribution.is_tensorflow() and not inputs_lib.is_dataset(x):
            # Before seeding: a first `fit` would shuffle otherwise.
            first = np.arange(1)
            keras_graph.build_training_state(
                model,
                inputs_lib.take_rows(x, first),
                inputs_lib.take_rows(self.inputs.y, first),
            )
        if self.seed is not None:
            seed_epoch(model, self.seed + epoch)
        measure = EpochDensity(probe, self.calibration)
        steps_lib.set_gamma_l1(
            model,
            self.policy.gamma_l1
            if steps_lib.pruning_may_go_on(self.state, self.policy)
            else 0.0,
        )
        count = self.state.samples_per_epoch is None
        inputs = self.inputs
        updates_before = optimizer_updates(model)
        with distribution.fit_fixes(model):
            model.fit(
                inputs.x(count=count),
                inputs.y,
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=inputs.validation_data,
                validation_batch_size=inputs.validation_batch_size,
                steps_per_epoch=inputs.steps_per_epoch,
                callbacks=[measure, *fit_callbacks],
                # A twin epoch (no callbacks) trains silently.
                verbose=1 if self.verbose == 1 and fit_callbacks else 0,
                **self.fit_options,
            )
        if count:
            self.state.samples_per_epoch = inputs.counted_samples()
        measure.updates = optimizer_updates(model) - updates_before
        return measure

    def _stop_if_diverged(self, model, logs: dict, epoch: int) -> None:
        """End the run with `TrainingDivergedError` if the loss or a weight
        is NaN or infinite."""
        problem = divergence(logs, model)
        if not problem:
            return
        for callback in self.callbacks:
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

    def _record_epoch(self, model, epoch, logs, densities, groups) -> dict:
        """Append the epoch's history record (see `ADPResult.history`) and
        count its compute; returns the record."""
        state = self.state
        cost = metrics_lib.inference_cost(model)
        train_macs = metrics_lib.training_macs(
            cost.macs, state.samples_per_epoch
        )
        calibration_size = inputs_lib.num_samples(self.calibration)
        measure_macs = float(cost.macs) * calibration_size
        state.cumulative_macs += train_macs + measure_macs
        density_now = {name: d.overall for name, d in densities.items()}
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
            print(epoch_line(record), flush=True)
        return record

    def _record_twin(self, record: dict, twin, logs: dict) -> None:
        """Adds the twin's epoch to `record` (`record["twin"]`: its logs,
        parameters and training MACs, which count in the run's compute)."""
        state = self.state
        cost = metrics_lib.inference_cost(twin)
        train_macs = metrics_lib.training_macs(
            cost.macs, state.samples_per_epoch
        )
        state.cumulative_macs += train_macs
        record["cumulative_macs"] = state.cumulative_macs
        record["twin"] = {
            "logs": {k: float(v) for k, v in logs.items() if _is_number(v)},
            "params": cost.params,
            "train_macs": train_macs,
        }
        if self.verbose == 2:
            print(
                f"[keras-adp] epoch {record['epoch'] + 1}: the model without "
                "the step on trial, same epoch: "
                + ", ".join(
                    f"{k} {v:.4f}" for k, v in record["twin"]["logs"].items()
                    if k.startswith("val_")
                ),
                flush=True,
            )

    def _save_checkpoint(self, model) -> None:
        """Checkpoint into `run_dir` (on the chief; see
        `distribution.write_on_chief`)."""
        extra = {"policy": self.policy.get_config(), "seed": self.seed}
        distribution.write_on_chief(
            model,
            self.run_dir,
            lambda directory: checkpoints.write_checkpoint(
                directory, model, self.state, extra
            ),
        )


def optimizer_updates(model: keras.Model) -> int:
    """How many updates `model`'s optimizer has applied (its `iterations`
    counter, which goes on across rebuilds and rollbacks)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


_SEED_STATE = "seed_generator_state"  # The variable of a `SeedGenerator`.


def seed_epoch(model: keras.Model, seed: int) -> None:
    """Seeds everything random in an epoch from `seed` alone.

    `keras.utils.set_random_seed` seeds Python, NumPy and the backend (data
    shuffling, initializers). Each `SeedGenerator` of the model (Dropout,
    random augmentation layers) keeps its own state, which `model.save`
    does not store: it is reset here, in layer order, from the seeded
    Python generator.

    Args:
        model: the model about to be trained.
        seed: the epoch's seed.
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


def divergence(logs: dict, model: keras.Model) -> str | None:
    """Why training diverged this epoch, or None.

    The loss is checked, and every weight: some CPU kernels (oneDNN's ReLU
    and max-pooling) swallow NaN, so a finite loss does not prove finite
    weights.

    Args:
        logs: the epoch's logs.
        model: the model trained in the epoch.

    Returns:
        A sentence naming the loss or the weight, or None.
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


def epoch_line(record: dict) -> str:
    """The `verbose=2` line of an epoch's history record."""
    logs = record["logs"]
    loss = logs.get("loss", float("nan"))
    text = f"[keras-adp] epoch {record['epoch'] + 1}: loss {loss:.4f}"
    for key in ("accuracy", "val_accuracy"):
        if key in logs:
            text += f", {key} {logs[key]:.4f}"
    return text + f", params {record['params']:,}, MACs {record['macs']:,}"
