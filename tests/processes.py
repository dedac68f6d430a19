"""Subprocess helpers of the tests: JAX's shared compilation cache,
killing a training process the way a crash would, for resume tests, and the
ONNX export check that runs on the JAX and torch backends."""

import json
import os
import signal
import tempfile
import time

# XLA compiles every new shape (each rebuilt model's functions, each eager
# op) once per process; the tests' JAX subprocesses share JAX's persistent
# compilation cache, which changes no result and makes a run several times
# faster.
JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": os.environ.get(
        "JAX_COMPILATION_CACHE_DIR",
        os.path.join(tempfile.gettempdir(), "keras_adp_tests_jax_cache"),
    ),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


# Exports a pruned BN + two-max-pool model to ONNX on the subprocess's
# backend, verifies it, and checks it independently with ONNX Runtime
# against the model's own outputs. Expects FOLDER (where the file goes);
# leaves RESULT (JSON-able).
ONNX_MAX_POOL_CHECK = """
import os
import numpy as np
import keras
import onnx
import onnxruntime
import keras_adp
from keras_adp import onnx_export

L = keras.layers
keras.utils.set_random_seed(5)
inputs = keras.Input((8, 8, 3))
h = L.Conv2D(6, 3, padding="same", name="c1")(inputs)
h = L.BatchNormalization(name="bn1")(h)
h = L.ReLU()(h)
h = L.MaxPooling2D()(h)
h = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
h = L.MaxPooling2D()(h)
h = L.Flatten()(h)
model = keras.Model(inputs, L.Dense(3, activation="softmax")(h))
rng = np.random.default_rng(5)
bn = model.get_layer("bn1")
bn.moving_mean.assign(rng.normal(0.0, 0.5, 6).astype("float32"))
bn.moving_variance.assign(rng.uniform(0.5, 2.0, 6).astype("float32"))
pruned = keras_adp.prune_channels(model, {"c1": [0, 2, 5], "c2": [1, 4]})
x = rng.uniform(size=(64, 8, 8, 3)).astype("float32")
path = onnx_export.export_onnx(pruned, os.path.join(FOLDER, "m.onnx"))
verified = onnx_export.verify_onnx(path, pruned, x, min_top1_agreement=0.99)
# Independently: ONNX Runtime against the model's outputs on this backend.
session = onnxruntime.InferenceSession(
    str(path), providers=["CPUExecutionProvider"])
(input_info,) = session.get_inputs()
onnx_outputs = session.run(None, {input_info.name: x})[0]
RESULT = {
    "backend": keras.backend.backend(),
    "widths": [pruned.get_layer(n).filters for n in ("c1", "c2")],
    "max_pool_nodes": sum(
        node.op_type == "MaxPool" for node in onnx.load(str(path)).graph.node),
    "top1": verified.top1_agreement,
    "max_abs_error": verified.max_abs_error,
    "independent": float(
        np.abs(onnx_outputs - pruned.predict(x, verbose=0)).max()),
    "against_dense": onnx_export.measure_onnx(path, model, x).passed,
    "files": sorted(os.listdir(FOLDER)),
}
"""


def assert_onnx_max_pool_check(result: dict, backend: str) -> None:
    """What `ONNX_MAX_POOL_CHECK`'s RESULT must say on `backend`."""
    assert result["backend"] == backend
    assert result["widths"] == [3, 2]
    assert result["max_pool_nodes"] == 2
    assert result["top1"] == 1.0
    assert result["max_abs_error"] <= 1e-4
    assert result["independent"] <= 1e-4
    assert not result["against_dense"], "the file should be the pruned model"
    assert result["files"] == ["m.onnx"]

# Trains and prunes a small BN + max-pool classifier with ADPTrainer on the
# subprocess's backend, exports it to TFLite (float32 and int8), verifies
# both, and checks LiteRT's top-1 independently against the model's own.
# Expects FOLDER; leaves RESULT (JSON-able).
TFLITE_TRAINED_EXPORT_CHECK = """
import os
import numpy as np
import keras
import keras_adp
from ai_edge_litert.interpreter import Interpreter
from keras_adp import export

L = keras.layers
keras.utils.set_random_seed(3)
rng = np.random.default_rng(0)
y = rng.integers(0, 3, 256)
x = (rng.normal(size=(256, 8, 8, 1)) + y[:, None, None, None]).astype(
    "float32")
inputs = keras.Input((8, 8, 1))
h = L.Conv2D(12, 3, padding="same", name="c1")(inputs)
h = L.BatchNormalization(name="bn1")(h)
h = L.ReLU(name="relu1")(h)
h = L.MaxPooling2D(name="pool")(h)
h = L.Conv2D(12, 3, padding="same", activation="relu", name="c2")(h)
h = L.GlobalAveragePooling2D()(h)
model = keras.Model(inputs, L.Dense(3, name="logits")(h))
model.compile(
    "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
result = keras_adp.ADPTrainer(
    keras_adp.ADPPolicy(
        recovery_updates=None, warmup_epochs=1, max_accuracy_drop=None,
                        width_rule="density"),
    seed=0, verbose=0,
).fit(model, x, y, epochs=3, batch_size=32)
pruned = result.model
float_path = export.export_tflite(pruned, os.path.join(FOLDER, "m.tflite"))
int8_path = export.export_tflite(
    pruned, os.path.join(FOLDER, "m_int8.tflite"), quantization="int8",
    representative_data=x[:64],
)
verified = export.verify_tflite(
    float_path, pruned, x[:200], min_top1_agreement=0.99)
int8 = export.measure_tflite(int8_path, pruned, x[:200])
# Independently: LiteRT's top-1 on 200 samples against the model's own.
interpreter = Interpreter(model_path=str(float_path))
interpreter.allocate_tensors()
(input_detail,), (output_detail,) = (
    interpreter.get_input_details(), interpreter.get_output_details())
litert_top1 = []
for sample in x[:200]:
    interpreter.set_tensor(input_detail["index"], sample[None])
    interpreter.invoke()
    litert_top1.append(
        int(interpreter.get_tensor(output_detail["index"]).argmax()))
keras_top1 = pruned.predict(x[:200], verbose=0).argmax(axis=-1)
RESULT = {
    "backend": keras.backend.backend(),
    "widths": result.history[-1]["widths"],
    "dense": result.history[0]["widths"],
    "agreement": float(np.mean(np.array(litert_top1) == keras_top1)),
    "float32": [verified.quantization, verified.top1_agreement,
                verified.max_abs_error],
    "int8": [int8.passed, int8.result.quantization,
             int8.result.top1_agreement],
    "files": sorted(os.listdir(FOLDER)),
}
"""


def assert_tflite_trained_export_check(result: dict, backend: str) -> None:
    """What `TFLITE_TRAINED_EXPORT_CHECK`'s RESULT must say on `backend`."""
    assert result["backend"] == backend
    assert result["widths"] != result["dense"], "nothing was pruned"
    mode, top1, max_error = result["float32"]
    assert mode == "float32"
    assert top1 >= 0.99 and result["agreement"] >= 0.99
    assert max_error < 1e-4
    assert result["int8"][:2] == [True, "int8"]
    assert result["int8"][2] >= 0.9
    assert result["files"] == ["m.tflite", "m_int8.tflite"]

def kill_after_checkpoint(process, run_dir, checkpoint="checkpoint-0002",
                          timeout=300.0) -> str:
    """SIGKILLs `process` once `run_dir/LATEST` names `checkpoint` or a
    later one, and returns the checkpoint it was killed after.

    Args:
        process: a running `subprocess.Popen` training into `run_dir`.
        run_dir: a `pathlib.Path`, the run's directory.
        checkpoint: the checkpoint to wait for.
        timeout: seconds to wait before killing anyway.
    """
    latest = run_dir / "LATEST"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if latest.exists() and latest.read_text() >= checkpoint:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return latest.read_text()


def resumed_and_reference(tmp_path) -> tuple[dict, dict]:
    """The JSON summaries the kill-and-resume scripts write beside
    `killed.npz` (the resumed run) and `reference.npz` (the unkilled one)."""
    runs = []
    for name in ("killed.npz.json", "reference.npz.json"):
        with open(tmp_path / name) as handle:
            runs.append(json.load(handle))
    return runs[0], runs[1]
