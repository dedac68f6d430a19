"""Tests for keras_adp.export: LiteRT export, verification and benchmarking."""

from __future__ import annotations

import itertools
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_adp import export
from keras_adp import keras_graph
from keras_adp import litert

IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 3


# ---------------------------------------------------------------------------
# Model factories and data.


def conv_bn_relu_pool_model(filters: int = 8, seed: int = 0) -> keras.Model:
    """Conv-BN-ReLU-pool classifier; fewer filters stands in for pruned."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Conv2D(filters, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs)


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
    return keras.Model(inputs, outputs)


def conv_flatten_dense_model(seed: int = 0) -> keras.Model:
    """Its Dense kernel (4 * 4 * 4 x 16 = 1024 weights) is large enough for
    dynamic-range quantization, which skips tensors under 1024 elements."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    return keras.Model(inputs, outputs)


def separable_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images with a bright 4x4 patch whose position is the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=count)
    images = rng.uniform(0.0, 0.3, size=(count, *IMAGE_SHAPE))
    corners = [(0, 0), (0, 4), (4, 2)]
    for image, label in zip(images, labels):
        row, col = corners[label]
        image[row:row + 4, col:col + 4, :] += 0.7
    return images.astype("float32"), labels


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x_train, y_train = separable_images(600, seed=1)
    x_test, y_test = separable_images(200, seed=2)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test,
            "y_test": y_test}


def _train(model: keras.Model, data: dict) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(data["x_train"], data["y_train"], epochs=5, batch_size=32,
              verbose=0)
    return model


@pytest.fixture(scope="module")
def trained_models(data) -> dict[str, keras.Model]:
    """A trained full CNN and a trained narrower ("pruned") one."""
    return {
        "full": _train(conv_bn_relu_pool_model(filters=8, seed=0), data),
        "pruned": _train(conv_bn_relu_pool_model(filters=3, seed=1), data),
    }


def _no_temporary_files(directory) -> bool:
    return all(not name.startswith(".") for name in os.listdir(directory))


# ---------------------------------------------------------------------------
# Export and verification.


EXPECTED_DETECTION = {
    None: {"float32"},
    "float16": {"float16"},
    # These CNNs have no weight tensor of >= 1024 elements, so the converter's
    # dynamic-range pass may leave every weight in float32.
    "dynamic": {"dynamic", "float32"},
    "int8": {"int8"},
}


@pytest.mark.parametrize("model_name", ["full", "pruned"])
@pytest.mark.parametrize("quantization", [None, "float16", "dynamic", "int8"])
def test_export_tflite_output_verifies_for_every_mode(
    tmp_path, data, trained_models, model_name, quantization
):
    model = trained_models[model_name]
    representative = data["x_train"] if quantization == "int8" else None
    path = export.export_tflite(
        model,
        tmp_path / "model.tflite",
        quantization=quantization,
        representative_data=representative,
    )

    assert path == tmp_path / "model.tflite"
    assert path.stat().st_size > 0
    assert _no_temporary_files(tmp_path)
    result = export.verify_tflite(path, model, data["x_test"])
    assert result.quantization in EXPECTED_DETECTION[quantization]
    assert result.num_samples == len(data["x_test"])
    assert 0.0 <= result.top1_agreement <= 1.0
    if quantization != "int8":
        assert result.max_abs_error <= 1e-2
        assert result.top1_agreement >= 0.99


@pytest.mark.parametrize("int8_io", [False, True])
def test_int8_top1_agreement_with_trained_float_model_is_at_least_98_percent(
    tmp_path, data, trained_models, int8_io
):
    model = trained_models["full"]
    path = export.export_tflite(
        model,
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data=data["x_train"],
        int8_io=int8_io,
    )

    result = export.verify_tflite(
        path, model, data["x_test"], min_top1_agreement=0.98
    )
    assert result.quantization == "int8"
    assert result.top1_agreement >= 0.98
    assert result.min_top1_agreement == 0.98
    float_predictions = np.argmax(model.predict(data["x_test"], verbose=0), -1)
    assert np.mean(float_predictions == data["y_test"]) >= 0.95


@pytest.mark.parametrize(
    "int8_io, expected_dtype", [(False, np.float32), (True, np.int8)]
)
def test_export_tflite_int8_io_sets_input_and_output_types(
    tmp_path, data, trained_models, int8_io, expected_dtype
):
    path = export.export_tflite(
        trained_models["pruned"],
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data=data["x_train"][:20],
        int8_io=int8_io,
    )

    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["dtype"] == expected_dtype
    assert interpreter.get_output_details()[0]["dtype"] == expected_dtype


@pytest.mark.parametrize("quantization", [None, "float16", "int8"])
def test_residual_model_with_add_converts_and_verifies(
    tmp_path, data, quantization
):
    model = residual_model()
    path = export.export_tflite(
        model,
        tmp_path / "residual.tflite",
        quantization=quantization,
        representative_data=(
            data["x_train"][:50] if quantization == "int8" else None
        ),
    )

    result = export.verify_tflite(path, model, data["x_test"][:50])
    assert result.quantization == (quantization or "float32")
    assert result.num_samples == 50


def test_conv_flatten_dense_model_converts_and_verifies(tmp_path, data):
    model = conv_flatten_dense_model()
    path = export.export_tflite(
        model, tmp_path / "flatten.tflite", quantization="float32"
    )

    result = export.verify_tflite(path, model, data["x_test"][:50])
    assert result.quantization == "float32"
    assert result.max_abs_error <= 1e-4


def test_dynamic_quantization_stores_large_dense_kernel_as_int8(
    tmp_path, data
):
    model = conv_flatten_dense_model()
    float_path = export.export_tflite(model, tmp_path / "float.tflite")
    dynamic_path = export.export_tflite(
        model, tmp_path / "dynamic.tflite", quantization="dynamic"
    )

    result = export.verify_tflite(dynamic_path, model, data["x_test"][:50])
    assert result.quantization == "dynamic"
    assert result.atol == 1e-1
    assert dynamic_path.stat().st_size < float_path.stat().st_size


class _InterpreterWithoutOpsDetails:
    """Exposes only the public interpreter methods `_detect_quantization`
    uses, as an interpreter without `_get_ops_details` would."""

    def __init__(self, path):
        self._interpreter = Interpreter(model_path=str(path))
        self._interpreter.allocate_tensors()

    def get_input_details(self):
        return self._interpreter.get_input_details()

    def get_tensor_details(self):
        return self._interpreter.get_tensor_details()


def test_quantization_detection_without_ops_details_tells_int8_from_dynamic(
    tmp_path, data
):
    model = conv_flatten_dense_model()
    int8_path = export.export_tflite(
        model,
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data=data["x_train"][:20],
    )
    dynamic_path = export.export_tflite(
        model, tmp_path / "dynamic.tflite", quantization="dynamic"
    )

    assert litert.detect_quantization(
        _InterpreterWithoutOpsDetails(int8_path)
    ) == "int8"
    assert litert.detect_quantization(
        _InterpreterWithoutOpsDetails(dynamic_path)
    ) == "dynamic"


def test_verify_tflite_accepts_a_single_unbatched_sample(
    tmp_path, data, trained_models
):
    model = trained_models["pruned"]
    path = export.export_tflite(model, tmp_path / "model.tflite")

    result = export.verify_tflite(path, model, data["x_test"][0])
    assert result.num_samples == 1


def test_export_tflite_does_not_mutate_model(tmp_path, data):
    model = conv_bn_relu_pool_model(filters=4)
    weights_before = [w.copy() for w in model.get_weights()]
    config_before = model.to_json()
    trainable_before = [layer.trainable for layer in model.layers]

    export.export_tflite(
        model,
        tmp_path / "model.tflite",
        quantization="int8",
        representative_data=data["x_train"][:10],
    )

    assert model.to_json() == config_before
    assert [layer.trainable for layer in model.layers] == trainable_before
    for before, after in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_export_tflite_keeps_previous_file_when_conversion_fails(
    tmp_path, monkeypatch
):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous model")

    def failing_convert(model, filename, options):
        with open(filename, "wb") as file:
            file.write(b"partial")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(export, "_convert", failing_convert)
    with pytest.raises(RuntimeError, match="conversion failed"):
        export.export_tflite(conv_bn_relu_pool_model(filters=2), path)

    assert path.read_bytes() == b"previous model"
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"]


def test_export_tflite_replaces_existing_file(tmp_path, data):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"stale")
    model = conv_bn_relu_pool_model(filters=2)

    export.export_tflite(model, str(path))

    assert path.read_bytes() != b"stale"
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"]
    export.verify_tflite(path, model, data["x_test"][:10])


class _FailingConverter:
    """Stands in for `tf.lite.TFLiteConverter`: takes every setting, then
    fails in `convert()` as a real conversion error would."""

    def __init__(self, *args, **kwargs):
        self.target_spec = types.SimpleNamespace(
            supported_ops=None, supported_types=None
        )
        self.optimizations = None
        self.representative_dataset = None
        self.inference_input_type = None
        self.inference_output_type = None
        self.experimental_enable_resource_variables = None

    def convert(self):
        raise RuntimeError("converter failed")


@pytest.mark.parametrize("keras_exporter", [True, False])
@pytest.mark.parametrize("quantization", [None, "float16", "dynamic", "int8"])
def test_export_tflite_leaves_no_temporary_file_when_the_converter_raises(
    tmp_path, monkeypatch, data, quantization, keras_exporter
):
    monkeypatch.setattr(
        keras_graph, "has_litert_exporter", lambda: keras_exporter
    )
    monkeypatch.setattr(
        tf.lite.TFLiteConverter, "from_saved_model", _FailingConverter
    )
    monkeypatch.setattr(
        tf.lite.TFLiteConverter, "from_keras_model", _FailingConverter
    )

    with pytest.raises(RuntimeError, match="converter failed"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization=quantization,
            representative_data=(
                data["x_train"][:4] if quantization == "int8" else None
            ),
        )

    assert os.listdir(tmp_path) == []


def _float32_options(mode, samples, int8_io):
    return {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}


def test_export_tflite_raises_when_int8_conversion_silently_gives_float32(
    tmp_path, monkeypatch, data
):
    # The converter's silent fallback, reproduced by converting unquantized.
    monkeypatch.setattr(export, "_converter_options", _float32_options)
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous model")

    with pytest.raises(
        ValueError,
        match=r"quantization='int8'\. Received: .* reads as 'float32'",
    ) as info:
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            path,
            quantization="int8",
            representative_data=data["x_train"][:4],
        )

    assert "representative_data" in str(info.value)
    assert path.read_bytes() == b"previous model"
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"]


def test_export_tflite_raises_when_the_written_file_does_not_load(
    tmp_path, monkeypatch
):
    def garbage_convert(model, filename, options):
        with open(filename, "wb") as file:
            file.write(b"not a flatbuffer")

    monkeypatch.setattr(export, "_convert", garbage_convert)

    with pytest.raises(ValueError, match="cannot load .*No file was written"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2), tmp_path / "model.tflite"
        )

    assert os.listdir(tmp_path) == []


class _InterpreterWithInfiniteScale:
    """A loaded interpreter whose first quantized tensor reports scale inf."""

    def __init__(self, interpreter):
        self._interpreter = interpreter

    def __getattr__(self, name):
        return getattr(self._interpreter, name)

    def get_tensor_details(self):
        details = self._interpreter.get_tensor_details()
        for detail in details:
            if detail["quantization_parameters"]["scales"].size:
                detail["quantization_parameters"]["scales"] = np.array(
                    [np.inf], dtype=np.float32
                )
                break
        return details


def test_export_tflite_raises_on_non_finite_quantization_scales(
    tmp_path, monkeypatch, data
):
    open_interpreter = litert.open_interpreter
    monkeypatch.setattr(
        litert,
        "open_interpreter",
        lambda *args: _InterpreterWithInfiniteScale(open_interpreter(*args)),
    )

    with pytest.raises(ValueError, match="non-finite quantization scales"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="int8",
            representative_data=data["x_train"][:4],
        )

    assert os.listdir(tmp_path) == []


def test_export_tflite_float16_of_a_model_without_weights_is_accepted(
    tmp_path,
):
    inputs = keras.Input(IMAGE_SHAPE)
    outputs = keras.layers.Softmax()(
        keras.layers.GlobalAveragePooling2D()(inputs)
    )

    path = export.export_tflite(
        keras.Model(inputs, outputs),
        tmp_path / "model.tflite",
        quantization="float16",
    )

    assert path.stat().st_size > 0


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_converter_fallback_without_keras_litert_export_verifies(
    tmp_path, monkeypatch, data, trained_models, quantization
):
    monkeypatch.setattr(keras_graph, "has_litert_exporter", lambda: False)
    model = trained_models["full"]
    path = export.export_tflite(
        model,
        tmp_path / "fallback.tflite",
        quantization=quantization,
        representative_data=(
            data["x_train"] if quantization == "int8" else None
        ),
        int8_io=quantization == "int8",
    )

    result = export.verify_tflite(path, model, data["x_test"])
    assert result.quantization == (quantization or "float32")


def test_keras_litert_export_is_detected_on_installed_keras():
    assert keras_graph.has_litert_exporter()


# ---------------------------------------------------------------------------
# Representative data forms.


def _representative_forms(x: np.ndarray, y: np.ndarray) -> dict:
    return {
        "numpy_batch": lambda: x[:16],
        "dataset_of_x_y_batches": lambda: tf.data.Dataset.from_tensor_slices(
            (x[:16], y[:16])
        ).batch(4),
        "dataset_of_single_x": lambda: tf.data.Dataset.from_tensor_slices(
            x[:16]
        ),
        "generator_of_samples": lambda: (sample for sample in x[:16]),
        "list_of_tf_style_batches": lambda: [[x[i:i + 1]] for i in range(16)],
    }


@pytest.mark.parametrize(
    "form",
    ["numpy_batch", "dataset_of_x_y_batches", "dataset_of_single_x",
     "generator_of_samples", "list_of_tf_style_batches"],
)
def test_export_tflite_int8_accepts_representative_data_form(
    tmp_path, data, trained_models, form
):
    representative = _representative_forms(
        data["x_train"], data["y_train"]
    )[form]()
    model = trained_models["pruned"]

    path = export.export_tflite(
        model,
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data=representative,
    )

    result = export.verify_tflite(
        path, model, data["x_test"][:50], min_top1_agreement=0.0
    )
    assert result.quantization == "int8"


def test_calibration_samples_stops_after_limit_on_infinite_iterable(data):
    sample = data["x_train"][0]
    samples = export._calibration_samples(
        itertools.repeat(sample), (None, *IMAGE_SHAPE), limit=3
    )

    assert len(samples) == 3
    for taken in samples:
        assert taken.shape == (1, *IMAGE_SHAPE)
        assert taken.dtype == np.float32


def test_calibration_samples_splits_batches_into_single_samples(data):
    samples = export._calibration_samples(
        data["x_train"][:10], (None, *IMAGE_SHAPE), limit=200
    )

    assert len(samples) == 10
    np.testing.assert_array_equal(samples[3][0], data["x_train"][3])


def _conversion_must_not_run(model, filename, options):
    pytest.fail("the converter ran on non-finite calibration data")


@pytest.mark.parametrize("bad_value", [np.inf, -np.inf, np.nan])
def test_export_tflite_int8_rejects_non_finite_representative_data(
    tmp_path, monkeypatch, data, bad_value
):
    # inf used to crash the process inside the converter: the check must
    # come before it runs.
    monkeypatch.setattr(export, "_convert", _conversion_must_not_run)
    representative = data["x_train"][:8].copy()
    representative[3, 0, 5, 0] = bad_value

    with pytest.raises(
        ValueError,
        match=rf"representative_data\[3, 0, 5, 0\] is {bad_value}",
    ):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="int8",
            representative_data=representative,
        )

    assert os.listdir(tmp_path) == []


def test_export_tflite_names_the_element_holding_nan_in_an_iterable(
    tmp_path, monkeypatch, data
):
    monkeypatch.setattr(export, "_convert", _conversion_must_not_run)
    samples = list(data["x_train"][:4].copy())
    samples[2][1, 5, 0] = np.nan

    with pytest.raises(
        ValueError,
        match=r"element 2 of representative_data, at index \[1, 5, 0\], "
        r"is nan",
    ):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="int8",
            representative_data=samples,
        )


def test_calibration_samples_ignores_non_finite_values_beyond_the_limit(data):
    representative = data["x_train"][:10].copy()
    representative[5:] = np.inf

    samples = export._calibration_samples(
        representative, (None, *IMAGE_SHAPE), limit=5
    )

    assert len(samples) == 5


def test_calibration_samples_rejects_non_numeric_elements():
    with pytest.raises(ValueError, match="numeric input arrays"):
        export._calibration_samples(
            [np.array(["a"] * 3)], (None, 3), limit=5
        )


# ---------------------------------------------------------------------------
# Error paths.


def test_export_tflite_rejects_path_without_tflite_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"`\.tflite`.*path=.*model\.tfl'"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2), tmp_path / "model.tfl"
        )


def test_export_tflite_int8_without_representative_data_says_how_to_supply(
    tmp_path,
):
    with pytest.raises(ValueError, match="representative_data=") as info:
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="int8",
        )
    assert "tf.data.Dataset" in str(info.value)
    assert not os.listdir(tmp_path)


def test_export_tflite_rejects_unknown_quantization(tmp_path):
    with pytest.raises(ValueError, match=r"Received: quantization='int4'"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="int4",
        )


def test_export_tflite_rejects_int8_io_without_int8_quantization(tmp_path):
    with pytest.raises(ValueError, match="int8_io=True"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="float16",
            int8_io=True,
        )


def test_export_tflite_rejects_representative_data_for_float_mode(
    tmp_path, data
):
    with pytest.raises(ValueError, match="only used to calibrate"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            representative_data=data["x_train"],
        )


def test_export_tflite_rejects_representative_samples_of_wrong_shape(
    tmp_path,
):
    wrong = np.zeros((4, 16, 16, 3), dtype="float32")
    with pytest.raises(ValueError, match=r"\(8, 8, 3\).*\(4, 16, 16, 3\)"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="int8",
            representative_data=wrong,
        )


def test_export_tflite_rejects_empty_representative_data(tmp_path):
    with pytest.raises(ValueError, match="at least one input sample"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="int8",
            representative_data=[],
        )


def test_export_tflite_rejects_non_positive_calibration_sample_count(
    tmp_path, data
):
    with pytest.raises(ValueError, match="num_calibration_samples=0"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "model.tflite",
            quantization="int8",
            representative_data=data["x_train"],
            num_calibration_samples=0,
        )


def test_export_tflite_rejects_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory"):
        export.export_tflite(
            conv_bn_relu_pool_model(filters=2),
            tmp_path / "missing" / "model.tflite",
        )


def test_export_tflite_rejects_non_model():
    with pytest.raises(ValueError, match="keras.Model"):
        export.export_tflite(object(), "model.tflite")


@pytest.fixture(scope="module")
def float_file(tmp_path_factory, trained_models):
    path = tmp_path_factory.mktemp("float") / "full.tflite"
    return export.export_tflite(trained_models["full"], path)


def test_verify_tflite_raises_on_a_different_model(float_file, data):
    other = conv_bn_relu_pool_model(filters=8, seed=7)

    with pytest.raises(export.TFLiteMismatchError) as info:
        export.verify_tflite(float_file, other, data["x_test"][:20])

    message = str(info.value)
    assert "quantization: float32" in message
    assert "max_abs_error=" in message
    assert "atol=0.0001" in message


def test_measure_tflite_returns_a_mismatch_instead_of_raising(float_file, data):
    other = conv_bn_relu_pool_model(filters=8, seed=7)

    check = export.measure_tflite(float_file, other, data["x_test"][:20])

    assert not check.passed
    assert "quantization: float32" in check.message
    assert check.result.atol == 0.0001
    assert check.result.max_abs_error > 0.0001


def test_measure_tflite_passes_where_verify_tflite_does(float_file, trained_models, data):
    check = export.measure_tflite(
        float_file, trained_models["full"], data["x_test"][:20]
    )

    assert check.passed and check.message is None
    assert check.result == export.verify_tflite(
        float_file, trained_models["full"], data["x_test"][:20]
    )


def test_tflite_mismatch_error_is_a_value_error():
    assert issubclass(export.TFLiteMismatchError, ValueError)


def test_verify_tflite_raises_on_output_shape_mismatch(float_file, data):
    inputs = keras.Input(IMAGE_SHAPE)
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(inputs))
    other = keras.Model(inputs, outputs)

    with pytest.raises(export.TFLiteMismatchError, match="different shapes"):
        export.verify_tflite(float_file, other, data["x_test"][:5])


def test_verify_tflite_int8_raises_when_top1_agreement_is_low(
    tmp_path, data, trained_models
):
    path = export.export_tflite(
        trained_models["full"],
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data=data["x_train"],
    )
    # An untrained model agrees with the trained one on about a third.
    other = conv_bn_relu_pool_model(filters=8, seed=3)

    with pytest.raises(
        export.TFLiteMismatchError, match=r"quantization: int8.*top1_agreement"
    ):
        export.verify_tflite(path, other, data["x_test"])


def test_verify_tflite_explicit_atol_overrides_mode_default(
    tmp_path, data, trained_models
):
    model = trained_models["full"]
    path = export.export_tflite(
        model,
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data=data["x_train"],
    )

    default = export.verify_tflite(path, model, data["x_test"][:20])
    assert default.atol is None
    assert default.max_abs_error > 1e-6
    with pytest.raises(export.TFLiteMismatchError, match="atol=1e-06"):
        export.verify_tflite(path, model, data["x_test"][:20], atol=1e-6,
                             rtol=0.0)
    loose = export.verify_tflite(path, model, data["x_test"][:20], atol=1.0)
    assert loose.atol == 1.0


def test_verify_tflite_rejects_inputs_of_wrong_shape(float_file,
                                                     trained_models):
    with pytest.raises(ValueError, match=r"x with shape \(2, 4, 4, 3\)"):
        export.verify_tflite(
            float_file, trained_models["full"], np.zeros((2, 4, 4, 3))
        )


def test_verify_tflite_rejects_negative_tolerance(float_file, data,
                                                  trained_models):
    with pytest.raises(ValueError, match="atol=-1"):
        export.verify_tflite(
            float_file, trained_models["full"], data["x_test"][:2], atol=-1
        )


def test_verify_tflite_rejects_agreement_above_one(float_file, data,
                                                   trained_models):
    with pytest.raises(ValueError, match="min_top1_agreement=1.5"):
        export.verify_tflite(
            float_file, trained_models["full"], data["x_test"][:2],
            min_top1_agreement=1.5,
        )


def test_verify_tflite_rejects_missing_file(tmp_path, trained_models, data):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.verify_tflite(
            tmp_path / "absent.tflite", trained_models["full"], data["x_test"]
        )


def test_verify_tflite_rejects_path_without_tflite_suffix(tmp_path, data,
                                                          trained_models):
    with pytest.raises(ValueError, match=r"\.tflite"):
        export.verify_tflite(
            tmp_path / "model.h5", trained_models["full"], data["x_test"]
        )


@pytest.mark.parametrize("content", [b"not a flatbuffer", b""])
@pytest.mark.parametrize("function", ["verify_tflite", "benchmark_tflite"])
def test_loading_a_file_that_is_not_a_tflite_model_names_the_path(
    tmp_path, trained_models, data, function, content
):
    path = tmp_path / "x.tflite"
    path.write_bytes(content)
    arguments = {
        "verify_tflite": (trained_models["full"], data["x_test"][:2]),
        "benchmark_tflite": (),
    }[function]

    with pytest.raises(ValueError, match="not a valid TFLite model") as info:
        getattr(export, function)(path, *arguments)

    assert repr(str(path)) in str(info.value)


def test_verify_tflite_rejects_a_directory(tmp_path, trained_models, data):
    (tmp_path / "model.tflite").mkdir()

    with pytest.raises(ValueError, match="directory"):
        export.verify_tflite(
            tmp_path / "model.tflite", trained_models["full"], data["x_test"]
        )


def test_verify_tflite_rejects_non_finite_inputs(float_file, data,
                                                 trained_models):
    x = data["x_test"][:4].copy()
    x[1, 2, 3, 0] = np.nan

    with pytest.raises(ValueError, match=r"x\[1, 2, 3, 0\] is nan"):
        export.verify_tflite(float_file, trained_models["full"], x)


# ---------------------------------------------------------------------------
# Benchmark.


def test_benchmark_tflite_reports_positive_latency_and_file_size(float_file):
    result = export.benchmark_tflite(float_file, runs=10, warmup=2)

    assert result.runs == 10
    assert result.num_threads == 1
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.median_ms < 1000
    assert result.size_bytes == float_file.stat().st_size
    assert 0 < result.gzip_size_bytes < result.size_bytes


def test_benchmark_tflite_runs_integer_input_model(tmp_path, data,
                                                   trained_models):
    path = export.export_tflite(
        trained_models["pruned"],
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data=data["x_train"][:20],
        int8_io=True,
    )

    result = export.benchmark_tflite(path, num_threads=2, runs=5, warmup=0)

    assert result.num_threads == 2
    assert result.median_ms > 0
    assert result.size_bytes == path.stat().st_size


@pytest.mark.parametrize(
    "argument, value",
    [("num_threads", 0), ("runs", 0), ("warmup", -1), ("runs", 2.5)],
)
def test_benchmark_tflite_rejects_invalid_settings(float_file, argument,
                                                    value):
    with pytest.raises(ValueError, match=f"{argument}={value}"):
        export.benchmark_tflite(float_file, **{argument: value})


def test_benchmark_tflite_rejects_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.benchmark_tflite(tmp_path / "absent.tflite")
