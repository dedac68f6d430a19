"""The dataset loaders: where each source's images and labels come from.

- `load_embedded()`: the Fashion-MNIST subset bundled with the package.
- `load_fashion_mnist_idx()`: the full Fashion-MNIST from local IDX files
  (`keras_adp.idx` reads them).
- `load_tiny_imagenet()`: a local `tiny-imagenet-200` folder.
- `load_tfds()`: CIFAR-10, CIFAR-100, MNIST and Fashion-MNIST through
  `tensorflow_datasets`.

Each reads its source and hands it to `keras_adp.data_pipeline`, which
builds the pipelines. The embedded subset and the IDX files are read with
NumPy alone; TensorFlow is imported only by the loaders that need it
(Tiny ImageNet's JPEG decoding, `tensorflow_datasets`) and by tf.data
pipelines. `keras_adp.data` describes the sources and the
preprocessing and re-exports these names.
"""

from __future__ import annotations

import importlib.resources
import os

import numpy as np

from keras_adp import distribution
from keras_adp.data_pipeline import DatasetSplits
from keras_adp.data_pipeline import PipelineOptions
from keras_adp.data_pipeline import Source
from keras_adp.data_pipeline import build_splits
from keras_adp.data_pipeline import pipeline_options
from keras_adp.data_pipeline import splits_from_arrays
from keras_adp.idx import read_fashion_mnist_idx

__all__ = [
    "load_embedded",
    "load_embedded_arrays",
    "load_fashion_mnist_idx",
    "load_tiny_imagenet",
    "load_tfds",
    "TFDS_NAMES",
    "FASHION_MNIST_CLASS_NAMES",
    "EMBEDDED_FILENAME",
    "EMBEDDED_TRAIN_PER_CLASS",
    "EMBEDDED_TEST_PER_CLASS",
]

FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

TFDS_NAMES = ("cifar10", "cifar100", "mnist", "fashion_mnist")

EMBEDDED_FILENAME = "fashion_mnist_subset.npz"
EMBEDDED_TRAIN_PER_CLASS = 600
EMBEDDED_TEST_PER_CLASS = 100


def load_embedded(
    options: PipelineOptions | None = None,
    **kwargs,
) -> DatasetSplits:
    """Loads the Fashion-MNIST subset bundled with the package.

    The subset holds, from the official Fashion-MNIST files, the first 600
    training images of each of the 10 classes (6,000 images) and the first
    100 test images of each class (1,000 images), in their original file
    order. Images are 28x28x1. It is read with `importlib.resources`, so it
    works offline and from an installed wheel. Fashion-MNIST is
    Copyright (c) 2017 Zalando SE, MIT license.

    Args:
        options: How the pipelines are built (`PipelineOptions`).
            Defaults to `None` (`PipelineOptions()`).
        **kwargs: `PipelineOptions` fields (`batch_size`, `augment`,
            `horizontal_flip`, `crop_padding`, `normalization`, `seed`,
            `limit`, `validation_split`), overriding those of `options`.

    Returns:
        A `DatasetSplits` named "embedded".
    """
    options = pipeline_options(options, kwargs)
    return _fashion_mnist_splits("embedded", load_embedded_arrays(), options)


def load_embedded_arrays() -> dict[str, np.ndarray]:
    """Reads the bundled Fashion-MNIST subset as numpy arrays.

    Returns:
        A dict with "x_train" (uint8, `(6000, 28, 28)`), "y_train" (uint8,
        `(6000,)`), "x_test" (uint8, `(1000, 28, 28)`), "y_test" (uint8,
        `(1000,)`), and "train_indices" / "test_indices" (int32): the
        position of every kept sample in the official files.
    """
    resource = importlib.resources.files("keras_adp").joinpath(
        "data_files", EMBEDDED_FILENAME
    )
    with resource.open("rb") as file:
        with np.load(file) as npz:
            return {key: npz[key] for key in npz.files}


def load_fashion_mnist_idx(
    directory: str | os.PathLike | None = None,
    *,
    options: PipelineOptions | None = None,
    **kwargs,
) -> DatasetSplits:
    """Loads the full Fashion-MNIST from local IDX files.

    The folder must hold the four official files
    `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each either
    gzip-compressed (`.gz`, as distributed) or not.

    Args:
        directory: Folder holding the files. `None` searches, in order,
            `$KERAS_ADP_DATA/fashion-mnist`, `$KERAS_HOME/datasets/fashion-mnist`
            (`~/.keras/datasets/fashion-mnist` when `KERAS_HOME` is unset,
            where `keras.datasets.fashion_mnist` caches its download) and
            `/usr/share/datasets/fashion-mnist` (installed by
            `apt-get install dataset-fashion-mnist`). Defaults to `None`.
        options: How the pipelines are built (`PipelineOptions`).
            Defaults to `None` (`PipelineOptions()`).
        **kwargs: `PipelineOptions` fields (`batch_size`, `augment`,
            `horizontal_flip`, `crop_padding`, `normalization`, `seed`,
            `limit`, `validation_split`), overriding those of `options`.

    Returns:
        A `DatasetSplits` named "fashion_mnist_idx" with 28x28x1 images.

    Raises:
        FileNotFoundError: If no folder holding the four files is found; the
            message lists every place searched.
        ValueError: If a file is not a valid IDX file or the files disagree.
    """
    options = pipeline_options(options, kwargs)
    arrays = read_fashion_mnist_idx(directory)
    return _fashion_mnist_splits("fashion_mnist_idx", arrays, options)


def _fashion_mnist_splits(
    name: str, arrays: dict[str, np.ndarray], options: PipelineOptions
) -> DatasetSplits:
    """`DatasetSplits` of Fashion-MNIST arrays: "x_train"/"x_test" uint8
    `(count, 28, 28)`, "y_train"/"y_test" labels `(count,)`."""
    return splits_from_arrays(
        name,
        arrays["x_train"][..., np.newaxis],
        arrays["y_train"],
        arrays["x_test"][..., np.newaxis],
        arrays["y_test"],
        num_classes=10,
        class_names=FASHION_MNIST_CLASS_NAMES,
        options=options,
    )


def load_tiny_imagenet(
    directory: str | os.PathLike,
    *,
    options: PipelineOptions | None = None,
    **kwargs,
) -> DatasetSplits:
    """Loads Tiny ImageNet from a local `tiny-imagenet-200` folder.

    The folder must follow the official layout: `wnids.txt` (one WordNet id
    per line), `train/<wnid>/images/*.JPEG`, and `val/images/*.JPEG` with
    `val/val_annotations.txt` (tab-separated: file name, wnid, bounding
    box). The labelled `val` split is used as the test split. Class `i` is
    the `i`-th wnid in sorted order (the convention of folder-based loaders
    such as torchvision's `ImageFolder`); training files are listed by class,
    then by file name; test files follow `val_annotations.txt`. JPEGs are
    decoded with `tf.io` as RGB (the few grayscale images are expanded), and
    the image size is read from the first training image (64x64 for the
    official data). Normalization statistics take one pass over the training
    images.

    Args:
        directory: The `tiny-imagenet-200` folder.
        options: How the pipelines are built (`PipelineOptions`).
            Defaults to `None` (`PipelineOptions()`).
        **kwargs: `PipelineOptions` fields (`batch_size`, `augment`,
            `horizontal_flip`, `crop_padding`, `normalization`, `seed`,
            `limit`, `validation_split`), overriding those of `options`.

    Returns:
        A `DatasetSplits` named "tiny_imagenet"; `class_names` are the wnids.

    Raises:
        FileNotFoundError: If the folder or a required file is missing.
        ValueError: If an annotation names an unknown wnid.
    """
    options = pipeline_options(options, kwargs)
    directory = os.fspath(directory)
    wnids = _tiny_imagenet_wnids(directory)
    class_index = {wnid: index for index, wnid in enumerate(wnids)}
    train_paths, train_labels = _tiny_imagenet_train_files(
        directory, wnids, class_index
    )
    test_paths, test_labels = _tiny_imagenet_test_files(directory, class_index)
    if not train_paths:
        raise FileNotFoundError(
            "Expected JPEG training images under "
            f"{os.path.join(directory, 'train')}/<wnid>/images/. Received: "
            "none. Check the folder layout."
        )
    tf = distribution.import_tensorflow(
        "Tiny ImageNet (its JPEG files are decoded with tf.io)"
    )
    first_image = tf.io.decode_jpeg(tf.io.read_file(train_paths[0]), channels=3)
    input_shape = tuple(int(dim) for dim in first_image.shape)

    def decode(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.ensure_shape(image, input_shape)

    return build_splits(
        "tiny_imagenet",
        Source(np.array(train_paths), np.array(train_labels, np.int64), decode),
        Source(np.array(test_paths), np.array(test_labels, np.int64), decode),
        input_shape=input_shape,
        num_classes=len(wnids),
        class_names=tuple(wnids),
        options=options,
    )


def _tiny_imagenet_annotations(directory: str) -> str:
    return os.path.join(directory, "val", "val_annotations.txt")


def _tiny_imagenet_wnids(directory: str) -> list[str]:
    """The sorted WordNet ids of `wnids.txt`, after checking that the folder
    has the official layout's two index files."""
    wnids_path = os.path.join(directory, "wnids.txt")
    for required in (wnids_path, _tiny_imagenet_annotations(directory)):
        if not os.path.isfile(required):
            raise FileNotFoundError(
                "Expected a `tiny-imagenet-200` folder in the official layout "
                "(wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
                "val/val_annotations.txt). Received: "
                f"directory={directory!r}, which has no {required}. Download "
                "and unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip "
                "and pass the unzipped folder as `directory=`."
            )
    with open(wnids_path, encoding="utf-8") as file:
        return sorted({line.strip() for line in file if line.strip()})


def _tiny_imagenet_train_files(
    directory: str, wnids: list[str], class_index: dict[str, int]
) -> tuple[list[str], list[int]]:
    """Training JPEG paths, by class then file name, and their labels."""
    train_paths, train_labels = [], []
    for wnid in wnids:
        images_dir = os.path.join(directory, "train", wnid, "images")
        if not os.path.isdir(images_dir):
            raise FileNotFoundError(
                f"Expected a folder of training images for every wnid in "
                f"wnids.txt. Received: no folder {images_dir}. Check that the "
                "archive was unzipped completely."
            )
        for filename in sorted(os.listdir(images_dir)):
            if filename.lower().endswith((".jpeg", ".jpg")):
                train_paths.append(os.path.join(images_dir, filename))
                train_labels.append(class_index[wnid])
    return train_paths, train_labels


def _tiny_imagenet_test_files(
    directory: str, class_index: dict[str, int]
) -> tuple[list[str], list[int]]:
    """The `val` JPEG paths in `val_annotations.txt`'s order, and their
    labels."""
    annotations_path = _tiny_imagenet_annotations(directory)
    test_paths, test_labels = [], []
    with open(annotations_path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            fields = line.rstrip("\n").split("\t")
            if not fields[0]:
                continue
            if len(fields) < 2 or fields[1] not in class_index:
                raise ValueError(
                    "Expected each line of val_annotations.txt to be "
                    "'<file name>\\t<wnid>\\t...' with a wnid listed in "
                    f"wnids.txt. Received: line {line_number}: {line!r} in "
                    f"{annotations_path}"
                )
            test_paths.append(os.path.join(directory, "val", "images", fields[0]))
            test_labels.append(class_index[fields[1]])
    return test_paths, test_labels


def load_tfds(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    options: PipelineOptions | None = None,
    **kwargs,
) -> DatasetSplits:
    """Loads CIFAR-10, CIFAR-100, MNIST or Fashion-MNIST with `tensorflow_datasets`.

    The "train" and "test" splits are read once into memory (50,000 CIFAR
    images take 150 MB as uint8). Labels are the `as_supervised` labels
    (the 100 fine classes for CIFAR-100).

    Args:
        name: One of "cifar10", "cifar100", "mnist", "fashion_mnist".
        data_dir: `tensorflow_datasets` data folder; `None` uses its default
            (`~/tensorflow_datasets`). Defaults to `None`.
        download: Whether `tensorflow_datasets` may download and prepare the
            data if it is not in `data_dir`. Defaults to `True`.
        options: How the pipelines are built (`PipelineOptions`).
            Defaults to `None` (`PipelineOptions()`).
        **kwargs: `PipelineOptions` fields (`batch_size`, `augment`,
            `horizontal_flip`, `crop_padding`, `normalization`, `seed`,
            `limit`, `validation_split`), overriding those of `options`.

    Returns:
        A `DatasetSplits` named `name`.
    """
    if name not in TFDS_NAMES:
        raise ValueError(
            f"Expected a tensorflow_datasets name in {list(TFDS_NAMES)}. "
            f"Received: name={name!r}. Other datasets are loaded with "
            "`load_dataset()`."
        )
    options = pipeline_options(options, kwargs)
    distribution.import_tensorflow(
        f"Loading {name!r} through tensorflow_datasets (pip install "
        "tensorflow-datasets)"
    )
    import tensorflow_datasets as tfds

    (train_ds, test_ds), info = tfds.load(
        name,
        split=["train", "test"],
        as_supervised=True,
        with_info=True,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        download=download,
    )
    x_train, y_train = _tfds_to_numpy(train_ds, options.limit)
    x_test, y_test = _tfds_to_numpy(test_ds, options.limit)
    label_feature = info.features["label"]
    return splits_from_arrays(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=int(label_feature.num_classes),
        class_names=tuple(label_feature.names),
        options=options,
    )



def _tfds_to_numpy(dataset: tf.data.Dataset, limit: int | None):
    if limit is not None:
        dataset = dataset.take(limit)
    images, labels = [], []
    for image_batch, label_batch in dataset.batch(4096).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    if not images:
        raise ValueError(
            "Expected a non-empty tensorflow_datasets split. Received: an "
            "empty split. Check `data_dir` and that the dataset is prepared."
        )
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)
