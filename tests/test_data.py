"""Tests for keras_adp.data: loaders, preprocessing, calibration inputs.

Every test runs offline: tensorflow_datasets is mocked, IDX files and a
Tiny ImageNet folder are generated in `tmp_path`.
"""

import gzip
import importlib.util
import os
import pathlib
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_adp import data
from keras_adp import idx

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def idx_bytes(array, type_code=0x08, big_endian_dtype=">u1"):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array).astype(big_endian_dtype).tobytes()


def write_fashion_mnist_idx(directory, num_train=30, num_test=10, compressed=True):
    """Writes the four IDX files with images whose pixels encode their index."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(num_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(num_test) % 10).astype(np.uint8),
    }
    for key, basename in data.FASHION_MNIST_FILES.items():
        content = idx_bytes(arrays[key])
        if compressed:
            (directory / (basename + ".gz")).write_bytes(gzip.compress(content))
        else:
            (directory / basename).write_bytes(content)
    return arrays


def write_tiny_imagenet(root, images_per_class=3, size=8):
    """Writes a 2-class `tiny-imagenet-200` folder; returns (wnids, val labels)."""
    root = pathlib.Path(root) / "tiny-imagenet-200"
    # Deliberately unsorted in wnids.txt: classes are indexed in sorted order.
    wnids = ["n02000002", "n01000001"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)

    def write_jpeg(path, value):
        image = np.full((size, size, 3), value, np.uint8)
        image[0, 0] = rng.integers(0, 256, 3, dtype=np.uint8)
        path.write_bytes(tf.io.encode_jpeg(tf.constant(image)).numpy())

    for wnid_position, wnid in enumerate(wnids):
        images_dir = root / "train" / wnid / "images"
        images_dir.mkdir(parents=True)
        for number in range(images_per_class):
            write_jpeg(images_dir / f"{wnid}_{number}.JPEG", 40 + 100 * wnid_position)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    annotations = []
    val_wnids = ["n01000001", "n02000002", "n01000001"]
    for number, wnid in enumerate(val_wnids):
        filename = f"val_{number}.JPEG"
        write_jpeg(root / "val" / "images" / filename, 10 * number)
        annotations.append(f"{filename}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root, val_wnids


def all_images(dataset):
    return np.concatenate([images for images, _ in dataset.as_numpy_iterator()])


def all_labels(dataset):
    return np.concatenate([labels for _, labels in dataset.as_numpy_iterator()])


def sort_rows(images):
    flat = images.reshape(len(images), -1)
    return flat[np.lexsort(flat.T[::-1])]


@pytest.fixture(scope="module")
def embedded_small():
    return data.load_embedded(batch_size=16, limit=64)


# ---------------------------------------------------------------------------
# Embedded dataset
# ---------------------------------------------------------------------------


def test_embedded_subset_has_600_train_and_100_test_images_per_class():
    arrays = data.load_embedded_arrays()
    assert arrays["x_train"].shape == (6000, 28, 28)
    assert arrays["x_test"].shape == (1000, 28, 28)
    assert arrays["x_train"].dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(arrays["y_train"]), [600] * 10)
    np.testing.assert_array_equal(np.bincount(arrays["y_test"]), [100] * 10)
    # Kept in original file order.
    assert np.all(np.diff(arrays["train_indices"]) > 0)
    assert np.all(np.diff(arrays["test_indices"]) > 0)


def test_embedded_file_is_small_enough_to_bundle():
    path = REPO_ROOT / "keras_adp" / "data_files" / data.EMBEDDED_FILENAME
    assert path.stat().st_size < 4 * 1024 * 1024


def test_load_embedded_returns_standardized_28x28x1_batches():
    splits = data.load_embedded(batch_size=500)
    assert splits.name == "embedded"
    assert (splits.num_train, splits.num_validation, splits.num_test) == (
        5400, 600, 1000,
    )
    assert splits.input_shape == (28, 28, 1)
    assert splits.num_classes == 10
    assert splits.class_names[9] == "Ankle boot"
    images, labels = next(iter(splits.train))
    assert images.shape == (500, 28, 28, 1) and images.dtype == tf.float32
    assert labels.shape == (500,) and labels.dtype == tf.int64
    train_images = all_images(splits.train_unaugmented)
    np.testing.assert_allclose(train_images.mean(), 0.0, atol=1e-3)
    np.testing.assert_allclose(train_images.std(), 1.0, atol=1e-3)


def test_rescale_normalization_maps_pixels_to_unit_range(embedded_small):
    splits = data.load_embedded(batch_size=16, limit=64, normalization="rescale")
    images = all_images(splits.test)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert splits.mean == (0.0,) and splits.std == (255.0,)
    raw = data.load_embedded_arrays()["x_test"][:64, ..., np.newaxis]
    np.testing.assert_allclose(images, raw / 255.0, rtol=1e-6)
    # Standardized and rescaled pipelines differ only by the affine map.
    standardized = all_images(embedded_small.test)
    np.testing.assert_allclose(
        standardized,
        (raw - embedded_small.mean[0]) / embedded_small.std[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_limit_keeps_first_samples_of_each_split(embedded_small):
    arrays = data.load_embedded_arrays()
    train_indices, validation_indices = data.validation_indices(64, 0.1)
    assert (embedded_small.num_train, embedded_small.num_validation) == (58, 6)
    assert embedded_small.num_test == 64
    np.testing.assert_array_equal(
        all_labels(embedded_small.train_unaugmented),
        arrays["y_train"][:64][train_indices],
    )
    np.testing.assert_array_equal(
        all_labels(embedded_small.validation),
        arrays["y_train"][:64][validation_indices],
    )
    np.testing.assert_array_equal(
        all_labels(embedded_small.test), arrays["y_test"][:64]
    )
    np.testing.assert_array_equal(
        np.sort(all_labels(embedded_small.train)),
        np.sort(arrays["y_train"][:64][train_indices]),
    )


def test_embedded_subset_matches_official_files_when_available():
    source = idx._SYSTEM_FASHION_MNIST_DIR
    if idx._idx_files_in(source) is None:
        pytest.skip(f"official Fashion-MNIST files not installed in {source}")
    spec = importlib.util.spec_from_file_location(
        "make_embedded_subset", REPO_ROOT / "benchmarks" / "make_embedded_subset.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rebuilt = script.build_subset(source)
    bundled = data.load_embedded_arrays()
    assert sorted(rebuilt) == sorted(bundled)
    for key in bundled:
        np.testing.assert_array_equal(rebuilt[key], bundled[key], err_msg=key)


# ---------------------------------------------------------------------------
# Augmentation, shuffling
# ---------------------------------------------------------------------------


def test_augmentation_keeps_shapes_and_leaves_test_split_unchanged(embedded_small):
    augmented = data.load_embedded(batch_size=16, limit=64, augment=True)
    images, labels = next(iter(augmented.train))
    assert images.shape == (16, 28, 28, 1) and labels.shape == (16,)
    np.testing.assert_array_equal(
        all_images(augmented.test), all_images(embedded_small.test)
    )
    np.testing.assert_array_equal(
        all_images(augmented.train_unaugmented),
        all_images(embedded_small.train_unaugmented),
    )


def test_augmentation_changes_training_images(embedded_small):
    augmented = data.load_embedded(batch_size=64, limit=64, augment=True)
    assert not np.array_equal(
        sort_rows(all_images(augmented.train)),
        sort_rows(all_images(embedded_small.train_unaugmented)),
    )


def test_augmentation_without_padding_or_flip_only_shuffles(embedded_small):
    augmented = data.load_embedded(
        batch_size=64, limit=64, augment=True, crop_padding=0, horizontal_flip=False
    )
    np.testing.assert_array_equal(
        sort_rows(all_images(augmented.train)),
        sort_rows(all_images(embedded_small.train_unaugmented)),
    )


def test_flip_only_augmentation_yields_original_or_mirrored_images(embedded_small):
    augmented = data.load_embedded(
        batch_size=64, limit=64, augment=True, crop_padding=0, horizontal_flip=True
    )
    unaugmented = all_images(embedded_small.train_unaugmented)
    original = {image.tobytes() for image in unaugmented}
    mirrored = {image[:, ::-1].tobytes() for image in unaugmented}
    flipped_count = 0
    for image in all_images(augmented.train):
        assert image.tobytes() in original or image.tobytes() in mirrored
        flipped_count += image.tobytes() not in original
    assert 0 < flipped_count < 64


def test_same_seed_gives_same_batches_and_other_seed_differs():
    def first_batch(seed):
        splits = data.load_embedded(batch_size=32, limit=64, augment=True, seed=seed)
        return next(iter(splits.train))[0].numpy()

    np.testing.assert_array_equal(first_batch(3), first_batch(3))
    assert not np.array_equal(first_batch(3), first_batch(4))


def test_training_pipeline_reshuffles_every_epoch(embedded_small):
    epoch_one = all_labels(embedded_small.train)
    epoch_two = all_labels(embedded_small.train)
    assert not np.array_equal(epoch_one, epoch_two)
    np.testing.assert_array_equal(np.sort(epoch_one), np.sort(epoch_two))


# ---------------------------------------------------------------------------
# Validation split
# ---------------------------------------------------------------------------


def load_with_idx_files(tmp_path, **kwargs):
    write_fashion_mnist_idx(tmp_path / "idx", num_train=30, num_test=10)
    return data.load_fashion_mnist_idx(tmp_path / "idx", **kwargs)


def load_with_tiny_imagenet(tmp_path, **kwargs):
    root, _ = write_tiny_imagenet(tmp_path, images_per_class=5)
    return data.load_tiny_imagenet(root, **kwargs)


def load_with_mocked_tfds(tmp_path, **kwargs):
    with tfds.testing.mock_data(num_examples=20):
        return data.load_tfds("cifar10", **kwargs)


@pytest.mark.parametrize(
    "load",
    [
        lambda tmp_path, **kwargs: data.load_embedded(limit=200, **kwargs),
        load_with_idx_files,
        load_with_tiny_imagenet,
        load_with_mocked_tfds,
    ],
    ids=["embedded", "fashion_mnist_idx", "tiny_imagenet", "tfds"],
)
def test_validation_samples_are_held_out_of_every_training_pipeline(
    tmp_path, load
):
    everything = load(tmp_path / "all", normalization="rescale", validation_split=0)
    splits = load(
        tmp_path / "split", normalization="rescale", validation_split=0.3,
        batch_size=7,
    )

    all_rows = [image.tobytes() for image in all_images(everything.train_unaugmented)]
    assert len(set(all_rows)) == len(all_rows)  # Samples are told apart by content.
    train_rows = {image.tobytes() for image in all_images(splits.train_unaugmented)}
    shuffled_rows = [image.tobytes() for image in all_images(splits.train)]
    validation_rows = [image.tobytes() for image in all_images(splits.validation)]
    assert not train_rows & set(validation_rows)
    assert sorted(shuffled_rows) == sorted(train_rows)  # One epoch, no overlap.
    assert sorted(train_rows | set(validation_rows)) == sorted(all_rows)
    assert splits.num_validation == len(validation_rows) == round(0.3 * len(all_rows))
    assert splits.num_train == len(train_rows) == len(all_rows) - len(validation_rows)
    # Which samples: `validation_indices`, in their original order.
    _, held = data.validation_indices(len(all_rows), 0.3)
    assert validation_rows == [all_rows[index] for index in held]


def test_validation_split_is_fixed_unaugmented_and_the_same_for_every_seed():
    plain = data.load_embedded(limit=100, batch_size=8)
    validation = all_images(plain.validation)

    for seed in (0, 1, None):
        augmented = data.load_embedded(
            limit=100, batch_size=8, augment=True, seed=seed
        )
        np.testing.assert_array_equal(all_images(augmented.validation), validation)
    np.testing.assert_array_equal(all_images(plain.validation), validation)


def test_validation_split_zero_holds_out_nothing():
    splits = data.load_embedded(limit=50, validation_split=0)

    assert splits.validation is None
    assert (splits.num_train, splits.num_validation) == (50, 0)


def test_standardization_uses_the_training_samples_only():
    splits = data.load_embedded(limit=300, validation_split=0.5)
    arrays = data.load_embedded_arrays()
    train_indices, _ = data.validation_indices(300, 0.5)

    pixels = arrays["x_train"][:300][train_indices].astype(np.float64)
    np.testing.assert_allclose(splits.mean, [pixels.mean()], rtol=1e-9)
    np.testing.assert_allclose(splits.std, [pixels.std()], rtol=1e-9)


@pytest.mark.parametrize(
    "num_samples, validation_split, held_out",
    [(100, 0.1, 10), (7, 0.1, 1), (2, 0.9, 1), (5, 0.0, 0), (6000, 0.25, 1500)],
)
def test_validation_indices_are_disjoint_sorted_and_cover_every_sample(
    num_samples, validation_split, held_out
):
    train, held = data.validation_indices(num_samples, validation_split)

    assert len(held) == held_out
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train, held])), np.arange(num_samples)
    )
    again_train, again_held = data.validation_indices(num_samples, validation_split)
    np.testing.assert_array_equal(again_held, held)


def test_validation_split_of_a_single_sample_is_refused():
    with pytest.raises(ValueError, match="at least 2 training samples"):
        data.load_embedded(limit=1)
    assert data.load_embedded(limit=1, validation_split=0).num_train == 1


# ---------------------------------------------------------------------------
# tensorflow_datasets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, input_shape, num_classes",
    [("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100)],
)
def test_load_tfds_reads_mocked_dataset(name, input_shape, num_classes):
    with tfds.testing.mock_data(num_examples=12):
        splits = data.load_tfds(name, batch_size=5, augment=True)
    assert splits.name == name
    assert splits.input_shape == input_shape
    assert splits.num_classes == num_classes
    assert (splits.num_train, splits.num_validation, splits.num_test) == (11, 1, 12)
    batch_shapes = [images.shape[0] for images, _ in splits.train]
    assert batch_shapes == [5, 5, 1]
    images, labels = next(iter(splits.test))
    assert images.shape == (5, *input_shape)
    assert np.all((labels.numpy() >= 0) & (labels.numpy() < num_classes))
    assert len(splits.mean) == input_shape[-1]


def test_load_dataset_dispatches_tfds_names_and_limits_samples():
    with tfds.testing.mock_data(num_examples=12):
        splits = data.load_dataset("fashion_mnist", batch_size=4, limit=8)
    assert splits.input_shape == (28, 28, 1)
    assert (splits.num_train, splits.num_validation, splits.num_test) == (7, 1, 8)


def test_mnist_augmentation_does_not_flip_digits_by_default():
    with tfds.testing.mock_data(num_examples=16):
        plain = data.load_tfds("mnist", batch_size=16)
        augmented = data.load_tfds(
            "mnist", batch_size=16, augment=True, crop_padding=0
        )
    np.testing.assert_array_equal(
        sort_rows(all_images(augmented.train)),
        sort_rows(all_images(plain.train_unaugmented)),
    )


def test_load_tfds_rejects_other_names():
    with pytest.raises(ValueError, match="cifar100"):
        data.load_tfds("imagenet2012")


# ---------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [True, False])
def test_load_fashion_mnist_idx_reads_compressed_and_plain_files(tmp_path, compressed):
    arrays = write_fashion_mnist_idx(tmp_path, compressed=compressed)
    splits = data.load_fashion_mnist_idx(
        tmp_path, batch_size=8, normalization="rescale"
    )
    assert splits.name == "fashion_mnist_idx"
    assert (splits.num_train, splits.num_validation, splits.num_test) == (27, 3, 10)
    assert splits.input_shape == (28, 28, 1)
    train_indices, validation_indices = data.validation_indices(30, 0.1)
    np.testing.assert_allclose(
        all_images(splits.train_unaugmented)[..., 0],
        arrays["train_images"][train_indices] / 255.0,
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        all_images(splits.validation)[..., 0],
        arrays["train_images"][validation_indices] / 255.0,
        rtol=1e-6,
    )
    np.testing.assert_array_equal(all_labels(splits.test), arrays["test_labels"])


def test_read_idx_supports_multibyte_big_endian_types(tmp_path):
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    path = tmp_path / "values-idx2-int"
    path.write_bytes(idx_bytes(values, type_code=0x0C, big_endian_dtype=">i4"))
    np.testing.assert_array_equal(data.read_idx(path), values)
    floats = np.linspace(0, 1, 5, dtype=np.float32)
    path = tmp_path / "values-idx1-float.gz"
    path.write_bytes(gzip.compress(idx_bytes(floats, 0x0D, ">f4")))
    np.testing.assert_array_equal(data.read_idx(path), floats)


def test_read_idx_rejects_truncated_file(tmp_path):
    path = tmp_path / "truncated"
    path.write_bytes(idx_bytes(np.zeros((4, 2, 2), np.uint8))[:-3])
    with pytest.raises(ValueError, match="Expected 16 data bytes"):
        data.read_idx(path)


def test_read_idx_rejects_bad_magic_number(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x89PNG not an idx file")
    with pytest.raises(ValueError, match="two zero bytes"):
        data.read_idx(path)


def test_load_fashion_mnist_idx_rejects_label_count_mismatch(tmp_path):
    write_fashion_mnist_idx(tmp_path)
    labels_path = tmp_path / "train-labels-idx1-ubyte.gz"
    labels_path.write_bytes(gzip.compress(idx_bytes(np.zeros(29, np.uint8))))
    with pytest.raises(ValueError, match="as many train labels"):
        data.load_fashion_mnist_idx(tmp_path)


def test_default_search_finds_files_under_keras_adp_data(tmp_path, monkeypatch):
    write_fashion_mnist_idx(tmp_path / "fashion-mnist", num_train=20, num_test=10)
    monkeypatch.setenv("KERAS_ADP_DATA", str(tmp_path))
    splits = data.load_fashion_mnist_idx(batch_size=10)
    assert (splits.num_train, splits.num_validation, splits.num_test) == (18, 2, 10)


def test_missing_idx_files_error_lists_every_searched_path(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_ADP_DATA", str(tmp_path / "adp"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(idx, "_SYSTEM_FASHION_MNIST_DIR", str(tmp_path / "system"))
    with pytest.raises(FileNotFoundError) as error:
        data.load_fashion_mnist_idx()
    message = str(error.value)
    for searched in (
        os.path.join(str(tmp_path / "adp"), "fashion-mnist"),
        os.path.join(str(tmp_path / "keras"), "datasets", "fashion-mnist"),
        str(tmp_path / "system"),
    ):
        assert searched in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "KERAS_ADP_DATA" in message and "directory=" in message


def test_explicit_directory_without_files_names_missing_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="lacks train-labels-idx1-ubyte"):
        data.load_fashion_mnist_idx(tmp_path)


# ---------------------------------------------------------------------------
# Tiny ImageNet
# ---------------------------------------------------------------------------


def test_load_tiny_imagenet_reads_official_layout(tmp_path):
    root, val_wnids = write_tiny_imagenet(tmp_path)
    splits = data.load_tiny_imagenet(root, batch_size=4, augment=True)
    assert splits.name == "tiny_imagenet"
    assert splits.class_names == ("n01000001", "n02000002")
    assert splits.num_classes == 2
    assert splits.input_shape == (8, 8, 3)
    assert (splits.num_train, splits.num_validation, splits.num_test) == (5, 1, 3)
    np.testing.assert_array_equal(
        all_labels(splits.test), [splits.class_names.index(w) for w in val_wnids]
    )
    train_indices, validation_indices = data.validation_indices(6, 0.1)
    labels = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(
        all_labels(splits.train_unaugmented), labels[train_indices]
    )
    np.testing.assert_array_equal(
        all_labels(splits.validation), labels[validation_indices]
    )
    images, _ = next(iter(splits.train))
    assert images.shape == (4, 8, 8, 3)


def test_load_dataset_tiny_imagenet_requires_directory():
    with pytest.raises(ValueError, match="directory"):
        data.load_dataset("tiny_imagenet")


def test_load_tiny_imagenet_missing_folder_raises_with_layout_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        data.load_tiny_imagenet(tmp_path / "nowhere")


def test_load_tiny_imagenet_rejects_unknown_wnid_in_annotations(tmp_path):
    root, _ = write_tiny_imagenet(tmp_path)
    annotations = root / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn09999999\t0\t0\t7\t7\n")
    with pytest.raises(ValueError, match="n09999999"):
        data.load_tiny_imagenet(root)


# ---------------------------------------------------------------------------
# Dispatch and argument validation
# ---------------------------------------------------------------------------


def test_load_dataset_defaults_to_embedded():
    assert data.load_dataset(limit=8).name == "embedded"


def test_load_dataset_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as error:
        data.load_dataset("imagenet")
    for name in data.DATASET_NAMES:
        assert name in str(error.value)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"normalization": "zscore"}, "normalization"),
        ({"limit": 0}, "limit"),
        ({"crop_padding": -1}, "crop_padding"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": -0.1}, "validation_split"),
        ({"validation_split": float("nan")}, "validation_split"),
        ({"validation_split": True}, "validation_split"),
    ],
)
def test_invalid_loader_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        data.load_embedded(**kwargs)


# ---------------------------------------------------------------------------
# Calibration inputs
# ---------------------------------------------------------------------------


def test_calibration_batch_is_deterministic_and_unaugmented():
    splits = data.load_embedded(batch_size=16, limit=100, augment=True)
    first = data.calibration_batch(splits, num_samples=20, seed=1)
    second = data.calibration_batch(splits, num_samples=20, seed=1)
    assert first.shape == (20, 28, 28, 1) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert splits.num_train == 90
    expected_indices = np.sort(
        np.random.default_rng(1).choice(90, size=20, replace=False)
    )
    np.testing.assert_array_equal(
        first, all_images(splits.train_unaugmented)[expected_indices]
    )
    other_seed = data.calibration_batch(splits, num_samples=20, seed=2)
    assert not np.array_equal(first, other_seed)


def test_calibration_batch_accepts_datasets_and_arrays_consistently():
    inputs = np.random.default_rng(0).normal(size=(40, 4, 4, 2)).astype(np.float32)
    labels = np.arange(40)
    from_array = data.calibration_batch(inputs, num_samples=8, seed=5)
    batched = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(7)
    unbatched = tf.data.Dataset.from_tensor_slices(inputs)
    filtered = unbatched.filter(lambda _: True)  # unknown cardinality
    for dataset in (batched, unbatched, filtered):
        np.testing.assert_array_equal(
            data.calibration_batch(dataset, num_samples=8, seed=5), from_array
        )


def test_calibration_batch_returns_all_samples_when_fewer_than_requested():
    inputs = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(
        data.calibration_batch(inputs, num_samples=256), inputs
    )


def test_calibration_batch_rejects_invalid_arguments():
    with pytest.raises(ValueError, match="`num_samples`"):
        data.calibration_batch(np.zeros((4, 2)), num_samples=0)
    with pytest.raises(ValueError, match="DatasetSplits"):
        data.calibration_batch([1, 2, 3])
    with pytest.raises(ValueError, match="infinite"):
        data.calibration_batch(tf.data.Dataset.from_tensors(1.0).repeat())


def test_pipeline_options_are_shared_by_the_loaders_and_overridden_by_keywords():
    options = data.PipelineOptions(batch_size=8, limit=40, validation_split=0)
    splits = data.load_dataset("embedded", options=options)
    assert splits.num_train == 40
    assert next(iter(splits.train))[0].shape[0] == 8
    smaller = data.load_embedded(options, limit=16)
    assert smaller.num_train == 16
    assert options.limit == 40  # Not modified.


def test_pipeline_options_are_checked_when_made():
    with pytest.raises(ValueError, match="`batch_size` to be an integer"):
        data.PipelineOptions(batch_size=0)
    with pytest.raises(ValueError, match="`validation_split` to be a number"):
        data.load_embedded(validation_split=1.5)


def test_loaders_reject_unknown_keywords_and_other_options():
    with pytest.raises(TypeError, match="batchsize"):
        data.load_embedded(batchsize=8)
    with pytest.raises(ValueError, match="`options` to be a `PipelineOptions`"):
        data.load_embedded({"batch_size": 8})
