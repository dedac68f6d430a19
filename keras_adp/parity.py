"""What the LiteRT and ONNX paths share: result types, argument checks,
Keras reference outputs, the parity measurement and the latency loop.

`keras_adp.litert` (`.tflite` files in the LiteRT interpreter) and
`keras_adp.onnx_export` (`.onnx` files in ONNX Runtime) each open and run
their own files; everything around that is here, once:

- results: `VerifyResult`, `ParityCheck`, `LatencyResult`;
- arguments: `check_suffix`, `existing_file`, `check_tolerances`,
  `check_benchmark_arguments`, `single_model_input`, `as_float32`,
  `first_non_finite`, `shape_matches`, `verification_samples`;
- parity: `keras_outputs` (the reference), `top1_agreement`,
  `parity_check` (tolerances and the mismatch message);
- latency: `time_calls`;
- writing: `write_into_place` (a temporary file, checked, then renamed).

This module imports neither TensorFlow nor any runtime.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
import statistics
import tempfile
import time
from typing import Any, Callable, Union

import keras
import numpy as np

__all__ = [
    "PathLike",
    "VerifyResult",
    "ParityCheck",
    "LatencyResult",
    "one_line",
    "as_float32",
    "first_non_finite",
    "shape_matches",
    "check_suffix",
    "existing_file",
    "check_tolerances",
    "check_benchmark_arguments",
    "single_model_input",
    "single_input_output",
    "verification_samples",
    "keras_outputs",
    "top1_agreement",
    "parity_check",
    "time_calls",
    "write_into_place",
]

PathLike = Union[str, os.PathLike]

_KERAS_BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Agreement between an exported file and the Keras model it came from.

    Attributes:
        max_abs_error: largest absolute difference between any output
            element of the file and the corresponding Keras output element
            (after dequantizing integer outputs).
        top1_agreement: fraction in `[0, 1]` of samples whose arg-max over
            the last output axis is the same in both models.
        num_samples: number of samples compared.
        quantization: quantization detected in the file: one of
            `"float32"`, `"float16"`, `"dynamic"`, `"int8"` (ONNX files are
            always `"float32"`).
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
    """What `measure_tflite` and `measure_onnx` return.

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
    """Single-sample latency (LiteRT or ONNX Runtime) and file size.

    Attributes:
        median_ms: median single-sample run time in milliseconds.
        p10_ms: 10th percentile of the run time in milliseconds.
        p90_ms: 90th percentile of the run time in milliseconds.
        runs: number of timed runs.
        num_threads: interpreter (or intra-op) threads used.
        size_bytes: size of the file in bytes.
        gzip_size_bytes: size of the file after gzip (level 9), in bytes.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    num_threads: int
    size_bytes: int
    gzip_size_bytes: int


# ---------------------------------------------------------------------------
# Arguments.


def one_line(error: BaseException | str, *, keep_period: bool = False) -> str:
    """An error's message on one line.

    Args:
        error: the exception (or message).
        keep_period: keep the final period, for a message that ends a
            line; by default it is dropped, for a message quoted inside a
            sentence. Defaults to `False`.

    Returns:
        The message, its white space folded to single spaces.
    """
    text = " ".join(str(error).split())
    return text if keep_period else text.rstrip(".")


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
    """Whether `shape` matches `expected`, where None or a negative size
    matches any size."""
    return len(shape) == len(expected) and all(
        want is None or want < 0 or got == want
        for got, want in zip(shape, expected)
    )


def check_suffix(path: PathLike, suffix: str) -> pathlib.Path:
    """`path` as a `pathlib.Path`, if it ends in `suffix` (e.g. `".onnx"`);
    a `ValueError` saying to add it otherwise."""
    path = pathlib.Path(path)
    if path.suffix != suffix:
        raise ValueError(
            f"Expected `path` to end in `{suffix}`. "
            f"Received: path={str(path)!r}. Add the `{suffix}` suffix."
        )
    return path


def existing_file(path: PathLike, suffix: str, writer: str) -> pathlib.Path:
    """`path` as a `pathlib.Path`, if it names an existing file ending in
    `suffix`.

    Args:
        path: the file.
        suffix: its required suffix, e.g. `".tflite"`.
        writer: the function that writes such files, named in the error
            when the file does not exist.

    Returns:
        The path.

    Raises:
        ValueError: if `path` lacks the suffix or is a directory.
        FileNotFoundError: if it does not exist.
    """
    path = check_suffix(path, suffix)
    article = "an" if suffix[1:2] in ("a", "e", "i", "o", "u") else "a"
    if path.is_dir():
        raise ValueError(
            f"Expected {article} `{suffix}` file. Received: "
            f"path={str(path)!r}, which is a directory."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected an existing `{suffix}` file. Received: "
            f"path={str(path)!r}, which does not exist. Create it with "
            f"`{writer}` first."
        )
    return path


def check_tolerances(
    atol: float | None,
    rtol: float | None,
    min_top1_agreement: float | None,
) -> None:
    """Raise `ValueError` unless each tolerance is None or >= 0 and the
    agreement at most 1."""
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


def check_benchmark_arguments(num_threads: int, runs: int, warmup: int) -> None:
    """Raise `ValueError` unless `num_threads` and `runs` are ints >= 1 and
    `warmup` an int >= 0 (booleans refused)."""
    for name, value, minimum in (
        ("num_threads", num_threads, 1),
        ("runs", runs, 1),
        ("warmup", warmup, 0),
    ):
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < minimum
        ):
            raise ValueError(
                f"Expected `{name}` to be an int >= {minimum}. "
                f"Received: {name}={value!r}."
            )


def single_input_output(inputs, outputs, path, runtime: str):
    """`(inputs[0], outputs[0])` of an exported model's input and output
    descriptions; a `ValueError` naming `path` unless there is one of each.

    Args:
        inputs: the runtime's input descriptions (a sequence).
        outputs: its output descriptions.
        path: the file they describe.
        runtime: the model's kind in the message, e.g. `"a LiteRT model"`.
    """
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"Expected {runtime} with a single input and a single "
            f"output. Received: {str(path)!r} with {len(inputs)} inputs and "
            f"{len(outputs)} outputs."
        )
    return inputs[0], outputs[0]


def single_model_input(model: keras.Model):
    """The symbolic input tensor of a single-input model.

    Args:
        model: a functional model, or a Sequential one starting with
            `keras.Input`.

    Returns:
        `model.inputs[0]` (its `shape` includes the batch axis).

    Raises:
        ValueError: if the model has no defined inputs or several.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            "Expected a model with defined inputs (a functional model or a "
            "Sequential model starting with `keras.Input`). Received: "
            f"{type(model).__name__} {model.name!r} without `inputs`. Build "
            "it from `keras.Input(...)`."
        )
    if len(inputs) != 1:
        raise ValueError(
            "Expected a single-input model. Received: model "
            f"{model.name!r} with {len(inputs)} inputs."
        )
    return inputs[0]


def verification_samples(
    x: Any, sample_shape: tuple[int | None, ...], runtime: str
) -> np.ndarray:
    """`x` as a float32 array `(N, *sample_shape)` matching a file's input.

    Args:
        x: input samples `(N, *sample_shape)`, or one sample.
        sample_shape: the file's input shape after the batch axis, None
            where a size is dynamic.
        runtime: `"LiteRT"` or `"ONNX"`, for the error message.

    Returns:
        The samples, with a batch axis.

    Raises:
        ValueError: if `x` does not match `sample_shape`, is empty or holds
            NaN or inf.
    """
    samples = as_float32(x, "x")
    unbatched = samples.ndim == len(sample_shape)
    if unbatched:
        samples = samples[np.newaxis]
    if samples.ndim != len(sample_shape) + 1 or not shape_matches(
        samples.shape[1:], sample_shape
    ):
        raise ValueError(
            f"Expected `x` of shape (N, *{tuple(sample_shape)}) to match the "
            f"{runtime} model input. Received: x with shape {samples.shape}."
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


# ---------------------------------------------------------------------------
# Parity.


def keras_outputs(model: keras.Model, samples: np.ndarray) -> np.ndarray:
    """The reference: `model(samples, training=False)` in batches of 64, as
    float32 NumPy.

    Raises:
        ValueError: if the model returns several outputs.
    """
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


def top1_agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Fraction of samples whose arg-max over the last axis is the same in
    both outputs (1.0 for outputs without a class axis)."""
    if first.ndim == 1:
        return 1.0
    classes = first.shape[-1]
    first_top = np.argmax(first.reshape(-1, classes), axis=-1)
    second_top = np.argmax(second.reshape(-1, classes), axis=-1)
    return float(np.mean(first_top == second_top))


def parity_check(
    path: pathlib.Path,
    outputs: np.ndarray,
    reference: np.ndarray,
    *,
    runtime: str,
    quantization: str,
    atol: float | None,
    rtol: float,
    min_top1_agreement: float | None,
    mismatch_error: type[Exception],
) -> ParityCheck:
    """Compare a file's outputs with the Keras model's.

    An element passes when `|outputs - reference| <= atol + rtol *
    |reference|` (`np.allclose`'s rule; `atol=None` skips this check); the
    top-1 agreement must reach `min_top1_agreement` when it is set.

    Args:
        path: the file, named in the message.
        outputs: the file's outputs, batch axis first.
        reference: the Keras model's outputs (`keras_outputs`).
        runtime: `"LiteRT"` or `"ONNX"`.
        quantization: the file's quantization; with `"LiteRT"` the message
            names it, since the default tolerances depend on it.
        atol: applied absolute tolerance, or None.
        rtol: applied relative tolerance.
        min_top1_agreement: applied agreement threshold, or None.
        mismatch_error: raised when the shapes differ.

    Returns:
        A `ParityCheck` with the measured `VerifyResult` and, beyond the
        thresholds, the message saying why.

    Raises:
        mismatch_error: if the outputs differ in shape.
    """
    if outputs.shape != reference.shape:
        raise mismatch_error(
            f"The {runtime} model {str(path)!r} and the Keras model produce "
            "outputs of different shapes on the same inputs. Received: "
            f"{runtime} output shape {outputs.shape}, Keras output "
            f"shape {reference.shape}. Check that the file was exported "
            "from this model."
        )
    difference = np.abs(outputs - reference)
    result = VerifyResult(
        max_abs_error=float(np.max(difference)) if difference.size else 0.0,
        top1_agreement=top1_agreement(outputs, reference),
        num_samples=len(outputs),
        quantization=quantization,
        atol=atol,
        rtol=rtol,
        min_top1_agreement=min_top1_agreement,
    )
    within_tolerance = atol is None or np.all(
        difference <= atol + rtol * np.abs(reference)
    )
    return ParityCheck(
        result=result,
        message=_mismatch(path, result, within_tolerance, runtime),
    )


def _mismatch(
    path: pathlib.Path, result: VerifyResult, within_tolerance, runtime: str
) -> str | None:
    """Why the file disagrees with its model beyond the thresholds, or
    None when it agrees."""
    max_abs_error, agreement = result.max_abs_error, result.top1_agreement
    problems = []
    if not within_tolerance:
        problems.append(
            f"max_abs_error={max_abs_error:.6g} exceeds the tolerance "
            f"|{runtime.lower()} - keras| <= atol + rtol * |keras| with "
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
    # LiteRT's default tolerances depend on the quantization; ONNX files
    # are float32 only.
    per_mode = runtime == "LiteRT"
    return (
        f"The {runtime} model {str(path)!r}"
        + f" (quantization: {mode})" * per_mode
        + f" disagrees with the Keras model on {result.num_samples} samples: "
        + "; ".join(problems)
        + f" (max_abs_error={max_abs_error:.6g}, "
        f"top1_agreement={agreement:.4f}). If this much difference is "
        "expected" + f" for {mode} models" * per_mode + ", pass looser "
        "`atol`, `rtol` or `min_top1_agreement`; otherwise check that the "
        "file was exported from this model."
    )


# ---------------------------------------------------------------------------
# Latency.


def time_calls(
    call: Callable[[], Any],
    path: pathlib.Path,
    *,
    runs: int,
    warmup: int,
    num_threads: int,
) -> LatencyResult:
    """Time `runs` calls of `call` after `warmup` untimed ones, with
    `time.perf_counter`.

    Args:
        call: runs the model once on a prepared single-sample input.
        path: the model file, whose raw and gzipped (level 9) sizes are
            reported.
        runs: number of timed calls.
        warmup: number of untimed calls first.
        num_threads: threads the runtime was given, reported.

    Returns:
        A `LatencyResult`: median and 10th/90th percentile in milliseconds,
        file sizes in bytes.
    """
    data = path.read_bytes()
    for _ in range(warmup):
        call()
    timings_ms = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
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


# ---------------------------------------------------------------------------
# Writing.


def write_into_place(
    path: pathlib.Path, write: Callable[[str], None]
) -> pathlib.Path:
    """Have `write` produce a file beside `path`, then rename it into place.

    `write` gets the name of a new temporary file in `path`'s directory
    (same suffix) and converts and checks the model into it, raising when
    anything is wrong. So `path` either keeps its previous content or holds
    a complete, checked file; the temporary file is removed on any error.

    Args:
        path: the destination; its directory must exist.
        write: writes and checks the file it is given.

    Returns:
        `path`.
    """
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent
    )
    os.close(descriptor)
    try:
        write(temp_name)
        # mkstemp creates the file 0600; give it the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.remove(temp_name)
        raise
    return path
