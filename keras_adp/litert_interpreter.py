"""Running a `.tflite` file in the LiteRT interpreter.

Opening a file (`load_interpreter` names the file in its errors), reading
its single input and output and its quantization (`detect_quantization`),
running one sample with integer inputs quantized and outputs dequantized
(`invoke_one`), and the `.tflite` path checks shared by `keras_adp.litert`
(parity and latency) and `keras_adp.export` (conversion). The
format-independent helpers (`as_float32`, `first_non_finite`,
`shape_matches`, `one_line`) are `keras_adp.parity`'s, re-exported here.
"""

from __future__ import annotations

import pathlib

import numpy as np

from keras_adp import parity
from keras_adp.parity import PathLike
from keras_adp.parity import as_float32
from keras_adp.parity import check_suffix
from keras_adp.parity import existing_file
from keras_adp.parity import first_non_finite
from keras_adp.parity import one_line
from keras_adp.parity import shape_matches

__all__ = [
    "PathLike",
    "open_interpreter",
    "load_interpreter",
    "single_io_details",
    "detect_quantization",
    "invoke_one",
    "random_input",
    "existing_tflite_path",
    "check_tflite_suffix",
    "as_float32",
    "first_non_finite",
    "shape_matches",
    "one_line",
]


def load_interpreter(path: pathlib.Path, num_threads: int | None = None):
    """A LiteRT interpreter for `path`, with a `ValueError` naming the file
    when it is not a model LiteRT can run.

    Args:
        path: an existing `.tflite` file.
        num_threads: interpreter threads, or None for LiteRT's default.
            Defaults to `None`.

    Returns:
        The interpreter, its tensors allocated.
    """
    try:
        return open_interpreter(path, num_threads)
    except ValueError as error:
        # The flatbuffer failed verification (or the file is empty).
        raise ValueError(
            f"Expected a valid TFLite model file. Received: "
            f"path={str(path)!r}, which is not a valid TFLite model "
            f"({one_line(error)}). Write it with "
            "`export_tflite`."
        ) from error
    except RuntimeError as error:
        # A valid model whose tensors could not be prepared.
        raise ValueError(
            f"The LiteRT interpreter cannot run the model in "
            f"{str(path)!r}: {one_line(error)}. Re-export it "
            "with `export_tflite`."
        ) from error


def open_interpreter(path: pathlib.Path, num_threads: int | None = None):
    """A LiteRT `Interpreter` for `path` with its tensors allocated; LiteRT's
    own errors (`ValueError`, `RuntimeError`) pass through."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def single_io_details(interpreter, path: pathlib.Path) -> tuple[dict, dict]:
    """The input and output details of a single-input, single-output model;
    a `ValueError` naming `path` otherwise."""
    return parity.single_input_output(
        interpreter.get_input_details(), interpreter.get_output_details(),
        path, "a LiteRT model",
    )


def detect_quantization(interpreter) -> str:
    """Classify a loaded model as float32, float16, dynamic or int8.

    Full integer models compute in int8: some operator outputs an int8
    tensor. Dynamic-range models only store int8 weights. Float16 models
    store float16 weights that are dequantized at load time.
    """
    if interpreter.get_input_details()[0]["dtype"] in (np.int8, np.uint8):
        return "int8"
    tensors = {
        detail["index"]: detail for detail in interpreter.get_tensor_details()
    }
    dtypes = {detail["dtype"] for detail in tensors.values()}
    integer_types = {np.int8, np.uint8}
    if dtypes & integer_types:
        try:
            operators = interpreter._get_ops_details()
        except AttributeError:
            # Without the (private) operator listing, look for the QUANTIZE
            # output of a full integer model: an int8 copy of its input.
            input_shape = tuple(interpreter.get_input_details()[0]["shape"])
            return (
                "int8"
                if any(
                    detail["dtype"] in integer_types
                    and tuple(detail["shape"]) == input_shape
                    for detail in tensors.values()
                )
                else "dynamic"
            )
        for operator in operators:
            if operator["op_name"] == "DELEGATE":
                continue
            for index in operator["outputs"]:
                if index in tensors and tensors[index]["dtype"] in (
                    integer_types
                ):
                    return "int8"
        return "dynamic"
    if np.float16 in dtypes:
        return "float16"
    return "float32"


def invoke_one(
    interpreter, input_detail: dict, output_detail: dict, sample: np.ndarray
) -> np.ndarray:
    """Run one sample (no batch axis); return the float output sample."""
    batch = sample[np.newaxis]
    if tuple(input_detail["shape"]) != batch.shape:
        interpreter.resize_tensor_input(input_detail["index"], batch.shape)
        interpreter.allocate_tensors()
        input_detail["shape"] = np.array(batch.shape)
    interpreter.set_tensor(
        input_detail["index"], _quantize(batch, input_detail)
    )
    interpreter.invoke()
    output = interpreter.get_tensor(output_detail["index"])
    return _dequantize(output, output_detail)[0]


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        raise ValueError(
            f"Expected integer input tensor {detail['name']!r} to carry a "
            "quantization scale. Received: scale=0. Re-export the model with "
            "`export_tflite(..., quantization=\"int8\")`."
        )
    info = np.iinfo(dtype)
    quantized = np.round(values / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(np.dtype(detail["dtype"]), np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def random_input(input_detail: dict, seed: int) -> np.ndarray:
    """A seeded input of the tensor's shape and dtype: uniform in `[0, 1)`
    for floats, over the full range for integers."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(size) for size in input_detail["shape"])
    dtype = np.dtype(input_detail["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(
            info.min, info.max, size=shape, endpoint=True
        ).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def existing_tflite_path(path: PathLike) -> pathlib.Path:
    """`path` as a `pathlib.Path`, if it names an existing `.tflite` file."""
    return existing_file(path, ".tflite", "export_tflite")


def check_tflite_suffix(path: PathLike) -> pathlib.Path:
    """`path` as a `pathlib.Path`, if it ends in `.tflite`."""
    return check_suffix(path, ".tflite")
