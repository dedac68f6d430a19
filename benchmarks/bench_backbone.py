"""ADP on a keras.applications backbone used as one layer under a new head.

The transfer-learning pattern: `MobileNetV2(include_top=False,
weights=None)` called on the input, then global pooling and a new `Dense`
head, trained from scratch with the default `ADPPolicy` (accuracy guard on)
on Fashion-MNIST padded to 32x32x3 (the bundled 6k/1k subset, or with
`--data idx` the IDX files, `--train-samples` of them), next to the same
model trained densely (`--dense-baseline`). Prints each epoch's validation
accuracy and the backbone's widths, the guard's decisions, then the test
accuracies and the size reduction; pruning happens inside the nested
backbone.

Both runs train on the same samples and validate on the same held-out
10% (`keras_adp.guard.holdout_indices`, passed to both as
`validation_data`). keras.applications' BatchNormalization layers have
`momentum=0.999`, so a model trained from scratch for a few hundred steps
still carries its initial moving statistics (variance 1 where the batches
have ~1e-8 after the last MobileNetV2 block) and predicts one class in
inference mode. With `--bn recalibrate` (the default) both runs re-estimate
every BatchNormalization's moving statistics
(`keras_adp.rebuild.recalibrate_batch_norm`, on the trainer's calibration
samples: the first `ADPPolicy.calibration_samples` training samples) before
each validation, hence before the guard's judgement and ADP's density
measurement, and before the final test; `--bn raw` leaves them to
training alone. The inference-mode test accuracy without the final
re-estimate is printed as well.

    python benchmarks/bench_backbone.py [--epochs 8] [--alpha 0.35] [--dense-baseline]
    python benchmarks/bench_backbone.py --data idx --train-samples 20000 --dense-baseline
    python benchmarks/bench_backbone.py ... --dense-reference --dense-curve 0.68,0.78,...
        --dense-test-accuracy 0.83 --policy '{"width_rule": "relative"}'

`--dense-reference` holds the guard to the dense run's validation curve
(`ADPPolicy.dense_reference`) instead of ADP's own best so far;
`--dense-curve` takes that curve from an earlier dense run of the same
command (same data, split, seed and initial weights) instead of training it
again.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp
from keras_adp import guard
from keras_adp import idx
from keras_adp import inputs as inputs_lib
from keras_adp import rebuild


def images(x):
    """uint8 (n, 28, 28) -> float32 (n, 32, 32, 3) in [0, 1]."""
    x = np.pad(x, ((0, 0), (2, 2), (2, 2))).astype("float32") / 255.0
    return np.repeat(x[..., None], 3, axis=-1)


def build(alpha, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None, alpha=alpha,
        name="backbone",
    )
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class RecalibrateBeforeValidation(keras.callbacks.Callback):
    """Re-estimates the model's BatchNormalization statistics on
    `calibration` before each validation pass (`on_test_begin`).

    Args:
        calibration: the inputs the statistics are estimated on.
    """

    def __init__(self, calibration):
        super().__init__()
        self.calibration = calibration

    def on_test_begin(self, logs=None):
        rebuild.recalibrate_batch_norm(self.model, self.calibration)


def test_accuracies(model, x_test, y_test, calibration):
    """(inference-mode test accuracy as trained, the same after
    `recalibrate_batch_norm` on `calibration`)."""
    _, raw = model.evaluate(x_test, y_test, verbose=0, batch_size=256)
    rebuild.recalibrate_batch_norm(model, calibration)
    _, recalibrated = model.evaluate(x_test, y_test, verbose=0, batch_size=256)
    return raw, recalibrated


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=["embedded", "idx"],
                        default="embedded")
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument(
        "--bn", choices=["recalibrate", "raw"], default="recalibrate",
        help="re-estimate BatchNormalization statistics before each "
        "validation (both runs), or leave them to training",
    )
    parser.add_argument(
        "--dense-baseline", action="store_true",
        help="also train the same model without pruning, for comparison",
    )
    parser.add_argument(
        "--dense-reference", action="store_true",
        help="hold the guard to the dense baseline's validation curve "
        "(ADPPolicy.dense_reference); needs --dense-baseline or --dense-curve",
    )
    parser.add_argument(
        "--dense-curve", default=None,
        help="comma-separated val_accuracy per epoch of an earlier dense run "
        "of the same command, used instead of training the baseline again",
    )
    parser.add_argument(
        "--dense-test-accuracy", type=float, default=None,
        help="that earlier dense run's test accuracy, for the comparison",
    )
    parser.add_argument(
        "--policy", default="{}",
        help="JSON object of ADPPolicy arguments overriding the defaults",
    )
    args = parser.parse_args(argv)
    if args.dense_reference and not (args.dense_baseline or args.dense_curve):
        parser.error("--dense-reference needs --dense-baseline or --dense-curve")
    if args.data == "idx":  # keras_adp.idx needs no TensorFlow.
        data = idx.read_fashion_mnist_idx()
    else:
        from keras_adp import data_loaders

        data = data_loaders.load_embedded_arrays()
    n = args.train_samples
    x, y = images(data["x_train"][:n]), data["y_train"][:n].astype("int32")
    policy = keras_adp.ADPPolicy(**json.loads(args.policy))
    train, held = guard.holdout_indices(len(x), policy.validation_split,
                                        args.seed)
    x, y, validation = x[train], y[train], (x[held], y[held])
    calibration = inputs_lib.calibration_inputs(x, policy.calibration_samples)
    print(f"{len(x)} training images, {len(held)} validation, "
          f"{args.epochs} epochs, batch {args.batch_size}, alpha "
          f"{args.alpha}, BatchNormalization statistics: {args.bn}, Keras "
          f"backend {keras.backend.backend()}", flush=True)
    x_test, y_test = images(data["x_test"]), data["y_test"].astype("int32")

    def callbacks():
        return ([RecalibrateBeforeValidation(calibration)]
                if args.bn == "recalibrate" else [])

    dense_accuracy = args.dense_test_accuracy
    dense_curve = (
        [float(value) for value in args.dense_curve.split(",")]
        if args.dense_curve else None
    )
    if args.dense_baseline:
        start = time.perf_counter()
        dense = build(args.alpha, args.seed)
        history = dense.fit(
            x, y, epochs=args.epochs, batch_size=args.batch_size,
            validation_data=validation, callbacks=callbacks(), verbose=0,
        ).history
        seconds = time.perf_counter() - start
        dense_curve = history["val_accuracy"]
        print("dense val_accuracy per epoch: " + " ".join(
            f"{value:.4f}" for value in history["val_accuracy"]))
        raw, dense_accuracy = test_accuracies(dense, x_test, y_test,
                                              calibration)
        print(f"dense baseline (no pruning, {args.epochs} epochs): test "
              f"accuracy {dense_accuracy:.4f} (inference mode as trained "
              f"{raw:.4f}), params {dense.count_params()}, {seconds:.0f} s",
              flush=True)
    if args.dense_reference:
        policy = keras_adp.ADPPolicy.from_config(
            dict(policy.get_config(), dense_reference=list(dense_curve))
        )
    model = build(args.alpha, args.seed)
    print(f"policy: width_rule={policy.width_rule!r}, removal_scale="
          f"{policy.removal_scale}, max_prune_steps={policy.max_prune_steps}, "
          f"max_accuracy_drop={policy.max_accuracy_drop}, calibration_samples="
          f"{policy.calibration_samples}, dense_reference="
          f"{policy.dense_reference}", flush=True)
    start = time.perf_counter()
    result = keras_adp.ADPTrainer(policy, seed=args.seed).fit(
        model, x, y, epochs=args.epochs, batch_size=args.batch_size,
        validation_data=validation, callbacks=callbacks(), verbose=0,
    )
    seconds = time.perf_counter() - start
    for record in result.history:
        inside = {
            name: width for name, width in record["widths"].items()
            if name.startswith("backbone/")
        }
        step = record["pruning"] or {}
        decision = record.get("guard")
        judged = (
            f", guard {decision['action']} (step of epoch "
            f"{decision['step_epoch']}: {decision['value']:.4f} vs "
            f"reference {decision['reference']:.4f})" if decision else ""
        )
        print(
            f"epoch {record['epoch']}: val_accuracy "
            f"{record['logs'].get('val_accuracy', float('nan')):.4f}, "
            f"backbone channels {sum(inside.values())} in {len(inside)} "
            f"groups ({len(record['widths']) - len(inside)} outside), "
            f"measured {len(record['density'])}, step "
            f"{step.get('outcome', '-') if step else '-'}{judged}"
        )
    raw, accuracy = test_accuracies(result.model, x_test, y_test, calibration)
    summary = result.summary()
    backbone = result.model.get_layer("backbone")
    print(f"test accuracy {accuracy:.4f} (inference mode as trained "
          f"{raw:.4f}); params {summary['dense_params']} -> "
          f"{summary['final_params']} (x{summary['param_reduction']:.2f}); "
          f"MACs {summary['dense_macs']} -> {summary['final_macs']} "
          f"(x{summary['mac_reduction']:.2f}); steps "
          f"{summary['prune_steps']} kept, {summary['rolled_back_steps']} "
          f"rolled back; nested backbone kept: {type(backbone).__name__} "
          f"'{backbone.name}'; {seconds:.0f} s")
    if dense_accuracy is not None:
        print(f"ADP minus dense: {100 * (accuracy - dense_accuracy):+.2f} "
              f"points (budget {100 * policy.max_accuracy_drop:.0f})")


if __name__ == "__main__":
    main()
