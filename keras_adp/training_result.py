"""What `ADPTrainer.fit` returns: the model, its history and its steps."""

from __future__ import annotations

import dataclasses

import keras

from keras_adp import metrics as metrics_lib

__all__ = [
    "ADPResult",
]


@dataclasses.dataclass
class ADPResult:
    """What `ADPTrainer.fit` returns.

    Attributes:
        model: the final, trained, pruned model.
        history: one dict per epoch: `epoch`, `logs` (loss, metrics, val_*),
            `widths` and `density` per group, `params`, `macs`, `flops` of
            the model trained in that epoch, `train_macs` (that epoch's
            training compute, 3x forward MACs per sample), `measure_macs`
            (the density measurement's forward passes), `cumulative_macs`,
            `updates` (the optimizer updates the epoch applied) and
            `pruning`: the step taken at the end of the epoch (as in
            `steps`), `{"epoch": epoch, "stopped": True}` where pruning
            stopped because no group would shrink by `min_reduction`, or
            None.
        steps: the pruning steps: epoch, widths before and after, params and
            MACs before and after; a first attempt also has `updates_left`
            (optimizer updates after it) and `cut_fraction` (the share of
            its cut they allowed, `ADPPolicy.recovery`).
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

        Returns:
            A dict: `epochs`, `dense_params`, `final_params`,
            `param_reduction`, `dense_macs`, `final_macs`, `mac_reduction`,
            `training_macs`, `prune_steps` and `rolled_back_steps`.
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
