"""
Title: Activation-density driven pruning in training: quickstart
Author: keras-adp contributors
Date created: 2026/11/25
Last modified: 2026/11/25
Description: Watch per-layer activation density during training, then prune a CNN while it trains on Fashion-MNIST.
Accelerator: None
"""

"""
## Introduction

After a ReLU, many activations of a convolutional network are exactly zero.
The *activation density* (AD) of a layer is the fraction of its activations
that are non-zero, measured over a fixed set of inputs. Foldy-Porto,
Venkatesha and Panda ("Activation Density driven Energy-Efficient Pruning in
Training", [arXiv 2002.02949](https://arxiv.org/abs/2002.02949)) observe that
a layer with density AD does about as well with `AD * width` channels, and
prune the network *while it trains*: each layer shrinks to `ceil(AD *
width)` channels, training goes on with the smaller network, and so on until
the widths stop changing. The result is a physically smaller model (fewer
filters, not zeroed weights), so it is also faster.

This quickstart does it in two steps on a 6,000-image subset of Fashion-MNIST
that ships with `keras_adp` (no download needed), in a few minutes on a CPU:

1. train a small CNN with `model.fit()` and the `ActivationDensity` callback,
   which reports the density of every prunable layer after each epoch;
2. train the same architecture from scratch with `keras_adp.ADPTrainer`,
   which prunes it by activation density during training, and compare the
   parameters, multiply-accumulates (MACs) and accuracy of the two models.
"""

"""
## Setup
"""

import argparse
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

import keras_adp
from keras_adp import callbacks as adp_callbacks

parser = argparse.ArgumentParser(description="keras_adp quickstart")
parser.add_argument(
    "--epochs", type=int, default=6, help="epochs of each of the two trainings"
)
parser.add_argument(
    "--smoke",
    action="store_true",
    help="tiny run for tests: 256 samples, 4 epochs, narrow model",
)
args = parser.parse_args()

epochs = 4 if args.smoke else args.epochs
width = 0.25 if args.smoke else 0.5
keras.utils.set_random_seed(42)
# Keras 3.15 warns on every `fit()` of a `tf.data.Dataset` that its (default)
# `shuffle=True` is ignored; our training pipelines are already shuffled.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

"""
## Data

`keras_adp.data.load_dataset("embedded")` returns ready-to-train `tf.data`
pipelines over the bundled subset (600 training and 100 test images per
class), standardized with the training mean and standard deviation. Besides
the shuffled `train` and the `test` pipelines, it provides `validation`, 10%
of the training images held out (never trained on) to validate on while
training, so that the test images are only used for the final evaluation,
and `train_unaugmented`, the training images in a fixed order: a good source
of calibration images for density measurements.
"""

splits = keras_adp.data.load_dataset(
    "embedded", batch_size=64, limit=256 if args.smoke else None
)
print(
    f"{splits.num_train} training, {splits.num_validation} validation and "
    f"{splits.num_test} test images of shape {splits.input_shape}, "
    f"{splits.num_classes} classes"
)
calibration_images = keras_adp.data.calibration_batch(splits, num_samples=512)

"""
## Model

Any functional or `Sequential` Keras model works, as long as the
convolutions to prune are followed by a ReLU-like activation (where density
is read). Here: three blocks of two 3x3 convolutions, each followed by batch
normalization and ReLU, and a global-average-pooling classifier that outputs
logits.

The batch-normalization momentum is 0.9 instead of Keras' default 0.99, so
that the moving statistics used at test time settle within the few hundred
training steps of this short run.
"""


def make_model(width_multiplier):
    inputs = keras.Input(shape=splits.input_shape)
    x = inputs
    for block, filters in enumerate((32, 64, 128), start=1):
        filters = max(4, int(filters * width_multiplier))
        for index in (1, 2):
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                name=f"block{block}_conv{index}",
            )(x)
            x = keras.layers.BatchNormalization(
                momentum=0.9, name=f"block{block}_bn{index}"
            )(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(splits.num_classes, name="logits")(x)
    model = keras.Model(inputs, outputs, name="fashion_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


dense_model = make_model(width)
dense_model.summary()

"""
`keras_adp.channel_groups` lists the channel groups of the model: sets of
layers whose channels must be removed together: the convolution that
produces the channels, the batch normalization sliced with it, and the layer
that reads them. These are the units the density is measured on and pruned
by.
"""

for group in keras_adp.channel_groups(dense_model):
    if group.prunable:
        print(
            f"{group.name}: {group.size} channels, produced by "
            f"{list(group.producers)}, sliced with {list(group.members)}, "
            f"read by {list(group.consumers)}"
        )

"""
## Train: watch the activation density

`ActivationDensity` measures, after every epoch, the density of every
prunable group on the same calibration images, in inference mode, and writes
it into the epoch logs as `density/<group>`, next to the loss and the
metrics. So it appears in the `History` returned by `fit()`, and in any
callback listed after it (`CSVLogger`, `TensorBoard`, `EarlyStopping`...).
"""

density_callback = adp_callbacks.ActivationDensity(calibration_images)
history = dense_model.fit(
    splits.train,
    validation_data=splits.validation,
    epochs=epochs,
    callbacks=[density_callback],
    verbose=2,
)

"""
The per-epoch densities, and the width each layer would get if it was
pruned now under the default policy: the paper's rule, `ceil(AD * width)`,
at two thirds of its cut (`removal_scale=0.66`), so a layer keeps about
`1 - 0.66 * (1 - AD)` of its channels. Behind BatchNormalization AD sits
near 0.5 in every layer, so the widths differ only a little between layers;
the default takes two such steps, early in training.
"""

group_sizes = {
    group.name: group.size
    for group in keras_adp.channel_groups(dense_model)
    if group.prunable
}
policy = keras_adp.ADPPolicy()
print(f"{'group':<14}" + "".join(f"  epoch {e + 1:>2}" for e in range(epochs)))
for name, size in group_sizes.items():
    values = history.history[f"density/{name}"]
    row = "".join(f"{value:>10.3f}" for value in values)
    kept = 1.0 - policy.removal_scale * (1.0 - values[-1])
    suggested = policy.new_width(size, kept)
    print(f"{name:<14}{row}   width {size} -> {suggested}")

"""
## Train: prune by activation density while training

`keras_adp.ADPTrainer` trains a fresh copy of the same (compiled)
architecture with its own `fit()`. After each epoch it measures the density
of every group; once the policy says so it rebuilds the model with fewer
channels, keeping the surviving weights, the compile settings and the
optimizer state, and goes on training the smaller model.

The policy below waits for `warmup_epochs` dense epochs, then prunes whenever
each group's density has changed by less than `tolerance` over the last
`patience` epochs (the paper prunes once the density has converged), and
stops pruning once no group would lose at least 5% of its channels. A step
takes its full cut only with `recovery_updates` (1,600) optimizer updates
left to win back what it costs, and that share of it with fewer.

Each pruning step is a trial judged by the accuracy guard (on by default):
after a recovery epoch, a step that left the validation accuracy more than
one point below the best so far is rolled back, and retried once with half
the removal. The guard judges on `validation_data`, here the held-out
validation split.
"""

policy = keras_adp.ADPPolicy(
    warmup_epochs=1 if args.smoke else 2,
    trigger="converged",
    patience=1,
    tolerance=0.99 if args.smoke else 0.03,
    # A smoke run's few optimizer updates would scale every cut to nothing.
    recovery_updates=None if args.smoke else 1600,
)
trainer = keras_adp.ADPTrainer(policy, seed=42, verbose=2)
result = trainer.fit(
    make_model(width),
    splits.train,
    epochs=epochs,
    validation_data=splits.validation,
    calibration_data=calibration_images,
)

"""
## Evaluate

`keras_adp.metrics.inference_cost` counts parameters and MACs per sample
analytically, from the layer shapes.
"""

dense_cost = keras_adp.metrics.inference_cost(dense_model)
pruned_cost = keras_adp.metrics.inference_cost(result.model)
_, dense_accuracy = dense_model.evaluate(splits.test, verbose=0)
_, pruned_accuracy = result.model.evaluate(splits.test, verbose=0)

print(f"{'':<8}{'params':>10}{'MACs':>14}{'test accuracy':>15}")
print(
    f"{'dense':<8}{dense_cost.params:>10,}{dense_cost.macs:>14,}"
    f"{dense_accuracy:>15.4f}"
)
print(
    f"{'ADP':<8}{pruned_cost.params:>10,}{pruned_cost.macs:>14,}"
    f"{pruned_accuracy:>15.4f}"
)
summary = result.summary()
print(
    f"ADP: {dense_cost.params / pruned_cost.params:.1f}x fewer parameters, "
    f"{dense_cost.macs / pruned_cost.macs:.1f}x fewer MACs, "
    f"{summary['prune_steps']} pruning step(s) kept, "
    f"{summary['rolled_back_steps']} rolled back"
)
for step in result.steps:
    print(
        f"  after epoch {step['epoch'] + 1} (attempt {step['attempt'] + 1}): "
        f"{step['outcome']}, widths {step['after']}"
    )

"""
`result.summary()` also reports the training compute, which shrinks with the
model: every epoch after a pruning step is cheaper than a dense one.
"""

dense_training_macs = keras_adp.metrics.training_macs(
    dense_cost.macs, splits.num_train * epochs
)
print(
    f"training MACs: ADP {summary['training_macs']:.3g} vs dense "
    f"{dense_training_macs:.3g} "
    f"({summary['training_macs'] / dense_training_macs:.0%})"
)

"""
## Conclusion

`ActivationDensity` shows how much of each layer is actually used while a
model trains, and `ADPTrainer` turns that into a smaller architecture during
the same training run: the returned `result.model` is an ordinary Keras
model with fewer filters, ready to be saved or exported (see
`examples/export_tflite.py`). `examples/vgg19_cifar10.py` and
`examples/resnet18_cifar100.py` apply the same recipe to the paper's
settings, and `examples/compare_tfmot.py` compares it with magnitude pruning
from tensorflow-model-optimization.
"""
