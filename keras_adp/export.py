"""LiteRT (TFLite) export.

`export_tflite` converts a Keras model to a `.tflite` file, optionally
quantized (`"float16"`, `"dynamic"` or `"int8"`). Running the file
(`verify_tflite`, `measure_tflite`, `benchmark_tflite`) is
`keras_adp.litert`'s; those names are re-exported here.

Conversion path. When the installed Keras ships its own LiteRT exporter
(`model.export(path, format="litert", ...)`, present in Keras 3.15), every
mode goes through it: on the TensorFlow backend it writes a SavedModel
with a `training=False` serving endpoint, builds a
`tf.lite.TFLiteConverter.from_saved_model` and sets each extra keyword
argument (`optimizations`, `representative_dataset`,
`inference_input_type`, `target_spec={...}`, ...) on that converter, so all
four modes are expressible through it. With an older Keras 3 that lacks
the `"litert"` format, the same converter options are applied to
`tf.lite.TFLiteConverter.from_keras_model` instead.

Both paths restrict the converter to TFLite builtin ops (Keras' exporter
would otherwise also allow TensorFlow "select" ops, which the stand-alone
LiteRT interpreter cannot run), and `"int8"` to the integer-only builtins, so
a model that cannot be fully quantized fails at conversion rather than on
device.

Other backends. TFLite conversion needs TensorFlow: on JAX or PyTorch,
`export_tflite` saves the model as a `.keras` file and converts it in a
subprocess on the TensorFlow backend (`KERAS_BACKEND=tensorflow`), with the
same converter options (`keras_adp.tensorflow_subprocess`). The subprocess
runs this Python, or the one named by `KERAS_ADP_TENSORFLOW_PYTHON` when
this environment has no TensorFlow (e.g. a PyTorch-only one). The file is
then checked, verified and benchmarked here as on TensorFlow (LiteRT's
`ai-edge-litert` runs without TensorFlow). TensorFlow is imported only to
convert, never by `import keras_adp.export`.

Note that dynamic-range quantization (`"dynamic"`) only quantizes weight
tensors with at least 1024 elements (a fixed threshold of the converter);
in a very small model it may quantize nothing, and `verify_tflite` then
reports the file as `"float32"`.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Union

import keras
import numpy as np

from keras_adp import distribution
from keras_adp import keras_graph
from keras_adp import litert
from keras_adp import parity
from keras_adp import tensorflow_subprocess
from keras_adp import validation
from keras_adp.litert import LatencyResult
from keras_adp.litert import ParityCheck
from keras_adp.litert import TFLiteMismatchError
from keras_adp.litert import VerifyResult
from keras_adp.litert import benchmark_tflite
from keras_adp.litert import measure_tflite
from keras_adp.litert import one_line
from keras_adp.litert import verify_tflite

PathLike = Union[str, os.PathLike]

__all__ = [
    "export_tflite",
    "tensorflow_installed",
    "verify_tflite",
    "measure_tflite",
    "benchmark_tflite",
    "VerifyResult",
    "ParityCheck",
    "LatencyResult",
    "TFLiteMismatchError",
    "QUANTIZATION_MODES",
    "DEFAULT_CALIBRATION_SAMPLES",
]

QUANTIZATION_MODES = ("float32", "float16", "dynamic", "int8")
DEFAULT_CALIBRATION_SAMPLES = 200


def export_tflite(
    model: keras.Model,
    path: PathLike,
    *,
    quantization: str | None = None,
    representative_data: Any = None,
    int8_io: bool = False,
    num_calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
) -> pathlib.Path:
    """Convert a Keras model to a LiteRT (`.tflite`) file.

    The model is not modified. The file is written to a temporary file in
    the same directory, loaded in the LiteRT interpreter to check that it
    has the requested quantization, and renamed into place, so `path`
    either keeps its previous content or holds a complete, checked model;
    the temporary file is removed on any error.

    Args:
        model: a built single-input `keras.Model` (functional or Sequential).
        path: destination file; must end in `.tflite`. Its directory must
            exist.
        quantization: `None` or `"float32"` (no quantization), `"float16"`
            (weights stored as float16, computation in float32),
            `"dynamic"` (dynamic-range quantization: int8 weights, float
            activations) or `"int8"` (full integer quantization of weights
            and activations, calibrated on `representative_data`).
            Defaults to `None`.
        representative_data: calibration inputs, required for `"int8"` and
            rejected otherwise. A NumPy array of samples `(N, *input_shape)`
            (or a single sample `input_shape`), a `tf.data.Dataset` of `x`
            or `(x, y)` elements, batched or not, or any iterable of such
            elements. Up to `num_calibration_samples` samples are fed to the
            converter one at a time, with batch dimension 1, as float32;
            they must be finite. Defaults to `None`.
        int8_io: with `"int8"`, make the model's input and output tensors
            int8 (callers quantize inputs and dequantize outputs with the
            tensors' scale and zero point). If `False`, the int8 model keeps
            float32 input and output. Defaults to `False`.
        num_calibration_samples: maximum number of samples taken from
            `representative_data`. Defaults to `200`.

    Returns:
        The path of the written file, as a `pathlib.Path`.

    Raises:
        ValueError: if `path` does not end in `.tflite`, `quantization` is
            unknown, `"int8"` is requested without `representative_data`,
            `representative_data` or `int8_io` is given for another mode,
            the calibration samples do not match the model's input shape or
            hold NaN or inf, or the converted model does not load in LiteRT
            with the requested quantization (no file is written then).
        FileNotFoundError: if the directory of `path` does not exist.
        ImportError: on another backend than TensorFlow, if TensorFlow (the
            converter) is not installed in the converting Python (this one,
            or `$KERAS_ADP_TENSORFLOW_PYTHON`); it says what to install.
    """
    path, mode, samples = _check_export_arguments(
        model, path, quantization, representative_data, int8_io,
        num_calibration_samples,
    )

    def write(temp_name: str) -> None:
        if distribution.is_tensorflow():
            options = _converter_options(mode, samples, int8_io)
            _convert(model, temp_name, options)
        else:
            _convert_on_tensorflow(model, temp_name, mode, samples, int8_io)
        _check_converted(pathlib.Path(temp_name), path, mode, model)

    return parity.write_into_place(path, write)


def _check_export_arguments(
    model, path, quantization, representative_data, int8_io,
    num_calibration_samples,
) -> tuple[pathlib.Path, str, list[np.ndarray] | None]:
    """Check `export_tflite`'s arguments (see its `Raises`).

    Returns:
        `(path, mode, samples)`: the destination as a `pathlib.Path`, the
        canonical quantization mode and, for `"int8"`, the calibration
        samples (else None).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Expected `model` to be a `keras.Model`. "
            f"Received: model of type {type(model).__name__}."
        )
    path = litert.check_tflite_suffix(path)
    mode = _validate_quantization(quantization)
    if int8_io and mode != "int8":
        raise ValueError(
            "`int8_io=True` only applies to full integer quantization. "
            f"Received: int8_io=True with quantization={quantization!r}. "
            "Pass `quantization=\"int8\"` or leave `int8_io=False`."
        )
    if representative_data is not None and mode != "int8":
        raise ValueError(
            "`representative_data` is only used to calibrate "
            "`quantization=\"int8\"`. "
            "Received: representative_data with "
            f"quantization={quantization!r}. "
            "Pass `representative_data=None` for this mode."
        )
    if not isinstance(num_calibration_samples, int) or (
        num_calibration_samples < 1
    ):
        raise ValueError(
            "Expected `num_calibration_samples` to be an int >= 1. "
            f"Received: num_calibration_samples={num_calibration_samples!r}."
        )
    samples = None
    if mode == "int8":
        if representative_data is None:
            raise ValueError(
                "`quantization=\"int8\"` needs calibration inputs. "
                "Received: representative_data=None. Pass "
                "`representative_data=` a NumPy array of input samples "
                "`(N, *input_shape)`, a `tf.data.Dataset` of `x` or "
                "`(x, y)`, or an iterable of input samples (for example "
                "100-200 training images)."
            )
        samples = _calibration_samples(
            representative_data,
            _single_input_shape(model),
            num_calibration_samples,
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Expected the directory of `path` to exist. Received: "
            f"path={str(path)!r}, whose directory does not exist. Create it "
            "first."
        )
    return path, mode, samples


# ---------------------------------------------------------------------------
# Conversion.


def tensorflow_installed() -> bool:
    """Whether TensorFlow, which TFLite conversion needs, can be imported
    where the conversion runs: here on the TensorFlow backend, else in the
    interpreter named by `KERAS_ADP_TENSORFLOW_PYTHON` (default: this one).
    Checked without importing it."""
    if distribution.is_tensorflow():
        return True  # Keras itself runs on it.
    return not tensorflow_subprocess.missing(["tensorflow"])


# Run by `_convert_on_tensorflow` in a TensorFlow-backend subprocess:
# argv = .keras file, .tflite file, mode, samples .npy file or "", int8_io.
_CONVERT_SAVED_MODEL = """
import sys
import keras
import numpy as np
from keras_adp import export
keras_file, tflite_file, mode, samples_file, int8_io = sys.argv[1:]
model = keras.saving.load_model(keras_file, compile=False, safe_mode=False)
samples = list(np.load(samples_file)[:, None]) if samples_file else None
export._convert(
    model, tflite_file,
    export._converter_options(mode, samples, int8_io == "1"),
)
"""


def _convert_on_tensorflow(
    model: keras.Model, filename: str, mode: str,
    samples: list[np.ndarray] | None, int8_io: bool,
) -> None:
    """Write `model` converted to `filename`, from another Keras backend:
    saved as `.keras` and converted in a TensorFlow-backend subprocess
    (`keras_adp.tensorflow_subprocess`)."""
    if not tensorflow_installed():
        _raise_tensorflow_missing()
    with tensorflow_subprocess.saved_model_file(model) as (folder, keras_file):
        samples_file = ""
        if samples is not None:
            samples_file = os.path.join(folder, "samples.npy")
            np.save(samples_file, np.concatenate(samples))
        tensorflow_subprocess.run(
            _CONVERT_SAVED_MODEL,
            [keras_file, filename, mode, samples_file,
             "1" if int8_io else "0"],
            f"Converting the {keras.backend.backend()} model to TFLite",
        )


def _raise_tensorflow_missing() -> None:
    """The `ImportError` of a conversion without TensorFlow to run it."""
    variable = tensorflow_subprocess.PYTHON_VARIABLE
    interpreter = tensorflow_subprocess.python()
    if interpreter == sys.executable:
        distribution.import_tensorflow(
            "TFLite conversion (the LiteRT converter is TensorFlow's)"
        )
    raise ImportError(
        "TFLite conversion (the LiteRT converter is TensorFlow's) needs "
        f"TensorFlow in {variable}={interpreter}, which cannot import it. "
        f"Fix: point {variable} at a Python with TensorFlow and keras-adp's "
        "dependencies (e.g. the environment of `pip install keras-adp`), or "
        "unset it to convert with this Python after `pip install "
        "tensorflow`."
    )


def _converter_options(
    mode: str, samples: list[np.ndarray] | None, int8_io: bool
) -> dict[str, Any]:
    """Converter attributes for `mode`, in Keras' `export(**kwargs)` form."""
    import tensorflow as tf  # Called on the TensorFlow backend only.

    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    if mode == "float32":
        return {"target_spec": {"supported_ops": [builtins]}}
    if mode == "float16":
        return {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "target_spec": {
                "supported_ops": [builtins],
                "supported_types": [tf.float16],
            },
        }
    if mode == "dynamic":
        return {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "target_spec": {"supported_ops": [builtins]},
        }

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for sample in samples:
            yield [sample]

    options = {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative_dataset,
        "target_spec": {
            "supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        },
    }
    if int8_io:
        options["inference_input_type"] = tf.int8
        options["inference_output_type"] = tf.int8
    return options


def _convert(model: keras.Model, filename: str, options: dict) -> None:
    """Write `model` converted with `options` to `filename`."""
    import tensorflow as tf  # Called on the TensorFlow backend only.

    if keras_graph.has_litert_exporter():
        model.export(filename, format="litert", verbose=False, **options)
        return
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    for name, value in options.items():
        if name == "target_spec":
            for spec_name, spec_value in value.items():
                setattr(converter.target_spec, spec_name, spec_value)
        else:
            setattr(converter, name, value)
    pathlib.Path(filename).write_bytes(converter.convert())


_CALIBRATION_HINT = (
    " Check that `representative_data` holds real, preprocessed model "
    "inputs that keep the model's activations within float32 range."
)


def _check_converted(
    written: pathlib.Path, path: pathlib.Path, mode: str, model: keras.Model
) -> None:
    """Raise unless `written` loads in LiteRT with the quantization `mode`.

    The converter can fall back silently: full integer calibration on
    unusable data may produce a float model, or one whose quantization
    scales are infinite and that LiteRT refuses to load.
    """
    try:
        interpreter = litert.open_interpreter(written)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"Converting the model to {str(path)!r} with "
            f"quantization={mode!r} produced a file that the LiteRT "
            f"interpreter cannot load ({one_line(error)}). No file was "
            "written." + _CALIBRATION_HINT * (mode == "int8")
        ) from error
    detected = litert.detect_quantization(interpreter)
    bad_scales = [
        detail["name"]
        for detail in interpreter.get_tensor_details()
        if not np.all(
            np.isfinite(detail["quantization_parameters"]["scales"])
        )
    ]
    del interpreter  # Release the file before it is renamed or removed.
    accepted = {mode}
    if mode == "dynamic":
        # Documented: tensors under 1024 elements are never quantized.
        accepted.add("float32")
    if mode == "float16" and not model.weights:
        accepted.add("float32")  # Nothing to store as float16.
    if detected not in accepted:
        raise ValueError(
            f"Expected the converted model to have quantization={mode!r}. "
            f"Received: a model that LiteRT reads as {detected!r}; the "
            "converter fell back without an error, so nothing was written "
            f"to {str(path)!r}." + _CALIBRATION_HINT * (mode == "int8")
        )
    if bad_scales:
        raise ValueError(
            f"Converting the model to {str(path)!r} with "
            f"quantization={mode!r} gave tensors with non-finite "
            f"quantization scales ({', '.join(bad_scales[:3])}). No file "
            "was written." + _CALIBRATION_HINT
        )


def _validate_quantization(quantization: str | None) -> str:
    """Return the canonical mode name for `quantization`."""
    if quantization is None:
        return "float32"
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            "Expected `quantization` to be None or one of "
            f"{', '.join(repr(mode) for mode in QUANTIZATION_MODES)}. "
            f"Received: quantization={quantization!r}."
        )
    return quantization


def _single_input_shape(model: keras.Model) -> tuple[int | None, ...]:
    """The input shape (batch axis included) of a single-input model."""
    return tuple(parity.single_model_input(model).shape)


def _calibration_samples(
    data: Any, input_shape: tuple[int | None, ...], limit: int
) -> list[np.ndarray]:
    """Up to `limit` float32 samples of shape `(1, *input_shape[1:])`."""
    if validation.is_dataset(data):  # A tf.data.Dataset.
        elements: Iterable = data.as_numpy_iterator()
    elif isinstance(data, np.ndarray):
        elements = [data]
    elif isinstance(data, Iterable):
        elements = data
    else:
        raise ValueError(
            "Expected `representative_data` to be a NumPy array, a "
            "`tf.data.Dataset` or an iterable of input samples. "
            f"Received: {type(data).__name__}."
        )

    sample_shape = input_shape[1:]
    samples: list[np.ndarray] = []
    for position, element in enumerate(elements):
        if isinstance(element, (tuple, list)):
            element = element[0]  # (x, y), (x,) or [x]
        if isinstance(element, dict):
            raise ValueError(
                "Expected `representative_data` elements to be input "
                "arrays or `(x, y)` tuples. Received: a dict element. Map "
                "the dataset to its input array first."
            )
        batch = litert.as_float32(element, "representative_data")
        unbatched = batch.ndim == len(sample_shape)
        if unbatched:
            batch = batch[np.newaxis]
        if batch.ndim != len(sample_shape) + 1 or not litert.shape_matches(
            batch.shape[1:], sample_shape
        ):
            raise ValueError(
                "Expected `representative_data` samples of shape "
                f"{sample_shape} (or batches of them), matching the model "
                f"input. Received: an element of shape {batch.shape}."
            )
        batch = batch[: limit - len(samples)]
        # Non-finite calibration values give the converter undefined
        # quantization scales: inf crashes the process, NaN can silently
        # yield an unquantized model. Only the samples used are checked.
        bad = litert.first_non_finite(batch)
        if bad is not None:
            if unbatched:
                bad = bad[1:]
            if isinstance(data, np.ndarray):
                where = f"representative_data{list(bad)}"
            else:
                where = (
                    f"element {position} of representative_data, at index "
                    f"{list(bad)},"
                )
            raise ValueError(
                "Expected `representative_data` to hold finite values "
                "(NaN and inf make the int8 quantization ranges undefined). "
                f"Received: {where} is {batch[(0,) * unbatched + bad]}. "
                "Remove or repair the non-finite samples before exporting."
            )
        for sample in batch:
            samples.append(sample[np.newaxis])
        if len(samples) == limit:
            return samples
    if not samples:
        raise ValueError(
            "Expected `representative_data` to hold at least one input "
            "sample. Received: an empty collection."
        )
    return samples
