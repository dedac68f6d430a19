"""The tensorflow-model-optimization side of `compare_tfmot.py`.

tensorflow-model-optimization (tfmot) only supports tf-keras (Keras 2), which
cannot share a process with Keras 3, so `compare_tfmot.py` runs this script in
a separate process with `TF_USE_LEGACY_KERAS=1`. It is not meant to be run by
hand, but can be:

    TF_USE_LEGACY_KERAS=1 python benchmarks/tfmot_worker.py config.json

The JSON config names everything the Keras 3 side prepared:

- `data`: an `.npz` file with `x_train`, `y_train`, `x_test`, `y_test`
  (float32 images, already normalized; int64 labels).
- `initial_weights`: an `.npz` file with the Keras 3 dense model's initial
  weights, keyed `"<layer name>/<index>"` in `layer.get_weights()` order.
- `cfg`: the VGG configuration, e.g. `[16, 16, "M", 32, 32, "M", ...]`, and
  `input_shape`, `num_classes`, `bn_momentum`, `expected_params` (the
  Keras 3 model's parameter count, checked here so both sides train the
  same network).
- `epochs`, `batch_size`, `learning_rate`, `seed`.
- `schedule`: the `PolynomialDecay` arguments, computed by
  `compare_tfmot.py` (`adp_matched_schedule`, `gradual_schedule`): `name`,
  `initial_sparsity`, `final_sparsity`, `begin_step`, `end_step`,
  `frequency`, and the `steps_per_epoch` they assume (checked here).
- `tflite_path`, `result_path`: where to write the float32 TFLite file and
  the JSON result (accuracy, non-zero parameters, achieved sparsity per
  layer, training wall time).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

try:
    import tensorflow_model_optimization as tfmot  # noqa: E402
except ImportError as error:  # pragma: no cover - depends on the install
    raise SystemExit(
        "tensorflow-model-optimization is not installed. Install it with "
        "`pip install \"tensorflow-model-optimization>=0.8\" tf-keras` (pick "
        "the tf-keras release matching TensorFlow, e.g. tf-keras 2.21.* for "
        f"TensorFlow 2.21). ({error})"
    ) from error

tf_keras = tf.keras


def _tf_keras_version():
    import tf_keras as package  # The package behind `tf.keras` here.

    return package.__version__


def build_vgg(cfg, input_shape, num_classes, bn_momentum, name="vgg_small"):
    """tf-keras twin of `keras_adp.models._vgg` (batch norm variant).

    Same layer names, widths, pooling rule and head, so that weights can be
    copied layer by layer from the Keras 3 model.
    """
    inputs = tf_keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    height, width = input_shape[:2]
    block_index, conv_index = 1, 0
    for entry in cfg:
        if entry == "M":
            if min(height, width) >= 2:
                x = tf_keras.layers.MaxPooling2D(
                    2, name=f"block{block_index}_pool"
                )(x)
                height, width = height // 2, width // 2
            block_index, conv_index = block_index + 1, 0
            continue
        conv_index += 1
        prefix = f"block{block_index}"
        x = tf_keras.layers.Conv2D(
            int(entry),
            3,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{prefix}_conv{conv_index}",
        )(x)
        x = tf_keras.layers.BatchNormalization(
            momentum=bn_momentum, name=f"{prefix}_bn{conv_index}"
        )(x)
        x = tf_keras.layers.ReLU(name=f"{prefix}_relu{conv_index}")(x)
    if height == 1 and width == 1:
        x = tf_keras.layers.Flatten(name="flatten")(x)
    else:
        x = tf_keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = tf_keras.layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name=name)


def load_initial_weights(model, path):
    """Copies the Keras 3 model's initial weights, layer by layer, by name."""
    with np.load(path) as npz:
        stored = {key: npz[key] for key in npz.files}
    for layer in model.layers:
        count = len(layer.get_weights())
        if not count:
            continue
        layer.set_weights([stored[f"{layer.name}/{i}"] for i in range(count)])


def pruning_schedule(schedule, steps_per_epoch):
    """The `PolynomialDecay` the config's `schedule` describes.

    Fails if the schedule was computed for another number of steps per epoch
    than this run's.
    """
    if int(schedule["steps_per_epoch"]) != steps_per_epoch:
        raise SystemExit(
            f"The {schedule['name']} schedule assumes "
            f"{schedule['steps_per_epoch']} steps per epoch; this run has "
            f"{steps_per_epoch}."
        )
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=float(schedule["initial_sparsity"]),
        final_sparsity=float(schedule["final_sparsity"]),
        begin_step=int(schedule["begin_step"]),
        end_step=int(schedule["end_step"]),
        frequency=int(schedule["frequency"]),
    )


def kernel_sparsity(model):
    """Fraction of exact zeros in each Conv2D / Dense kernel."""
    result = {}
    for layer in model.layers:
        if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense)):
            kernel = layer.kernel.numpy()
            result[layer.name] = float(1.0 - np.count_nonzero(kernel) / kernel.size)
    return result


def export_tflite(model, path):
    """Float32 TFLite restricted to builtin ops, like `keras_adp.export`."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(path, "wb") as handle:
        handle.write(converter.convert())


def tflite_max_abs_error(path, model, samples):
    """Largest |TFLite - tf-keras| output difference over `samples`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    expected = model.predict(samples, verbose=0)
    error = 0.0
    for sample, reference in zip(samples, expected):
        interpreter.set_tensor(input_index, sample[np.newaxis])
        interpreter.invoke()
        output = interpreter.get_tensor(output_index)[0]
        error = max(error, float(np.max(np.abs(output - reference))))
    return error


def main(argv):
    if len(argv) != 1:
        raise SystemExit("usage: tfmot_worker.py CONFIG.json")
    with open(argv[0]) as handle:
        config = json.load(handle)
    if not tf_keras.__name__.startswith("tf_keras"):
        raise SystemExit(
            "tf.keras is not tf-keras (Keras 2); run with TF_USE_LEGACY_KERAS=1 "
            f"and tf-keras installed. Found: {tf_keras.__name__}."
        )

    with np.load(config["data"]) as npz:
        x_train, y_train = npz["x_train"], npz["y_train"]
        x_test, y_test = npz["x_test"], npz["y_test"]

    tf_keras.utils.set_random_seed(int(config["seed"]))
    model = build_vgg(
        config["cfg"],
        config["input_shape"],
        config["num_classes"],
        float(config["bn_momentum"]),
    )
    if model.count_params() != int(config["expected_params"]):
        raise SystemExit(
            f"The tf-keras model has {model.count_params()} parameters, the "
            f"Keras 3 model {config['expected_params']}: the architectures "
            "differ."
        )
    load_initial_weights(model, config["initial_weights"])

    batch_size = int(config["batch_size"])
    steps_per_epoch = -(-len(x_train) // batch_size)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model,
        pruning_schedule=pruning_schedule(config["schedule"], steps_per_epoch),
    )
    pruned.compile(
        optimizer=tf_keras.optimizers.Adam(float(config["learning_rate"])),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = pruned.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=int(config["epochs"]),
        validation_data=(x_test, y_test),
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=int(config.get("verbose", 0)),
    )
    train_seconds = time.perf_counter() - start

    final = tfmot.sparsity.keras.strip_pruning(pruned)
    final.compile(
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    _, accuracy = final.evaluate(x_test, y_test, batch_size=256, verbose=0)
    weights = final.get_weights()
    export_tflite(final, config["tflite_path"])
    result = {
        "framework": f"tf-keras {_tf_keras_version()}",
        "tfmot_version": tfmot.__version__,
        "accuracy": float(accuracy),
        "params": int(sum(w.size for w in weights)),
        "nonzero_params": int(sum(np.count_nonzero(w) for w in weights)),
        "kernel_sparsity": kernel_sparsity(final),
        "train_seconds": train_seconds,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "schedule": config["schedule"],
        "tflite_path": config["tflite_path"],
        "tflite_max_abs_error": tflite_max_abs_error(
            config["tflite_path"], final, x_test[:32]
        ),
    }
    with open(config["result_path"], "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
