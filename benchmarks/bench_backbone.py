"""ADP on a keras.applications backbone used as one layer under a new head.

The transfer-learning pattern: `MobileNetV2(include_top=False,
weights=None)` called on the input, then global pooling and a new `Dense`
head, trained from scratch with the default `ADPPolicy` (accuracy guard on)
on Fashion-MNIST resized to 32x32x3 (the bundled 6k/1k subset, or with
`--data idx` the IDX files, `--train-samples` of them). Prints each epoch's
validation accuracy and the backbone's widths, then the test accuracy and
the size reduction; pruning happens inside the nested backbone.

    python benchmarks/bench_backbone.py [--epochs 8] [--alpha 0.35] [--dense-baseline]
    python benchmarks/bench_backbone.py --data idx --train-samples 60000 --dense-baseline
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp
from keras_adp import idx


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
        "--dense-baseline", action="store_true",
        help="also train the same model without pruning, for comparison",
    )
    args = parser.parse_args(argv)
    if args.data == "idx":  # keras_adp.idx needs no TensorFlow.
        data = idx.read_fashion_mnist_idx()
    else:
        from keras_adp import data_loaders

        data = data_loaders.load_embedded_arrays()
    n = args.train_samples
    x, y = images(data["x_train"][:n]), data["y_train"][:n].astype("int32")
    print(f"{len(x)} training images, {args.epochs} epochs, Keras backend "
          f"{keras.backend.backend()}", flush=True)
    x_test, y_test = images(data["x_test"]), data["y_test"].astype("int32")
    dense_accuracy = None
    if args.dense_baseline:
        start = time.perf_counter()
        dense = build(args.alpha, args.seed)
        dense.fit(x, y, epochs=args.epochs, batch_size=args.batch_size,
                  validation_split=0.1, verbose=0)
        _, dense_accuracy = dense.evaluate(x_test, y_test, verbose=0)
        dense_seconds = time.perf_counter() - start
        print(f"dense baseline (no pruning, {args.epochs} epochs): test "
              f"accuracy {dense_accuracy:.4f}, params {dense.count_params()}, "
              f"{dense_seconds:.0f} s", flush=True)
    model = build(args.alpha, args.seed)
    policy = keras_adp.ADPPolicy()
    print(f"default policy: width_rule={policy.width_rule!r}, "
          f"max_accuracy_drop={policy.max_accuracy_drop}")
    start = time.perf_counter()
    result = keras_adp.ADPTrainer(policy, seed=args.seed).fit(
        model, x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0
    )
    seconds = time.perf_counter() - start
    for record in result.history:
        inside = {
            name: width for name, width in record["widths"].items()
            if name.startswith("backbone/")
        }
        step = record["pruning"] or {}
        print(
            f"epoch {record['epoch']}: val_accuracy "
            f"{record['logs'].get('val_accuracy', float('nan')):.4f}, "
            f"backbone channels {sum(inside.values())} in {len(inside)} "
            f"groups, measured {len(record['density'])}, step "
            f"{step.get('outcome', '-') if step else '-'}"
        )
    _, accuracy = result.model.evaluate(x_test, y_test, verbose=0)
    summary = result.summary()
    backbone = result.model.get_layer("backbone")
    print(f"test accuracy {accuracy:.4f}; params {summary['dense_params']} -> "
          f"{summary['final_params']} (x{summary['param_reduction']:.2f}); "
          f"MACs x{summary['mac_reduction']:.2f}; steps "
          f"{summary['prune_steps']} kept, {summary['rolled_back_steps']} "
          f"rolled back; nested backbone kept: {type(backbone).__name__} "
          f"'{backbone.name}'; {seconds:.0f} s")
    if dense_accuracy is not None:
        print(f"ADP minus dense: {100 * (accuracy - dense_accuracy):+.2f} "
              f"points (budget {100 * policy.max_accuracy_drop:.0f})")


if __name__ == "__main__":
    main()
