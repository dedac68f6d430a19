"""
Title: Pruning VGG-19 in training on CIFAR-10 by activation density
Author: keras-adp contributors
Date created: 2026/11/25
Last modified: 2026/11/25
Description: Train VGG-19 (with batch normalization) from scratch on CIFAR-10 and shrink it by activation density during training, as in the ADP paper.
Accelerator: GPU
"""

"""
## Introduction

This example follows the main experiment of "Activation Density driven
Energy-Efficient Pruning in Training" (Foldy-Porto, Venkatesha, Panda,
[arXiv 2002.02949](https://arxiv.org/abs/2002.02949)): a VGG-19 with batch
normalization is trained from scratch on CIFAR-10 with SGD, and whenever the
activation density (AD, the fraction of non-zero ReLU outputs) of its layers
has stopped changing, every layer is cut down to `ceil(AD * width)` channels.
Training then continues with the smaller network, until the widths no
longer shrink. There is no pre-trained model and no separate fine-tuning
phase: the pruned network is what the training run returns.

The setting used here:

- VGG-19 with batch normalization, CIFAR variant (`keras_adp.models.vgg19`:
  16 3x3 convolutions, one dense classifier).
- SGD with momentum 0.9 and weight decay 5e-4, batch size 128, learning rate
  0.1 divided by 10 at 50% and 75% of the epochs.
- Standard augmentation: random crops of the image padded by 4 pixels and
  random horizontal flips; per-channel standardization.
- `ADPPolicy(trigger="converged")`: after the warm-up epochs, prune as soon
  as the density of every layer has changed by less than 0.02 for two
  epochs; keep the channels that fire most often.

**Runtime and data.** The full run downloads CIFAR-10 with
`tensorflow_datasets` on first use (about 160 MB, into
`~/tensorflow_datasets`; pass `--data-dir` to choose) and needs a GPU. The
dense VGG-19 (20.0M parameters) costs 0.40 GMACs per image forward, about
1.2 GMACs per training image, or 60 TMACs per epoch of 50,000 images; on one
recent data-centre GPU expect roughly 10-30 seconds per dense epoch, so the
default 160 epochs take about one hour, less as the network shrinks. (This
is an estimate from the compute, not a measured time; input augmentation on
a slow CPU can dominate it.) On a CPU, use `--smoke`: it runs the same code
in about a minute on 256 synthetic CIFAR-shaped images and a VGG-19 16 times
narrower, to check the pipeline, not to learn anything.

```
python examples/vgg19_cifar10.py                 # full run (GPU, downloads CIFAR-10)
python examples/vgg19_cifar10.py --run-dir runs/vgg19  # with resumable checkpoints
python examples/vgg19_cifar10.py --smoke         # CPU check on synthetic data
```
"""

"""
## Setup
"""

import argparse
import math
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import keras_adp

parser = argparse.ArgumentParser(description="ADP: VGG-19 on CIFAR-10")
parser.add_argument("--epochs", type=int, default=160)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--data-dir", default=None, help="tensorflow_datasets folder")
parser.add_argument(
    "--run-dir", default=None, help="checkpoint every epoch here; resume if present"
)
parser.add_argument(
    "--smoke",
    action="store_true",
    help="CPU check: synthetic data (256 train / 128 test), 4 epochs, width 1/16",
)
args = parser.parse_args()

epochs = 4 if args.smoke else args.epochs
width_multiplier = 1 / 16 if args.smoke else 1.0
batch_size = 64 if args.smoke else args.batch_size
keras.utils.set_random_seed(0)
# Keras 3.15 warns on every `fit()` of a `tf.data.Dataset` that its (default)
# `shuffle=True` is ignored; the training pipeline is already shuffled.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

"""
## Data

`keras_adp.data.load_dataset("cifar10", augment=True)` reads CIFAR-10 through
`tensorflow_datasets` and returns a shuffled, augmented training pipeline, a
validation pipeline (10% of the training images, held out: the accuracy
guard judges each pruning step on it), a test pipeline, used only for the
final evaluation, and `train_unaugmented`, from which
`keras_adp.data.calibration_batch` draws a fixed set of 512 training images:
the density is measured on exactly these images after every epoch.

With `--smoke`, random images of the same shape stand in for CIFAR-10 (each
class is a fixed random pattern plus noise, so it is learnable).
"""


def synthetic_cifar(
    num_classes, num_train, num_validation, num_test, batch_size, seed=0
):
    """Standardized CIFAR-shaped images: a random pattern per class plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(num_classes, 32, 32, 3)).astype("float32")

    def split(count):
        labels = rng.integers(0, num_classes, size=count)
        noise = rng.normal(scale=1.0, size=(count, 32, 32, 3)).astype("float32")
        return patterns[labels] + noise, labels.astype("int64")

    x_train, y_train = split(num_train)
    train = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(num_train, seed=seed)
        .batch(batch_size)
    )
    validation, test = (
        tf.data.Dataset.from_tensor_slices(split(count)).batch(batch_size)
        for count in (num_validation, num_test)
    )
    return train, validation, test, x_train[:512], num_train


num_classes = 10
input_shape = (32, 32, 3)
if args.smoke:
    train_ds, validation_ds, test_ds, calibration_images, num_train = (
        synthetic_cifar(num_classes, 256, 64, 128, batch_size=batch_size)
    )
else:
    splits = keras_adp.data.load_dataset(
        "cifar10", batch_size=batch_size, augment=True, data_dir=args.data_dir
    )
    train_ds, validation_ds, test_ds = splits.train, splits.validation, splits.test
    num_train = splits.num_train
    calibration_images = keras_adp.data.calibration_batch(splits, num_samples=512)
print(f"{num_train} training images, calibration set {calibration_images.shape}")

"""
## Model

`keras_adp.models.vgg19` builds the CIFAR VGG-19: every convolution is
followed by its own `BatchNormalization` and `ReLU` layer, which is where the
density of its channels is read. It outputs logits.
"""

model = keras_adp.models.vgg19(
    input_shape=input_shape,
    num_classes=num_classes,
    width_multiplier=width_multiplier,
)
steps_per_epoch = math.ceil(num_train / batch_size)
learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(
    boundaries=[steps_per_epoch * epochs // 2, steps_per_epoch * epochs * 3 // 4],
    values=[0.1, 0.01, 0.001],
)
model.compile(
    optimizer=keras.optimizers.SGD(
        learning_rate=learning_rate, momentum=0.9, weight_decay=5e-4
    ),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
dense_cost = keras_adp.metrics.inference_cost(model)
print(f"dense VGG-19: {dense_cost.params:,} parameters, {dense_cost.macs:,} MACs")

"""
## Train

`ADPTrainer.fit` trains epoch by epoch. After each epoch it measures every
layer's density on the calibration images; when the policy's trigger fires,
it rebuilds the model with the surviving channels (their trained weights),
re-compiles it with the same loss and metrics and a copy of the optimizer
whose momentum buffers are sliced like the weights and whose step count, so
the learning-rate schedule, carries on. Pruning stops after two steps (the
default `max_prune_steps`), or before once no layer would lose at least 5%
of its channels.

With `--run-dir`, every epoch is checkpointed atomically and a killed run
continues where it stopped when started again.
"""

policy = keras_adp.ADPPolicy(
    warmup_epochs=1 if args.smoke else 10,
    trigger="converged",
    tolerance=0.99 if args.smoke else 0.02,
    patience=1 if args.smoke else 2,
    selection="density",
    # A smoke run's few optimizer updates would scale every cut to nothing.
    recovery_updates=None if args.smoke else 1600,
)
trainer = keras_adp.ADPTrainer(policy, run_dir=args.run_dir, seed=0, verbose=2)
result = trainer.fit(
    model,
    train_ds,
    epochs=epochs,
    validation_data=validation_ds,
    calibration_data=calibration_images,
    resume=args.run_dir is not None,
)

"""
## Evaluate

The pruned model is an ordinary Keras model with fewer channels per layer.
"""

_, accuracy = result.model.evaluate(test_ds, verbose=0)
final_cost = keras_adp.metrics.inference_cost(result.model)
summary = result.summary()
print(f"test accuracy of the pruned VGG-19: {accuracy:.4f}")
print(
    f"parameters {dense_cost.params:,} -> {final_cost.params:,} "
    f"({summary['param_reduction']:.1f}x fewer); MACs {dense_cost.macs:,} -> "
    f"{final_cost.macs:,} ({summary['mac_reduction']:.1f}x fewer)"
)
dense_training_macs = keras_adp.metrics.training_macs(
    dense_cost.macs, num_train * epochs
)
print(
    f"training compute: {summary['training_macs']:.3g} MACs, "
    f"{summary['training_macs'] / dense_training_macs:.0%} of training the "
    "dense VGG-19 for as many epochs"
)

"""
The width of every layer, before and after:
"""

final_widths = {
    group.name: group.size
    for group in keras_adp.channel_groups(result.model)
    if group.prunable
}
dense_widths = result.history[0]["widths"]
for name, width in dense_widths.items():
    print(f"{name:<14} {width:>4} -> {final_widths.get(name, width):>4}")
for step in result.steps:
    print(
        f"pruning step after epoch {step['epoch'] + 1}: params "
        f"{step['params_before']:,} -> {step['params_after']:,} "
        f"(attempt {step['attempt'] + 1}, {step['outcome']})"
    )

"""
## Conclusion

One training run from scratch returns a VGG-19 whose layer widths were
chosen by how many of their channels actually fire, together with the
history of widths, densities and training compute (`result.history`).
Save it with `result.model.save("vgg19_adp.keras")` or export it with
`keras_adp.export_tflite` (see `examples/export_tflite.py`).
"""
