"""The tensorflow-model-optimization side of `compare_tfmot.py` and
`bench_tradeoff.py`.

tensorflow-model-optimization (tfmot) only supports tf-keras (Keras 2), which
cannot share a process with Keras 3, so both benchmarks run this script in
a separate process with `TF_USE_LEGACY_KERAS=1`. It is not meant to be run by
hand, but can be:

    TF_USE_LEGACY_KERAS=1 python benchmarks/tfmot_worker.py config.json

The JSON config names everything the Keras 3 side prepared:

- `data`: an `.npz` file with `x_train`, `y_train`, `x_test`, `y_test`
  (float32 images, already normalized; integer labels), and optionally
  `x_val`, `y_val`.
- `initial_weights`: an `.npz` file with the Keras 3 dense model's initial
  weights, keyed `"<layer name>/<index>"` in `layer.get_weights()` order.
- The model, either `cfg`: the VGG configuration, e.g.
  `[16, 16, "M", 32, 32, "M", ...]`, with `input_shape`, `num_classes` and
  `bn_momentum`; or `keras3_model`: the Keras 3 functional model's
  `get_config()` (its `layers` and `output_layers`), rebuilt here layer by
  layer (`build_from_keras3_config`; vgg_small, vgg19, resnet18). And
  `expected_params` (the Keras 3 model's parameter count, checked here so
  both sides train the same network).
- `epochs`, `batch_size`, `learning_rate`, `seed`.
- Optional: `cosine_decay_steps` (Adam's learning rate follows
  `CosineDecay(learning_rate, cosine_decay_steps)` instead of staying
  constant), `validation` (`"test"`, the default, or `"val"`: validate each
  epoch on `x_val`, `y_val`), `reseed_each_epoch` (fit one epoch at a time,
  seeding with `seed + epoch` before each, as `bench_tradeoff.py` does for
  its dense runs), `loaded_weights_path` (write the tf-keras model's weights
  right after loading the initial ones, keyed like `initial_weights`, to
  check the handover).
- `schedule`: the `PolynomialDecay` arguments, computed by
  `compare_tfmot.py` (`adp_matched_schedule`, `gradual_schedule`): `name`,
  `initial_sparsity`, `final_sparsity`, `begin_step`, `end_step`,
  `frequency`, and the `steps_per_epoch` they assume (checked here).
- `result_path`: where to write the JSON result (accuracy on the test
  samples, non-zero parameters, achieved sparsity and non-zero count per
  kernel, training wall and CPU time, history), and `tflite_path` (optional:
  without it no TFLite file is written): where to write the float32 TFLite
  file.
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


# Keras 3 layer classes rebuilt in tf-keras, with the config keys that carry
# over (everything else -- dtype policies, initializers -- does not matter
# once the initial weights are loaded; regularizers and constraints would,
# and are refused).
_KERAS3_LAYERS = {
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "data_format",
               "dilation_rate", "groups", "activation", "use_bias"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "MaxPooling2D": ("pool_size", "strides", "padding", "data_format"),
    "AveragePooling2D": ("pool_size", "strides", "padding", "data_format"),
    "GlobalAveragePooling2D": ("data_format", "keepdims"),
    "Flatten": ("data_format",),
    "Dense": ("units", "activation", "use_bias"),
    "Add": (),
}


def _keras3_inputs(value, tensors):
    """`value` (a node's serialized call arguments) with every Keras tensor
    replaced by the tf-keras tensor of the layer that made it."""
    if (isinstance(value, dict)
            and value.get("class_name") == "__keras_tensor__"):
        layer_name, node_index, tensor_index = value["config"]["keras_history"]
        if node_index != 0 or tensor_index != 0:
            raise SystemExit(
                "Only layers called once with one output are supported. "
                f"Received a tensor from {value['config']['keras_history']}."
            )
        return tensors[layer_name]
    if isinstance(value, list):
        return [_keras3_inputs(item, tensors) for item in value]
    return value


def build_from_keras3_config(config):
    """tf-keras twin of a Keras 3 functional model, from its `get_config()`.

    Args:
        config: dict with `layers` (each with `class_name`, `name`,
            `config`, `inbound_nodes`, in the Keras 3 serialization) and
            `output_layers`.

    Returns:
        An uncompiled `tf_keras.Model` with the same layer names, classes,
        shapes and connections, so that `load_initial_weights` can copy the
        Keras 3 weights by name.

    Raises:
        SystemExit: for a layer class outside `_KERAS3_LAYERS`, a layer with
            a regularizer or constraint, or a layer called more than once.
    """
    tensors, inputs = {}, []
    for layer in config["layers"]:
        kind, name, layer_config = (
            layer["class_name"], layer["name"], layer["config"]
        )
        if kind == "InputLayer":
            tensors[name] = tf_keras.Input(
                shape=tuple(layer_config["batch_shape"][1:]), name=name
            )
            inputs.append(tensors[name])
            continue
        if kind not in _KERAS3_LAYERS:
            raise SystemExit(
                f"Layer {name!r} is a {kind}; the tf-keras twin supports "
                f"{sorted(_KERAS3_LAYERS)}. Add it to _KERAS3_LAYERS in "
                "tfmot_worker.py if tf-keras builds it from the same keys."
            )
        extras = [
            key for key, value in layer_config.items()
            if key.endswith(("_regularizer", "_constraint")) and value
        ]
        if extras:
            raise SystemExit(
                f"Layer {name!r} has {extras}, which the tf-keras twin does "
                "not carry over. Expected none."
            )
        if len(layer["inbound_nodes"]) != 1:
            raise SystemExit(
                f"Layer {name!r} is called {len(layer['inbound_nodes'])} "
                "times; the tf-keras twin supports layers called once."
            )
        node = layer["inbound_nodes"][0]
        if any(value is not None for value in node.get("kwargs", {}).values()):
            raise SystemExit(
                f"Layer {name!r} is called with keyword arguments "
                f"{node['kwargs']}; expected none."
            )
        twin = getattr(tf_keras.layers, kind)(
            name=name,
            **{key: layer_config[key] for key in _KERAS3_LAYERS[kind]
               if key in layer_config},
        )
        tensors[name] = twin(*_keras3_inputs(node["args"], tensors))
    outputs = config["output_layers"]
    if outputs and not isinstance(outputs[0], list):  # One output.
        outputs = [outputs]
    return tf_keras.Model(
        inputs, [tensors[entry[0]] for entry in outputs], name=config["name"]
    )


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


def kernel_nonzero(model):
    """`{layer name: [non-zero entries, size]}` of each Conv2D and Dense
    kernel."""
    return {
        layer.name: [int(np.count_nonzero(layer.kernel.numpy())),
                     int(np.prod(layer.kernel.shape))]
        for layer in model.layers
        if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense))
    }


def kernel_sparsity(model):
    """Fraction of exact zeros in each Conv2D / Dense kernel."""
    return {
        name: float(1.0 - nonzero / size)
        for name, (nonzero, size) in kernel_nonzero(model).items()
    }


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

    validation = config.get("validation", "test")
    if validation not in ("test", "val"):
        raise SystemExit(
            f"Expected `validation` 'test' or 'val'. Received: {validation!r}."
        )
    with np.load(config["data"]) as npz:
        x_train, y_train = npz["x_train"], npz["y_train"]
        x_test, y_test = npz["x_test"], npz["y_test"]
        x_val, y_val = (
            (npz["x_val"], npz["y_val"]) if validation == "val"
            else (x_test, y_test)
        )

    seed = int(config["seed"])
    tf_keras.utils.set_random_seed(seed)
    if "keras3_model" in config:
        model = build_from_keras3_config(config["keras3_model"])
    else:
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
    if config.get("loaded_weights_path"):
        np.savez(config["loaded_weights_path"], **{
            f"{layer.name}/{index}": value
            for layer in model.layers
            for index, value in enumerate(layer.get_weights())
        })

    batch_size = int(config["batch_size"])
    steps_per_epoch = -(-len(x_train) // batch_size)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model,
        pruning_schedule=pruning_schedule(config["schedule"], steps_per_epoch),
    )
    learning_rate = float(config["learning_rate"])
    if config.get("cosine_decay_steps"):
        learning_rate = tf_keras.optimizers.schedules.CosineDecay(
            learning_rate, int(config["cosine_decay_steps"])
        )
    pruned.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs = int(config["epochs"])
    # One fit per epoch when reseeding (the pruning step lives in the
    # wrappers' variables, so the schedule runs on across fits).
    spans = (
        [(epoch, epoch + 1) for epoch in range(epochs)]
        if config.get("reseed_each_epoch") else [(0, epochs)]
    )
    update_step = tfmot.sparsity.keras.UpdatePruningStep()
    history = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    for initial_epoch, end_epoch in spans:
        if config.get("reseed_each_epoch"):
            tf_keras.utils.set_random_seed(seed + initial_epoch)
        fitted = pruned.fit(
            x_train,
            y_train,
            batch_size=batch_size,
            epochs=end_epoch,
            initial_epoch=initial_epoch,
            validation_data=(x_val, y_val),
            callbacks=[update_step],
            verbose=int(config.get("verbose", 0)),
        )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
    train_seconds = time.perf_counter() - start
    train_cpu_seconds = time.process_time() - cpu_start

    final = tfmot.sparsity.keras.strip_pruning(pruned)
    final.compile(
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    _, accuracy = final.evaluate(x_test, y_test, batch_size=256, verbose=0)
    weights = final.get_weights()
    result = {
        "framework": f"tf-keras {_tf_keras_version()}",
        "tfmot_version": tfmot.__version__,
        "accuracy": float(accuracy),
        "params": int(sum(w.size for w in weights)),
        "nonzero_params": int(sum(np.count_nonzero(w) for w in weights)),
        "kernel_sparsity": kernel_sparsity(final),
        "kernel_nonzero": kernel_nonzero(final),
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "history": history,
        "schedule": config["schedule"],
    }
    if config.get("tflite_path"):
        export_tflite(final, config["tflite_path"])
        result["tflite_path"] = config["tflite_path"]
        result["tflite_max_abs_error"] = tflite_max_abs_error(
            config["tflite_path"], final, x_test[:32]
        )
    with open(config["result_path"], "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
