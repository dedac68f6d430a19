"""TensorFlow distributed training: chief and workers, replica-safe inputs, the
only patch of private Keras functions in the package, and its only access to
TensorFlow internals (`tensorflow.python`).

The trainer trains with TensorFlow's own strategies
(`tf.distribute.MirroredStrategy`, `MultiWorkerMirroredStrategy`). What
distribution adds lives here:

- `is_chief`: only the chief writes to the run directory (through
  `keras_adp.distribution.write_on_chief`);
  the other workers of a multi-worker run save into a temporary directory
  that is deleted at once, as TensorFlow advises, because saving may read
  variables synchronised on read, which takes every worker's part in an
  all-reduce.
- `check_workers_agree`: every worker must resume the same checkpoint.
- (`keras_adp.epoch_inputs.ReplicaSafeInputs`, backend-neutral, makes sure
  no replica ever receives an empty batch: TensorFlow's oneDNN CPU kernels
  mis-shape one.)
- `distributed_fit_fixes`: Keras 3's own `fit` fails under a multi-worker
  strategy (keras-team/keras#20585); while the trainer's `fit` calls run,
  two private Keras functions are replaced and then restored.
- `clear_kernel_cache`: drops TensorFlow's eager kernel cache (private
  `tensorflow.python.eager.context`), which `keras_adp.rebuild` calls after
  every rebuild.

TensorFlow only: the rest of the package reaches this module through the
backend-neutral `keras_adp.distribution` (and `keras_adp.rebuild` for
`clear_kernel_cache`), which import it lazily on the TensorFlow backend.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import tensorflow as tf

__all__ = [
    "is_chief",
    "is_multi_worker",
    "warn_if_unseeded",
    "check_workers_agree",
    "distributed_fit_fixes",
    "clear_kernel_cache",
]


def is_chief(strategy) -> bool:
    """Whether this worker writes checkpoints (True without multi-worker)."""
    return bool(strategy.extended.should_checkpoint)


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` is a MultiWorkerMirroredStrategy over 2+ tasks."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs) > 1


def warn_if_unseeded(strategy, seed, x) -> None:
    """Warn when arrays are trained on by several workers without a seed:
    each would shuffle them its own way before taking its shard."""
    if (
        seed is None
        and is_multi_worker(strategy)
        and not isinstance(x, tf.data.Dataset)
    ):
        warnings.warn(
            "Multi-worker training without `seed`: each worker shuffles "
            "the arrays its own way before its shard is taken, so "
            "workers may train on overlapping samples. Fix: pass "
            "`ADPTrainer(seed=...)`.",
            stacklevel=3,
        )


def check_workers_agree(
    strategy, names: list[str], run_dir: str, number: Callable[[str], int]
) -> None:
    """Raise unless every worker sees the same newest checkpoint.

    `names` are this worker's checkpoints, newest last; `number` gives a
    name's epoch count. A worker that cannot see the chief's checkpoints (a
    `run_dir` on local disks) would start over and train another model than
    the others, which ends in a hang or a crash inside a collective op.
    Every worker of a multi-worker run must call this (it all-gathers).
    """
    if not is_multi_worker(strategy):
        return
    newest = number(names[-1]) if names else -1

    @tf.function
    def gather():
        context = tf.distribute.get_replica_context()
        return context.all_gather(tf.constant([newest], tf.int64), axis=0)

    gathered = strategy.experimental_local_results(strategy.run(gather))[0]
    seen = sorted({int(value) for value in gathered.numpy()})
    if len(seen) > 1:
        shown = ", ".join(
            f"checkpoint-{value:04d}" if value >= 0 else "none"
            for value in seen
        )
        raise ValueError(
            f"Workers see different newest checkpoints in '{run_dir}' "
            f"({shown}; this worker: "
            f"{names[-1] if names else 'none'}), so they would resume "
            "different models. Fix: put `run_dir` on storage shared by "
            "every worker."
        )


@contextlib.contextmanager
def distributed_fit_fixes(model):
    """Works around two Keras 3 bugs while `model.fit` runs distributed.

    1. Under any strategy with two or more replicas, Keras 3.15's
       `_maybe_symbolic_build` passes the first `(x, y)` batch to
       `strategy.reduce`, which fails when the replicas' shares differ in
       size (a batch of 13 on 2 replicas: "Inputs to operation AddN ...
       must have the same size and shape") and, multi-worker, before the
       first step (keras-team/keras#20585, tensorflow/tensorflow#72388):
       the model's compile state is built from this worker's first replica
       batch instead (only its shapes and dtypes are used).
    2. Under a `MultiWorkerMirroredStrategy` with two or more workers,
       `reduce_per_replica` averages the logs over replicas along axis 0,
       which scalars (loss, metrics) do not have: scalars are averaged
       with `axis=None`.

    Elsewhere (one replica, no strategy), and on a Keras without these
    functions, nothing is changed.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    strategy = model.distribute_strategy
    multi_worker = is_multi_worker(strategy)
    if not (
        (multi_worker or strategy.num_replicas_in_sync > 1)
        and hasattr(type(model), "_maybe_symbolic_build")
        and hasattr(tf_trainer, "reduce_per_replica")
    ):
        yield
        return

    def first_replica(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    first_replica, next(batches)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    keras_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean"):
            return keras_reduce(values, strategy, reduction)
        return tf.nest.map_structure(
            lambda value: strategy.reduce(
                "MEAN", value, axis=0 if value.shape.rank else None
            ),
            values,
        )

    model._maybe_symbolic_build = symbolic_build
    if multi_worker:
        tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = keras_reduce
        del model._maybe_symbolic_build


def clear_kernel_cache() -> None:
    """Drop TensorFlow's eager kernel cache (nothing in graph mode).

    TensorFlow caches one kernel per shape it ran an operation on; the
    cache has no public API, so it is cleared through the private
    `tensorflow.python.eager.context`. Clearing it costs only a re-lookup
    of the kernels used next.
    """
    from tensorflow.python.eager import context

    if context.executing_eagerly():
        context.context().clear_kernel_cache()
