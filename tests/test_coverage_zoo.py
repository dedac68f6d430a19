"""Models no one here wrote: keras.applications families and keras-hub
backbones under a new head. Every group that does not reach the output is
prunable, every ReLU-family group is measured, and removing channels equals
zeroing their consumers' input slices (tests/surgery.py), in float64.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import density, graph
from tests import surgery, zoo
from tests.test_nested import float64  # noqa: F401 (fixture)

L = keras.layers


def _check_coverage_and_surgery(model, size, skip_layer_norm=False):
    zoo.randomize_batchnorm(model)
    groups = keras_adp.channel_groups(model)
    inner = [g for g in groups if "reaches the model output" not in g.reason]
    blocked = {g.name: g.reason for g in inner if not g.prunable}
    assert not blocked
    relu_family = {
        g.name for g in inner
        if any(s.activation in density.GATING_ACTIVATIONS
               for s in g.activation_sites)
    }
    assert relu_family <= set(density.DensityProbe(model).names)
    keep = surgery.random_keep(groups, np.random.default_rng(0), 0.5)
    if skip_layer_norm:
        # A pruned LayerNormalization normalises over the kept channels only.
        keep = {
            name: kept for name, kept in keep.items()
            if not any(
                isinstance(graph.get_layer(model, member),
                           L.LayerNormalization)
                for member in next(g for g in groups if g.name == name).members
            )
        }
    assert keep
    small = keras_adp.prune_channels(model, keep)
    reference = surgery.zeroed_copy(model, groups, keep)
    x = np.random.default_rng(1).standard_normal((2, size, size, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    assert small.count_params() < model.count_params()
    return groups


@pytest.mark.parametrize(
    "name, size",
    [("ConvNeXtTiny", 32), ("InceptionResNetV2", 75)],
)
def test_keras_application_is_fully_prunable_and_exact(name, size, float64):
    model = getattr(keras.applications, name)(
        input_shape=(size, size, 3), include_top=False, weights=None
    )
    _check_coverage_and_surgery(
        model, size, skip_layer_norm=name.startswith("ConvNeXt")
    )


def _under_head(backbone, size=32):
    inputs = keras.Input((size, size, 3))
    x = L.GlobalAveragePooling2D()(backbone(inputs))
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def test_keras_hub_densenet_backbone_under_a_head(float64):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.DenseNetBackbone(
        stackwise_num_repeats=[2, 2], image_shape=(32, 32, 3), growth_rate=8,
        name="densenet",
    )
    model = _under_head(backbone)
    groups = _check_coverage_and_surgery(model, 32)
    inside = [g for g in groups if g.name.startswith("densenet/")]
    assert len(inside) >= 8
    x = np.random.default_rng(2).standard_normal((4, 32, 32, 3))
    densities = keras_adp.measure_density(model, x)
    assert {g.name for g in inside if g.prunable} <= set(densities)


def test_keras_hub_image_classifier_prunes_into_a_functional_model():
    """keras-hub Tasks rebuild their graph from architecture arguments, so
    the pruned copy is a plain functional model with the same layers."""
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.DenseNetBackbone(
        stackwise_num_repeats=[2, 2], image_shape=(32, 32, 3), growth_rate=8,
        name="densenet",
    )
    classifier = keras_hub.models.ImageClassifier(backbone=backbone, num_classes=3)
    groups = keras_adp.channel_groups(classifier)
    keep = {g.name: [0] for g in groups if g.prunable}
    assert len(keep) >= 8
    small = keras_adp.prune_channels(classifier, keep)
    assert type(small) is keras.Model or type(small).__name__ == "Functional"
    assert [layer.name for layer in small.layers] == [
        layer.name for layer in classifier.layers
    ]
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    assert small(x).shape == (2, 3)
    assert small.count_params() < classifier.count_params()


def test_keras_hub_grouped_conv_backbone_prunes_in_equal_blocks(float64):
    """A CSPNet with ResNeXt bottlenecks (`groups=8`) under a head: every
    group through a grouped convolution is prunable, and removing half of
    every block equals zeroing those inputs (grouped kernels zeroed per
    block by tests/surgery.py). Its channel-axis `ops.split` halves are
    pruned in equal shares too (tests/test_split_sections.py)."""
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.CSPNetBackbone(
        stem_filters=16, stem_kernel_size=3, stem_strides=2,
        stackwise_depth=[1, 1], stackwise_strides=[1, 2],
        stackwise_num_filters=[64, 128], block_type="bottleneck_block",
        groups=8, stage_type="csp", bottle_ratio=[1.0], block_ratio=[0.5],
        expand_ratio=[1.0], image_shape=(32, 32, 3), name="cspresnext",
    )
    model = zoo.randomize_batchnorm(_under_head(backbone))
    groups = keras_adp.channel_groups(model)
    grouped = [g for g in groups if g.blocks > 1]
    assert len(grouped) >= 4 and all(g.prunable for g in grouped)
    assert all(
        g.prunable for g in groups
        if "reaches the model output" not in g.reason
    )
    assert any(g.blocks == 2 and g.prunable for g in groups)  # The splits.
    # Half of each block (every block size is even): equal shares.
    keep = {g.name: np.arange(0, g.size, 2) for g in groups if g.prunable}
    small = keras_adp.prune_channels(model, keep)
    reference = surgery.zeroed_copy(model, groups, keep)
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3))
    np.testing.assert_allclose(small(x), reference(x), rtol=0, atol=1e-9)
    assert np.max(np.abs(np.asarray(small(x)) - np.asarray(model(x)))) > 1e-3
    assert small.count_params() < model.count_params() / 2
