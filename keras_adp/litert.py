"""Running exported `.tflite` files in the LiteRT interpreter: parity with
the Keras model they came from, and latency.

- `verify_tflite` runs the file and the Keras model on the same inputs and
  raises `TFLiteMismatchError` when they disagree beyond a per-mode
  tolerance; `measure_tflite` measures the same and returns a mismatch
  instead of raising it.
- `benchmark_tflite` times single-sample `invoke()` calls and reports the
  file size, raw and gzipped.

Opening and invoking the interpreter is `keras_adp.litert_interpreter`'s;
the checks, the comparison with Keras and the latency loop are
`keras_adp.parity`'s, shared with the ONNX path. The helpers
`keras_adp.export` uses are re-exported here. `keras_adp.export` converts
models and re-exports the names above.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_adp import parity
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
from keras_adp.parity import LatencyResult
from keras_adp.parity import ParityCheck
from keras_adp.parity import VerifyResult

__all__ = [
    "verify_tflite",
    "measure_tflite",
    "benchmark_tflite",
    "TFLiteMismatchError",
    # Shared with `keras_adp.onnx_export` (from `keras_adp.parity`):
    "VerifyResult",
    "ParityCheck",
    "LatencyResult",
    # Shared with `keras_adp.export` (from `keras_adp.litert_interpreter`):
    "one_line",
    "open_interpreter",
    "detect_quantization",
    "as_float32",
    "first_non_finite",
    "shape_matches",
    "check_tflite_suffix",
]


class TFLiteMismatchError(ValueError):
    """Raised when a LiteRT model's outputs disagree with its Keras model."""


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
    parity.check_tolerances(atol, rtol, min_top1_agreement)
    interpreter = load_interpreter(path)
    input_detail, output_detail = single_io_details(interpreter, path)
    mode = detect_quantization(interpreter)
    signature = input_detail.get("shape_signature", input_detail["shape"])
    samples = parity.verification_samples(
        x,
        tuple(None if size < 0 else int(size) for size in signature[1:]),
        "LiteRT",
    )
    litert_outputs = np.stack(
        [
            invoke_one(interpreter, input_detail, output_detail, sample)
            for sample in samples
        ]
    )
    tolerance = _applied_tolerance(mode, atol, rtol, min_top1_agreement)
    return parity.parity_check(
        path,
        litert_outputs,
        parity.keras_outputs(model, samples),
        runtime="LiteRT",
        quantization=mode,
        atol=tolerance.atol,
        rtol=tolerance.rtol,
        min_top1_agreement=tolerance.min_top1_agreement,
        mismatch_error=TFLiteMismatchError,
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
    parity.check_benchmark_arguments(num_threads, runs, warmup)
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
    return parity.time_calls(
        interpreter.invoke,
        path,
        runs=runs,
        warmup=warmup,
        num_threads=num_threads,
    )
