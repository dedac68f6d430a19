"""
Title: Pruning ResNet-18 in training on CIFAR-100 by activation density
Author: keras-adp contributors
Date created: 2026/11/25
Last modified: 2026/11/25
Description: Train ResNet-18 from scratch on CIFAR-100 and shrink it by activation density during training, residual connections included.
Accelerator: GPU
"""

"""
## Introduction

The ADP paper ("Activation Density driven Energy-Efficient Pruning in
Training", Foldy-Porto, Venkatesha, Panda,
[arXiv 2002.02949](https://arxiv.org/abs/2002.02949)) applies the same
recipe to ResNet-18: train from scratch, and whenever the activation density
(AD, the fraction of non-zero ReLU outputs) of the layers has converged,
shrink every layer to `ceil(AD * width)` channels and keep training.

Residual connections add a constraint that VGG does not have: the tensors
that meet in an `Add` must keep the same channels. `keras_adp` finds these
couplings itself. In a ResNet-18 the output channels of a stage's shortcut
(or stem) convolution and of the second convolution of each of its blocks
form one *channel group*, pruned as a whole and measured at the first ReLU
after the addition; the first convolution of each block is a group of its
own. You do not need to describe the architecture to the pruner.

The setting, as in `examples/vgg19_cifar10.py`:

- CIFAR ResNet-18 (`keras_adp.models.resnet18`: 3x3 stem without max-pool,
  four stages of two basic blocks, widths 64-128-256-512).
- SGD with momentum 0.9 and weight decay 5e-4, batch size 128, learning rate
  0.1 divided by 10 at 50% and 75% of the epochs; random crops and flips.
- `ADPPolicy(trigger="converged")`: after warm-up, prune once every group's
  density has changed by less than 0.02 for two epochs.

**Runtime and data.** The full run downloads CIFAR-100 with
`tensorflow_datasets` on first use (about 160 MB, into
`~/tensorflow_datasets`; `--data-dir` to choose) and needs a GPU. The dense
ResNet-18 (11.2M parameters) costs 0.56 GMACs per image forward, about 1.7
GMACs per training image or 83 TMACs per epoch; on one recent data-centre
GPU expect roughly 15-40 seconds per dense epoch, so the default 160 epochs
take one to two hours, less as the network shrinks (an estimate from the
compute, not a measured time). On a CPU, use `--smoke`: the same code on
256 synthetic CIFAR-shaped images and a ResNet-18 16 times narrower, in
about a minute.

```
python examples/resnet18_cifar100.py            # full run (GPU, downloads CIFAR-100)
python examples/resnet18_cifar100.py --smoke    # CPU check on synthetic data
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

parser = argparse.ArgumentParser(description="ADP: ResNet-18 on CIFAR-100")
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

CIFAR-100 through `keras_adp.data.load_dataset("cifar100", augment=True)`
(the 100 fine labels; 10% of the training images are held out as the
validation split that the accuracy guard judges pruning steps on, the test
split is only used for the final evaluation), and a fixed calibration set of
512 un-augmented training images for the density measurements. With `--smoke`, synthetic
CIFAR-shaped images (a random pattern per class plus noise) stand in for it.
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


num_classes = 100
input_shape = (32, 32, 3)
if args.smoke:
    train_ds, validation_ds, test_ds, calibration_images, num_train = (
        synthetic_cifar(num_classes, 256, 64, 128, batch_size=batch_size)
    )
else:
    splits = keras_adp.data.load_dataset(
        "cifar100", batch_size=batch_size, augment=True, data_dir=args.data_dir
    )
    train_ds, validation_ds, test_ds = splits.train, splits.validation, splits.test
    num_train = splits.num_train
    calibration_images = keras_adp.data.calibration_batch(splits, num_samples=512)
print(f"{num_train} training images, calibration set {calibration_images.shape}")

"""
## Model

`keras_adp.models.resnet18` builds the CIFAR ResNet-18, which outputs
logits. The channel groups show the residual couplings described above:
"""

model = keras_adp.models.resnet18(
    input_shape=input_shape,
    num_classes=num_classes,
    width_multiplier=width_multiplier,
)
for group in keras_adp.channel_groups(model):
    if group.prunable:
        print(
            f"{group.name:<28} {group.size:>4} channels from "
            f"{', '.join(group.producers)}"
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
    metrics=[
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
    ],
)
dense_cost = keras_adp.metrics.inference_cost(model)
print(f"dense ResNet-18: {dense_cost.params:,} parameters, {dense_cost.macs:,} MACs")

"""
## Train

`ADPTrainer` rebuilds the model at every pruning step, keeping the surviving
weights, the compile settings (both metrics included) and the SGD momentum
buffers sliced to the kept channels; the learning-rate schedule continues
from the same step.
"""

policy = keras_adp.ADPPolicy(
    warmup_epochs=1 if args.smoke else 10,
    trigger="converged",
    tolerance=0.99 if args.smoke else 0.02,
    patience=1 if args.smoke else 2,
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
"""

_, accuracy, top5_accuracy = result.model.evaluate(test_ds, verbose=0)
final_cost = keras_adp.metrics.inference_cost(result.model)
summary = result.summary()
print(
    f"pruned ResNet-18: top-1 accuracy {accuracy:.4f}, top-5 accuracy "
    f"{top5_accuracy:.4f}"
)
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
    "dense ResNet-18 for as many epochs"
)

"""
Widths per channel group, before and after. A residual group keeps one width
for its whole stage:
"""

final_widths = {
    group.name: group.size
    for group in keras_adp.channel_groups(result.model)
    if group.prunable
}
for name, width in result.history[0]["widths"].items():
    print(f"{name:<28} {width:>4} -> {final_widths.get(name, width):>4}")

"""
## Conclusion

Residual networks are pruned the same way as plain ones: `keras_adp` derives
which channels must go together from the graph, measures one density per
group and rebuilds a consistent, smaller ResNet during training. The result
is a regular Keras model, ready for `result.model.save(...)` or
`keras_adp.export_tflite`.
"""
