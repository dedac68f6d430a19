"""The pruning steps of one run: when one is taken, the rebuild, and the
accuracy guard's trial of it.

After each epoch `ADPTrainer` hands the epoch's record to
`PruningSteps.after_epoch`. With the guard on, a step on trial is judged
there first: accepted (the model goes on), or rolled back to the model kept
from before the step (weights, optimizer slots, callbacks' best weights;
the iteration count goes on) and retried once with half the removal. With
`ADPPolicy(trial="twin")` that kept model trains the trial epoch beside the
pruned one (`twin_model`): it is the reference, and a rollback goes on from
it, losing no epoch. Then,
when the policy says so, the next step is planned (`ADPPolicy.plan`,
channels ranked by density and `channel_scores`) and taken: the model is
rebuilt smaller (`keras_adp.rebuild`) with its optimizer state
(`keras_adp.optimizers`), and, under the guard, put on trial.
"""

from __future__ import annotations

import math
import os
import shutil
from typing import Callable

import keras

from keras_adp import checkpoints
from keras_adp import density as density_lib
from keras_adp import distribution
from keras_adp import graph as graph_lib
from keras_adp import guard as guard_lib
from keras_adp import metrics as metrics_lib
from keras_adp import optimizers as optimizers_lib
from keras_adp import rebuild as rebuild_lib
from keras_adp.policy import ADPPolicy
from keras_adp.scoring import channel_scores, first_gamma

__all__ = [
    "PruningSteps",
    "channel_scores",
    "set_gamma_l1",
    "pruning_may_go_on",
]


class PruningSteps:
    """Takes, judges and rolls back the pruning steps of one `fit` call.

    Args:
        policy: the run's `ADPPolicy`.
        epochs: the run's total epochs.
        calibration: the calibration inputs (for BatchNormalization
            recalibration after a rebuild).
        run_dir: where the pre-step model is kept during a trial, or None.
        verbose: 0 silent, else one line per step and per decision.
        model: the model the run starts from: its distribution (strategy
            or process) decides whether this process writes to `run_dir`
            (`keras_adp.distribution.is_chief`). Not modified.
        read_pre_step: reads the pre-step model back from `run_dir` (a run
            resumed during a trial).
    """

    def __init__(
        self,
        policy: ADPPolicy,
        *,
        epochs: int,
        calibration,
        run_dir: str | None,
        verbose: int,
        model: keras.Model,
        read_pre_step: Callable[[], keras.Model],
    ):
        self.policy = policy
        self.run_dir = run_dir
        self._epochs = epochs
        self._calibration = calibration
        self._verbose = verbose
        self._read_pre_step = read_pre_step
        self._pre_step = None
        self._run_model = model

    def after_epoch(
        self, model, probe, state, epoch, record, groups, densities, wrapped,
        final,
    ):
        """Judge the step on trial, then maybe take the next one.

        Args:
            model, probe: the model just trained and its density probe.
            state: the run's `checkpoints.RunState` (updated).
            epoch: the epoch just trained (0-based).
            record: its history record (its `pruning` and `guard` are set).
            groups: `model`'s channel groups.
            densities: the epoch's `Density` per group.
            wrapped: the user's callbacks, as the trainer wraps them.
            final: whether this was the run's last epoch.

        Returns:
            `(model, probe)` to train next.
        """
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
                epoch, _density_by_epoch(state), state.steps_done,
                state.last_prune_epoch,
            )
        ):
            return model, probe
        scores = channel_scores(model, groups, self.policy.selection)
        gammas = {
            group.name: first_gamma(model, group)
            for group in groups if group.prunable
        }
        updates_left = self.updates_left(epoch, record.get("updates"))
        recovery = self.policy.recovery(updates_left)
        keep = self.policy.plan(
            groups, densities, scores, gammas, recovery=recovery
        )
        if not keep:
            # No group would lose `min_reduction` of its channels: stop.
            state.pruning_stopped = True
            record["pruning"] = {"epoch": epoch, "stopped": True}
            if self._verbose:
                reason = (
                    "widths have converged" if recovery >= 1.0 else
                    f"too little training is left to recover from a cut "
                    f"({updates_left} optimizer updates; the full cut needs "
                    f"{self.policy.recovery_updates})"
                )
                print(
                    f"[keras-adp] epoch {epoch + 1}: {reason}; pruning "
                    "stops, training goes on.",
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
            attempt=0, recovery={
                "updates_left": updates_left, "cut_fraction": recovery,
            },
        )

    def updates_left(self, epoch: int, updates: int | None) -> int | None:
        """Optimizer updates the run has left after (0-based) `epoch`, at
        the `updates` its last epoch made (None if unknown)."""
        if updates is None:
            return None
        return (self._epochs - epoch - 1) * int(updates)

    def twin_model(self, state):
        """The model to train beside the pruned one this epoch: with
        `trial="twin"` and a step on trial, the model kept from before the
        step (read back from `run_dir` in a run resumed during the trial);
        else None."""
        if (
            self.policy.trial != "twin"
            or self.policy.max_accuracy_drop is None
            or state.pending is None
        ):
            return None
        if self._pre_step is None:
            self._pre_step = (self._read_pre_step(), [])
        return self._pre_step[0]

    def _room_for_a_step(self, epoch) -> bool:
        """Whether a step now leaves the guard epochs to judge it, and at
        least one epoch after the judgement to train the model it keeps (a
        step rolled back in the last epoch would waste that epoch)."""
        if self.policy.max_accuracy_drop is None:
            return True
        return epoch + 1 + self.policy.recovery_epochs < self._epochs

    def _take_step(
        self, model, state, epoch, record, wrapped, *, keep, order, attempt,
        recovery=None,
    ):
        """Rebuild `model` keeping `keep`; the guard puts it on trial.
        `recovery`: the updates left and the fraction of the cut they allowed
        (`ADPPolicy.recovery`), recorded in the step."""
        set_gamma_l1(model, 0.0)  # The next epoch sets it on the new model.
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
            **(recovery or {}),
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
        if self._verbose:
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
        twin = _twin_value(record, monitor)
        if twin is not None:
            # The same model without the step, trained the same epoch: the
            # budget is the run's, less what accepted steps already spent.
            reference = guard_lib.reference_at(
                monitor, twin, self.policy.dense_reference, epoch
            )
            budget = max(0.0, budget - state.deficit)
        else:
            reference = guard_lib.reference_at(
                monitor, state.reference, self.policy.dense_reference, epoch
            )
        decision = {
            "epoch": epoch,
            "step_epoch": pending["epoch"],
            "attempt": pending["attempt"],
            "monitor": monitor,
            "value": value,
            "reference": reference,
            "budget": budget,
        }
        if twin is not None:
            decision["twin"] = twin
            decision["deficit"] = state.deficit
        record["guard"] = decision
        state.guard.append(decision)
        step = state.steps[-1]
        worse = reference is not None and guard_lib.is_worse_than_budget(
            monitor, value, reference, budget
        )
        if not worse:
            decision["action"] = "accepted"
            step["outcome"] = "accepted"
            if twin is not None:
                state.deficit += max(
                    0.0, guard_lib.shortfall(monitor, value, reference)
                )
            state.pending = None
            state.reference = guard_lib.better(monitor, state.reference, value)
            self._drop_pre_step()
            if self._verbose:
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
        if self._verbose:
            print(_guard_line(decision), flush=True)
        return restored, probe, retry

    # ------------------------------------------------------- pre-step model
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
            distribution.write_on_chief(
                model,
                os.path.join(self.run_dir, checkpoints.PRE_STEP_DIR),
                lambda directory: checkpoints.write_model_dir(directory, model),
            )

    def _drop_pre_step(self) -> None:
        self._pre_step = None
        if self.run_dir and distribution.is_chief(self._run_model):
            shutil.rmtree(
                os.path.join(self.run_dir, checkpoints.PRE_STEP_DIR),
                ignore_errors=True,
            )

    def _restore_pre_step(self, model, state, wrapped):
        """The pre-step model, its optimizer slots exactly as they were.

        The optimizer's iteration count is set to the current one, so a
        learning-rate schedule keeps its place.
        """
        if self._pre_step is not None:
            restored, saved = self._pre_step
        else:  # Resumed during the trial: read it from `run_dir`.
            restored = self._read_pre_step()
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
        with distribution.scope(model):
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


def _twin_value(record: dict, monitor: str) -> float | None:
    """The twin's finite value of `monitor` this epoch, or None (no twin,
    or one that diverged: the guard falls back to the best value so
    far)."""
    twin = record.get("twin")
    value = None if twin is None else twin["logs"].get(monitor)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _density_by_epoch(state) -> list[dict]:
    """The density history indexed by epoch, as the policy reads it.

    A run started at `initial_epoch` k has no measurement of epochs 0..k-1:
    they are stood in for by densities that no converged window accepts
    (infinitely far from any measurement).
    """
    history = state.density_history
    if not state.first_epoch or not history:
        return history
    unknown = {name: math.inf for name in history[0]}
    return [unknown] * state.first_epoch + history


def _guard_line(decision) -> str:
    against = " (the model without it, same epoch)" if "twin" in decision else ""
    return (
        f"[keras-adp] epoch {decision['epoch'] + 1}: step of epoch "
        f"{decision['step_epoch'] + 1} {decision['action']} "
        f"({decision['monitor']} {decision['value']:.4f}, reference "
        f"{decision['reference']:.4f}{against}, budget "
        f"{decision['budget']:g})"
    )


def pruning_may_go_on(state, policy) -> bool:
    """Whether another pruning step may still be taken."""
    return not state.pruning_stopped and (
        policy.max_prune_steps is None
        or state.steps_done < policy.max_prune_steps
    )


_GAMMA_L1 = "_keras_adp_gamma_l1"  # Marks a regularizer the trainer set.


def set_gamma_l1(model, strength: float) -> None:
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
        + _share_of_cut(step)
    )


def _share_of_cut(step) -> str:
    """`; X% of the cut (N updates left)` for a step that `recovery`
    shrank, else empty."""
    fraction = step.get("cut_fraction")
    if fraction is None or fraction >= 1.0:
        return ""
    return (
        f"; {100 * fraction:.0f}% of the rule's cut "
        f"({step['updates_left']:,} optimizer updates left)"
    )
