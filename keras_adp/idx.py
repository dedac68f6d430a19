"""Fashion-MNIST's official IDX files: finding and reading them.

`keras_adp.data.load_fashion_mnist_idx` builds its pipelines from
`read_fashion_mnist_idx`; `keras_adp.data` re-exports the names below.
"""

from __future__ import annotations

import gzip
import math
import os
import struct

import numpy as np

__all__ = [
    "FASHION_MNIST_FILES",
    "read_fashion_mnist_idx",
    "fashion_mnist_search_paths",
    "read_idx",
]

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Where Debian's `dataset-fashion-mnist` package installs the full data set.
_SYSTEM_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# IDX element-type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_fashion_mnist_idx(
    directory: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Reads the four Fashion-MNIST IDX files as numpy arrays.

    Args:
        directory: Folder holding the files, or `None` to search the default
            places (`fashion_mnist_search_paths`). Defaults to `None`.

    Returns:
        A dict with "x_train" (uint8, `(n_train, 28, 28)`), "y_train" (uint8,
        `(n_train,)`), "x_test" and "y_test".

    Raises:
        FileNotFoundError: If the files are not found.
        ValueError: If the files are malformed or inconsistent.
    """
    paths = _find_fashion_mnist_files(directory)
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"])
        labels = read_idx(paths[f"{split}_labels"])
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                "Expected a uint8 IDX file of images with 3 dimensions "
                f"(count, rows, columns). Received: dtype={images.dtype}, "
                f"shape={images.shape} in {paths[f'{split}_images']}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise ValueError(
                "Expected a uint8 IDX file of labels with 1 dimension. "
                f"Received: dtype={labels.dtype}, shape={labels.shape} in "
                f"{paths[f'{split}_labels']}"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"Expected as many {split} labels as {split} images. "
                f"Received: {len(images)} images in "
                f"{paths[f'{split}_images']} and {len(labels)} labels in "
                f"{paths[f'{split}_labels']}. Check that the files come from "
                "the same release."
            )
        if labels.size and labels.max() >= 10:
            raise ValueError(
                "Expected Fashion-MNIST labels in [0, 9]. Received: a label "
                f"of {int(labels.max())} in {paths[f'{split}_labels']}"
            )
        arrays[f"x_{split}"] = images
        arrays[f"y_{split}"] = labels
    return arrays


def fashion_mnist_search_paths() -> list[str]:
    """Returns the folders searched for Fashion-MNIST IDX files, in order.

    Returns:
        A list of folder paths: `$KERAS_ADP_DATA/fashion-mnist` (when the
        variable is set), `$KERAS_HOME/datasets/fashion-mnist` (or
        `~/.keras/datasets/fashion-mnist`) and
        `/usr/share/datasets/fashion-mnist`.
    """
    paths = []
    if os.environ.get("KERAS_ADP_DATA"):
        paths.append(os.path.join(os.environ["KERAS_ADP_DATA"], "fashion-mnist"))
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    paths.append(os.path.join(keras_home, "datasets", "fashion-mnist"))
    paths.append(_SYSTEM_FASHION_MNIST_DIR)
    return paths


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (the MNIST file format), gzip-compressed or not.

    An IDX file starts with two zero bytes, a type code (0x08 unsigned byte,
    0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the
    number of dimensions, then each dimension as a big-endian uint32, then
    the data in row-major order.

    Args:
        path: Path of the file. Compression is detected from its content,
            not its name.

    Returns:
        A numpy array of the file's shape in the native byte order.

    Raises:
        ValueError: If the header is invalid or the data size does not match
            the dimensions.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        content = file.read()
    if content[:2] == b"\x1f\x8b":
        content = gzip.decompress(content)
    if len(content) < 4 or content[:2] != b"\x00\x00":
        raise ValueError(
            "Expected an IDX file starting with two zero bytes. Received: "
            f"first bytes {content[:4]!r} in {path}. Check that the file is "
            "an (optionally gzipped) IDX file such as "
            "train-images-idx3-ubyte.gz."
        )
    type_code, num_dims = content[2], content[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(
            "Expected an IDX type code in "
            f"{[hex(code) for code in _IDX_DTYPES]}. Received: "
            f"{hex(type_code)} in {path}"
        )
    header_size = 4 + 4 * num_dims
    if len(content) < header_size:
        raise ValueError(
            f"Expected an IDX header of {header_size} bytes for {num_dims} "
            f"dimensions. Received: a {len(content)}-byte file {path}"
        )
    shape = struct.unpack(f">{num_dims}I", content[4:header_size])
    dtype = _IDX_DTYPES[type_code]
    expected_bytes = math.prod(shape) * dtype.itemsize
    data_bytes = len(content) - header_size
    if data_bytes != expected_bytes:
        raise ValueError(
            f"Expected {expected_bytes} data bytes for an IDX array of shape "
            f"{shape} and dtype {dtype.name}. Received: {data_bytes} bytes "
            f"in {path}. The file is truncated or corrupt; download it again."
        )
    array = np.frombuffer(content, dtype=dtype, offset=header_size)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def _find_fashion_mnist_files(directory) -> dict[str, str]:
    """Resolves the four IDX files, in the given folder or the default ones."""
    if directory is not None:
        directory = os.fspath(directory)
        found = _idx_files_in(directory)
        if found is None:
            raise FileNotFoundError(
                "Expected the Fashion-MNIST IDX files "
                f"{_expected_file_list()} in directory={directory!r}. "
                f"Received: {_describe_folder(directory)}. Point `directory` "
                "at the folder that holds them."
            )
        return found
    searched = fashion_mnist_search_paths()
    for candidate in searched:
        found = _idx_files_in(candidate)
        if found is not None:
            return found
    places = "\n".join(
        f"  - {candidate} ({_describe_folder(candidate)})" for candidate in searched
    )
    raise FileNotFoundError(
        f"Could not find the Fashion-MNIST IDX files {_expected_file_list()}. "
        f"Searched, in order:\n{places}\n"
        "To provide them, either:\n"
        "  - install Debian's package: `apt-get install dataset-fashion-mnist` "
        f"(installs {_SYSTEM_FASHION_MNIST_DIR}),\n"
        "  - set the environment variable KERAS_ADP_DATA to a folder holding "
        "a `fashion-mnist` subfolder with the files,\n"
        "  - or pass `directory=` to the folder holding the files.\n"
        "For a dataset that needs no files, use `load_dataset('embedded')`."
    )


def _idx_files_in(directory: str) -> dict[str, str] | None:
    if not os.path.isdir(directory):
        return None
    found = {}
    for key, basename in FASHION_MNIST_FILES.items():
        for filename in (basename + ".gz", basename):
            path = os.path.join(directory, filename)
            if os.path.isfile(path):
                found[key] = path
                break
        else:
            return None
    return found


def _expected_file_list() -> str:
    return ", ".join(
        f"{basename}[.gz]" for basename in FASHION_MNIST_FILES.values()
    )


def _describe_folder(directory: str) -> str:
    if not os.path.exists(directory):
        return "does not exist"
    if not os.path.isdir(directory):
        return "is not a folder"
    missing = [
        basename
        for basename in FASHION_MNIST_FILES.values()
        if not any(
            os.path.isfile(os.path.join(directory, name))
            for name in (basename + ".gz", basename)
        )
    ]
    return "exists but lacks " + ", ".join(missing)
