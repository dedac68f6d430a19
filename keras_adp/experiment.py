"""The experiment `keras-adp train` runs, as a library function.

`run_training(TrainOptions(...))` builds a reference model
(`keras_adp.models`), loads a dataset with a validation split held out of
the training data (`keras_adp.data`), trains it from scratch with ADP
(`ADPTrainer`, checkpointing into the run directory), trains the same model
without pruning as the dense baseline, evaluates both on the test split,
exports both to TFLite in float32 and int8 with parity and latency
(`keras_adp.export`) and writes the run report (`keras_adp.report`). The
command line (`keras_adp.commands`) parses its options into `TrainOptions`,
checks the run directory, calls this and prints the summary.

Example:

```python
from keras_adp import experiment

run = experiment.run_training(
    experiment.TrainOptions(epochs=4, limit=512, run_dir="runs/try"),
    say=print,
)
print(run.report["summary"])
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import time
import warnings
from typing import Callable

import keras
import numpy as np

from keras_adp import checkpoints
from keras_adp import data
from keras_adp import export
from keras_adp import guard
from keras_adp import inputs as inputs_lib
from keras_adp import metrics
from keras_adp import models
from keras_adp import report as report_lib
from keras_adp import training
from keras_adp.policy import ADPPolicy

__all__ = [
    "TrainOptions",
    "TrainingRun",
    "RunInterrupted",
    "run_training",
    "default_run_dir",
    "load_splits",
    "compiled_model",
    "evaluate",
    "policy_of",
    "run_config",
    "export_and_measure",
    "parity",
    "tflite_line",
    "dataset_location",
]

TRAIN_EXPORT_MODES = ("float32", "int8")
PARITY_SAMPLES = 200


@dataclasses.dataclass
class TrainOptions:
    """The settings of a training experiment (`keras-adp train`'s options).

    Attributes:
        model, width: reference architecture (`keras_adp.models`) and its
            width multiplier.
        dataset, data_dir, limit, validation_split, augment: what
            `keras_adp.data.load_dataset` loads (`data_dir`: the folder of
            its files, or tensorflow_datasets' `data_dir`).
        epochs, batch_size, lr, seed: training (Adam at `lr`).
        dense_baseline: also train the model without pruning.
        dense_reference: train the dense baseline first and hold each
            pruning step to its validation curve
            (`ADPPolicy.dense_reference`); needs `dense_baseline`. Off by
            default: with a rollback costing a whole epoch, holding the
            early steps to dense's fast-rising curve rolled most of them
            back and ended no closer to dense (`policy.py`).
        verbose: the trainer's `verbose`.
        warmup_epochs, width_rule, trigger, interval, max_prune_steps,
            max_accuracy_drop, min_channels, round_to, selection,
            calibration_samples, removal_scale, recovery_updates, trial:
            the `ADPPolicy`.
        run_dir: where checkpoints, model, TFLite files and report go.
            Defaults to `default_run_dir(model, dataset)`.
        resume: continue the run in `run_dir` from its last checkpoint.
        export: export to TFLite.
    """

    model: str = "vgg_small"
    dataset: str = "embedded"
    data_dir: str | None = None
    width: float = 0.5
    limit: int | None = None
    validation_split: float = 0.1
    augment: bool = False
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    dense_baseline: bool = True
    dense_reference: bool = False
    verbose: int = 1
    warmup_epochs: int = ADPPolicy.warmup_epochs
    width_rule: str = ADPPolicy.width_rule
    trigger: str = ADPPolicy.trigger
    interval: int = ADPPolicy.interval
    max_prune_steps: int | None = ADPPolicy.max_prune_steps
    max_accuracy_drop: float | None = ADPPolicy.max_accuracy_drop
    removal_scale: float = ADPPolicy.removal_scale
    recovery_updates: int | None = ADPPolicy.recovery_updates
    trial: str = ADPPolicy.trial
    min_channels: int = 4
    round_to: int = 1
    selection: str = "l1"
    calibration_samples: int = 512
    run_dir: str | None = None
    resume: bool = False
    export: bool = True


@dataclasses.dataclass
class TrainingRun:
    """What `run_training` returns.

    Attributes:
        run_dir: the run directory.
        result: the `ADPResult` of the ADP run.
        report: the report dict written to `run_dir` (`report.json`).
    """

    run_dir: pathlib.Path
    result: training.ADPResult
    report: dict


class RunInterrupted(KeyboardInterrupt):
    """Training was interrupted; the finished epochs are checkpointed in
    `run_dir` (`in_baseline`: it stopped while the dense baseline, which is
    not checkpointed, trained before the ADP run)."""

    def __init__(self, run_dir, in_baseline: bool = False):
        super().__init__(str(run_dir))
        self.run_dir = run_dir
        self.in_baseline = in_baseline


def default_run_dir(model: str, dataset: str) -> pathlib.Path:
    """`runs/adp-MODEL-DATASET`."""
    return pathlib.Path(f"runs/adp-{model}-{dataset}")


def _quiet(text: str) -> None:
    del text


def run_training(
    options: TrainOptions,
    *,
    say: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> TrainingRun:
    """Train, evaluate, export and report one ADP run.

    Args:
        options: the run's `TrainOptions`.
        say: called with each progress line (data, model, evaluations,
            TFLite files). Defaults to `None` (silent).
        warn: called with a line for each TFLite parity failure. Defaults
            to `None` (`say`).

    Returns:
        A `TrainingRun`.

    Raises:
        RunInterrupted: training was interrupted (a `KeyboardInterrupt`).
        ValueError, OSError, TrainingDivergedError: as the library raises
            them.
    """
    say = say or _quiet
    warn = warn or say
    if options.dense_reference and not options.dense_baseline:
        raise ValueError(
            "dense_reference=True holds the pruning steps to the dense "
            "baseline's validation curve, so it trains the baseline first; "
            "it cannot be combined with dense_baseline=False. Fix: drop "
            "--no-dense-baseline or --dense-reference."
        )
    if options.export and not export.tensorflow_installed():
        raise ImportError(
            "keras-adp train exports the models to TFLite at the end, which "
            "needs TensorFlow (the LiteRT converter); it is not installed. "
            "Fix: `pip install tensorflow`, or pass --no-export "
            "(`TrainOptions(export=False)`)."
        )
    run_dir = pathlib.Path(
        options.run_dir or default_run_dir(options.model, options.dataset)
    )
    splits = load_splits(options)
    say(_data_line(splits))
    model = compiled_model(options, splits)
    say(_model_line(options, model))
    policy = policy_of(options)
    calibration = data.calibration_batch(
        splits, num_samples=options.calibration_samples, seed=options.seed
    )
    timing = {}
    # Without a baseline, the model passed to `fit` (trained until the first
    # pruning step) stands for the dense architecture: TFLite size and
    # latency do not depend on the weights.
    dense_model, dense_baseline = model, {"accuracy": None}
    if options.dense_reference:
        try:
            dense_model, dense_baseline = _timed_dense_baseline(
                options, policy, calibration, say, timing
            )
        except KeyboardInterrupt as interrupt:
            raise RunInterrupted(run_dir, in_baseline=True) from interrupt
        policy = dataclasses.replace(
            policy,
            dense_reference=dense_curve(dense_baseline["history"], policy),
        )
        say("guard reference: the dense baseline's validation curve "
            + " ".join(f"{v:.4f}" for v in policy.dense_reference))
    result, seconds = _train_with_adp(
        options, policy, model, splits, calibration, run_dir
    )
    timing["train_seconds"] = seconds

    result.model.save(run_dir / checkpoints.FINAL_MODEL_FILE)
    evaluation = evaluate(result.model, splits.test)
    say(f"test split: {_scores(evaluation)}")

    if options.dense_baseline and not options.dense_reference:
        dense_model, dense_baseline = _timed_dense_baseline(
            options, policy, calibration, say, timing
        )

    budget = final_budget_check(result.history, dense_baseline, policy)
    if budget is not None:
        _say_budget(budget, say, warn)

    tflite = {}
    if options.export:
        tflite, dense_baseline["tflite"] = _export_both(
            result.model, dense_model, run_dir, splits, calibration, say, warn
        )
    report = report_lib.write_report(
        run_dir,
        result,
        dense_baseline=dense_baseline,
        tflite=tflite,
        extra={
            "config": run_config(options, splits, policy),
            "evaluation": evaluation,
            "timing": timing,
            "model_file": checkpoints.FINAL_MODEL_FILE,
            "budget": budget,
        },
    )
    return TrainingRun(run_dir=run_dir, result=result, report=report)


def _data_line(splits: data.DatasetSplits) -> str:
    """The progress line describing the loaded data."""
    return (
        f"data: {splits.name}, {splits.num_train:,} train / "
        f"{splits.num_validation:,} validation (held out from the training "
        f"data) / {splits.num_test:,} test samples, input "
        f"{'x'.join(map(str, splits.input_shape))}, {splits.num_classes} "
        "classes"
    )


def _model_line(options: TrainOptions, model: keras.Model) -> str:
    """The progress line describing the dense model."""
    cost = metrics.inference_cost(model)
    return (
        f"model: {options.model} at width {options.width:g}, {cost.params:,} "
        f"params, {cost.macs:,} MACs per sample"
    )


def _scores(evaluation: dict) -> str:
    """`accuracy A, loss L` of an evaluation (nan where missing)."""
    return (
        f"accuracy {evaluation.get('accuracy', math.nan):.4f}, "
        f"loss {evaluation.get('loss', math.nan):.4f}"
    )


def load_splits(options: TrainOptions) -> data.DatasetSplits:
    """The dataset, its pipelines created in the same random state every
    time, so that the dense baseline sees the batches the ADP run saw."""
    keras.utils.set_random_seed(options.seed)
    return data.load_dataset(
        options.dataset,
        batch_size=options.batch_size,
        seed=options.seed,
        limit=options.limit,
        augment=options.augment,
        validation_split=options.validation_split,
        **dataset_location(options.dataset, options.data_dir),
    )


def compiled_model(
    options: TrainOptions, splits: data.DatasetSplits
) -> keras.Model:
    """The dense reference model, compiled for training from logits."""
    keras.utils.set_random_seed(options.seed)
    model = models.build_model(
        options.model, splits.input_shape, splits.num_classes, options.width
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=options.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def evaluate(model: keras.Model, dataset) -> dict:
    """`model.evaluate` on a split of `DatasetSplits` (a pipeline or an
    `ArraySplit`), as a dict of floats."""
    if isinstance(dataset, data.ArraySplit):
        evaluation = model.evaluate(
            dataset.x, dataset.y, batch_size=dataset.batch_size,
            return_dict=True, verbose=0,
        )
    else:
        evaluation = model.evaluate(dataset, return_dict=True, verbose=0)
    return {key: float(value) for key, value in evaluation.items()}


def _train_with_adp(
    options: TrainOptions,
    policy: ADPPolicy,
    model: keras.Model,
    splits: data.DatasetSplits,
    calibration: np.ndarray,
    run_dir: pathlib.Path,
) -> tuple[training.ADPResult, float]:
    """The ADP run, checkpointed in `run_dir`: `(result, seconds)`.

    Raises:
        RunInterrupted: training was interrupted.
    """
    trainer = training.ADPTrainer(
        policy, run_dir=run_dir, seed=options.seed, verbose=options.verbose
    )
    started = time.perf_counter()
    try:
        result = _fit(
            trainer, model, splits, options, calibration, resume=options.resume
        )
    except KeyboardInterrupt as interrupt:
        raise RunInterrupted(run_dir) from interrupt
    return result, time.perf_counter() - started


def _timed_dense_baseline(options, policy, calibration, say, timing):
    """`_train_dense_baseline`, its seconds written to `timing`."""
    started = time.perf_counter()
    trained = _train_dense_baseline(options, policy, calibration, say)
    timing["dense_baseline_seconds"] = time.perf_counter() - started
    return trained


def _train_dense_baseline(
    options: TrainOptions, policy: ADPPolicy, calibration: np.ndarray, say
) -> tuple[keras.Model, dict]:
    """The same model, trained the same way without pruning.

    Same initial weights, batches, per-epoch seeds, epochs and validation
    split as the ADP run: `ADPTrainer` with a policy that never prunes.
    """
    say("dense baseline: the same model, data, seed and epochs, without pruning")
    splits = load_splits(options)
    model = compiled_model(options, splits)
    never_prune = dataclasses.replace(
        policy, max_prune_steps=0, max_accuracy_drop=None
    )
    trainer = training.ADPTrainer(
        never_prune, seed=options.seed, verbose=options.verbose
    )
    result = _fit(trainer, model, splits, options, calibration)
    evaluation = evaluate(result.model, splits.test)
    say(f"dense baseline on the test split: {_scores(evaluation)}")
    return result.model, {
        "trained": True,
        "accuracy": evaluation.get("accuracy"),
        "loss": evaluation.get("loss"),
        "training_macs": result.summary()["training_macs"],
        "history": [
            {"epoch": record["epoch"], "logs": record["logs"]}
            for record in result.history
        ],
    }


def final_budget_check(
    history: list[dict], dense_baseline: dict, policy: ADPPolicy
) -> dict | None:
    """The pruned run's final monitored metric against the dense
    baseline's, in the guard's budget (`guard.budget_verdict`); None when
    the guard is off or no baseline was trained."""
    dense_history = dense_baseline.get("history")
    if policy.max_accuracy_drop is None or not dense_history or not history:
        return None
    monitor = guard.resolve_monitor(policy.monitor, history[-1]["logs"])
    return guard.budget_verdict(
        monitor,
        float(history[-1]["logs"][monitor]),
        float(dense_history[-1]["logs"][monitor]),
        policy.max_accuracy_drop,
    )


def _say_budget(budget: dict, say, warn) -> None:
    """The final budget check as a progress line, and a warning with what
    to change when the budget is broken."""
    line = (
        f"final {budget['monitor']} {budget['value']:.4f}, the dense "
        f"baseline's {budget['dense']:.4f}: shortfall "
        f"{budget['shortfall']:+.4f}, budget {budget['budget']:g}"
    )
    if budget["met"]:
        say(f"{line}: within the budget")
        return
    warn(
        f"warning: {line}: the pruned model ended more than "
        "the accuracy budget below the dense baseline. The steps kept passed "
        "their trials, but the smaller network fell further behind in the "
        "epochs after them. Keep more of the network (a smaller --removal-scale, "
        "--max-prune-steps 1), judge steps against a dense twin "
        "(--trial twin), or train for more epochs."
    )


def dense_curve(history: list[dict], policy: ADPPolicy) -> tuple[float, ...]:
    """The guard's monitored metric per epoch of a dense run's history
    (records with `logs`), for `ADPPolicy.dense_reference`."""
    key = guard.resolve_monitor(policy.monitor, history[0]["logs"])
    return tuple(float(record["logs"][key]) for record in history)


def _fit(
    trainer: training.ADPTrainer,
    model: keras.Model,
    splits: data.DatasetSplits,
    options: TrainOptions,
    calibration: np.ndarray,
    *,
    resume: bool = False,
) -> training.ADPResult:
    """`trainer.fit` on the training split for `options.epochs`, validated
    on the validation split, density measured on `calibration`."""
    train, validation = splits.train, splits.validation
    arrays = {}
    if isinstance(train, data.ArraySplit):  # Batched and shuffled by fit.
        arrays = {
            "y": train.y, "batch_size": train.batch_size,
            "shuffle": train.shuffle,
        }
    if isinstance(validation, data.ArraySplit):
        validation = (validation.x, validation.y)
    with _no_shuffle_warning():
        return trainer.fit(
            model,
            data.split_inputs(train),
            epochs=options.epochs,
            validation_data=validation,
            calibration_data=calibration,
            resume=resume,
            **arrays,
        )


@contextlib.contextmanager
def _no_shuffle_warning():
    """Keras warns on every fit() that `shuffle` does not apply to a
    tf.data pipeline; ours are shuffled by keras_adp.data."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*`shuffle=True` was passed", category=UserWarning
        )
        yield


def policy_of(options: TrainOptions) -> ADPPolicy:
    return ADPPolicy(
        warmup_epochs=options.warmup_epochs,
        width_rule=options.width_rule,
        min_channels=options.min_channels,
        round_to=options.round_to,
        selection=options.selection,
        trigger=options.trigger,
        interval=options.interval,
        max_prune_steps=options.max_prune_steps,
        calibration_samples=options.calibration_samples,
        max_accuracy_drop=options.max_accuracy_drop,
        removal_scale=options.removal_scale,
        recovery_updates=options.recovery_updates,
        trial=options.trial,
    )


def run_config(options, splits: data.DatasetSplits, policy: ADPPolicy) -> dict:
    """The run's settings, as shown in the report."""
    return {
        "model": options.model,
        "dataset": options.dataset,
        "width": options.width,
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "optimizer": "adam",
        "learning_rate": options.lr,
        "seed": options.seed,
        "limit": options.limit,
        "augment": options.augment,
        "validation_split": options.validation_split,
        "num_train": splits.num_train,
        "num_validation": splits.num_validation,
        "num_test": splits.num_test,
        "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes,
        "resumed": options.resume,
        "dense_baseline": options.dense_baseline,
        "policy": policy.get_config(),
    }


def _export_both(
    model, dense_model, run_dir, splits, calibration, say, warn
) -> tuple[dict, dict]:
    """The TFLite files of the pruned model (parity checked on test
    samples) and of the dense one: `(model_entries, dense_entries)`."""
    parity_inputs = inputs_lib.calibration_inputs(
        data.split_inputs(splits.test), PARITY_SAMPLES
    )
    return (
        _export_all(
            model, run_dir, "model", calibration, parity_inputs, say, warn
        ),
        _export_all(
            dense_model, run_dir, "dense", calibration, None, say, warn
        ),
    )


def _export_all(
    model, run_dir, prefix, calibration, parity_inputs, say, warn
) -> dict:
    """`prefix_<mode>.tflite` for each of TRAIN_EXPORT_MODES, measured."""
    entries = {}
    for mode in TRAIN_EXPORT_MODES:
        entry = export_and_measure(
            model, run_dir / f"{prefix}_{mode}.tflite", mode, calibration,
            parity_inputs,
        )
        entries[mode] = entry
        say(tflite_line(entry))
        parity = entry.get("parity")
        if parity and not parity["passed"]:
            warn(f"warning: {' '.join(str(parity['message']).split())}")
    return entries


def export_and_measure(model, path, mode, calibration, parity_inputs) -> dict:
    """Export `model` to `path` in `mode`; check parity if given inputs; time it."""
    export.export_tflite(
        model,
        path,
        quantization=mode,
        representative_data=calibration if mode == "int8" else None,
    )
    entry = {"path": path.name, "quantization": mode}
    if parity_inputs is not None:
        entry["parity"] = parity(path, model, parity_inputs)
    entry["latency"] = dataclasses.asdict(export.benchmark_tflite(path))
    entry["size_bytes"] = entry["latency"]["size_bytes"]
    return entry


def parity(path, model, inputs) -> dict:
    """`export.measure_tflite` with its default tolerances, as a dict; a
    mismatch is recorded (with the measured errors) instead of raised."""
    check = export.measure_tflite(path, model, inputs)
    entry = {**dataclasses.asdict(check.result), "passed": check.passed}
    if not check.passed:
        entry["message"] = check.message
    return entry


def tflite_line(entry: dict) -> str:
    latency = entry["latency"]
    text = (
        f"{pathlib.Path(entry['path']).name}: "
        f"{latency['size_bytes'] / 1024:.1f} KiB, "
        f"latency {latency['median_ms']:.3f} ms median "
        f"({latency['num_threads']} thread, {latency['runs']} runs)"
    )
    parity = entry.get("parity")
    if parity:
        verdict = "ok" if parity["passed"] else "FAILED"
        text += (
            f", parity {verdict}: top-1 agreement "
            f"{100 * parity['top1_agreement']:.1f}%, max abs error "
            f"{parity['max_abs_error']:.3g} on {parity['num_samples']} samples"
        )
    return text


def dataset_location(dataset: str, data_dir: str | None) -> dict:
    """The `load_dataset` keyword that points `dataset` at `data_dir`."""
    if data_dir is None:
        return {}
    if dataset == "embedded":
        raise ValueError(
            "Received --data-dir with the embedded dataset, which is bundled "
            "with the package and reads no files. Drop --data-dir, or pick a "
            "dataset read from files (fashion_mnist_idx, tiny_imagenet, or a "
            "tensorflow_datasets name)."
        )
    if dataset in data.TFDS_NAMES:
        return {"data_dir": data_dir}
    return {"directory": data_dir}
