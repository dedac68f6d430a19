"""Runs one tiny `ADPTrainer` run, on one device or under a strategy.

Used by `tests/test_distributed.py`, one process per run, because logical
devices and `TF_CONFIG` must be set before TensorFlow initialises.

Modes:
    single       the default strategy (one CPU device).
    mirrored     `MirroredStrategy` over two logical CPU devices.
    multiworker  `MultiWorkerMirroredStrategy`; `TF_CONFIG` says which
                 worker this process is.

The model has no Dropout and a synchronized BatchNormalization, so that
splitting a batch of 32 over two replicas changes nothing but the order of
floating point reductions: every mode trains the same model on the same
batches and must reach the same widths.

Usage: python distributed_worker.py MODE RUN_DIR OUTPUT [--resume]
Writes OUTPUT.json (history, checks) and OUTPUT.npz (final weights).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

SAMPLES = 128
BATCH_SIZE = 32
EPOCHS = 4
CALIBRATION_SAMPLES = 64


def make_strategy(mode):
    """The strategy of `mode`; created before any other TensorFlow op."""
    if mode == "single":
        return None
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if mode == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown mode {mode!r}")


def build_model():
    """Two ReLU convolutions (12 channels each) on 8x8 images, 3 logits."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(
        12, 3, padding="same", activation="relu", name="c1"
    )(inputs)
    x = layers.BatchNormalization(synchronized=True, name="bn1")(x)
    x = layers.Conv2D(12, 3, padding="same", name="c2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def make_data():
    """Synthetic 3-class images whose class sets the mean brightness."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, SAMPLES)
    x = rng.normal(size=(SAMPLES, 8, 8, 1)) + y[:, None, None, None]
    return x.astype("float32"), y


def _distributed_by(variable, strategy):
    value = getattr(variable, "value", variable)
    return (
        isinstance(value, tf.distribute.DistributedValues)
        and value.distribute_strategy is strategy
    )


def main(argv):
    mode, run_dir, output = argv[:3]
    resume = argv[3:] == ["--resume"]
    strategy = make_strategy(mode)

    import keras_adp

    x, y = make_data()
    if strategy is None:
        model = build_model()
    else:
        with strategy.scope():
            model = build_model()
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1,
        min_channels=2,
        calibration_samples=CALIBRATION_SAMPLES,
        max_accuracy_drop=None,
    )
    trainer = keras_adp.ADPTrainer(policy, run_dir=run_dir, seed=0, verbose=0)
    result = trainer.fit(
        model, x, y, epochs=EPOCHS, batch_size=BATCH_SIZE, resume=resume
    )
    final = result.model
    # Counts gathered from every replica (and worker): the whole set.
    densities = keras_adp.measure_density(final, x[:CALIBRATION_SAMPLES])
    record = {
        "replicas": final.distribute_strategy.num_replicas_in_sync,
        "is_chief": bool(final.distribute_strategy.extended.should_checkpoint),
        "widths": [entry["widths"] for entry in result.history],
        "density": [entry["density"] for entry in result.history],
        "loss": [entry["logs"]["loss"] for entry in result.history],
        "steps": len(result.steps),
        "probe_samples": [d.samples for d in densities.values()],
        "iterations": int(final.optimizer.iterations.numpy()),
    }
    if strategy is not None:
        record["distributed_weights"] = all(
            _distributed_by(variable, strategy) for variable in final.variables
        )
        record["distributed_optimizer"] = all(
            _distributed_by(variable, strategy)
            for variable in final.optimizer.variables
        )
    np.savez(output + ".npz", *final.get_weights())
    with open(output + ".json", "w") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main(sys.argv[1:])
