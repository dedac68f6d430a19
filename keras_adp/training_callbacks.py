"""The callbacks `ADPTrainer` hands each epoch's `model.fit`.

An ADP run is many `model.fit` calls, one per epoch, so that a rebuilt
model can take over between any two epochs. These adapters make that
invisible to the user's callbacks and to the progress bar, and measure
activation density at the end of each epoch:

- `UserCallback` wraps a user callback so that it sees one training run.
- `RunProgbar` is Keras' progress bar counting epochs out of the run.
- `EpochDensity` measures density into the epoch's logs.
"""

from __future__ import annotations

import math

import keras

__all__ = [
    "UserCallback",
    "RunProgbar",
    "EpochDensity",
    "FORWARDED_HOOKS",
]

# Hooks passed straight to a user callback; `on_train_begin`/`on_train_end`
# are called once per ADP run by the trainer instead.
FORWARDED_HOOKS = (
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


class UserCallback(keras.callbacks.Callback):
    """Makes a user callback see one run across many `fit` calls.

    `on_train_begin`/`on_train_end` are the trainer's to call, once per run
    (on `callback`); `params["epochs"]` is the run's total; `set_model` is
    passed on whenever the model is replaced. Each forwarded hook is the
    user callback's own bound method, so Keras sees exactly the hooks it
    overrides (and keeps asynchronous batch dispatch when it overrides
    none).

    Args:
        callback: the user's `keras.callbacks.Callback`.
        epochs: the run's total number of epochs.
    """

    def __init__(self, callback, epochs):
        super().__init__()
        self.callback = callback
        self.epochs = epochs
        self.async_safe = getattr(callback, "async_safe", False)
        for hook in FORWARDED_HOOKS:
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

        Args:
            old_model: the model before the rebuild.
            surgery: the rebuild's surgery (`slice_like(variable, value)`).
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


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, counting epochs out of the whole run.

    Args:
        epochs: the run's total number of epochs.
    """

    def __init__(self, epochs):
        super().__init__()
        self.total_epochs = epochs

    def set_params(self, params):
        super().set_params(dict(params, epochs=self.total_epochs))


class EpochDensity(keras.callbacks.Callback):
    """Measures density at epoch end and writes it into the epoch logs.

    After the epoch, `densities` holds the `Density` per group (None when
    the loss was not finite) and `logs` a copy of the epoch's logs, with a
    `density/<group>` entry per group.

    Args:
        probe: the model's `density.DensityProbe`, or None to keep only
            the logs (a twin trial's pre-step model).
        calibration: the inputs density is measured on.
    """

    def __init__(self, probe, calibration):
        super().__init__()
        self.probe = probe
        self.calibration = calibration
        self.logs = None
        self.densities = None
        self.updates = None  # Optimizer updates of the epoch (the loop's).

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        loss = logs.get("loss")
        if self.probe is not None and (
            loss is None or math.isfinite(float(loss))
        ):
            self.densities = self.probe.measure(self.calibration)
            for name, value in self.densities.items():
                logs[f"density/{name}"] = value.overall
        self.logs = dict(logs)
