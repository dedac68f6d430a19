"""Regenerates the Fashion-MNIST subset bundled in `keras_adp/data_files/`.

Definition of the subset: from the official Fashion-MNIST IDX files, the
first 600 training images of each of the 10 classes (6,000 images) and the
first 100 test images of each class (1,000 images), in their original file
order. "First" means lowest position in the official file.

The output is a `.npz` archive with the arrays `x_train` (uint8,
`(6000, 28, 28)`), `y_train` (uint8, `(6000,)`), `x_test` (uint8,
`(1000, 28, 28)`), `y_test` (uint8, `(1000,)`), `train_indices` and
`test_indices` (int32, position of each kept sample in the official files).
It is written deterministically (fixed member order and timestamps, deflate
level 9), so the same input files give the same bytes.

Usage:

```
python benchmarks/make_embedded_subset.py \
    --source /usr/share/datasets/fashion-mnist \
    --output keras_adp/data_files/fashion_mnist_subset.npz
```

`--source` defaults to the first folder found by
`keras_adp.data.load_fashion_mnist_idx` (`$KERAS_ADP_DATA/fashion-mnist`,
`~/.keras/datasets/fashion-mnist`, `/usr/share/datasets/fashion-mnist`;
`apt-get install dataset-fashion-mnist` provides the last one). The script
prints the array shapes, the per-class counts and the file's SHA-256.

Fashion-MNIST is Copyright (c) 2017 Zalando SE, MIT license.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import zipfile

import numpy as np

from keras_adp import data

DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "keras_adp",
    "data_files",
    data.EMBEDDED_FILENAME,
)
# Earliest timestamp a zip file can hold; fixed so the output is reproducible.
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


def first_per_class_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Positions of the first `per_class` samples of every class, in file order.

    Args:
        labels: int array of shape `(n,)`.
        per_class: Number of samples kept per class.

    Returns:
        A sorted int32 array of `per_class * num_classes` positions.
    """
    kept = []
    for label in np.unique(labels):
        positions = np.flatnonzero(labels == label)
        if len(positions) < per_class:
            raise ValueError(
                f"Expected at least {per_class} samples of class {label}. "
                f"Received: {len(positions)}."
            )
        kept.append(positions[:per_class])
    return np.sort(np.concatenate(kept)).astype(np.int32)


def build_subset(
    source: str | None = None,
    train_per_class: int = data.EMBEDDED_TRAIN_PER_CLASS,
    test_per_class: int = data.EMBEDDED_TEST_PER_CLASS,
) -> dict[str, np.ndarray]:
    """Selects the subset from the official Fashion-MNIST files.

    Args:
        source: Folder with the four IDX files, or `None` to search the
            default places.
        train_per_class: Training images kept per class.
        test_per_class: Test images kept per class.

    Returns:
        The dict of arrays stored in the `.npz` file.
    """
    arrays = data.read_fashion_mnist_idx(source)
    train_indices = first_per_class_indices(arrays["y_train"], train_per_class)
    test_indices = first_per_class_indices(arrays["y_test"], test_per_class)
    return {
        "x_train": arrays["x_train"][train_indices],
        "y_train": arrays["y_train"][train_indices],
        "x_test": arrays["x_test"][test_indices],
        "y_test": arrays["y_test"][test_indices],
        "train_indices": train_indices,
        "test_indices": test_indices,
    }


def write_npz(arrays: dict[str, np.ndarray], path: str) -> None:
    """Writes arrays as a deterministic compressed `.npz` readable by `np.load`."""
    with zipfile.ZipFile(path, "w") as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(
                buffer, np.ascontiguousarray(arrays[key]), allow_pickle=False
            )
            member = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_TIMESTAMP)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            archive.writestr(member, buffer.getvalue(), compresslevel=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="Folder of IDX files.")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="Output .npz.")
    args = parser.parse_args(argv)

    arrays = build_subset(args.source)
    write_npz(arrays, args.output)
    for key in sorted(arrays):
        print(f"{key}: shape={arrays[key].shape} dtype={arrays[key].dtype}")
    for split in ("train", "test"):
        counts = np.bincount(arrays[f"y_{split}"], minlength=10)
        print(f"{split} images per class: {counts.tolist()}")
    with open(args.output, "rb") as file:
        content = file.read()
    print(f"wrote {args.output}: {len(content)} bytes")
    print(f"sha256: {hashlib.sha256(content).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
