"""The model's distribution, whichever Keras backend runs it.

Every place that needs to know how a model is distributed asks here:

- `scope(model)`: the context in which a rebuilt model, its optimizer
  state or a loaded checkpoint is created, so that its variables are
  distributed like the model's.
- `replicas(model)`: how many parts each batch is split into.
- `is_chief(model)`, `write_on_chief(...)`: which process writes the run
  directory.
- `check_workers_agree`, `warn_if_unseeded`, `fit_fixes`: multi-worker
  checks and the workaround for Keras' `fit`.

On the TensorFlow backend all of this is the model's `tf.distribute`
strategy, through `keras_adp.distribute` (imported only there). On JAX it is
`keras.distribution` (the global distribution the user set, e.g.
`keras.distribution.DataParallel`): replicas are the devices along the
batch axis of its mesh and the chief is process 0. On other backends there
is one replica, one process, and no scope; a `keras.distribution` set there
is refused (`ValueError`), because Keras itself does not distribute on them
(in Keras 3.15 `keras.src.backend.distribution_lib` is None on PyTorch,
NumPy and OpenVINO, and `fit` silently trains on one device).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from typing import Callable

import keras

__all__ = [
    "is_tensorflow",
    "import_tensorflow",
    "scope",
    "replicas",
    "is_chief",
    "write_on_chief",
    "check_workers_agree",
    "warn_if_unseeded",
    "fit_fixes",
]


def is_tensorflow() -> bool:
    """Whether Keras runs on the TensorFlow backend."""
    return keras.backend.backend() == "tensorflow"


def import_tensorflow(feature: str):
    """The `tensorflow` module, for a feature that needs it.

    Args:
        feature: what needs TensorFlow, for the error message (e.g.
            `"tf.data input"`).

    Returns:
        The imported `tensorflow` module.

    Raises:
        ImportError: TensorFlow is not installed (or cannot be imported),
            saying which feature needed it and what to install.
    """
    try:
        import tensorflow
    except ImportError as error:
        raise ImportError(
            f"{feature} needs TensorFlow, which could not be imported "
            f"({error}). keras-adp runs on the {keras.backend.backend()} "
            "backend without it for NumPy inputs. Fix: `pip install "
            "tensorflow` (keras-adp's default install includes it), or "
            "pass NumPy arrays instead."
        ) from error
    return tensorflow


def _strategy(model):
    return model.distribute_strategy


def scope(model):
    """The context creating variables distributed like `model`'s.

    Args:
        model: a built Keras model.

    Returns:
        TensorFlow: `model.distribute_strategy.scope()`. JAX: the active
        `keras.distribution`'s scope when one is set. Otherwise a context
        that does nothing.
    """
    if is_tensorflow():
        return _strategy(model).scope()
    active = _keras_distribution()
    if active is not None:
        return active.scope()
    return contextlib.nullcontext()


def replicas(model) -> int:
    """Number of parts each batch of `model`'s inputs is split into.

    Args:
        model: a built Keras model.

    Returns:
        TensorFlow: the strategy's replicas in sync. JAX under a
        `keras.distribution` with a batch axis: the number of devices along
        it. Otherwise 1.
    """
    if is_tensorflow():
        return int(_strategy(model).num_replicas_in_sync)
    active = _keras_distribution()
    if active is None:
        return 1
    mesh = getattr(active, "device_mesh", None)
    batch_axis = getattr(active, "batch_dim_name", None)
    if mesh is None or batch_axis not in tuple(mesh.axis_names):
        return 1
    return int(mesh.shape[tuple(mesh.axis_names).index(batch_axis)])


def is_chief(model) -> bool:
    """Whether this process writes checkpoints and reports.

    Args:
        model: a built Keras model.

    Returns:
        TensorFlow: the strategy's `should_checkpoint`. JAX: whether this is
        process 0. Otherwise True.

    Raises:
        ValueError: a `keras.distribution` is set on a backend on which
            Keras does not distribute (see the module docstring).
    """
    if is_tensorflow():
        from keras_adp import distribute

        return distribute.is_chief(_strategy(model))
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index() == 0
    _keras_distribution()  # Refuses a distribution Keras would ignore.
    return True


def write_on_chief(
    model, directory: str, write: Callable[[str], None]
) -> None:
    """`write(directory)` on the chief, `write(scratch)` on other workers.

    Every worker saves (reading distributed variables may take every
    worker's part); the non-chief workers write into a temporary directory
    that is deleted right after.

    Args:
        model: the model being saved.
        directory: where the chief writes.
        write: called with the directory to write into.
    """
    if is_chief(model):
        write(directory)
        return
    scratch = tempfile.mkdtemp(prefix="keras_adp_worker_")
    try:
        write(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_workers_agree(
    model, names: list[str], run_dir: str, number: Callable[[str], int]
) -> None:
    """Raise unless every worker sees the same newest checkpoint.

    Only checked under a TensorFlow multi-worker strategy (see
    `keras_adp.distribute.check_workers_agree`); elsewhere nothing is done.
    """
    if is_tensorflow():
        from keras_adp import distribute

        distribute.check_workers_agree(
            _strategy(model), names, run_dir, number
        )


def warn_if_unseeded(model, seed, x) -> None:
    """Warn when several workers shuffle the same arrays without a seed."""
    if is_tensorflow():
        from keras_adp import distribute

        distribute.warn_if_unseeded(_strategy(model), seed, x)
        return
    if seed is None and keras.backend.backend() == "jax":
        import jax

        from keras_adp import validation

        if jax.process_count() > 1 and not validation.is_dataset(x):
            warnings.warn(
                "Multi-process training without `seed`: each process "
                "shuffles the arrays its own way. Fix: pass "
                "`ADPTrainer(seed=...)`.",
                stacklevel=3,
            )


def fit_fixes(model):
    """Context for each `model.fit` of the trainer: TensorFlow's
    `keras_adp.distribute.distributed_fit_fixes`, else nothing."""
    if is_tensorflow():
        from keras_adp import distribute

        return distribute.distributed_fit_fixes(model)
    return contextlib.nullcontext()


# Backends on which `keras.distribution` distributes `fit` (Keras 3.15).
_DISTRIBUTED_BACKENDS = ("jax",)


def _keras_distribution():
    """The global `keras.distribution`, or None if unset.

    Raises:
        ValueError: one is set on a backend on which Keras does not
            distribute: its `fit` would silently train on one device.
    """
    try:
        active = keras.distribution.distribution()
    except (AttributeError, NotImplementedError):
        return None
    backend = keras.backend.backend()
    if active is not None and backend not in _DISTRIBUTED_BACKENDS:
        raise ValueError(
            "Expected no `keras.distribution` on the "
            f"{backend!r} backend: Keras {keras.__version__} does not "
            f"distribute there (its `fit` ignores the distribution and "
            "trains on one device), so keras-adp cannot either. Received: "
            f"keras.distribution.distribution()={active!r}. Fix: "
            "`keras.distribution.set_distribution(None)` to train on one "
            "device, or use `KERAS_BACKEND=jax` (keras.distribution) or "
            "`tensorflow` (tf.distribute) to train on several."
        )
    return active
