"""Coverage of keras.applications: how much of each family keras_adp can prune.

For one model per `keras.applications` family (built with `weights=None`,
`include_top=False`, on small inputs), prints:

- groups: channel groups (`keras_adp.channel_groups`);
- inner: groups that do not reach a model output (the output's channels
  are the model's interface, so they are never pruned);
- prunable: prunable groups, and their share of `inner`;
- relu: prunable groups whose channels pass a ReLU-family nonlinearity
  (a layer, an `activation=` argument or a `keras.ops` call; see
  `keras_adp.density.GATING_ACTIVATIONS`);
- measured: prunable groups `DensityProbe` measures;
- inferred: layers accepted by the permutation rule (no explicit handler);
- analyse s / rebuild s: `channel_groups` and `prune_channels` (half of
  every prunable group's channels removed), seconds, median of `--repeats`;
- max err: with `--check`, the largest difference between the pruned model
  and the unpruned one with the removed channels' consumer inputs zeroed
  (tests/surgery.py), in float64, half of the channels of every prunable
  group removed except groups through a LayerNormalization (which
  normalises over the kept channels only, so is not exact by design).

The last rows are MobileNetV2 and keras-hub backbones (built from config, no
download) used as one layer of a model with a new head; CSPResNeXt50's
grouped convolutions (`groups=32`) are pruned in equal shares per group,
and its channel-axis `ops.split` halves in equal shares per half.

    python benchmarks/coverage.py [--repeats 1] [--check] [--models ...]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_adp
from keras_adp import density
from keras_adp import graph

# One model per family, with the smallest input it accepts (>= 32).
FAMILIES = {
    "VGG16": 32,
    "ResNet50": 32,
    "ResNet50V2": 32,
    "InceptionV3": 75,
    "InceptionResNetV2": 75,
    "Xception": 71,
    "MobileNet": 32,
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "MobileNetV3Large": 32,
    "DenseNet121": 32,
    "NASNetMobile": 32,
    "EfficientNetB0": 32,
    "EfficientNetV2B0": 32,
    "ConvNeXtTiny": 32,
}
NESTED = "MobileNetV2 under a head"
# keras-hub backbones built from config (no preset, no download), under a
# new head; skipped when keras-hub is not installed (`pip install .[hub]`).
HUB = {
    "hub DenseNet121 under head": lambda hub: hub.models.DenseNetBackbone(
        stackwise_num_repeats=[6, 12, 24, 16], image_shape=(32, 32, 3),
        name="densenet121",
    ),
    "hub VGG16 under head": lambda hub: hub.models.VGGBackbone(
        stackwise_num_repeats=[2, 2, 3, 3, 3],
        stackwise_num_filters=[64, 128, 256, 512, 512],
        image_shape=(32, 32, 3), name="vgg16",
    ),
    # CSPResNeXt-50's stages (ResNeXt bottlenecks, grouped convolutions
    # with groups=32), stem stride 2 and no stem pooling for 32x32 inputs.
    "hub CSPResNeXt50 under head": lambda hub: hub.models.CSPNetBackbone(
        stem_filters=64, stem_kernel_size=7, stem_strides=2,
        stackwise_depth=[3, 3, 5, 2], stackwise_strides=[1, 2, 2, 2],
        stackwise_num_filters=[256, 512, 1024, 2048],
        block_type="bottleneck_block", groups=32, stage_type="csp",
        bottle_ratio=[1.0], block_ratio=[0.5], expand_ratio=[1.0],
        image_shape=(32, 32, 3), name="cspresnext50",
    ),
}


def _under_head(backbone, size):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))


def build(name, size):
    if name == NESTED:
        return _under_head(keras.applications.MobileNetV2(
            input_shape=(size, size, 3), include_top=False, weights=None
        ), size)
    if name in HUB:
        import keras_hub

        return _under_head(HUB[name](keras_hub), size)
    return getattr(keras.applications, name)(
        input_shape=(size, size, 3), include_top=False, weights=None
    )


def row(name, size, repeats, check):
    model = build(name, size)
    analyse, rebuild = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        groups = keras_adp.channel_groups(model)
        middle = time.perf_counter()
        keep = {g.name: np.arange(0, g.size, 2) for g in groups if g.prunable}
        pruned = keras_adp.prune_channels(model, keep)
        rebuild.append(time.perf_counter() - middle)
        analyse.append(middle - start)
    inner = [g for g in groups if "reaches the model output" not in g.reason]
    prunable = [g for g in groups if g.prunable]
    relu = [
        g for g in prunable
        if any(s.activation in density.GATING_ACTIVATIONS
               for s in g.activation_sites)
    ]
    probe = density.DensityProbe(model)
    inferred = sorted({name for g in groups for name in g.inferred})
    error = float("nan")
    if check:
        error = max_error(name, size)
    del pruned
    keras.backend.clear_session(free_memory=False)
    return {
        "model": name,
        "groups": len(groups),
        "inner": len(inner),
        "prunable": len(prunable),
        "share": len(prunable) / max(1, len(inner)),
        "relu": len(relu),
        "measured": len(probe.names),
        "inferred": len(inferred),
        "analyse": statistics.median(analyse),
        "rebuild": statistics.median(rebuild),
        "error": error,
    }


def max_error(name, size):
    """Pruned vs zeroed-inputs reference on random images, float64."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests import surgery, zoo

    keras.config.set_dtype_policy("float64")
    try:
        model64 = zoo.randomize_batchnorm(build(name, size))
        groups64 = keras_adp.channel_groups(model64)
        # A pruned LayerNormalization normalises over the kept channels
        # only, so it is not exact by design: groups through one are left.
        keep = {
            g.name: np.arange(0, g.size, 2) for g in groups64
            if g.prunable and not any(
                isinstance(graph.get_layer(model64, member),
                           keras.layers.LayerNormalization)
                for member in g.members
            )
        }
        pruned = keras_adp.prune_channels(model64, keep)
        reference = surgery.zeroed_copy(model64, groups64, keep)
        x = np.random.default_rng(0).standard_normal((2, size, size, 3))
        return float(np.max(np.abs(
            np.asarray(pruned(x)) - np.asarray(reference(x))
        )))
    finally:
        keras.config.set_dtype_policy("float32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args(argv)
    if args.models is None:
        args.models = [*FAMILIES, NESTED]
        try:
            import keras_hub  # noqa: F401

            args.models += list(HUB)
        except ImportError:
            print("keras-hub not installed: its backbones are skipped")
    header = (
        f"| {'model':<27} | groups | inner | prunable | share | relu | "
        "measured | inferred | analyse s | rebuild s | max err |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name in args.models:
        size = FAMILIES.get(name, 32)
        r = row(name, size, args.repeats, args.check)
        print(
            f"| {r['model']:<27} | {r['groups']:>6} | {r['inner']:>5} | "
            f"{r['prunable']:>8} | {r['share']:>5.0%} | {r['relu']:>4} | "
            f"{r['measured']:>8} | {r['inferred']:>8} | {r['analyse']:>9.2f} | "
            f"{r['rebuild']:>9.2f} | {r['error']:>7.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
