"""Running exported `.tflite` files in the LiteRT interpreter: parity with
the Keras model they came from, and latency.

- `verify_tflite` runs the file and the Keras model on the same inputs and
  raises `TFLiteMismatchError` when they disagree beyond a per-mode
  tolerance; `measure_tflite` measures the same and returns a mismatch
  instead of raising it.
- `benchmark_tflite` times single-sample `invoke()` calls and reports the
  file size, raw and gzipped.

`keras_adp.export` converts models and re-exports these names.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
import statistics
import time
from typing import Any, Union

import keras
import numpy as np

__all__ = [
    "verify_tflite",
    "measure_tflite",
    "benchmark_tflite",
    "VerifyResult",
    "ParityCheck",
    "LatencyResult",
    "TFLiteMismatchError",
    # Shared with `keras_adp.export`:
    "one_line",
    "open_interpreter",
    "detect_quantization",
    "as_float32",
    "first_non_finite",
    "shape_matches",
    "check_tflite_suffix",
]

PathLike = Union[str, os.PathLike]

_KERAS_BATCH_SIZE = 64


class TFLiteMismatchError(ValueError):
    """Raised when a LiteRT model's outputs disagree with its Keras model."""


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Agreement between a `.tflite` file and the Keras model it came from.

    Attributes:
        max_abs_error: largest absolute difference between any LiteRT output
            element and the corresponding Keras output element (after
            dequantizing integer outputs).
        top1_agreement: fraction in `[0, 1]` of samples whose arg-max over
            the last output axis is the same in both models.
        num_samples: number of samples compared.
        quantization: quantization detected in the file: one of
            `"float32"`, `"float16"`, `"dynamic"`, `"int8"`.
        atol: absolute tolerance that was applied, or `None` if the
            element-wise check was skipped.
        rtol: relative tolerance that was applied (`0.0` if `atol` is
            `None`).
        min_top1_agreement: agreement threshold that was applied, or `None`
            if it was not checked.
    """

    max_abs_error: float
    top1_agreement: float
    num_samples: int
    quantization: str
    atol: float | None
    rtol: float
    min_top1_agreement: float | None


@dataclasses.dataclass(frozen=True)
class ParityCheck:
    """What `measure_tflite` returns.

    Attributes:
        result: the measured `VerifyResult`.
        message: why the file disagrees with its model beyond the
            thresholds, or `None` when it agrees.
    """

    result: VerifyResult
    message: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the file agrees with its model within the thresholds."""
        return self.message is None


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """Single-sample LiteRT latency and file size.

    Attributes:
        median_ms: median `invoke()` time in milliseconds.
        p10_ms: 10th percentile of `invoke()` time in milliseconds.
        p90_ms: 90th percentile of `invoke()` time in milliseconds.
        runs: number of timed `invoke()` calls.
        num_threads: interpreter threads used.
        size_bytes: size of the `.tflite` file in bytes.
        gzip_size_bytes: size of the file after gzip (level 9), in bytes.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    num_threads: int
    size_bytes: int
    gzip_size_bytes: int


@dataclasses.dataclass(frozen=True)
class _Tolerance:
    atol: float | None
    rtol: float
    min_top1_agreement: float | None


# Default verification tolerances by detected quantization. An output element
# passes when |litert - keras| <= atol + rtol * |keras| (`np.allclose`'s
# rule); `atol=None` skips the element-wise check. Integer modes are judged
# mainly by top-1 agreement, since their absolute error scales with the
# output range.
_DEFAULT_TOLERANCES = {
    "float32": _Tolerance(atol=1e-4, rtol=1e-4, min_top1_agreement=None),
    "float16": _Tolerance(atol=1e-2, rtol=1e-2, min_top1_agreement=None),
    "dynamic": _Tolerance(atol=1e-1, rtol=1e-1, min_top1_agreement=0.9),
    "int8": _Tolerance(atol=None, rtol=0.0, min_top1_agreement=0.9),
}


def verify_tflite(
    path: PathLike,
    model: keras.Model,
    x: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    min_top1_agreement: float | None = None,
) -> VerifyResult:
    """Check that a `.tflite` file computes what its Keras model computes.

    Each sample of `x` is run through the LiteRT interpreter with batch
    dimension 1 (integer inputs are quantized, integer outputs dequantized
    with the tensor's scale and zero point) and through
    `model(x, training=False)`.

    The check passes when every output element satisfies
    `|litert - keras| <= atol + rtol * |keras|` and the top-1 agreement is
    at least `min_top1_agreement`. Each unset threshold takes its default
    for the quantization detected in the file:

    | detected   | atol   | rtol   | min_top1_agreement |
    |------------|--------|--------|--------------------|
    | float32    | 1e-4   | 1e-4   | not checked        |
    | float16    | 1e-2   | 1e-2   | not checked        |
    | dynamic    | 1e-1   | 1e-1   | 0.9                |
    | int8       | not checked | - | 0.9                |

    Top-1 is the arg-max over the last output axis, so for a single-unit
    output it always agrees; pass `atol` to check such int8 models.

    Args:
        path: the `.tflite` file (single input, single output).
        model: the Keras model it was exported from.
        x: input samples, array-like of shape `(N, *input_shape)` or a
            single sample `input_shape`.
        atol: absolute tolerance; overrides the mode's default (and enables
            the element-wise check for int8). Defaults to `None`.
        rtol: relative tolerance; overrides the mode's default. Defaults to
            `None`.
        min_top1_agreement: required top-1 agreement in `[0, 1]`; overrides
            the mode's default. Defaults to `None`.

    Returns:
        A `VerifyResult` with the measured errors and applied thresholds.

    Raises:
        TFLiteMismatchError: if the outputs differ in shape or beyond the
            tolerances.
        ValueError: if the file is not a valid TFLite model or has several
            inputs or outputs, `x` does not match its input shape or holds
            NaN or inf, or a tolerance is negative.
        FileNotFoundError: if `path` does not exist.
    """
    check = measure_tflite(
        path, model, x, atol=atol, rtol=rtol,
        min_top1_agreement=min_top1_agreement,
    )
    if not check.passed:
        raise TFLiteMismatchError(check.message)
    return check.result


def measure_tflite(
    path: PathLike,
    model: keras.Model,
    x: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    min_top1_agreement: float | None = None,
) -> ParityCheck:
    """`verify_tflite`'s measurement, returning a mismatch instead of
    raising it.

    Arguments, defaults and the other errors are `verify_tflite`'s.

    Returns:
        A `ParityCheck`: the `VerifyResult` (measured errors and applied
        thresholds) and, when the outputs disagree beyond the thresholds,
        the message `verify_tflite` would raise.

    Raises:
        TFLiteMismatchError: if the outputs differ in shape (nothing to
            measure).
    """
    path = _existing_tflite_path(path)
    tolerance_args = {
        "atol": atol,
        "rtol": rtol,
        "min_top1_agreement": min_top1_agreement,
    }
    for name, value in tolerance_args.items():
        if value is not None and not value >= 0:
            raise ValueError(
                f"Expected `{name}` to be None or >= 0. "
                f"Received: {name}={value!r}."
            )
    if min_top1_agreement is not None and min_top1_agreement > 1:
        raise ValueError(
            "Expected `min_top1_agreement` to be a fraction in [0, 1]. "
            f"Received: min_top1_agreement={min_top1_agreement!r}."
        )

    interpreter = _load_interpreter(path)
    input_detail, output_detail = _single_io_details(interpreter, path)
    mode = detect_quantization(interpreter)
    samples = _verification_samples(x, input_detail)

    litert_outputs = np.stack(
        [
            _invoke_one(interpreter, input_detail, output_detail, sample)
            for sample in samples
        ]
    )
    keras_outputs = _keras_outputs(model, samples)
    if litert_outputs.shape != keras_outputs.shape:
        raise TFLiteMismatchError(
            f"The LiteRT model {str(path)!r} and the Keras model produce "
            "outputs of different shapes on the same inputs. Received: "
            f"LiteRT output shape {litert_outputs.shape}, Keras output "
            f"shape {keras_outputs.shape}. Check that the file was exported "
            "from this model."
        )

    default = _DEFAULT_TOLERANCES[mode]
    applied_atol = default.atol if atol is None else float(atol)
    applied_rtol = 0.0
    if applied_atol is not None:
        applied_rtol = default.rtol if rtol is None else float(rtol)
    applied_agreement = (
        default.min_top1_agreement
        if min_top1_agreement is None
        else float(min_top1_agreement)
    )

    difference = np.abs(litert_outputs - keras_outputs)
    max_abs_error = float(np.max(difference)) if difference.size else 0.0
    agreement = _top1_agreement(litert_outputs, keras_outputs)
    result = VerifyResult(
        max_abs_error=max_abs_error,
        top1_agreement=agreement,
        num_samples=len(samples),
        quantization=mode,
        atol=applied_atol,
        rtol=applied_rtol,
        min_top1_agreement=applied_agreement,
    )

    problems = []
    if applied_atol is not None:
        allowed = applied_atol + applied_rtol * np.abs(keras_outputs)
        if not np.all(difference <= allowed):
            problems.append(
                f"max_abs_error={max_abs_error:.6g} exceeds the tolerance "
                f"|litert - keras| <= atol + rtol * |keras| with "
                f"atol={applied_atol:g}, rtol={applied_rtol:g}"
            )
    if applied_agreement is not None and not agreement >= applied_agreement:
        problems.append(
            f"top1_agreement={agreement:.4f} is below the required "
            f"{applied_agreement:g}"
        )
    message = None
    if problems:
        message = (
            f"The LiteRT model {str(path)!r} (quantization: {mode}) "
            f"disagrees with the Keras model on {len(samples)} samples: "
            + "; ".join(problems)
            + f" (max_abs_error={max_abs_error:.6g}, "
            f"top1_agreement={agreement:.4f}). If this much difference is "
            f"expected for {mode} models, pass looser `atol`, `rtol` or "
            "`min_top1_agreement`; otherwise check that the file was "
            "exported from this model."
        )
    return ParityCheck(result=result, message=message)


def benchmark_tflite(
    path: PathLike,
    *,
    num_threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    seed: int = 0,
) -> LatencyResult:
    """Time single-sample inference of a `.tflite` file in LiteRT.

    The input is drawn once from a seeded generator (uniform in `[0, 1)`
    for float inputs, uniform over the full range for integer inputs) with
    the file's input shape (batch dimension 1). Each timed run measures one
    `interpreter.invoke()` with `time.perf_counter`, after `warmup`
    untimed runs.

    Args:
        path: the `.tflite` file (single input).
        num_threads: interpreter threads. Defaults to `1`.
        runs: number of timed runs. Defaults to `50`.
        warmup: number of untimed runs first. Defaults to `5`.
        seed: seed of the input generator. Defaults to `0`.

    Returns:
        A `LatencyResult` with the median and 10th/90th percentile latency in
        milliseconds and the raw and gzipped file size in bytes.

    Raises:
        ValueError: if `num_threads` or `runs` is < 1, `warmup` < 0, or the
            file is not a valid TFLite model or has several inputs.
        FileNotFoundError: if `path` does not exist.
    """
    path = _existing_tflite_path(path)
    for name, value, minimum in (
        ("num_threads", num_threads, 1),
        ("runs", runs, 1),
        ("warmup", warmup, 0),
    ):
        if not isinstance(value, int) or value < minimum:
            raise ValueError(
                f"Expected `{name}` to be an int >= {minimum}. "
                f"Received: {name}={value!r}."
            )

    data = path.read_bytes()
    interpreter = _load_interpreter(path, num_threads=num_threads)
    input_details = interpreter.get_input_details()
    if len(input_details) != 1:
        raise ValueError(
            "Expected a LiteRT model with a single input. Received: "
            f"{str(path)!r} with {len(input_details)} inputs."
        )
    input_detail = input_details[0]
    interpreter.set_tensor(
        input_detail["index"], _random_input(input_detail, seed)
    )
    for _ in range(warmup):
        interpreter.invoke()
    timings_ms = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        timings_ms.append((time.perf_counter() - start) * 1e3)

    p10_ms, p90_ms = np.percentile(timings_ms, [10, 90])
    return LatencyResult(
        median_ms=float(statistics.median(timings_ms)),
        p10_ms=float(p10_ms),
        p90_ms=float(p90_ms),
        runs=runs,
        num_threads=num_threads,
        size_bytes=len(data),
        gzip_size_bytes=len(gzip.compress(data, compresslevel=9)),
    )


def _load_interpreter(path: pathlib.Path, num_threads: int | None = None):
    """A LiteRT interpreter for `path`, with a `ValueError` naming the file
    when it is not a model LiteRT can run."""
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
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _single_io_details(interpreter, path: pathlib.Path) -> tuple[dict, dict]:
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Expected a LiteRT model with a single input and a single "
            f"output. Received: {str(path)!r} with {len(inputs)} inputs and "
            f"{len(outputs)} outputs."
        )
    return inputs[0], outputs[0]


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


def _verification_samples(x: Any, input_detail: dict) -> np.ndarray:
    """`x` as a float32 array `(N, *sample_shape)` matching the input."""
    samples = as_float32(x, "x")
    signature = tuple(
        int(size) for size in input_detail.get(
            "shape_signature", input_detail["shape"]
        )
    )
    sample_shape = signature[1:]
    unbatched = samples.ndim == len(sample_shape)
    if unbatched:
        samples = samples[np.newaxis]
    if samples.ndim != len(signature) or not shape_matches(
        samples.shape[1:], sample_shape
    ):
        expected = tuple(None if size < 0 else size for size in sample_shape)
        raise ValueError(
            f"Expected `x` of shape (N, *{expected}) to match the LiteRT "
            f"model input. Received: x with shape {samples.shape}."
        )
    if len(samples) == 0:
        raise ValueError(
            "Expected `x` to hold at least one sample. Received: x with "
            f"shape {samples.shape}."
        )
    bad = first_non_finite(samples)
    if bad is not None:
        raise ValueError(
            "Expected `x` to hold finite values (NaN or inf inputs make both "
            "models' outputs meaningless to compare). Received: "
            f"x{list(bad[unbatched:])} is {samples[bad]}."
        )
    return samples


def _invoke_one(
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


def _keras_outputs(model: keras.Model, samples: np.ndarray) -> np.ndarray:
    outputs = []
    for start in range(0, len(samples), _KERAS_BATCH_SIZE):
        output = model(samples[start:start + _KERAS_BATCH_SIZE], training=False)
        if isinstance(output, (list, tuple, dict)):
            raise ValueError(
                "Expected a single-output Keras model. Received: model "
                f"{model.name!r} returning a {type(output).__name__} of "
                f"{len(output)} outputs."
            )
        outputs.append(keras.ops.convert_to_numpy(output))
    return np.concatenate(outputs).astype(np.float32)


def _top1_agreement(first: np.ndarray, second: np.ndarray) -> float:
    if first.ndim == 1:
        return 1.0
    classes = first.shape[-1]
    first_top = np.argmax(first.reshape(-1, classes), axis=-1)
    second_top = np.argmax(second.reshape(-1, classes), axis=-1)
    return float(np.mean(first_top == second_top))


def _random_input(input_detail: dict, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = tuple(int(size) for size in input_detail["shape"])
    dtype = np.dtype(input_detail["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(
            info.min, info.max, size=shape, endpoint=True
        ).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def _existing_tflite_path(path: PathLike) -> pathlib.Path:
    path = check_tflite_suffix(path)
    if path.is_dir():
        raise ValueError(
            f"Expected a `.tflite` file. Received: path={str(path)!r}, "
            "which is a directory."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected an existing `.tflite` file. Received: "
            f"path={str(path)!r}, which does not exist. Create it with "
            "`export_tflite` first."
        )
    return path


def as_float32(values: Any, name: str) -> np.ndarray:
    """`values` as a float32 array, or a `ValueError` naming `name`."""
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Expected `{name}` to hold numeric input arrays. Received: "
            f"values of type {type(values).__name__} that cannot be "
            f"converted to float32 ({error})."
        ) from error


def first_non_finite(values: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN or inf in `values`, or None if all finite."""
    finite = np.isfinite(values)
    if finite.all():
        return None
    return tuple(int(i) for i in np.argwhere(~finite)[0])


def shape_matches(
    shape: tuple[int, ...], expected: tuple[int | None, ...]
) -> bool:
    return len(shape) == len(expected) and all(
        want is None or want < 0 or got == want
        for got, want in zip(shape, expected)
    )


def one_line(error: BaseException) -> str:
    """An error's message on one line, without its final period."""
    return " ".join(str(error).split()).rstrip(".")


def check_tflite_suffix(path: PathLike) -> pathlib.Path:
    """`path` as a `pathlib.Path`, if it ends in `.tflite`."""
    path = pathlib.Path(path)
    if path.suffix != ".tflite":
        raise ValueError(
            "Expected `path` to end in `.tflite`. "
            f"Received: path={str(path)!r}. Add the `.tflite` suffix."
        )
    return path
