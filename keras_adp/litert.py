"""Running exported `.tflite` files in the LiteRT interpreter: parity with
the Keras model they came from, and latency.

- `verify_tflite` runs the file and the Keras model on the same inputs and
  raises `TFLiteMismatchError` when they disagree beyond a per-mode
  tolerance; `measure_tflite` measures the same and returns a mismatch
  instead of raising it.
- `benchmark_tflite` times single-sample `invoke()` calls and reports the
  file size, raw and gzipped.

Opening and invoking the interpreter is `keras_adp.litert_interpreter`'s;
the helpers `keras_adp.export` shares with it are re-exported here.
`keras_adp.export` converts models and re-exports the names above.
"""

from __future__ import annotations

import dataclasses
import gzip
import statistics
import time
from typing import Any

import keras
import numpy as np

from keras_adp.litert_interpreter import PathLike
from keras_adp.litert_interpreter import as_float32
from keras_adp.litert_interpreter import check_tflite_suffix
from keras_adp.litert_interpreter import detect_quantization
from keras_adp.litert_interpreter import existing_tflite_path
from keras_adp.litert_interpreter import first_non_finite
from keras_adp.litert_interpreter import invoke_one
from keras_adp.litert_interpreter import load_interpreter
from keras_adp.litert_interpreter import one_line
from keras_adp.litert_interpreter import open_interpreter
from keras_adp.litert_interpreter import random_input
from keras_adp.litert_interpreter import shape_matches
from keras_adp.litert_interpreter import single_io_details

__all__ = [
    "verify_tflite",
    "measure_tflite",
    "benchmark_tflite",
    "VerifyResult",
    "ParityCheck",
    "LatencyResult",
    "TFLiteMismatchError",
    # Shared with `keras_adp.export` (from `keras_adp.litert_interpreter`):
    "one_line",
    "open_interpreter",
    "detect_quantization",
    "as_float32",
    "first_non_finite",
    "shape_matches",
    "check_tflite_suffix",
]

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
    path = existing_tflite_path(path)
    _check_tolerances(atol, rtol, min_top1_agreement)
    interpreter = load_interpreter(path)
    input_detail, output_detail = single_io_details(interpreter, path)
    mode = detect_quantization(interpreter)
    samples = _verification_samples(x, input_detail)
    litert_outputs = np.stack(
        [
            invoke_one(interpreter, input_detail, output_detail, sample)
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
    tolerance = _applied_tolerance(mode, atol, rtol, min_top1_agreement)
    difference = np.abs(litert_outputs - keras_outputs)
    result = VerifyResult(
        max_abs_error=float(np.max(difference)) if difference.size else 0.0,
        top1_agreement=_top1_agreement(litert_outputs, keras_outputs),
        num_samples=len(samples),
        quantization=mode,
        atol=tolerance.atol,
        rtol=tolerance.rtol,
        min_top1_agreement=tolerance.min_top1_agreement,
    )
    within_tolerance = tolerance.atol is None or np.all(
        difference <= tolerance.atol + tolerance.rtol * np.abs(keras_outputs)
    )
    return ParityCheck(
        result=result, message=_mismatch(path, result, within_tolerance)
    )


def _check_tolerances(atol, rtol, min_top1_agreement) -> None:
    """Each tolerance is None or >= 0; the agreement at most 1."""
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


def _applied_tolerance(mode, atol, rtol, min_top1_agreement) -> _Tolerance:
    """The thresholds applied: each one given, else the mode's default
    (`rtol` is 0 when the element-wise check is skipped)."""
    default = _DEFAULT_TOLERANCES[mode]
    applied_atol = default.atol if atol is None else float(atol)
    applied_rtol = 0.0
    if applied_atol is not None:
        applied_rtol = default.rtol if rtol is None else float(rtol)
    return _Tolerance(
        atol=applied_atol,
        rtol=applied_rtol,
        min_top1_agreement=(
            default.min_top1_agreement
            if min_top1_agreement is None
            else float(min_top1_agreement)
        ),
    )


def _mismatch(path, result: VerifyResult, within_tolerance) -> str | None:
    """Why the file disagrees with its model beyond the thresholds, or
    None when it agrees."""
    max_abs_error, agreement = result.max_abs_error, result.top1_agreement
    problems = []
    if not within_tolerance:
        problems.append(
            f"max_abs_error={max_abs_error:.6g} exceeds the tolerance "
            f"|litert - keras| <= atol + rtol * |keras| with "
            f"atol={result.atol:g}, rtol={result.rtol:g}"
        )
    required = result.min_top1_agreement
    if required is not None and not agreement >= required:
        problems.append(
            f"top1_agreement={agreement:.4f} is below the required "
            f"{required:g}"
        )
    if not problems:
        return None
    mode = result.quantization
    return (
        f"The LiteRT model {str(path)!r} (quantization: {mode}) "
        f"disagrees with the Keras model on {result.num_samples} samples: "
        + "; ".join(problems)
        + f" (max_abs_error={max_abs_error:.6g}, "
        f"top1_agreement={agreement:.4f}). If this much difference is "
        f"expected for {mode} models, pass looser `atol`, `rtol` or "
        "`min_top1_agreement`; otherwise check that the file was "
        "exported from this model."
    )


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
    path = existing_tflite_path(path)
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
    interpreter = load_interpreter(path, num_threads=num_threads)
    input_details = interpreter.get_input_details()
    if len(input_details) != 1:
        raise ValueError(
            "Expected a LiteRT model with a single input. Received: "
            f"{str(path)!r} with {len(input_details)} inputs."
        )
    input_detail = input_details[0]
    interpreter.set_tensor(
        input_detail["index"], random_input(input_detail, seed)
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
