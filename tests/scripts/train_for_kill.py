"""Trains a tiny model with `ADPTrainer(seed=0).fit(..., resume=True)`.

Used by the kill-and-resume test: it is killed mid-run, started again with
the same arguments, and its final model is compared with an uninterrupted
run of the same script.

Usage: python train_for_kill.py RUN_DIR EPOCHS OUTPUT_NPZ [MODE]

MODE `rollback`: the accuracy guard judges every step a failure after 3
recovery epochs, so that a kill lands while a step is on trial and the
resumed run must roll back from the pre-step model kept in RUN_DIR.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp

L = keras.layers


def build_model():
    """A compiled 8x8 two-conv model with fixed initial weights."""
    keras.utils.set_random_seed(1234)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(12, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Conv2D(12, 3, padding="same", name="c2")(x)
    x = L.ReLU(name="relu2")(x)
    x = L.Dropout(0.2, name="drop")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="kill_me")
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def make_data(samples=192):
    """Synthetic 3-class images whose class sets the mean brightness."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, samples)
    x = rng.normal(size=(samples, 8, 8, 1)) + y[:, None, None, None]
    return x.astype("float32"), y


def main(argv):
    run_dir, epochs, output = argv[0], int(argv[1]), argv[2]
    mode = argv[3] if len(argv) > 3 else "default"
    x, y = make_data()
    # 6 updates per epoch: the steps after epochs 1 and 2 (30 and 24 left)
    # take 75% and 60% of their cut.
    policy = keras_adp.ADPPolicy(
        warmup_epochs=1, min_channels=2, recovery_updates=40
    )
    if mode == "rollback":
        keras_adp.guard.is_worse_than_budget = lambda *args: True
        policy = keras_adp.ADPPolicy(
            recovery_updates=None,
            warmup_epochs=1, min_channels=2, recovery_epochs=3,
            max_retries=0,
        )
    trainer = keras_adp.ADPTrainer(policy, run_dir=run_dir, seed=0, verbose=0)
    result = trainer.fit(
        build_model(), x, y, epochs=epochs, batch_size=32, resume=True
    )
    np.savez(output, *result.model.get_weights())
    with open(output + ".json", "w") as handle:
        json.dump(
            {
                "epochs": [record["epoch"] for record in result.history],
                "widths": [record["widths"] for record in result.history],
                "guard": [record["guard"] for record in result.history],
            },
            handle,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
