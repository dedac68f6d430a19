"""The training and validation inputs of each epoch's `model.fit`.

`ReplicaSafeInputs` keeps every replica's share of a batch non-empty and
counts the samples of an epoch. Backend-neutral: TensorFlow is imported
only for `tf.data.Dataset` inputs (which can only exist when it is).
"""

from __future__ import annotations

import keras
import numpy as np

from keras_adp import distribution
from keras_adp import inputs as inputs_lib

__all__ = [
    "ReplicaSafeInputs",
    "leaves_a_replica_empty",
    "fills_every_replica",
]


class ReplicaSafeInputs:
    """The training and validation inputs as handed to each `model.fit`.

    Under a strategy with `replicas` > 1, no replica may receive an empty
    batch (TensorFlow's oneDNN CPU kernels mis-shape one): a last training
    batch of fewer samples than replicas is left out of the epoch (the
    arrays are reshuffled every epoch, so other samples are left out each
    time), validation arrays get a batch size whose last batch is whole or
    has a sample per replica, and batches of datasets smaller than
    `replicas` are filtered out. On JAX, whose `keras.distribution` shards
    a batch in equal parts, "a share for every replica" means a whole
    multiple of `replicas` samples in every batch: `batch_size` must be
    one, a last training batch that is not is left out of the epoch, and
    validation arrays lose their last `len % replicas` samples (the same
    ones every epoch). With one replica everything passes as it
    is. Samples per epoch come from the arrays' length, or are counted
    while Keras reads a dataset in the first epoch (never by an extra
    pass).
    """

    def __init__(
        self, x, y, batch_size, validation_data, steps_per_epoch, replicas
    ):
        self.y = y
        self.replicas = replicas
        self.batch_size = 32 if batch_size is None else int(batch_size)
        self.steps_per_epoch = steps_per_epoch
        self.validation_data = validation_data
        self.validation_batch_size = None
        self._counter = [0, 0]  # samples, batches
        self._dataset = inputs_lib.is_dataset(x)
        self._x = x
        # JAX's keras.distribution shards a batch in equal parts.
        self._equal = not distribution.is_tensorflow()
        if replicas > 1:
            self._make_replica_safe()

    def _uneven(self, samples: int) -> bool:
        """Whether a batch of `samples` cannot be shared by the replicas."""
        if self._equal:
            return samples % self.replicas != 0
        return leaves_a_replica_empty(samples, self.replicas)

    def _make_replica_safe(self) -> None:
        replicas = self.replicas
        if self._dataset:
            self._x = self._x.filter(
                fills_every_replica(replicas, equal=self._equal)
            )
        else:
            if self._uneven(self.batch_size):
                how = (
                    f"Keras on {keras.backend.backend()} splits a batch in "
                    f"{replicas} equal shares"
                    if self._equal
                    else "TensorFlow splits a batch in shares of "
                    f"ceil({self.batch_size}/{replicas}) samples, which "
                    "leaves a replica without any"
                )
                raise ValueError(
                    f"Received batch_size={self.batch_size} for {replicas} "
                    f"replicas: {how}. Expected a batch size "
                    "that gives every replica samples. Fix: use a multiple "
                    f"of {replicas}, e.g. batch_size="
                    f"{-(-self.batch_size // replicas) * replicas}."
                )
            samples = inputs_lib.num_samples(self._x)
            remainder = samples % self.batch_size
            if self.steps_per_epoch is None and self._uneven(remainder):
                if samples < self.batch_size:
                    raise ValueError(
                        f"Received {samples} training samples for "
                        f"{replicas} replicas, too few to give each replica "
                        "a share. Fix: train on more samples."
                    )
                # The last batch is left out of each epoch (other samples
                # each time, since the arrays are reshuffled).
                self.steps_per_epoch = samples // self.batch_size
        data = self.validation_data
        if inputs_lib.is_dataset(data):
            self.validation_data = data.filter(
                fills_every_replica(replicas, equal=self._equal)
            )
        elif data is not None and self._equal:
            self._equal_validation_shares(data)
        elif data is not None:
            samples = inputs_lib.num_samples(data[0])
            size = self.batch_size
            while size <= samples and (
                leaves_a_replica_empty(size, replicas)
                or leaves_a_replica_empty(samples % size, replicas)
            ):
                size += 1
            if size > samples and leaves_a_replica_empty(samples, replicas):
                raise ValueError(
                    f"Received {samples} validation samples for {replicas} "
                    "replicas, too few to give each replica a share. Fix: "
                    "validate on more samples."
                )
            self.validation_batch_size = min(size, samples)

    def _equal_validation_shares(self, data) -> None:
        """Validation arrays cut to a whole number of replica batches."""
        samples = inputs_lib.num_samples(data[0])
        kept = samples - samples % self.replicas
        if kept == 0:
            raise ValueError(
                f"Received {samples} validation samples for {self.replicas} "
                "replicas, too few to give each replica a share. Fix: "
                "validate on more samples."
            )
        if kept < samples:
            rows = np.arange(kept)
            data = tuple(inputs_lib.take_rows(part, rows) for part in data)
        self.validation_data = data
        self.validation_batch_size = min(self.batch_size, kept)

    def x(self, *, count: bool):
        """`x` for this epoch's `fit`; counting its samples when asked."""
        if not (count and self._dataset):
            return self._x
        import tensorflow as tf

        self._counter = [0, 0]
        counter = self._counter

        def add(size):
            counter[0] += int(size)
            counter[1] += 1
            return np.int64(size)

        @tf.autograph.experimental.do_not_convert
        def counted(*element):
            first = tf.nest.flatten(element)[0]
            done = tf.numpy_function(add, [tf.shape(first)[0]], tf.int64)
            with tf.control_dependencies([done]):
                element = tf.nest.map_structure(tf.identity, element)
            return element if len(element) > 1 else element[0]

        return self._x.map(counted)

    def samples_per_epoch(self) -> int | None:
        """Known before training for arrays; None for datasets."""
        if self._dataset:
            return None
        samples = inputs_lib.num_samples(self._x)
        if self.steps_per_epoch is not None:
            samples = min(samples, self.steps_per_epoch * self.batch_size)
        return samples

    def counted_samples(self) -> int:
        """Samples of one epoch, from the count of the first one.

        With `steps_per_epoch`, Keras' prefetching may read a few batches
        more than it trains on: the count is scaled to the steps taken.
        """
        samples, batches = self._counter
        if self.steps_per_epoch is not None and batches > 0:
            return int(round(samples / batches * self.steps_per_epoch))
        return samples


def leaves_a_replica_empty(samples: int, replicas: int) -> bool:
    """Whether a batch of `samples` leaves one of `replicas` with none.

    TensorFlow splits a batch into shares of `ceil(samples / replicas)` in
    replica order (e.g. 4 samples on 3 replicas: 2, 2, 0).
    """
    if samples == 0 or replicas == 1:
        return False
    return (replicas - 1) * -(-samples // replicas) >= samples


def fills_every_replica(replicas: int, *, equal: bool = False):
    """A `Dataset.filter` predicate: the batch gives every replica samples
    (with `equal`, the same number of samples: a multiple of `replicas`)."""
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert
    def keep(*element):
        count = tf.shape(tf.nest.flatten(element)[0])[0]
        if equal:
            return tf.equal(count % replicas, 0)
        share = (count + replicas - 1) // replicas
        return (replicas - 1) * share < count

    return keep
