"""Does activation density tell layers apart under BatchNormalization->ReLU?

Trains vgg_small (BN->ReLU after every convolution) on Fashion-MNIST with
Adam and an optional L1 penalty on every BatchNormalization gamma (network
slimming's pressure, `--gamma-l1`), then prints per layer: the layer's
activation density AD, how many channels are dead (per-channel density
<= `--tau`), how many have |gamma| below `--gamma-tau` x the layer's
largest, and the width each rule would give:

- paper: `ceil(AD * width)`;
- live: channels that fire (density > tau) and carry signal
  (|gamma| > gamma_tau * max |gamma|) -- `keras_adp.policy`'s `"live"`;

and the test accuracy. Run it for several `--gamma-l1` values side by side:

    python benchmarks/bn_density_signal.py --gamma-l1 0 1e-4 5e-4 --epochs 5
"""

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp
from keras_adp import models as models_lib

from bench_training import load  # Same data preparation as the benchmark.


def run(args, gamma_l1, data):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(args.seed)
    model = models_lib.vgg_small((28, 28, 1), 10, args.width)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if gamma_l1:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.gamma.regularizer = keras.regularizers.L1(gamma_l1)
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size,
              epochs=args.epochs, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    densities = keras_adp.measure_density(model, x_train[:512])
    groups = {g.name: g for g in keras_adp.channel_groups(model)}
    print(f"\ngamma L1 {gamma_l1:g}: test accuracy {accuracy * 100:.2f} %, "
          f"{seconds:.0f} s")
    print(f"{'group':12} {'width':>5} {'AD':>6} {'dead':>5} {'γ≈0':>5} "
          f"{'paper':>6} {'live':>5}  |γ| min/median/max   channel density "
          "min/median/max")
    for name, density in densities.items():
        group = groups[name]
        gamma = next(
            np.abs(model.get_layer(member).gamma.numpy())
            for member in group.members
            if isinstance(model.get_layer(member),
                          keras.layers.BatchNormalization)
        )
        dead = density.channels <= args.tau
        flat = gamma <= args.gamma_tau * gamma.max()
        paper = math.ceil(density.overall * group.size)
        live = int(np.sum(~dead & ~flat))
        print(f"{name:12} {group.size:5d} {density.overall:6.3f} "
              f"{int(dead.sum()):5d} {int(flat.sum()):5d} {paper:6d} "
              f"{live:5d}  {gamma.min():.3f}/{np.median(gamma):.3f}/"
              f"{gamma.max():.3f}   {density.channels.min():.3f}/"
              f"{np.median(density.channels):.3f}/"
              f"{density.channels.max():.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gamma-l1", type=float, nargs="*", default=[0.0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-samples", type=int, default=20000)
    parser.add_argument("--test-samples", type=int, default=10000)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--tau", type=float, default=0.01)
    parser.add_argument("--gamma-tau", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load(args.train_samples, args.test_samples)
    print(f"vgg_small x{args.width} on {args.train_samples} Fashion-MNIST "
          f"images, {args.epochs} epochs, Adam {args.lr:g}, seed {args.seed}; "
          f"dead: density <= {args.tau:g}; γ≈0: |γ| <= {args.gamma_tau:g} "
          "x max |γ|")
    for gamma_l1 in args.gamma_l1:
        run(args, gamma_l1, data)


if __name__ == "__main__":
    main()
