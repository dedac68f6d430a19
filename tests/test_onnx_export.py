"""Tests for keras_adp.onnx_export: ONNX export, parity and latency."""

from __future__ import annotations

import importlib.util
import os

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import litert
from keras_adp import onnx_export

IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 3

# On JAX the model is converted with tf2onnx in a TensorFlow-backend
# subprocess of this Python.
_CONVERTERS = {
    "tensorflow": ("tf2onnx", "onnx"),
    "jax": ("tensorflow", "tf2onnx", "onnx"),
    "torch": ("onnx",),
}
_NEEDED = (*_CONVERTERS.get(keras.backend.backend(), ("onnx",)), "onnxruntime")
_MISSING = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(_MISSING),
    reason=(
        f"{', '.join(_MISSING)} not installed (ONNX export on the "
        f"{keras.backend.backend()!r} backend and ONNX Runtime); "
        "install with `pip install -e \".[onnx]\"`"
    ),
)


# ---------------------------------------------------------------------------
# Model factories and data.


def _randomize_batch_norm(model: keras.Model, seed: int) -> None:
    """Give BatchNormalization layers non-trivial moving statistics, so
    that a training-mode forward pass would not match inference."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, size))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size))


def conv_bn_relu_pool_model(filters: int = 6, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Conv2D(filters, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(
        filters, 3, padding="same", activation="relu", name="conv2"
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    _randomize_batch_norm(model, seed)
    return model


def residual_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGE_SHAPE)
    stem = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(stem)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.Add()([stem, x])
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    model = keras.Model(inputs, outputs)
    _randomize_batch_norm(model, seed)
    return model


def sequential_flatten_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


MODEL_FACTORIES = {
    "conv_bn_relu_pool": conv_bn_relu_pool_model,
    "residual": residual_model,
    "sequential_flatten": sequential_flatten_model,
}


def images(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size=(count, *IMAGE_SHAPE)).astype("float32")


def _files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def _no_temporary_files(directory) -> bool:
    return all(not name.startswith(".") for name in os.listdir(directory))


# ---------------------------------------------------------------------------
# Export and parity.


@needs_onnx
@pytest.mark.parametrize("model_name", sorted(MODEL_FACTORIES))
def test_export_onnx_output_matches_keras(tmp_path, model_name):
    model = MODEL_FACTORIES[model_name]()

    path = onnx_export.export_onnx(model, tmp_path / "model.onnx")

    assert path == tmp_path / "model.onnx"
    assert path.stat().st_size > 0
    assert _files(tmp_path) == ["model.onnx"]
    result = onnx_export.verify_onnx(
        path, model, images(40), min_top1_agreement=0.99
    )
    assert result.quantization == "float32"
    assert result.num_samples == 40
    assert result.max_abs_error <= 1e-4
    assert result.top1_agreement == 1.0
    assert (result.atol, result.rtol) == (
        onnx_export.DEFAULT_ATOL, onnx_export.DEFAULT_RTOL
    )


@needs_onnx
def test_export_onnx_of_pruned_model_agrees_with_keras(tmp_path):
    model = conv_bn_relu_pool_model(filters=6)
    pruned = keras_adp.prune_channels(
        model, {"conv1": [0, 2, 5], "conv2": [1, 4]}
    )
    assert pruned.get_layer("conv1").filters == 3

    dense_path = onnx_export.export_onnx(model, tmp_path / "dense.onnx")
    pruned_path = onnx_export.export_onnx(pruned, tmp_path / "pruned.onnx")

    result = onnx_export.verify_onnx(
        pruned_path, pruned, images(64, seed=3), min_top1_agreement=0.99
    )
    assert result.max_abs_error <= 1e-4
    assert result.top1_agreement == 1.0
    assert pruned_path.stat().st_size < dense_path.stat().st_size
    # The pruned file is not the dense model: parity against it fails.
    check = onnx_export.measure_onnx(pruned_path, model, images(64, seed=3))
    assert not check.passed


@needs_onnx
def test_export_onnx_does_not_change_the_model(tmp_path):
    model = residual_model()
    config = model.get_config()
    weights = [np.array(weight) for weight in model.get_weights()]

    onnx_export.export_onnx(model, tmp_path / "model.onnx")

    assert model.get_config() == config
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


@needs_onnx
@pytest.mark.parametrize("count", [1, 3, 130])
def test_export_onnx_keeps_a_dynamic_batch_dimension(tmp_path, count):
    import onnxruntime

    model = residual_model()
    path = onnx_export.export_onnx(model, tmp_path / "model.onnx")

    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )
    (input_info,) = session.get_inputs()
    assert not isinstance(input_info.shape[0], int)
    assert input_info.shape[1:] == list(IMAGE_SHAPE)
    outputs = session.run(None, {input_info.name: images(count)})[0]
    np.testing.assert_allclose(
        outputs, model.predict(images(count), verbose=0), atol=1e-4, rtol=1e-4
    )
    assert onnx_export.verify_onnx(path, model, images(count)).num_samples == (
        count
    )


@needs_onnx
def test_verify_onnx_accepts_a_single_unbatched_sample(tmp_path):
    model = residual_model()
    path = onnx_export.export_onnx(model, tmp_path / "model.onnx")

    result = onnx_export.verify_onnx(path, model, images(1)[0])

    assert result.num_samples == 1


@needs_onnx
def test_export_onnx_writes_the_requested_opset(tmp_path):
    import onnx

    # 18: honoured by tf2onnx (TensorFlow and JAX) and torch.onnx.
    path = onnx_export.export_onnx(
        residual_model(), tmp_path / "model.onnx", opset_version=18
    )

    opsets = {entry.domain: entry.version for entry in onnx.load(path).opset_import}
    assert opsets[""] == 18


@needs_onnx
def test_export_onnx_replaces_an_existing_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old content")

    onnx_export.export_onnx(residual_model(), path)

    assert path.read_bytes() != b"old content"
    assert _files(tmp_path) == ["model.onnx"]


# ---------------------------------------------------------------------------
# Failed conversions leave nothing behind.


def _numpy_function_model() -> keras.Model:
    """A model whose layer runs NumPy code, which no ONNX converter can
    translate (TensorFlow backend only)."""
    import tensorflow as tf

    class NumpyDouble(keras.layers.Layer):
        def call(self, x):
            doubled = tf.numpy_function(lambda a: a * 2, [x], tf.float32)
            doubled.set_shape(x.shape)
            return doubled

    inputs = keras.Input((4,))
    return keras.Model(inputs, NumpyDouble()(inputs))


@needs_onnx
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.numpy_function only exists on the TensorFlow backend",
)
def test_untranslatable_model_leaves_no_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old content")

    with pytest.raises(ValueError, match="PyFunc.*No file was written"):
        onnx_export.export_onnx(_numpy_function_model(), path)

    assert path.read_bytes() == b"old content"
    assert _files(tmp_path) == ["model.onnx"]


@needs_onnx
def test_converter_error_leaves_no_temporary_file(tmp_path, monkeypatch):
    def failing_convert(model, filename, input_spec, opset_version):
        with open(filename, "wb") as file:
            file.write(b"partial")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(onnx_export, "_convert", failing_convert)

    with pytest.raises(RuntimeError, match="converter crashed"):
        onnx_export.export_onnx(residual_model(), tmp_path / "model.onnx")

    assert _files(tmp_path) == []


@needs_onnx
def test_unreadable_conversion_output_is_rejected(tmp_path, monkeypatch):
    def garbage_convert(model, filename, input_spec, opset_version):
        with open(filename, "wb") as file:
            file.write(b"not a protobuf \xff\xfe")

    monkeypatch.setattr(onnx_export, "_convert", garbage_convert)

    with pytest.raises(ValueError, match="No file was written"):
        onnx_export.export_onnx(residual_model(), tmp_path / "model.onnx")

    assert _files(tmp_path) == []


def _write_unrunnable_onnx(filename) -> None:
    """A valid ONNX model that fails at run time: it reshapes each (N, 4)
    input to rows of 3 values, impossible for N = 1."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["shape"],
                value=helper.make_tensor(
                    "shape", onnx.TensorProto.INT64, [2], [-1, 3]
                ),
            ),
            helper.make_node("Reshape", ["input", "shape"], ["output"]),
        ],
        "unrunnable",
        [helper.make_tensor_value_info(
            "input", onnx.TensorProto.FLOAT, ["batch", 4]
        )],
        [helper.make_tensor_value_info(
            "output", onnx.TensorProto.FLOAT, [None, 3]
        )],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 15)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(filename))


@needs_onnx
def test_conversion_that_onnxruntime_cannot_run_is_rejected(
    tmp_path, monkeypatch
):
    def unrunnable_convert(model, filename, input_spec, opset_version):
        _write_unrunnable_onnx(filename)

    monkeypatch.setattr(onnx_export, "_convert", unrunnable_convert)

    with pytest.raises(ValueError, match="ONNX Runtime cannot run"):
        onnx_export.export_onnx(residual_model(), tmp_path / "model.onnx")

    assert _files(tmp_path) == []


@needs_onnx
def test_verify_and_benchmark_report_a_file_that_fails_to_run(tmp_path):
    path = tmp_path / "model.onnx"
    _write_unrunnable_onnx(path)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))

    with pytest.raises(ValueError, match="ONNX Runtime failed to run"):
        onnx_export.verify_onnx(path, model, np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match="ONNX Runtime failed to run"):
        onnx_export.benchmark_onnx(path)


# ---------------------------------------------------------------------------
# Invalid arguments (no converter needed: checked before conversion).


@pytest.mark.parametrize(
    "name, error, match",
    [
        ("model.tflite", ValueError, r"end in `\.onnx`"),
        ("model", ValueError, r"end in `\.onnx`"),
        ("missing/model.onnx", FileNotFoundError, "directory"),
    ],
)
def test_export_onnx_rejects_bad_paths(tmp_path, name, error, match):
    with pytest.raises(error, match=match):
        onnx_export.export_onnx(residual_model(), tmp_path / name)
    assert _files(tmp_path) == []


def test_export_onnx_rejects_a_directory_path(tmp_path):
    (tmp_path / "model.onnx").mkdir()

    with pytest.raises(ValueError, match="which is a directory"):
        onnx_export.export_onnx(residual_model(), tmp_path / "model.onnx")


def test_export_onnx_rejects_a_model_without_inputs(tmp_path):
    model = keras.Sequential([keras.layers.Dense(2)])

    with pytest.raises(ValueError, match=r"defined inputs.*keras\.Input"):
        onnx_export.export_onnx(model, tmp_path / "model.onnx")
    assert _files(tmp_path) == []


def test_export_onnx_rejects_several_inputs(tmp_path):
    first, second = keras.Input((4,)), keras.Input((4,))
    model = keras.Model(
        [first, second], keras.layers.Dense(2)(keras.layers.Add()([first, second]))
    )

    with pytest.raises(ValueError, match="single-input model.*2 inputs"):
        onnx_export.export_onnx(model, tmp_path / "model.onnx")


def test_export_onnx_rejects_what_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="Received: model of type Dense"):
        onnx_export.export_onnx(keras.layers.Dense(2), tmp_path / "model.onnx")


def test_export_onnx_rejects_mixed_precision(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, dtype="mixed_float16")(inputs)
    model = keras.Model(inputs, outputs)

    with pytest.raises(ValueError, match="mixed_float16"):
        onnx_export.export_onnx(model, tmp_path / "model.onnx")


@pytest.mark.parametrize("opset_version", [0, -3, 13.0, True, "13"])
def test_export_onnx_rejects_bad_opset(tmp_path, opset_version):
    with pytest.raises(ValueError, match="opset_version"):
        onnx_export.export_onnx(
            residual_model(), tmp_path / "model.onnx",
            opset_version=opset_version,
        )


# ---------------------------------------------------------------------------
# Verification errors.


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A residual model and its ONNX file, shared by the error tests."""
    if _MISSING:
        pytest.skip(needs_onnx.kwargs["reason"])
    model = residual_model()
    path = onnx_export.export_onnx(
        model, tmp_path_factory.mktemp("onnx") / "model.onnx"
    )
    return model, path


def test_verify_onnx_rejects_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        onnx_export.verify_onnx(
            tmp_path / "absent.onnx", residual_model(), images(2)
        )


def test_verify_onnx_rejects_a_wrong_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"end in `\.onnx`"):
        onnx_export.verify_onnx(
            tmp_path / "model.tflite", residual_model(), images(2)
        )


@needs_onnx
@pytest.mark.parametrize("content", [b"", b"not an onnx model"])
def test_verify_onnx_rejects_an_invalid_file(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)

    with pytest.raises(ValueError, match="valid ONNX model file"):
        onnx_export.verify_onnx(path, residual_model(), images(2))


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((2, 4, 4, 3), "float32"), r"Expected `x` of shape"),
        (np.zeros((2, 8, 8), "float32"), r"Expected `x` of shape"),
        (np.zeros((0, *IMAGE_SHAPE), "float32"), "at least one sample"),
        ([["a"]], "numeric input arrays"),
    ],
)
def test_verify_onnx_rejects_inputs_not_matching_the_file(exported, x, match):
    model, path = exported
    with pytest.raises(ValueError, match=match):
        onnx_export.verify_onnx(path, model, x)


def test_verify_onnx_rejects_non_finite_inputs(exported):
    model, path = exported
    x = images(3)
    x[1, 2, 3, 0] = np.nan

    with pytest.raises(ValueError, match=r"x\[1, 2, 3, 0\] is nan"):
        onnx_export.verify_onnx(path, model, x)


@pytest.mark.parametrize(
    "keyword, value",
    [("atol", -1.0), ("rtol", -0.1), ("min_top1_agreement", 1.5),
     ("min_top1_agreement", float("nan"))],
)
def test_verify_onnx_rejects_bad_tolerances(exported, keyword, value):
    model, path = exported
    with pytest.raises(ValueError, match=keyword):
        onnx_export.verify_onnx(path, model, images(2), **{keyword: value})


def test_verify_onnx_raises_when_the_model_differs(exported):
    _, path = exported
    other = residual_model(seed=7)

    with pytest.raises(onnx_export.ONNXMismatchError, match="max_abs_error"):
        onnx_export.verify_onnx(path, other, images(20))


def test_measure_onnx_returns_the_mismatch_instead_of_raising(exported):
    _, path = exported

    check = onnx_export.measure_onnx(path, residual_model(seed=7), images(20))

    assert isinstance(check, litert.ParityCheck)
    assert not check.passed
    assert "disagrees with the Keras model on 20 samples" in check.message
    assert check.result.max_abs_error > 1e-4


def test_verify_onnx_raises_on_output_shape_mismatch(exported):
    _, path = exported
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    other = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES + 2)(x))

    with pytest.raises(onnx_export.ONNXMismatchError, match="different shapes"):
        onnx_export.verify_onnx(path, other, images(2))


# ---------------------------------------------------------------------------
# Benchmark.


def test_benchmark_onnx_reports_latency_and_size(exported):
    _, path = exported

    latency = onnx_export.benchmark_onnx(path, runs=7, warmup=1)

    assert isinstance(latency, litert.LatencyResult)
    assert latency.runs == 7
    assert latency.num_threads == 1
    assert 0 < latency.p10_ms <= latency.median_ms <= latency.p90_ms
    assert latency.size_bytes == path.stat().st_size
    assert 0 < latency.gzip_size_bytes


@pytest.mark.parametrize(
    "keyword, value",
    [("num_threads", 0), ("runs", 0), ("warmup", -1), ("runs", 2.5),
     ("runs", True)],
)
def test_benchmark_onnx_rejects_bad_arguments(exported, keyword, value):
    _, path = exported
    with pytest.raises(ValueError, match=keyword):
        onnx_export.benchmark_onnx(path, **{keyword: value})


# ---------------------------------------------------------------------------
# Missing optional packages.


def _hide_modules(monkeypatch, hidden: set[str]) -> None:
    find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        if name in hidden:
            return None
        return find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)


def test_export_onnx_names_the_extra_when_the_converter_is_missing(
    tmp_path, monkeypatch
):
    hidden = set(_CONVERTERS[keras.backend.backend()])
    _hide_modules(monkeypatch, hidden)

    with pytest.raises(ImportError, match=r'pip install -e "\.\[onnx\]"'):
        onnx_export.export_onnx(residual_model(), tmp_path / "model.onnx")
    assert _files(tmp_path) == []


def test_verify_onnx_names_the_extra_when_onnxruntime_is_missing(
    tmp_path, monkeypatch
):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"placeholder")
    _hide_modules(monkeypatch, {"onnxruntime"})

    with pytest.raises(ImportError, match=r"onnxruntime.*\.\[onnx\]"):
        onnx_export.verify_onnx(path, residual_model(), images(2))
    with pytest.raises(ImportError, match=r"onnxruntime.*\.\[onnx\]"):
        onnx_export.benchmark_onnx(path)
