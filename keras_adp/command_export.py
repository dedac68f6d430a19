"""`keras-adp export`: convert a saved model to TFLite or ONNX, print its
size, latency and parity.

The handler refuses a path that cannot be a saved model before Keras sees
it, loads the model (Keras' safe mode unless `--unsafe-deserialization`),
gathers the calibration and parity inputs (`--calibration`: a `.npy`/`.npz`
file or a dataset name; random inputs without it), then
`keras_adp.export` (`--format tflite`) or `keras_adp.onnx_export`
(`--format onnx`) converts, times and checks the file. A failed parity
check is an error here (`TFLiteMismatchError`, `ONNXMismatchError`).
"""

from __future__ import annotations

import argparse
import pathlib
import zipfile

import keras
import numpy as np

from keras_adp import checkpoints
from keras_adp import data
from keras_adp import experiment
from keras_adp import export
from keras_adp import inputs as inputs_lib
from keras_adp import onnx_export
from keras_adp.litert_interpreter import one_line

__all__ = [
    "export_model",
    "EXPORT_SAMPLES",
    "RANDOM_PARITY_SAMPLES",
]

EXPORT_SAMPLES = 200
RANDOM_PARITY_SAMPLES = 64


def export_model(args: argparse.Namespace) -> int:
    """Runs `keras-adp export` with the parsed `args`; returns 0."""
    model_path = pathlib.Path(args.model)
    _check_model_file(model_path)
    to_onnx = args.format == "onnx"
    if to_onnx and args.quantization != "float32":
        raise ValueError(
            f"Received --format onnx with --quantization {args.quantization}; "
            "ONNX files are exported in float32. Drop --quantization, or "
            "pass --format tflite."
        )
    if args.quantization == "int8" and args.calibration is None:
        raise ValueError(
            "Received --quantization int8 without --calibration; int8 needs "
            "sample inputs to calibrate on. Pass --calibration embedded (or "
            "the dataset the model was trained on), or a .npy file of inputs."
        )
    model = _load_model(model_path, safe_mode=not args.unsafe_deserialization)
    default_name = (
        f"{model_path.stem}.onnx"
        if to_onnx
        else f"{model_path.stem}_{args.quantization}.tflite"
    )
    out = pathlib.Path(args.out or model_path.with_name(default_name))
    calibration, parity_inputs, parity_source = _export_inputs(args, model)
    if to_onnx:
        onnx_export.export_onnx(model, out)
        latency = onnx_export.benchmark_onnx(
            out, num_threads=args.threads, runs=args.runs
        )
    else:
        export.export_tflite(
            model,
            out,
            quantization=args.quantization,
            representative_data=(
                calibration if args.quantization == "int8" else None
            ),
            num_calibration_samples=args.samples,
        )
        latency = export.benchmark_tflite(
            out, num_threads=args.threads, runs=args.runs
        )
    print(f"wrote {out}")
    print(
        f"size: {latency.size_bytes:,} bytes ({latency.size_bytes / 1024:.1f} "
        f"KiB), {latency.gzip_size_bytes:,} gzipped"
    )
    print(
        f"latency: {latency.median_ms:.3f} ms median (p10 {latency.p10_ms:.3f}, "
        f"p90 {latency.p90_ms:.3f}) over {latency.runs} runs, "
        f"{latency.num_threads} thread(s)"
    )
    verify = onnx_export.verify_onnx if to_onnx else export.verify_tflite
    verified = verify(out, model, parity_inputs)
    tolerance = (
        f"atol {verified.atol:g}, rtol {verified.rtol:g}"
        if verified.atol is not None
        else f"top-1 agreement >= {verified.min_top1_agreement:g}"
    )
    print(
        f"parity ({verified.quantization}, {verified.num_samples} "
        f"{parity_source}): ok, top-1 agreement "
        f"{100 * verified.top1_agreement:.1f}%, max abs error "
        f"{verified.max_abs_error:.3g} ({tolerance})"
    )
    return 0


_MODEL_FILE_HINT = (
    "Pass a `.keras` file saved by `model.save(...)`; `keras-adp train` "
    f"saves one as <run dir>/{checkpoints.FINAL_MODEL_FILE}."
)


def _check_model_file(model_path: pathlib.Path) -> None:
    """Refuse, before Keras sees it, a path that cannot be a saved model."""
    if model_path.suffix not in (".keras", ".h5"):
        raise ValueError(
            f"Expected a saved Keras model file (.keras). Received: "
            f"'{model_path}'. {_MODEL_FILE_HINT}"
        )
    if model_path.is_dir():
        raise ValueError(
            f"Expected a saved Keras model file. Received: '{model_path}', "
            f"which is a directory. {_MODEL_FILE_HINT}"
        )
    if not model_path.is_file():
        raise FileNotFoundError(
            f"Expected a saved Keras model file. Received: '{model_path}', "
            f"which does not exist. {_MODEL_FILE_HINT}"
        )
    if model_path.suffix == ".keras" and not zipfile.is_zipfile(model_path):
        raise ValueError(
            f"Expected a saved Keras model file. Received: '{model_path}', "
            "which is not a valid `.keras` file (not a zip archive). "
            f"{_MODEL_FILE_HINT}"
        )


def _load_model(model_path: pathlib.Path, *, safe_mode: bool) -> keras.Model:
    try:
        model = keras.saving.load_model(
            model_path, compile=False, safe_mode=safe_mode
        )
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable file
        if safe_mode and "lambda" in str(error).lower():
            raise ValueError(
                f"'{model_path}' contains a Lambda layer, whose Python code "
                "Keras refuses to load in safe mode. If you trust the file, "
                "pass --unsafe-deserialization."
            ) from error
        problem = one_line(error, keep_period=True)
        raise ValueError(
            f"Could not load '{model_path}' as a Keras model "
            f"({type(error).__name__}: {problem}). {_MODEL_FILE_HINT}"
        ) from error
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected '{model_path}' to hold a Keras model. Received: a "
            f"{type(model).__name__}. {_MODEL_FILE_HINT}"
        )
    return model


def _random_input_shape(model: keras.Model) -> tuple[int, ...]:
    """The sample shape random parity inputs are drawn with."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    shape = tuple(inputs[0].shape[1:]) if inputs else None
    if shape is None or any(size is None for size in shape):
        raise ValueError(
            f"Cannot draw random parity inputs for model '{model.name}': "
            f"its input shape is {'unknown' if shape is None else shape}. "
            "Pass --calibration with sample inputs (a .npy file or a dataset "
            "name)."
        )
    return shape


def _export_inputs(args, model) -> tuple[np.ndarray | None, np.ndarray, str]:
    """Calibration inputs, parity inputs and a description of the latter."""
    if args.calibration is None:
        shape = _random_input_shape(model)
        rng = np.random.default_rng(0)
        inputs = rng.standard_normal((RANDOM_PARITY_SAMPLES, *shape)).astype("float32")
        return None, inputs, "random inputs"
    if args.calibration in data.DATASET_NAMES:
        splits = data.load_dataset(
            args.calibration, **experiment.dataset_location(args.calibration, args.data_dir)
        )
        calibration = data.calibration_batch(splits, num_samples=args.samples)
        parity_inputs = inputs_lib.calibration_inputs(
            data.split_inputs(splits.test), args.samples
        )
        return calibration, parity_inputs, "test samples"
    inputs = _load_array(pathlib.Path(args.calibration))[: args.samples]
    return inputs, inputs, "calibration samples"


def _load_array(path: pathlib.Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected --calibration to be a .npy/.npz file or a dataset name "
            f"({', '.join(data.DATASET_NAMES)}). Received: '{path}', which is "
            "neither."
        )
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(
            f"Expected a .npy or .npz calibration file. Received: '{path}'."
        )
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as arrays:
                names = arrays.files
                name = names[0] if len(names) == 1 else "x"
                array = arrays[name] if name in names else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        problem = one_line(error, keep_period=True)
        raise ValueError(
            f"Could not read --calibration '{path}' as a NumPy {path.suffix} "
            f"file ({problem}). Save the inputs with "
            "`np.save(path, inputs)`."
        ) from error
    if array is None:
        raise ValueError(
            f"Expected '{path}' to hold one array, or an array named 'x'. "
            f"Received arrays {names}. Save the inputs alone, e.g. "
            "`np.savez(path, x=inputs)`."
        )
    if array.ndim == 0 or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise ValueError(
            f"Expected --calibration '{path}' to hold an array of numeric "
            f"model inputs. Received: an array of dtype {array.dtype} and "
            f"shape {array.shape}."
        )
    if np.issubdtype(array.dtype, np.inexact):
        non_finite = ~np.isfinite(array)
        if non_finite.any():
            index = [int(i) for i in np.argwhere(non_finite)[0]]
            raise ValueError(
                f"Expected --calibration '{path}' to hold finite values. "
                f"Received: element {index} is {array[tuple(index)]}. "
                "Remove or repair the non-finite samples."
            )
    return array
