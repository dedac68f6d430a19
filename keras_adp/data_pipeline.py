"""How every dataset becomes ready-to-train `tf.data` pipelines, or arrays.

`PipelineOptions` says how the pipelines are built, `build_splits` builds
a `DatasetSplits` from a training and a test `Source` (uint8 images, or
file paths with a decoder) and `validation_indices` chooses the held-out
validation samples. On a Keras backend other than TensorFlow, images held
in memory and not augmented become `ArraySplit`s (NumPy arrays, no
TensorFlow needed); everything else is a `tf.data` pipeline, and
TensorFlow is imported only to build one. The loaders of
`keras_adp.data_loaders` read their sources and call `build_splits`;
`keras_adp.data` describes the preprocessing and re-exports these names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np

from keras_adp import distribution

__all__ = [
    "PipelineOptions",
    "DatasetSplits",
    "ArraySplit",
    "Source",
    "NORMALIZATIONS",
    "pipeline_options",
    "splits_from_arrays",
    "build_splits",
    "validation_indices",
]

NORMALIZATIONS = ("standardize", "rescale")

# Datasets whose images are digits: horizontal flips are off by default.
_DIGIT_DATASETS = ("mnist",)

_STATS_CHUNK = 4096

# Seed of the permutation that picks the validation samples: fixed, so that
# every run holds out the same samples whatever its `seed`.
_VALIDATION_SEED = 0


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """How every loader builds its pipelines (see the module docstring).

    Args:
        batch_size: Batch size of every pipeline. Defaults to `128`.
        augment: Whether to augment the training pipeline with a random
            padded crop and a random horizontal flip. Defaults to `False`.
        horizontal_flip: Whether augmentation flips images horizontally.
            `None` flips for every dataset except digits ("mnist").
            Defaults to `None`.
        crop_padding: Zero padding in pixels on each side before the random
            crop. `None` uses 4, or 2 for images smaller than 32x32.
            Defaults to `None`.
        normalization: "standardize" (per-channel mean/std of the training
            split) or "rescale" ([0, 1]). Defaults to `"standardize"`.
        seed: Seed of shuffling and augmentation; `None` for a random run.
            Defaults to `0`.
        limit: If set, keep only the first `limit` samples of each split.
            Defaults to `None`.
        validation_split: Fraction of the training samples held out as the
            validation split (see the module docstring), in `[0, 1)`.
            Defaults to `0.1`.

    Example:

    ```python
    options = data.PipelineOptions(batch_size=64, augment=True)
    splits = data.load_embedded(options)
    more = data.load_embedded(options, limit=512)  # fields override
    ```
    """

    batch_size: int = 128
    augment: bool = False
    horizontal_flip: bool | None = None
    crop_padding: int | None = None
    normalization: str = "standardize"
    seed: int | None = 0
    limit: int | None = None
    validation_split: float = 0.1

    def __post_init__(self):
        _validate_common(
            self.batch_size, self.normalization, self.limit,
            self.crop_padding, self.validation_split,
        )


_PIPELINE_FIELDS = frozenset(
    field.name for field in dataclasses.fields(PipelineOptions)
)


def pipeline_options(
    options: PipelineOptions | None, overrides: dict
) -> PipelineOptions:
    """`options` (default `PipelineOptions()`) with `overrides` applied."""
    if options is None:
        options = PipelineOptions()
    elif not isinstance(options, PipelineOptions):
        raise ValueError(
            "Expected `options` to be a `PipelineOptions` or None. "
            f"Received: options={options!r}"
        )
    unknown = sorted(set(overrides) - _PIPELINE_FIELDS)
    if unknown:
        raise TypeError(
            f"Unexpected keyword argument(s) {', '.join(unknown)}. Expected "
            f"`PipelineOptions` fields: {', '.join(sorted(_PIPELINE_FIELDS))}."
        )
    return dataclasses.replace(options, **overrides) if overrides else options


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
    """One split as NumPy arrays: what `DatasetSplits` holds instead of a
    `tf.data` pipeline on another Keras backend than TensorFlow (for images
    in memory, without augmentation).

    Pass `x`, `y`, `batch_size` (and `shuffle`) to `fit` or `evaluate`.

    Args:
        x: float32 images `(count, height, width, channels)`, normalized.
        y: int64 class indices `(count,)`.
        batch_size: the batch size of the split.
        shuffle: whether training reshuffles it every epoch (the training
            split). Defaults to `False`.
    """

    x: np.ndarray
    y: np.ndarray
    batch_size: int
    shuffle: bool = False


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    """A dataset split into ready-to-use training, validation and test pipelines.

    Every pipeline yields batches `(images, labels)`: `images` is float32 of
    shape `(batch, height, width, channels)` already normalized as
    `(raw_pixel - mean) / std`, and `labels` is int64 of shape `(batch,)`
    holding class indices in `[0, num_classes)`. On another Keras backend
    than TensorFlow, a source of images in memory without augmentation
    gives `ArraySplit`s of the same samples instead (the training one
    shuffled by `fit`).

    Args:
        name: The dataset name as accepted by `load_dataset`.
        train: Training pipeline: reshuffled every epoch, augmented when the
            loader was called with `augment=True`.
        validation: Validation pipeline: the training samples held out by
            `validation_split`, in their original order, never augmented;
            None when `validation_split=0`.
        test: Test pipeline in a fixed order, never augmented.
        train_unaugmented: The training samples (without the validation
            samples) in their fixed original order, never shuffled nor
            augmented. Used by `calibration_batch` and useful for measuring
            training accuracy.
        num_classes: Number of classes.
        input_shape: `(height, width, channels)` of one image.
        num_train: Number of samples trained on (after `limit`, without the
            validation samples).
        num_validation: Number of validation samples.
        num_test: Number of test samples (after `limit`).
        mean: Per-channel value subtracted from raw [0, 255] pixels.
        std: Per-channel value the centred pixels are divided by.
        class_names: Human-readable class names, index-aligned with the
            labels; empty when the source does not provide them.
    """

    name: str
    train: tf.data.Dataset | ArraySplit
    validation: tf.data.Dataset | ArraySplit | None
    test: tf.data.Dataset | ArraySplit
    train_unaugmented: tf.data.Dataset | ArraySplit
    num_classes: int
    input_shape: tuple[int, int, int]
    num_train: int
    num_validation: int
    num_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()


def validation_indices(
    num_samples: int, validation_split: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which training samples the loaders train on and which they hold out.

    `round(num_samples * validation_split)` samples (at least 1, and at most
    `num_samples - 1`) are chosen by a permutation drawn from
    `numpy.random.default_rng(0)`: a fixed choice that depends only on the
    two arguments.

    Args:
        num_samples: Number of training samples (after `limit`).
        validation_split: Fraction held out, in `[0, 1)`; 0 holds out
            nothing.

    Returns:
        `(train_indices, validation_indices)`: sorted int64 positions,
        disjoint, together covering `range(num_samples)`.

    Raises:
        ValueError: If `validation_split` is outside `[0, 1)`, or it is
            positive and there are fewer than 2 samples.
    """
    _validate_validation_split(validation_split)
    everything = np.arange(num_samples, dtype=np.int64)
    if validation_split == 0:
        return everything, everything[:0]
    if num_samples < 2:
        raise ValueError(
            "Expected at least 2 training samples to hold out a validation "
            f"split. Received: {num_samples} training sample(s) with "
            f"validation_split={validation_split!r}. Pass a larger `limit`, "
            "or `validation_split=0` to hold out nothing."
        )
    held = min(num_samples - 1, max(1, round(num_samples * validation_split)))
    permutation = np.random.default_rng(_VALIDATION_SEED).permutation(num_samples)
    return np.sort(permutation[held:]), np.sort(permutation[:held])


@dataclasses.dataclass(frozen=True)
class Source:
    """The samples of one split, before any pipeline is built.

    Args:
        items: uint8 images `(count, height, width, channels)`, or file
            paths that `decode` turns into such images.
        labels: int64 class indices `(count,)`.
        decode: maps one item to a uint8 image tensor, or None when the
            items are images already. Defaults to `None`.
    """

    items: np.ndarray
    labels: np.ndarray
    decode: Callable[[tf.Tensor], tf.Tensor] | None = None

    def head(self, limit: int | None) -> Source:
        if limit is None:
            return self
        return Source(self.items[:limit], self.labels[:limit], self.decode)

    def take(self, indices: np.ndarray) -> Source:
        return Source(self.items[indices], self.labels[indices], self.decode)

    def dataset(self) -> tf.data.Dataset:
        tf = distribution.import_tensorflow("A tf.data pipeline")
        return tf.data.Dataset.from_tensor_slices((self.items, self.labels))

    def decoded(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        if self.decode is None:
            return dataset
        import tensorflow as tf  # `dataset` is one.

        decode = self.decode
        return dataset.map(
            lambda item, label: (decode(item), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )


def splits_from_arrays(
    name, x_train, y_train, x_test, y_test, *, num_classes, class_names,
    options,
) -> DatasetSplits:
    """Builds `DatasetSplits` from uint8 NHWC arrays and integer labels.

    Args:
        name: the dataset name (`DatasetSplits.name`).
        x_train, y_train, x_test, y_test: uint8 images `(count, height,
            width, channels)` and integer labels `(count,)` of each split.
        num_classes: number of classes.
        class_names: names index-aligned with the labels, or `()`.
        options: the `PipelineOptions`.

    Returns:
        A `DatasetSplits`.
    """
    if x_train.ndim != 4 or x_test.ndim != 4:
        raise ValueError(
            "Expected image arrays of rank 4 (count, height, width, "
            f"channels). Received: train shape {x_train.shape}, test shape "
            f"{x_test.shape}"
        )
    return build_splits(
        name,
        Source(np.asarray(x_train, np.uint8), np.asarray(y_train, np.int64)),
        Source(np.asarray(x_test, np.uint8), np.asarray(y_test, np.int64)),
        input_shape=tuple(int(dim) for dim in x_train.shape[1:]),
        num_classes=num_classes,
        class_names=class_names,
        options=options,
    )


def build_splits(
    name: str,
    train_source: Source,
    test_source: Source,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    class_names: tuple[str, ...],
    options: PipelineOptions,
) -> DatasetSplits:
    """Builds the pipelines of `DatasetSplits` from the two splits' sources.

    `limit` cuts each source, `validation_indices` holds out the
    validation samples, the normalization statistics come from the
    samples trained on, and only the training pipeline is shuffled and
    augmented (see `keras_adp.data`).

    Args:
        name: the dataset name (digit datasets are not flipped by default).
        train_source, test_source: the `Source` of each split.
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of classes.
        class_names: names index-aligned with the labels, or `()`.
        options: the `PipelineOptions`.

    Returns:
        A `DatasetSplits`.
    """
    train_source = train_source.head(options.limit)
    test_source = test_source.head(options.limit)
    if len(train_source.items) == 0 or len(test_source.items) == 0:
        raise ValueError(
            "Expected at least one training and one test sample. Received: "
            f"{len(train_source.items)} training and {len(test_source.items)} "
            f"test samples for {name!r}."
        )
    train_indices, held_indices = validation_indices(
        len(train_source.items), options.validation_split
    )
    validation_source = train_source.take(held_indices)
    train_source = train_source.take(train_indices)
    num_train, num_test = len(train_source.items), len(test_source.items)
    mean, std = _mean_std(train_source, input_shape[-1], options.normalization)
    make = _arrays if _as_arrays(train_source, options) else _pipelines
    train, unaugmented, validation, test = make(
        name, input_shape, options, mean, std,
        train_source, validation_source, test_source,
    )
    return DatasetSplits(
        name=name,
        train=train,
        validation=validation if len(held_indices) else None,
        test=test,
        train_unaugmented=unaugmented,
        num_classes=int(num_classes),
        input_shape=tuple(int(dim) for dim in input_shape),
        num_train=num_train,
        num_validation=len(held_indices),
        num_test=num_test,
        mean=tuple(float(value) for value in mean),
        std=tuple(float(value) for value in std),
        class_names=tuple(class_names),
    )


def _as_arrays(train_source: Source, options: PipelineOptions) -> bool:
    """Whether the splits are `ArraySplit`s: images in memory, no
    augmentation, on another Keras backend than TensorFlow."""
    return (
        not distribution.is_tensorflow()
        and train_source.decode is None
        and not options.augment
    )


def _arrays(name, input_shape, options, mean, std, *sources):
    """`ArraySplit`s of the training (shuffled), unaugmented training,
    validation and test sources."""
    del name, input_shape  # Only the pipelines' augmentation uses them.
    train, validation, test = sources
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)

    def split(source, shuffle=False):
        x = (source.items.astype(np.float32) - mean) / std
        return ArraySplit(x, source.labels, options.batch_size, shuffle)

    unaugmented = split(train)
    shuffled = dataclasses.replace(unaugmented, shuffle=True)
    return shuffled, unaugmented, split(validation), split(test)


def _pipelines(name, input_shape, options, mean, std, *sources):
    """The `tf.data` pipelines of the training (shuffled, maybe augmented),
    unaugmented training, validation and test sources."""
    if options.augment:
        feature = (
            "Augmentation (`augment=True`, keras-adp train's --augment: "
            "random crops and flips in tf.data)"
        )
    elif sources[0].decode is not None:
        feature = "Decoding image files (tf.io)"
    else:
        feature = "A tf.data pipeline"
    tf = distribution.import_tensorflow(feature)
    train_source, validation_source, test_source = sources
    mean_tensor = tf.constant(mean, tf.float32)
    std_tensor = tf.constant(std, tf.float32)

    def normalize(image, label):
        return (tf.cast(image, tf.float32) - mean_tensor) / std_tensor, label

    def finish(dataset):
        dataset = dataset.map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(options.batch_size).prefetch(tf.data.AUTOTUNE)

    def in_order(source):
        return finish(source.decoded(source.dataset()))

    train = _shuffled_training_images(train_source, name, input_shape, options)
    return (
        finish(train), in_order(train_source), in_order(validation_source),
        in_order(test_source),
    )


def _mean_std(source: Source, channels: int, normalization: str):
    """Per-channel `(mean, std)` of the normalization: the statistics of
    `source`'s images ("standardize") or `(0, 255)` ("rescale")."""
    if normalization == "rescale":
        return (0.0,) * channels, (255.0,) * channels
    return _channel_mean_std(source, channels)


def _shuffled_training_images(
    source: Source, name: str, input_shape, options: PipelineOptions
) -> tf.data.Dataset:
    """The training samples, reshuffled every epoch, decoded, and augmented
    when `options.augment` (flips off by default for digits; padding 4, or
    2 for images smaller than 32x32)."""
    seed = options.seed
    train = source.dataset().shuffle(
        len(source.items), seed=seed, reshuffle_each_iteration=True
    )
    train = source.decoded(train)
    if not options.augment:
        return train
    horizontal_flip = options.horizontal_flip
    if horizontal_flip is None:
        horizontal_flip = name not in _DIGIT_DATASETS
    crop_padding = options.crop_padding
    if crop_padding is None:
        crop_padding = 4 if min(input_shape[:2]) >= 32 else 2
    return _augment(train, input_shape, crop_padding, horizontal_flip, seed)


def _augment(dataset, input_shape, crop_padding, horizontal_flip, seed):
    """Random padded crop and optional horizontal flip with per-sample seeds."""
    import tensorflow as tf  # `dataset` is a tf.data pipeline.

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    seeds = seeds.batch(2, drop_remainder=True)

    def augment_one(sample, sample_seed):
        image, label = sample
        crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(sample_seed, num=2)
        )
        if crop_padding > 0:
            padded = tf.pad(
                image,
                [[crop_padding, crop_padding], [crop_padding, crop_padding], [0, 0]],
            )
            image = tf.image.stateless_random_crop(
                padded, size=input_shape, seed=crop_seed
            )
        if horizontal_flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return image, label

    return tf.data.Dataset.zip((dataset, seeds)).map(
        augment_one, num_parallel_calls=tf.data.AUTOTUNE
    )


def _channel_mean_std(source: Source, channels: int):
    """Per-channel mean and standard deviation of raw pixels, in float64."""
    if source.decode is None:
        chunks = (
            source.items[start : start + _STATS_CHUNK]
            for start in range(0, len(source.items), _STATS_CHUNK)
        )
    else:  # Image files: decoded by the source's tf.data pipeline.
        images = source.decoded(source.dataset()).map(lambda image, _: image)
        chunks = images.batch(256).as_numpy_iterator()
    return _mean_std_from_chunks(chunks, channels)


def _mean_std_from_chunks(chunks: Iterable[np.ndarray], channels: int):
    total = np.zeros(channels, np.float64)
    total_squares = np.zeros(channels, np.float64)
    count = 0
    for chunk in chunks:
        pixels = chunk.reshape(-1, channels).astype(np.float64)
        total += pixels.sum(axis=0)
        total_squares += np.square(pixels).sum(axis=0)
        count += pixels.shape[0]
    mean = total / count
    variance = np.maximum(total_squares / count - np.square(mean), 0.0)
    std = np.sqrt(variance)
    # A constant channel would divide by zero; leave it centred but unscaled.
    std = np.where(std > 1e-6, std, 1.0)
    return tuple(mean.tolist()), tuple(std.tolist())


def _validate_common(
    batch_size, normalization, limit, crop_padding, validation_split
) -> None:
    _check_integer("batch_size", batch_size, 1)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Expected `normalization` to be one of {list(NORMALIZATIONS)}. "
            f"Received: normalization={normalization!r}"
        )
    _check_integer("limit", limit, 1, optional=True)
    _check_integer("crop_padding", crop_padding, 0, optional=True)
    _validate_validation_split(validation_split)


def _check_integer(name, value, minimum, *, optional=False) -> None:
    """`value` is an integer >= `minimum` (or None when `optional`)."""
    if optional and value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        expected = f"an integer >= {minimum}"
        raise ValueError(
            f"Expected `{name}` to be {'None or ' * optional}{expected}. "
            f"Received: {name}={value!r}"
        )


def _validate_validation_split(validation_split) -> None:
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, (int, float, np.integer, np.floating))
        or not 0 <= validation_split < 1
    ):
        raise ValueError(
            "Expected `validation_split` to be a number in [0, 1), the "
            "fraction of the training samples held out for validation. "
            f"Received: validation_split={validation_split!r}. Pass e.g. "
            "0.1, or 0 to hold out nothing."
        )
