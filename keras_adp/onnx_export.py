"""ONNX export, and running `.onnx` files in ONNX Runtime.

- `export_onnx` converts a Keras model to an `.onnx` file with Keras' own
  exporter, `model.export(path, format="onnx")`: on the TensorFlow backend
  it traces a `training=False` serving function and converts it with
  `tf2onnx`; on PyTorch it uses `torch.onnx`. On JAX, Keras' exporter
  (`jax2onnx`) writes a `MaxPool` that ONNX Runtime refuses to run
  ("Unsupported pooling size"), so the model is saved as `.keras` and
  converted with `tf2onnx` in a TensorFlow-backend subprocess instead, the
  way `export_tflite` converts (`keras_adp.tensorflow_subprocess`; the
  subprocess runs this Python, or `$KERAS_ADP_TENSORFLOW_PYTHON`).
- `verify_onnx` runs the file in ONNX Runtime and the Keras model on the
  same inputs and raises `ONNXMismatchError` when they disagree beyond a
  tolerance; `measure_onnx` measures the same and returns a mismatch
  instead of raising it.
- `benchmark_onnx` times single-sample `session.run()` calls and reports
  the file size, raw and gzipped.

Results, argument checks, the comparison with Keras and the latency loop
are shared with the TFLite functions (`keras_adp.parity`): `VerifyResult`,
`ParityCheck` and `LatencyResult`, so both formats can be reported side by
side. ONNX files are float32, so `VerifyResult.quantization` is always
`"float32"`.

The converters and ONNX Runtime are optional: `pip install -e ".[onnx]"`
installs ONNX Runtime and the converter the TensorFlow and JAX backends use
(tf2onnx); the PyTorch backend needs only `onnx` (and ONNX Runtime to
verify). This module imports none of them (nor TensorFlow) until a function
needs them.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import warnings
from typing import Any

import keras
import numpy as np

from keras_adp import parity
from keras_adp import tensorflow_subprocess
from keras_adp.parity import LatencyResult
from keras_adp.parity import ParityCheck
from keras_adp.parity import PathLike
from keras_adp.parity import VerifyResult
from keras_adp.parity import one_line

__all__ = [
    "export_onnx",
    "verify_onnx",
    "measure_onnx",
    "benchmark_onnx",
    "ONNXMismatchError",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
]

# Default verification tolerances: ONNX files are float32, so they are held
# to the same bounds as float32 TFLite files.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4

_INSTALL_HINT = 'Install the ONNX extra: `pip install -e ".[onnx]"`'
# Python modules `export_onnx` needs in this process, by Keras backend.
_CONVERTER_MODULES = {
    "tensorflow": ("tf2onnx", "onnx"),
    "jax": ("onnx",),
    "torch": ("onnx",),
}
# Backends whose models are converted in a TensorFlow-backend subprocess,
# and the modules that subprocess's Python needs.
_CONVERTED_ON_TENSORFLOW = ("jax",)
_TENSORFLOW_CONVERTER_MODULES = ("tensorflow", "tf2onnx", "onnx")
_SESSION_BATCH_SIZE = 64


class ONNXMismatchError(ValueError):
    """Raised when an ONNX model's outputs disagree with its Keras model."""


def export_onnx(
    model: keras.Model,
    path: PathLike,
    *,
    opset_version: int | None = None,
) -> pathlib.Path:
    """Convert a Keras model to an ONNX (`.onnx`) file.

    The model is not modified (it need not have been called: its input
    signature is taken from `model.inputs`). The file is written to a
    temporary file in the same directory, checked with `onnx.checker` (and,
    when ONNX Runtime is installed, run once on a zero input) and renamed
    into place, so `path` either keeps its previous content or holds a
    complete, checked model; the temporary file is removed on any error.

    The batch dimension stays dynamic (on the PyTorch backend Keras then
    uses the TorchScript exporter). On JAX the model is saved as `.keras`
    and converted with tf2onnx in a TensorFlow-backend subprocess (see the
    module docstring), so its layers must load there.

    Args:
        model: a built single-input `keras.Model` (functional, or Sequential
            starting with `keras.Input`) whose layers compute in float32.
        path: destination file; must end in `.onnx`. Its directory must
            exist.
        opset_version: ONNX opset to target, or `None` for the converter's
            default (15 with `tf2onnx` 1.17). Defaults to `None`.

    Returns:
        The path of the written file, as a `pathlib.Path`.

    Raises:
        ValueError: if `model` is not a `keras.Model`, has no defined inputs
            or several of them, does not compute in float32, `path` does
            not end in `.onnx`, `opset_version` is not a positive int, the
            TensorFlow-backend conversion (JAX) fails, or the converted
            file fails the ONNX checker or does not run in ONNX Runtime
            (nothing is written then).
        FileNotFoundError: if the directory of `path` does not exist.
        ImportError: if the converter for the current Keras backend is not
            installed (on JAX: TensorFlow and tf2onnx in the converting
            Python).
    """
    path, input_spec = _check_export_arguments(model, path, opset_version)

    def write(temp_name: str) -> None:
        _convert(model, temp_name, input_spec, opset_version)
        _check_converted(temp_name, path)

    return parity.write_into_place(path, write)


def verify_onnx(
    path: PathLike,
    model: keras.Model,
    x: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    min_top1_agreement: float | None = None,
) -> VerifyResult:
    """Check that an `.onnx` file computes what its Keras model computes.

    The samples of `x` are run through ONNX Runtime (CPU, in batches of up
    to 64 when the file's batch dimension is dynamic, one at a time when it
    is fixed to 1) and through `model(x, training=False)`.

    The check passes when every output element satisfies
    `|onnx - keras| <= atol + rtol * |keras|` and, if `min_top1_agreement`
    is given, the top-1 agreement (arg-max over the last output axis) is at
    least that fraction.

    Args:
        path: the `.onnx` file (single input, single output).
        model: the Keras model it was exported from.
        x: input samples, array-like of shape `(N, *input_shape)` or a
            single sample `input_shape`.
        atol: absolute tolerance. Defaults to `None`, meaning `1e-4`.
        rtol: relative tolerance. Defaults to `None`, meaning `1e-4`.
        min_top1_agreement: required top-1 agreement in `[0, 1]`. Defaults
            to `None` (not checked).

    Returns:
        A `VerifyResult` with the measured errors and applied thresholds
        (`quantization="float32"`).

    Raises:
        ONNXMismatchError: if the outputs differ in shape or beyond the
            tolerances.
        ValueError: if the file is not a valid ONNX model, has several
            inputs or outputs or fails to run in ONNX Runtime, `x` does not
            match its input shape or holds NaN or inf, or a tolerance is
            negative.
        FileNotFoundError: if `path` does not exist.
        ImportError: if `onnxruntime` is not installed.
    """
    check = measure_onnx(
        path, model, x, atol=atol, rtol=rtol,
        min_top1_agreement=min_top1_agreement,
    )
    if not check.passed:
        raise ONNXMismatchError(check.message)
    return check.result


def measure_onnx(
    path: PathLike,
    model: keras.Model,
    x: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    min_top1_agreement: float | None = None,
) -> ParityCheck:
    """`verify_onnx`'s measurement, returning a mismatch instead of raising
    it.

    Arguments, defaults and the other errors are `verify_onnx`'s.

    Returns:
        A `ParityCheck`: the `VerifyResult` (measured errors and applied
        thresholds) and, when the outputs disagree beyond the thresholds,
        the message `verify_onnx` would raise.

    Raises:
        ONNXMismatchError: if the outputs differ in shape (nothing to
            measure).
    """
    path = parity.existing_file(path, ".onnx", "export_onnx")
    parity.check_tolerances(atol, rtol, min_top1_agreement)
    session = _open_session(path)
    input_info, _ = _single_io(session, path)
    samples = parity.verification_samples(
        x,
        tuple(
            size if isinstance(size, int) and size > 0 else None
            for size in input_info.shape[1:]
        ),
        "ONNX",
    )
    onnx_outputs = _session_outputs(session, input_info, samples, path)
    return parity.parity_check(
        path,
        onnx_outputs,
        parity.keras_outputs(model, samples),
        runtime="ONNX",
        quantization="float32",
        atol=DEFAULT_ATOL if atol is None else float(atol),
        rtol=DEFAULT_RTOL if rtol is None else float(rtol),
        min_top1_agreement=(
            None if min_top1_agreement is None else float(min_top1_agreement)
        ),
        mismatch_error=ONNXMismatchError,
    )


def benchmark_onnx(
    path: PathLike,
    *,
    num_threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    seed: int = 0,
) -> LatencyResult:
    """Time single-sample inference of an `.onnx` file in ONNX Runtime.

    The input is drawn once from a seeded generator (uniform in `[0, 1)`)
    with the file's input shape and batch dimension 1. Each timed run
    measures one `session.run()` on the CPU execution provider with
    `time.perf_counter`, after `warmup` untimed runs. The session uses
    `num_threads` intra-op threads, one inter-op thread and sequential
    execution, as the LiteRT benchmark does.

    Args:
        path: the `.onnx` file (single input, all its other dimensions
            fixed).
        num_threads: intra-op threads. Defaults to `1`.
        runs: number of timed runs. Defaults to `50`.
        warmup: number of untimed runs first. Defaults to `5`.
        seed: seed of the input generator. Defaults to `0`.

    Returns:
        A `LatencyResult` with the median and 10th/90th percentile latency
        in milliseconds and the raw and gzipped file size in bytes.

    Raises:
        ValueError: if `num_threads` or `runs` is < 1, `warmup` < 0, or the
            file is not a valid ONNX model, fails to run in ONNX Runtime,
            has several inputs or a non-batch dimension left dynamic.
        FileNotFoundError: if `path` does not exist.
        ImportError: if `onnxruntime` is not installed.
    """
    path = parity.existing_file(path, ".onnx", "export_onnx")
    parity.check_benchmark_arguments(num_threads, runs, warmup)
    session = _open_session(path, num_threads=num_threads)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(
            "Expected an ONNX model with a single input. Received: "
            f"{str(path)!r} with {len(inputs)} inputs."
        )
    sample_shape = inputs[0].shape[1:]
    if not all(isinstance(size, int) and size > 0 for size in sample_shape):
        raise ValueError(
            f"Expected the ONNX model's input to have fixed dimensions after "
            f"the batch axis. Received: {str(path)!r} with input shape "
            f"{inputs[0].shape}. Export it from a model whose `keras.Input` "
            "has a full shape."
        )
    rng = np.random.default_rng(seed)
    feed = {inputs[0].name: rng.random((1, *sample_shape), dtype=np.float32)}
    _run(session, feed, path)  # Fails readably if the model cannot run.
    return parity.time_calls(
        lambda: session.run(None, feed),
        path,
        runs=runs,
        warmup=warmup,
        num_threads=num_threads,
    )


# ---------------------------------------------------------------------------
# Conversion.


def _check_export_arguments(
    model: keras.Model, path: PathLike, opset_version: int | None
) -> tuple[pathlib.Path, keras.InputSpec]:
    """Check `export_onnx`'s arguments and the converter (see its `Raises`).

    Returns:
        `(path, input_spec)`: the destination as a `pathlib.Path` and the
        model's input signature.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Expected `model` to be a `keras.Model`. "
            f"Received: model of type {type(model).__name__}."
        )
    path = parity.check_suffix(path, ".onnx")
    if opset_version is not None and (
        not isinstance(opset_version, int)
        or isinstance(opset_version, bool)
        or opset_version < 1
    ):
        raise ValueError(
            "Expected `opset_version` to be None or an int >= 1. "
            f"Received: opset_version={opset_version!r}."
        )
    input_spec = _single_input_spec(model)
    _check_float32(model)
    if path.is_dir():
        raise ValueError(
            f"Expected `path` to name a file. Received: path={str(path)!r}, "
            "which is a directory. Pass a file name ending in `.onnx`."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Expected the directory of `path` to exist. Received: "
            f"path={str(path)!r}, whose directory does not exist. Create it "
            "first."
        )
    backend = keras.backend.backend()
    purpose = f"Exporting to ONNX on the {backend!r} backend"
    _require(_CONVERTER_MODULES.get(backend, ("onnx",)), purpose)
    if backend in _CONVERTED_ON_TENSORFLOW:
        _require_for_tensorflow_conversion(purpose)
    return path, input_spec


def _require_for_tensorflow_conversion(purpose: str) -> None:
    """Raise `ImportError` unless the converting Python has TensorFlow and
    tf2onnx."""
    missing = tensorflow_subprocess.missing(_TENSORFLOW_CONVERTER_MODULES)
    if not missing:
        return
    interpreter = tensorflow_subprocess.python()
    where = "this Python"
    if os.environ.get(tensorflow_subprocess.PYTHON_VARIABLE):
        where = f"{tensorflow_subprocess.PYTHON_VARIABLE}={interpreter}"
    raise ImportError(
        f"{purpose} converts with tf2onnx on the TensorFlow backend, which "
        f"needs {', '.join(missing)} in {where}: not installed. "
        f"{_INSTALL_HINT} in that environment (or `pip install "
        f"{' '.join(missing)}`)."
    )


def _convert(
    model: keras.Model,
    filename: str,
    input_spec: keras.InputSpec,
    opset_version: int | None,
) -> None:
    """Write `model` in ONNX format to `filename`: with Keras' exporter, or
    on JAX in a TensorFlow-backend subprocess."""
    if keras.backend.backend() in _CONVERTED_ON_TENSORFLOW:
        _convert_on_tensorflow(model, filename, opset_version)
    else:
        _keras_export(model, filename, input_spec, opset_version)


# Run by `_convert_on_tensorflow` in a TensorFlow-backend subprocess:
# argv = .keras file, .onnx file, opset version or "".
_CONVERT_SAVED_MODEL = """
import sys
import keras
from keras_adp import onnx_export
keras_file, onnx_file, opset = sys.argv[1:]
model = keras.saving.load_model(keras_file, compile=False, safe_mode=False)
onnx_export._keras_export(
    model, onnx_file, onnx_export._single_input_spec(model),
    int(opset) if opset else None,
)
"""


def _convert_on_tensorflow(
    model: keras.Model, filename: str, opset_version: int | None
) -> None:
    """Write `model` converted to `filename` by Keras' exporter on the
    TensorFlow backend (tf2onnx), in a subprocess."""
    with tensorflow_subprocess.saved_model_file(model) as (_, keras_file):
        tensorflow_subprocess.run(
            _CONVERT_SAVED_MODEL,
            [keras_file, filename,
             "" if opset_version is None else str(opset_version)],
            f"Converting the {keras.backend.backend()} model to ONNX",
        )


def _keras_export(
    model: keras.Model,
    filename: str,
    input_spec: keras.InputSpec,
    opset_version: int | None,
) -> None:
    """Write `model` in ONNX format to `filename` with Keras' exporter.

    The input signature is given explicitly: Keras otherwise refuses a
    functional model that has never been called, and calling it here would
    change it.
    """
    with warnings.catch_warnings():
        # Keras' tf2onnx patch probes `np.object`, which NumPy 2 warns about.
        warnings.filterwarnings(
            "ignore", message=r".*np\.object.*", category=FutureWarning
        )
        if keras.backend.backend() == "torch":
            import torch

            # Tracing Keras' shape checks warns that they become constants;
            # the input shape is fixed but for the batch axis, and
            # `verify_onnx` checks the result.
            warnings.filterwarnings(
                "ignore", category=torch.jit.TracerWarning
            )
        model.export(
            filename,
            format="onnx",
            verbose=False,
            input_signature=[input_spec],
            opset_version=opset_version,
        )


def _check_converted(filename: str, path: pathlib.Path) -> None:
    """Raise unless `filename` holds a model that passes `onnx.checker`.

    A converter that meets an operation it cannot translate may still write
    the file, with the foreign operation left in ONNX's default domain; such
    operations are named in the error.
    """
    import onnx

    try:
        proto = onnx.load(filename, load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf's decode errors
        raise ValueError(
            f"Converting the model to {str(path)!r} produced a file that is "
            f"not a readable ONNX model ({one_line(error)}). No file was "
            "written."
        ) from error
    local_functions = {
        (function.domain, function.name) for function in proto.functions
    }
    unknown = sorted(
        {
            node.op_type
            for node in proto.graph.node
            if node.domain in ("", "ai.onnx")
            and (node.domain, node.op_type) not in local_functions
            and not onnx.defs.has(node.op_type, node.domain)
        }
    )
    if unknown:
        raise ValueError(
            f"Converting the model to {str(path)!r} left operations that "
            f"ONNX does not define: {', '.join(unknown)} (the converter "
            "could not translate them). No file was written. Build the "
            "layers that use them from `keras.ops` instead."
        )
    try:
        onnx.checker.check_model(filename)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise ValueError(
            f"Converting the model to {str(path)!r} produced a file that "
            f"fails the ONNX checker ({one_line(error)}). No file was "
            "written."
        ) from error
    if importlib.util.find_spec("onnxruntime") is not None:
        _check_runs(pathlib.Path(filename), path)


def _check_runs(written: pathlib.Path, path: pathlib.Path) -> None:
    """Raise unless ONNX Runtime runs `written` on one all-zero sample.

    A converter can emit operators whose attributes ONNX Runtime's kernels
    do not support (jax2onnx 0.17's MaxPool, for one, which is why JAX
    models are converted on TensorFlow), which only shows when the model
    runs.
    """
    try:
        session = _open_session(written)
        feed = {
            input_info.name: np.zeros(
                [
                    size if isinstance(size, int) and size > 0 else 1
                    for size in input_info.shape
                ],
                np.float32,
            )
            for input_info in session.get_inputs()
        }
        _run(session, feed, written)
    except ValueError as error:
        # Name ONNX Runtime's own complaint, not the temporary file.
        cause = error.__cause__ or error
        raise ValueError(
            f"Converting the model to {str(path)!r} produced a file that "
            f"ONNX Runtime cannot run ({one_line(cause)}). No file was "
            "written."
        ) from error


def _single_input_spec(model: keras.Model) -> keras.InputSpec:
    """The `keras.InputSpec` of a single-input model's input."""
    tensor = parity.single_model_input(model)
    return keras.InputSpec(
        shape=tuple(tensor.shape), dtype=tensor.dtype, name="input"
    )


def _check_float32(model: keras.Model) -> None:
    """Keras' ONNX exporter requires the "float32" dtype policy."""
    policies = {model.dtype_policy.name} | {
        layer.dtype_policy.name for layer in model.layers
    }
    if policies != {"float32"}:
        raise ValueError(
            "Expected a model computing in float32 (Keras' ONNX exporter "
            "requires the \"float32\" dtype policy). Received: model "
            f"{model.name!r} with dtype policies {sorted(policies)}. Rebuild "
            "it under `keras.config.set_dtype_policy(\"float32\")` and copy "
            "its weights."
        )


# ---------------------------------------------------------------------------
# Running the file.


def _open_session(path: pathlib.Path, num_threads: int | None = None):
    """An ONNX Runtime CPU session for `path`, with a `ValueError` naming the
    file when ONNX Runtime cannot load it."""
    _require(("onnxruntime",), "Running ONNX files")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # Errors only.
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=options,
            providers=["CPUExecutionProvider"],
        )
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - ONNX Runtime's own types
        raise ValueError(
            f"Expected a valid ONNX model file. Received: path="
            f"{str(path)!r}, which ONNX Runtime cannot load "
            f"({one_line(error)}). Write it with `export_onnx`."
        ) from error


def _single_io(session, path: pathlib.Path):
    return parity.single_input_output(
        session.get_inputs(), session.get_outputs(), path, "an ONNX model"
    )


def _session_outputs(
    session, input_info, samples: np.ndarray, path: pathlib.Path
) -> np.ndarray:
    """The file's float32 outputs for `samples`, batch axis first."""
    batch = input_info.shape[0] if input_info.shape else None
    if isinstance(batch, int) and batch > 0:
        if batch != 1:
            raise ValueError(
                "Expected an ONNX model with a dynamic batch dimension or a "
                f"batch of 1. Received: {str(path)!r} with input shape "
                f"{input_info.shape}. Re-export it with `export_onnx`."
            )
        chunk = 1
    else:
        chunk = _SESSION_BATCH_SIZE
    outputs = [
        _run(session, {input_info.name: samples[start:start + chunk]}, path)
        for start in range(0, len(samples), chunk)
    ]
    return np.concatenate(outputs).astype(np.float32)


def _run(session, feed: dict, path: pathlib.Path) -> np.ndarray:
    """The first output of `session.run(None, feed)`, with a `ValueError`
    naming the file when ONNX Runtime fails to run it."""
    try:
        return session.run(None, feed)[0]
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - ONNX Runtime's own types
        raise ValueError(
            f"ONNX Runtime failed to run the model in {str(path)!r} "
            f"({one_line(error)}). Re-export it with `export_onnx`."
        ) from error


# ---------------------------------------------------------------------------
# Optional packages.


def _require(modules: tuple[str, ...], purpose: str) -> None:
    """Raise `ImportError` saying what to install when a module is missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"{purpose} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. "
            f"{_INSTALL_HINT} (or `pip install {' '.join(missing)}`)."
        )
