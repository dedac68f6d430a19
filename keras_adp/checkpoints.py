"""The on-disk format of a run directory.

`ADPTrainer(run_dir=...)` writes, after every completed epoch,
`run_dir/checkpoint-NNNN/` (NNNN: epochs completed) holding the model to
train next (`model.keras`, saved without relying on its compile settings),
its optimizer's variables (`optimizer.npz`) and the run state with the
history (`state.json`), then points `run_dir/LATEST` at it with an atomic
rename. A pruning step on trial keeps the model before the step in
`run_dir/pre-step/`. `keras-adp train` adds the final model
(`FINAL_MODEL_FILE`), the report and the TFLite files.

This module is the only place that knows these names: the trainer, the
report and the command line read and write run directories through it.
Writing on the chief only (multi-worker runs) is `keras_adp.distribution`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
from typing import Any, Callable

import keras
import numpy as np

from keras_adp import distribution
from keras_adp import optimizers as optimizers_lib

__all__ = [
    "STATE_FILE",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "LATEST_FILE",
    "PRE_STEP_DIR",
    "FINAL_MODEL_FILE",
    "KEPT_CHECKPOINTS",
    "RunState",
    "ResumeMismatchError",
    "run_signature",
    "check_resumable",
    "atomic_write",
    "json_default",
    "jsonable",
    "write_model",
    "write_model_dir",
    "write_checkpoint",
    "read_state",
    "read_optimizer_values",
    "read_model",
    "read_checkpoint",
    "checkpoint_names",
    "checkpoints_newest_last",
    "checkpoint_number",
    "has_checkpoint",
    "newest_checkpoint",
    "run_entries",
    "load_newest",
    "load_run",
    "check_run_dir",
]

STATE_FILE = "state.json"
# The model inside a checkpoint (or `pre-step/`).
MODEL_FILE = "model.keras"
OPTIMIZER_FILE = "optimizer.npz"
LATEST_FILE = "LATEST"
PRE_STEP_DIR = "pre-step"
# The final, pruned model `keras-adp train` saves in the run directory
# itself (the same file name as a checkpoint's model, in another folder).
FINAL_MODEL_FILE = "model.keras"
KEPT_CHECKPOINTS = 2
_CHECKPOINT_PREFIX = "checkpoint-"
_PARTIAL_SUFFIX = ".partial"


@dataclasses.dataclass
class RunState:
    """The trainer's state between epochs, stored as `state.json`."""

    next_epoch: int = 0
    steps_done: int = 0
    last_prune_epoch: int | None = None
    history: list = dataclasses.field(default_factory=list)
    steps: list = dataclasses.field(default_factory=list)
    density_history: list = dataclasses.field(default_factory=list)
    dense: dict = dataclasses.field(default_factory=dict)
    cumulative_macs: float = 0.0
    pruning_stopped: bool = False
    # `model.stop_training` (e.g. EarlyStopping) ended the run: a resumed
    # run is finished too.
    training_stopped: bool = False
    # Training samples per epoch (datasets: counted in the first epoch).
    samples_per_epoch: int | None = None
    # What the run was started with, checked on resume.
    signature: dict = dataclasses.field(default_factory=dict)
    # The accuracy guard: the monitored key, the best value reached with an
    # accepted model, the step on trial (None when none) and every decision.
    monitor: str | None = None
    reference: float | None = None
    pending: dict | None = None
    guard: list = dataclasses.field(default_factory=list)
    # `trial="twin"`: how far below their twins the accepted steps left the
    # monitored metric, summed (the part of the budget already spent).
    deficit: float = 0.0
    # The epoch the run started at (`fit(initial_epoch=...)`).
    first_epoch: int = 0


class ResumeMismatchError(ValueError):
    """The checkpoint in `run_dir` belongs to another run."""


def run_signature(model) -> dict:
    """What identifies the run a model starts: architecture and optimizer."""
    return {
        "model": model.name,
        "inputs": [list(tensor.shape) for tensor in model.inputs],
        "outputs": [list(tensor.shape) for tensor in model.outputs],
        # Classes and parameter counts, not names: Keras numbers the names
        # of unnamed layers per process.
        "layers": [[type(layer).__name__, int(layer.count_params())]
                   for layer in model.layers],
        "params": int(model.count_params()),
        "optimizer": type(model.optimizer).__name__,
    }


def check_resumable(state: RunState, signature: dict, epochs: int, path) -> None:
    """Raise `ResumeMismatchError` unless `state` continues this run."""
    stored = state.signature
    if stored:
        if stored.get("optimizer") != signature["optimizer"]:
            raise ResumeMismatchError(
                f"Checkpoint '{path}' was trained with the optimizer "
                f"{stored.get('optimizer')}. Received a model compiled with "
                f"{signature['optimizer']}. Expected the same optimizer as "
                "the run being resumed. Fix: compile with "
                f"{stored.get('optimizer')}, or start a new run in another "
                "`run_dir`."
            )
        changed = [
            key for key in ("inputs", "outputs", "layers", "params")
            if stored.get(key) != signature[key]
        ]
        if changed:
            raise ResumeMismatchError(
                f"Checkpoint '{path}' continues a run started from model "
                f"'{stored.get('model')}' ({stored.get('params'):,} params, "
                f"{len(stored.get('layers', []))} layers). Received model "
                f"'{signature['model']}' ({signature['params']:,} params, "
                f"{len(signature['layers'])} layers), whose "
                f"{', '.join(changed)} differ. Expected the model the run "
                "was started with (the dense one). Fix: build the same "
                "model as the first `fit` call, or start a new run in "
                "another `run_dir`."
            )
    if state.next_epoch > epochs:
        raise ResumeMismatchError(
            f"Checkpoint '{path}' has already trained {state.next_epoch} "
            f"epochs. Received epochs={epochs}. Expected epochs >= "
            f"{state.next_epoch} to resume. Fix: pass "
            f"epochs={state.next_epoch} (or more) to finish the run."
        )


# ------------------------------------------------------------------ JSON
def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that a crash leaves the old file or the new
    one, never a part: a temporary file, flushed to disk, then renamed."""
    temporary = os.fspath(path) + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def json_default(value: Any) -> Any:
    """`json.dump(default=...)` for the values runs store: NumPy scalars and
    arrays, dataclasses and paths."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Cannot serialise {type(value).__name__}")


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types (strict JSON: NaN and infinities become
    None), converting what `json_default` converts."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        converted = json_default(value)
    except TypeError:
        return value
    return jsonable(converted)


# ----------------------------------------------------------------- write
def write_model(directory: str, model) -> None:
    """`model.keras` and its optimizer's variables into `directory`."""
    model.save(os.path.join(directory, MODEL_FILE))
    np.savez(
        os.path.join(directory, OPTIMIZER_FILE),
        *optimizers_lib.optimizer_state(model.optimizer),
    )


def _replace_dir(final: str, fill: Callable[[str], None]) -> None:
    """Fill `final + ".partial"`, then rename it to `final`: an interrupted
    write never replaces a complete directory."""
    partial = final + _PARTIAL_SUFFIX
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    fill(partial)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)


def write_model_dir(directory: str, model) -> None:
    """`write_model` into `directory`, replacing it atomically."""
    _replace_dir(directory, lambda partial: write_model(partial, model))


def write_checkpoint(run_dir: str, model, state: RunState, extra: dict) -> None:
    """Write `checkpoint-NNNN/` then point LATEST at it (atomic rename).

    `extra` (the policy's config and the seed) is stored beside the state.
    Only the newest `KEPT_CHECKPOINTS` checkpoints are kept.
    """
    name = f"{_CHECKPOINT_PREFIX}{state.next_epoch:04d}"

    def fill(partial):
        write_model(partial, model)
        payload = dataclasses.asdict(state)
        payload.update(extra)
        with open(os.path.join(partial, STATE_FILE), "w") as handle:
            json.dump(payload, handle, default=json_default)

    _replace_dir(os.path.join(run_dir, name), fill)
    atomic_write(os.path.join(run_dir, LATEST_FILE), name)
    for old in checkpoint_names(run_dir)[:-KEPT_CHECKPOINTS]:
        if old != name:
            shutil.rmtree(os.path.join(run_dir, old), ignore_errors=True)


# ------------------------------------------------------------------ read
def read_state(path: str) -> RunState:
    """The `RunState` of checkpoint `path` (extra keys dropped)."""
    with open(os.path.join(path, STATE_FILE)) as handle:
        payload = json.load(handle)
    payload.pop("policy", None)
    payload.pop("seed", None)
    return RunState(**payload)


def read_optimizer_values(path: str) -> list[np.ndarray]:
    """The optimizer variables `write_model` stored in `path`."""
    with np.load(os.path.join(path, OPTIMIZER_FILE)) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]


def read_model(path: str, user_model, *, safe_mode: bool):
    """The model `write_model` saved in `path`, compiled like `user_model`
    (in its distribution strategy's scope), with its optimizer state."""
    with distribution.scope(user_model):
        model = keras.saving.load_model(
            os.path.join(path, MODEL_FILE), compile=False, safe_mode=safe_mode
        )
        optimizers_lib.compile_like(
            user_model,
            model,
            optimizers_lib.fresh_optimizer(user_model.optimizer),
        )
        model.optimizer.build(model.trainable_variables)
    optimizers_lib.restore_optimizer_state(
        model.optimizer, read_optimizer_values(path)
    )
    return model


def read_checkpoint(
    path: str, user_model, signature: dict, epochs: int, *, safe_mode: bool
):
    """`(model, state)` of checkpoint `path`, which must continue the run
    `signature` describes (`check_resumable`)."""
    state = read_state(path)
    check_resumable(state, signature, epochs, path)
    pre_step = os.path.join(os.path.dirname(path), PRE_STEP_DIR)
    if state.pending is not None and not os.path.isdir(pre_step):
        raise ValueError(
            f"Checkpoint '{path}' has a pruning step on trial, but its "
            f"pre-step model '{PRE_STEP_DIR}' is missing from the run "
            "directory."
        )
    return read_model(path, user_model, safe_mode=safe_mode), state


def checkpoint_names(run_dir: str) -> list[str]:
    """Complete checkpoints in `run_dir`, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(
        name
        for name in os.listdir(run_dir)
        if name.startswith(_CHECKPOINT_PREFIX)
        and not name.endswith(_PARTIAL_SUFFIX)
    )


def checkpoints_newest_last(run_dir: str) -> list[str]:
    """`checkpoint_names`, with the one LATEST names moved last."""
    names = checkpoint_names(run_dir)
    latest_file = os.path.join(run_dir, LATEST_FILE)
    if os.path.exists(latest_file):
        with open(latest_file) as handle:
            latest = handle.read().strip()
        if latest in names:
            names.remove(latest)
            names.append(latest)
    return names


def checkpoint_number(name: str) -> int:
    """The epoch count in a checkpoint name ("checkpoint-0004" -> 4)."""
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether `run_dir` holds a checkpoint directory a resume could load."""
    run_dir = os.fspath(run_dir)
    return any(
        os.path.isdir(os.path.join(run_dir, name))
        for name in checkpoint_names(run_dir)
    )


def newest_checkpoint(run_dir: str | os.PathLike) -> pathlib.Path | None:
    """The newest checkpoint with a state file: LATEST's, else the highest
    numbered; None when there is none."""
    run_dir = pathlib.Path(run_dir)
    latest = run_dir / LATEST_FILE
    if latest.is_file():
        name = latest.read_text(encoding="utf-8").strip()
        if (run_dir / name / STATE_FILE).is_file():
            return run_dir / name
    candidates = sorted(
        path.parent
        for path in run_dir.glob(f"{_CHECKPOINT_PREFIX}*/{STATE_FILE}")
        if not path.parent.name.endswith(_PARTIAL_SUFFIX)
    )
    return candidates[-1] if candidates else None


def run_entries(run_dir: str) -> list[str]:
    """What a previous run left in `run_dir`: checkpoints and LATEST."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(
        name
        for name in os.listdir(run_dir)
        if name == LATEST_FILE or name.startswith(_CHECKPOINT_PREFIX)
    )


def load_newest(
    run_dir: str, names: list[str], read: Callable[[str], Any], *,
    safe_mode: bool,
):
    """`(path, read(path))` for the newest of `names` that reads, or None
    when `names` is empty.

    An unreadable checkpoint is reported and the previous one tried; a
    `ResumeMismatchError` is raised at once. A model Keras' safe mode
    refuses (a `Lambda` layer) is an error that says how to allow it.

    Raises:
        ValueError: no checkpoint of `names` could be read.
    """
    errors = []
    for name in reversed(names):
        path = os.path.join(run_dir, name)
        try:
            return path, read(path)
        except ResumeMismatchError:
            raise
        except Exception as error:  # noqa: BLE001 - report and fall back
            if safe_mode and "safe_mode=False" in str(error):
                raise ValueError(
                    f"Checkpoint '{path}' holds a model with a `Lambda` "
                    "layer, whose Python code Keras' safe mode refuses "
                    "to load. Fix: if you trust this run directory, "
                    "pass `ADPTrainer(safe_mode=False)`."
                ) from error
            errors.append(f"{name}: {type(error).__name__}: {error}")
            print(
                f"[keras-adp] checkpoint '{path}' is unreadable "
                f"({type(error).__name__}: {error}); trying an older one.",
                flush=True,
            )
    if errors:
        raise ValueError(
            f"No readable checkpoint in '{run_dir}': "
            + "; ".join(errors)
            + ". Fix: pass another `run_dir`, or `resume=False` to start "
            "over."
        )
    return None


def load_run(
    run_dir: str, user_model, signature: dict, epochs: int, *,
    safe_mode: bool,
):
    """`(path, model, state)` of the newest checkpoint in `run_dir` that
    loads, or None when there is none.

    The model is compiled like `user_model` and its optimizer state is
    restored. A checkpoint of a run started with another architecture or
    optimizer, or that already trained more than `epochs` epochs, is an
    error (not skipped for an older one). Every worker of a multi-worker
    run must call this.
    """
    names = checkpoints_newest_last(run_dir)
    # Before any variable is created: under MultiWorkerMirroredStrategy
    # that is a collective op, which every worker must run alike.
    distribution.check_workers_agree(
        user_model, names, run_dir, checkpoint_number
    )

    def read(path):
        return read_checkpoint(
            path, user_model, signature, epochs, safe_mode=safe_mode
        )

    loaded = load_newest(run_dir, names, read, safe_mode=safe_mode)
    if loaded is None:
        return None
    path, (model, state) = loaded
    return path, model, state


def check_run_dir(run_dir: str | None, resume: bool, *, writes: bool) -> None:
    """Raise unless `run_dir` suits a new run (empty) or a resumed one, and
    can be written by this worker when it `writes` (the chief)."""
    if resume and not run_dir:
        raise ValueError(
            "Received resume=True without a `run_dir`. Fix: pass "
            "`ADPTrainer(run_dir=...)` where the run was checkpointed."
        )
    if run_dir and not resume:
        previous = run_entries(run_dir)
        if previous:
            raise ValueError(
                f"Run directory '{run_dir}' holds a previous run "
                f"({', '.join(previous[:3])}). Fix: pass `resume=True` "
                "to continue it, or an empty `run_dir` to start a new "
                "run."
            )
    if run_dir and writes:
        try:
            os.makedirs(run_dir, exist_ok=True)
            probe_file = os.path.join(run_dir, ".write_test")
            with open(probe_file, "w") as handle:
                handle.write("ok")
            os.remove(probe_file)
        except OSError as error:
            raise ValueError(
                f"Run directory '{run_dir}' is not writable "
                f"({error}). Fix: pass a run_dir you can write to."
            ) from error
