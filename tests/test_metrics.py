"""Tests for keras_adp.metrics: parameter, MAC, FLOP and energy accounting.

Every expected count is written out by hand from the conventions in the
`keras_adp.metrics` module docstring; none is taken from the code under test.
"""

import dataclasses

import keras
import numpy as np
import pytest

from keras_adp import metrics

layers = keras.layers


# ---------------------------------------------------------------------------
# Model factories.
# ---------------------------------------------------------------------------


def single_layer_model(layer, input_shape):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, layer(inputs))


def merge_model(layer, n_inputs, input_shape=(8, 8, 3)):
    inputs = [keras.Input(shape=input_shape) for _ in range(n_inputs)]
    return keras.Model(inputs, layer(inputs))


def shared_dense_model():
    """Dense(5) on two (12,) inputs, then Add."""
    first = keras.Input(shape=(12,))
    second = keras.Input(shape=(12,))
    shared = layers.Dense(5, name="shared")
    outputs = layers.Add(name="add")([shared(first), shared(second)])
    return keras.Model([first, second], outputs)


def conv_bn_block(name="block"):
    """Sequential block: (8, 8, 3) -> Conv2D(4, 3, same) -> BN."""
    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 3)),
            layers.Conv2D(4, 3, padding="same", name="conv"),
            layers.BatchNormalization(name="bn"),
        ],
        name=name,
    )


def nested_sequential_model():
    """(8, 8, 3) -> block[conv, bn] -> GlobalAveragePooling2D -> Dense(2)."""
    inputs = keras.Input(shape=(8, 8, 3))
    x = conv_bn_block()(inputs)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def doubly_nested_functional_model():
    """outer(inner(Conv2D(4, 3, valid))) on (8, 8, 3), all Functional."""
    inner_inputs = keras.Input(shape=(8, 8, 3))
    inner = keras.Model(
        inner_inputs,
        layers.Conv2D(4, 3, name="conv")(inner_inputs),
        name="inner",
    )
    outer_inputs = keras.Input(shape=(8, 8, 3))
    outer = keras.Model(outer_inputs, inner(outer_inputs), name="outer")
    inputs = keras.Input(shape=(8, 8, 3))
    return keras.Model(inputs, outer(inputs))


def sub_model_called_twice_model():
    """One Dense(5) sub-model applied to two (12,) inputs, then Add."""
    sub_inputs = keras.Input(shape=(12,))
    sub = keras.Model(
        sub_inputs, layers.Dense(5, name="fc")(sub_inputs), name="sub"
    )
    first = keras.Input(shape=(12,))
    second = keras.Input(shape=(12,))
    outputs = layers.Add(name="add")([sub(first), sub(second)])
    return keras.Model([first, second], outputs)


def sequential_model():
    """(8, 8, 3) -> Conv2D(4, 3) -> MaxPooling2D(2) -> Flatten -> Dense(2)."""
    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 3)),
            layers.Conv2D(4, 3, name="conv"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flat"),
            layers.Dense(2, name="fc"),
        ]
    )


class WideConv2D(layers.Conv2D):
    """A user subclass; must be counted like its parent `Conv2D`."""


# ---------------------------------------------------------------------------
# One layer per model: (layer factory, input shape, macs, flops, params).
# FLOPs = 2 * MACs + bias additions (output elements) + element operations.
# ---------------------------------------------------------------------------

SINGLE_LAYER_CASES = [
    # --- Conv2D: out_positions * k*k * (in_channels / groups) * filters.
    pytest.param(
        lambda: layers.Conv2D(4, 3, padding="valid"),
        (8, 8, 3),
        6 * 6 * (3 * 3) * 3 * 4,  # out 6x6x4: 3888
        2 * 3888 + 6 * 6 * 4,  # + bias on 144 outputs: 7920
        3 * 3 * 3 * 4 + 4,  # kernel + bias: 112
        id="conv2d_valid",
    ),
    pytest.param(
        lambda: layers.Conv2D(4, 3, strides=2, padding="same"),
        (8, 8, 3),
        4 * 4 * (3 * 3) * 3 * 4,  # out ceil(8/2)=4 -> 4x4x4: 1728
        2 * 1728 + 4 * 4 * 4,  # 3520
        3 * 3 * 3 * 4 + 4,
        id="conv2d_same_stride2",
    ),
    pytest.param(
        lambda: layers.Conv2D(4, 3, strides=2, padding="valid"),
        (8, 8, 3),
        3 * 3 * (3 * 3) * 3 * 4,  # out (8-3)//2+1=3 -> 3x3x4: 972
        2 * 972 + 3 * 3 * 4,  # 1980
        3 * 3 * 3 * 4 + 4,
        id="conv2d_valid_stride2",
    ),
    pytest.param(
        lambda: layers.Conv2D(6, 3, groups=2, padding="same", use_bias=False),
        (8, 8, 4),
        8 * 8 * (3 * 3) * (4 // 2) * 6,  # 6912
        2 * 6912,  # no bias
        3 * 3 * 2 * 6,  # kernel (3, 3, 4/2, 6): 108
        id="conv2d_groups_no_bias",
    ),
    pytest.param(
        lambda: layers.Conv2D(4, 3, data_format="channels_first"),
        (3, 8, 8),
        6 * 6 * (3 * 3) * 3 * 4,  # out (4, 6, 6): 3888
        2 * 3888 + 4 * 6 * 6,  # 7920
        3 * 3 * 3 * 4 + 4,
        id="conv2d_channels_first",
    ),
    pytest.param(
        lambda: layers.Conv1D(4, 3, padding="valid"),
        (10, 3),
        8 * 3 * 3 * 4,  # out 8x4: 288
        2 * 288 + 8 * 4,  # 608
        3 * 3 * 4 + 4,  # 40
        id="conv1d_valid",
    ),
    pytest.param(
        lambda: layers.Conv1D(4, 3, strides=2, padding="same"),
        (10, 3),
        5 * 3 * 3 * 4,  # out ceil(10/2)=5 -> 5x4: 180
        2 * 180 + 5 * 4,  # 380
        3 * 3 * 4 + 4,
        id="conv1d_same_stride2",
    ),
    pytest.param(
        lambda: layers.Conv3D(3, 2, padding="valid"),
        (8, 8, 8, 2),
        7 * 7 * 7 * (2 * 2 * 2) * 2 * 3,  # out 7x7x7x3: 16464
        2 * 16464 + 7 * 7 * 7 * 3,  # 33957
        2 * 2 * 2 * 2 * 3 + 3,  # 51
        id="conv3d_valid",
    ),
    # --- ConvTranspose: in_positions * prod(kernel) * in_channels * filters.
    pytest.param(
        lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
        (8, 8, 3),
        8 * 8 * (3 * 3) * 3 * 4,  # 6912; out 16x16x4
        2 * 6912 + 16 * 16 * 4,  # 14848
        3 * 3 * 4 * 3 + 4,  # kernel (3, 3, 4, 3) + bias: 112
        id="conv2d_transpose_same_stride2",
    ),
    pytest.param(
        lambda: layers.Conv2DTranspose(4, 3, padding="valid"),
        (8, 8, 3),
        8 * 8 * (3 * 3) * 3 * 4,  # 6912; out (8-1)+3=10 -> 10x10x4
        2 * 6912 + 10 * 10 * 4,  # 14224
        3 * 3 * 4 * 3 + 4,
        id="conv2d_transpose_valid",
    ),
    pytest.param(
        lambda: layers.Conv1DTranspose(4, 3),
        (8, 3),
        8 * 3 * 3 * 4,  # 288; out 10x4
        2 * 288 + 10 * 4,  # 616
        3 * 4 * 3 + 4,  # 40
        id="conv1d_transpose_valid",
    ),
    pytest.param(
        lambda: layers.Conv3DTranspose(3, 2, strides=2),
        (4, 4, 4, 2),
        4 * 4 * 4 * (2 * 2 * 2) * 2 * 3,  # 3072; out 8x8x8x3
        2 * 3072 + 8 * 8 * 8 * 3,  # 7680
        2 * 2 * 2 * 3 * 2 + 3,  # 51
        id="conv3d_transpose_stride2",
    ),
    # --- Depthwise: out_positions * prod(kernel) * in_channels * multiplier.
    pytest.param(
        lambda: layers.DepthwiseConv2D(3, depth_multiplier=2),
        (8, 8, 3),
        6 * 6 * (3 * 3) * 3 * 2,  # out 6x6x6: 1944
        2 * 1944 + 6 * 6 * 6,  # 4104
        3 * 3 * 3 * 2 + 3 * 2,  # 60
        id="depthwise_conv2d_valid",
    ),
    pytest.param(
        lambda: layers.DepthwiseConv2D(
            3, strides=2, padding="same", depth_multiplier=2
        ),
        (8, 8, 3),
        4 * 4 * (3 * 3) * 3 * 2,  # out 4x4x6: 864
        2 * 864 + 4 * 4 * 6,  # 1824
        3 * 3 * 3 * 2 + 3 * 2,
        id="depthwise_conv2d_same_stride2",
    ),
    pytest.param(
        lambda: layers.DepthwiseConv1D(3, depth_multiplier=2),
        (10, 3),
        8 * 3 * 3 * 2,  # out 8x6: 144
        2 * 144 + 8 * 6,  # 336
        3 * 3 * 2 + 3 * 2,  # 24
        id="depthwise_conv1d_valid",
    ),
    # --- Separable: depthwise + out_positions * (in_ch * mult) * filters.
    pytest.param(
        lambda: layers.SeparableConv2D(4, 3, depth_multiplier=2),
        (8, 8, 3),
        6 * 6 * (3 * 3) * 3 * 2 + 6 * 6 * (3 * 2) * 4,  # 1944 + 864 = 2808
        2 * 2808 + 6 * 6 * 4,  # 5760
        3 * 3 * 3 * 2 + (3 * 2) * 4 + 4,  # depthwise + pointwise + bias: 82
        id="separable_conv2d_valid",
    ),
    pytest.param(
        lambda: layers.SeparableConv2D(
            4, 3, strides=2, padding="same", depth_multiplier=2
        ),
        (8, 8, 3),
        4 * 4 * (3 * 3) * 3 * 2 + 4 * 4 * (3 * 2) * 4,  # 864 + 384 = 1248
        2 * 1248 + 4 * 4 * 4,  # 2560
        3 * 3 * 3 * 2 + (3 * 2) * 4 + 4,
        id="separable_conv2d_same_stride2",
    ),
    pytest.param(
        lambda: layers.SeparableConv1D(4, 3),
        (10, 3),
        8 * 3 * 3 * 1 + 8 * 3 * 4,  # 72 + 96 = 168
        2 * 168 + 8 * 4,  # 368
        3 * 3 + 3 * 4 + 4,  # 25
        id="separable_conv1d_valid",
    ),
    # --- Dense: prod(leading non-batch dims) * in_features * units.
    pytest.param(
        lambda: layers.Dense(5),
        (12,),
        12 * 5,  # 60
        2 * 60 + 5,  # 125
        12 * 5 + 5,  # 65
        id="dense",
    ),
    pytest.param(
        lambda: layers.Dense(5),
        (4, 6),
        4 * 6 * 5,  # 120
        2 * 120 + 4 * 5,  # bias on 4x5 outputs: 260
        6 * 5 + 5,  # 35
        id="dense_rank3_input",
    ),
    pytest.param(
        lambda: layers.Dense(5, use_bias=False),
        (12,),
        12 * 5,
        2 * 60,
        12 * 5,
        id="dense_no_bias",
    ),
    # --- BatchNormalization: 1 MAC per output element.
    pytest.param(
        layers.BatchNormalization,
        (8, 8, 3),
        8 * 8 * 3,  # 192
        2 * 192,
        4 * 3,  # gamma, beta, moving mean, moving variance
        id="batch_normalization",
    ),
    # --- Pooling: FLOPs = output elements * window size.
    pytest.param(
        lambda: layers.MaxPooling2D(2),
        (8, 8, 3),
        0,
        4 * 4 * 3 * (2 * 2),  # 192
        0,
        id="max_pooling2d",
    ),
    pytest.param(
        lambda: layers.MaxPooling2D(3, strides=1, padding="same"),
        (8, 8, 3),
        0,
        8 * 8 * 3 * (3 * 3),  # 1728
        0,
        id="max_pooling2d_same_stride1",
    ),
    pytest.param(
        lambda: layers.AveragePooling2D(2),
        (8, 8, 3),
        0,
        4 * 4 * 3 * (2 * 2),
        0,
        id="average_pooling2d",
    ),
    pytest.param(
        lambda: layers.MaxPooling1D(2),
        (10, 3),
        0,
        5 * 3 * 2,  # 30
        0,
        id="max_pooling1d",
    ),
    pytest.param(
        lambda: layers.AveragePooling1D(3, strides=1),
        (10, 3),
        0,
        8 * 3 * 3,  # out (10-3)+1=8 -> 8x3: 72
        0,
        id="average_pooling1d_valid_stride1",
    ),
    pytest.param(
        lambda: layers.MaxPooling3D(2),
        (8, 8, 8, 2),
        0,
        4 * 4 * 4 * 2 * (2 * 2 * 2),  # 1024
        0,
        id="max_pooling3d",
    ),
    pytest.param(
        lambda: layers.AveragePooling3D(2),
        (8, 8, 8, 2),
        0,
        4 * 4 * 4 * 2 * (2 * 2 * 2),
        0,
        id="average_pooling3d",
    ),
    # --- Global pooling: FLOPs = input elements.
    pytest.param(
        layers.GlobalAveragePooling2D, (8, 8, 3), 0, 8 * 8 * 3, 0,
        id="global_average_pooling2d",
    ),
    pytest.param(
        layers.GlobalMaxPooling2D, (8, 8, 3), 0, 8 * 8 * 3, 0,
        id="global_max_pooling2d",
    ),
    pytest.param(
        layers.GlobalAveragePooling1D, (10, 3), 0, 10 * 3, 0,
        id="global_average_pooling1d",
    ),
    pytest.param(
        layers.GlobalMaxPooling1D, (10, 3), 0, 10 * 3, 0,
        id="global_max_pooling1d",
    ),
    pytest.param(
        layers.GlobalAveragePooling3D, (4, 4, 4, 2), 0, 4 * 4 * 4 * 2, 0,
        id="global_average_pooling3d",
    ),
    pytest.param(
        layers.GlobalMaxPooling3D, (4, 4, 4, 2), 0, 4 * 4 * 4 * 2, 0,
        id="global_max_pooling3d",
    ),
    # --- A user subclass is counted like its parent.
    pytest.param(
        lambda: WideConv2D(4, 3),
        (8, 8, 3),
        6 * 6 * (3 * 3) * 3 * 4,
        2 * 3888 + 6 * 6 * 4,
        3 * 3 * 3 * 4 + 4,
        id="conv2d_user_subclass",
    ),
    # --- Everything else: 0.
    pytest.param(layers.ReLU, (8, 8, 3), 0, 0, 0, id="relu"),
    pytest.param(layers.Flatten, (8, 8, 3), 0, 0, 0, id="flatten"),
    pytest.param(lambda: layers.Dropout(0.5), (12,), 0, 0, 0, id="dropout"),
]


@pytest.mark.parametrize(
    "make_layer, input_shape, macs, flops, params", SINGLE_LAYER_CASES
)
def test_layer_costs_matches_hand_count_for_single_layer(
    make_layer, input_shape, macs, flops, params
):
    layer = make_layer()
    model = single_layer_model(layer, input_shape)

    costs = metrics.layer_costs(model)

    assert costs == [
        metrics.LayerCost(
            name=layer.name,
            class_name=type(layer).__name__,
            params=params,
            macs=macs,
            flops=flops,
        )
    ]


# Merge layers: FLOPs = (n_inputs - 1) * output elements, on 8x8x3 inputs.
MERGE_CASES = [
    pytest.param(layers.Add, 2, 1 * 8 * 8 * 3, id="add_2"),
    pytest.param(layers.Add, 3, 2 * 8 * 8 * 3, id="add_3"),
    pytest.param(layers.Subtract, 2, 1 * 8 * 8 * 3, id="subtract_2"),
    pytest.param(layers.Multiply, 3, 2 * 8 * 8 * 3, id="multiply_3"),
    pytest.param(layers.Average, 3, 2 * 8 * 8 * 3, id="average_3"),
    pytest.param(layers.Maximum, 2, 1 * 8 * 8 * 3, id="maximum_2"),
    pytest.param(layers.Minimum, 3, 2 * 8 * 8 * 3, id="minimum_3"),
]


@pytest.mark.parametrize("make_layer, n_inputs, flops", MERGE_CASES)
def test_layer_costs_counts_merge_as_n_minus_one_ops_per_output(
    make_layer, n_inputs, flops
):
    layer = make_layer()
    model = merge_model(layer, n_inputs)

    (cost,) = metrics.layer_costs(model)

    assert (cost.params, cost.macs, cost.flops) == (0, 0, flops)


def test_every_counted_layer_class_has_a_hand_counted_case():
    tested = {
        type(case.values[0]()) for case in SINGLE_LAYER_CASES + MERGE_CASES
    }

    assert set(metrics._COUNTERS) - tested == set()


def test_layer_costs_reports_shared_layer_once_per_call_with_params_once():
    model = shared_dense_model()

    costs = metrics.layer_costs(model)

    # Dense(5) on (12,): 12*5 = 60 MACs, 2*60 + 5 = 125 FLOPs, 12*5+5 params.
    # Add of two (5,) tensors: 1 * 5 FLOPs.
    assert costs == [
        metrics.LayerCost("shared", "Dense", 65, 60, 125),
        metrics.LayerCost("shared", "Dense", 0, 60, 125),
        metrics.LayerCost("add", "Add", 0, 0, 5),
    ]


def test_layer_costs_recurses_into_nested_sequential_with_name_prefix():
    model = nested_sequential_model()

    costs = metrics.layer_costs(model)

    assert costs == [
        # Conv2D(4, 3, same) on 8x8x3: 8*8 * 3*3 * 3 * 4 = 6912 MACs,
        # 2*6912 + 8*8*4 = 14080 FLOPs, 3*3*3*4 + 4 = 112 params.
        metrics.LayerCost("block/conv", "Conv2D", 112, 6912, 14080),
        # BN on 8x8x4: 256 MACs, 512 FLOPs, 4*4 = 16 params.
        metrics.LayerCost("block/bn", "BatchNormalization", 16, 256, 512),
        # Global average pooling of 8x8x4: 256 FLOPs.
        metrics.LayerCost("gap", "GlobalAveragePooling2D", 0, 0, 256),
        # Dense(2) on (4,): 8 MACs, 2*8 + 2 = 18 FLOPs, 4*2 + 2 = 10 params.
        metrics.LayerCost("head", "Dense", 10, 8, 18),
    ]


def test_layer_costs_prefixes_every_level_of_doubly_nested_models():
    model = doubly_nested_functional_model()

    costs = metrics.layer_costs(model)

    # Conv2D(4, 3, valid) on 8x8x3: 6*6 * 3*3 * 3 * 4 = 3888 MACs.
    assert costs == [
        metrics.LayerCost(
            "outer/inner/conv", "Conv2D", 112, 3888, 2 * 3888 + 6 * 6 * 4
        )
    ]


def test_layer_costs_counts_sub_model_params_once_when_called_twice():
    model = sub_model_called_twice_model()

    costs = metrics.layer_costs(model)

    assert costs == [
        metrics.LayerCost("sub/fc", "Dense", 65, 60, 125),
        metrics.LayerCost("sub/fc", "Dense", 0, 60, 125),
        metrics.LayerCost("add", "Add", 0, 0, 5),
    ]


def test_layer_costs_uses_call_shapes_for_sub_model_built_on_unknown_size():
    sub_inputs = keras.Input(shape=(None, None, 3))
    sub = keras.Model(
        sub_inputs, layers.Conv2D(4, 3, name="conv")(sub_inputs), name="sub"
    )
    inputs = keras.Input(shape=(8, 8, 3))
    model = keras.Model(inputs, sub(inputs))

    costs = metrics.layer_costs(model)

    # Conv2D(4, 3, valid) called on 8x8x3 -> 6x6x4: 3888 MACs.
    assert costs == [
        metrics.LayerCost("sub/conv", "Conv2D", 112, 3888, 2 * 3888 + 144)
    ]


def test_layer_costs_walks_sequential_model():
    model = sequential_model()

    costs = metrics.layer_costs(model)

    assert costs == [
        # Conv2D(4, 3) on 8x8x3 -> 6x6x4: 6*6 * 9 * 3 * 4 = 3888 MACs.
        metrics.LayerCost("conv", "Conv2D", 112, 3888, 2 * 3888 + 144),
        # MaxPooling2D(2) -> 3x3x4 = 36 outputs, window 4: 144 FLOPs.
        metrics.LayerCost("pool", "MaxPooling2D", 0, 0, 36 * 4),
        metrics.LayerCost("flat", "Flatten", 0, 0, 0),
        # Dense(2) on (36,): 72 MACs, 2*72 + 2 = 146 FLOPs, 36*2+2 params.
        metrics.LayerCost("fc", "Dense", 74, 72, 146),
    ]


def test_layer_costs_walks_sequential_built_without_input():
    model = keras.Sequential([layers.Dense(5, name="fc")])
    model.build((None, 12))

    assert metrics.layer_costs(model) == [
        metrics.LayerCost("fc", "Dense", 65, 60, 125)
    ]


def test_layer_costs_reports_non_layer_operations_at_zero_cost():
    inputs = keras.Input(shape=(12,))
    x = layers.Dense(5, name="fc")(inputs)
    model = keras.Model(inputs, keras.ops.relu(x))

    costs = metrics.layer_costs(model)

    assert [(cost.macs, cost.flops) for cost in costs] == [(60, 125), (0, 0)]


def test_inference_cost_totals_layer_costs():
    cost = metrics.inference_cost(sequential_model())

    assert cost == metrics.Cost(
        params=112 + 74,
        macs=3888 + 72,
        flops=(2 * 3888 + 144) + 144 + 146,
    )


def test_inference_cost_counts_shared_layer_macs_per_call():
    cost = metrics.inference_cost(shared_dense_model())

    assert cost == metrics.Cost(params=65, macs=2 * 60, flops=2 * 125 + 5)


MODEL_FACTORIES = [
    pytest.param(sequential_model, id="sequential"),
    pytest.param(nested_sequential_model, id="nested_sequential"),
    pytest.param(doubly_nested_functional_model, id="doubly_nested"),
    pytest.param(shared_dense_model, id="shared_layer"),
    pytest.param(sub_model_called_twice_model, id="sub_model_twice"),
]


@pytest.mark.parametrize("make_model", MODEL_FACTORIES)
def test_count_params_equals_sum_of_weight_sizes(make_model):
    model = make_model()
    expected = sum(int(np.prod(weight.shape)) for weight in model.weights)

    assert metrics.count_params(model) == expected
    assert metrics.count_params(model) == model.count_params()


@pytest.mark.parametrize("make_model", MODEL_FACTORIES)
def test_layer_costs_params_sum_to_count_params(make_model):
    model = make_model()

    costs = metrics.layer_costs(model)

    assert sum(cost.params for cost in costs) == metrics.count_params(model)


def test_count_params_includes_non_trainable_weights():
    model = single_layer_model(layers.BatchNormalization(), (8, 8, 3))

    # gamma, beta trainable; moving mean and variance non-trainable.
    assert metrics.count_params(model) == 2 * 3 + 2 * 3


def test_count_params_rejects_unbuilt_model():
    model = keras.Sequential([layers.Dense(5)])

    with pytest.raises(ValueError, match="Expected a built model"):
        metrics.count_params(model)


def test_layer_costs_rejects_unbuilt_sequential():
    model = keras.Sequential([layers.Dense(5)])

    with pytest.raises(ValueError, match="Expected a built Functional"):
        metrics.layer_costs(model)


def test_layer_costs_rejects_subclassed_model():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(5)

        def call(self, inputs):
            return self.dense(inputs)

    model = Subclassed()
    model(np.zeros((1, 12), dtype="float32"))

    with pytest.raises(ValueError, match="Subclassed"):
        metrics.layer_costs(model)


def test_layer_costs_rejects_unknown_spatial_size_with_fix_hint():
    model = single_layer_model(layers.Conv2D(4, 3), (None, None, 3))

    with pytest.raises(ValueError, match="fixed input shape"):
        metrics.layer_costs(model)


def test_layer_cost_is_frozen():
    cost = metrics.LayerCost("fc", "Dense", 65, 60, 125)

    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.macs = 0


@pytest.mark.parametrize(
    "forward_macs, samples, backward_factor, expected",
    [
        pytest.param(1000, 10, 2.0, 1000 * 10 * 3, id="default_factor"),
        pytest.param(1000, 10, 0.0, 1000 * 10, id="forward_only"),
        pytest.param(1000, 0, 2.0, 0, id="no_samples"),
        pytest.param(2.5e6, np.int64(4), 1.0, 2.5e6 * 4 * 2, id="numpy_int"),
    ],
)
def test_training_macs_is_forward_times_samples_times_one_plus_backward(
    forward_macs, samples, backward_factor, expected
):
    result = metrics.training_macs(
        forward_macs, samples, backward_factor=backward_factor
    )

    assert result == pytest.approx(expected)


def test_training_macs_defaults_to_three_times_forward():
    assert metrics.training_macs(7, 1) == 21.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param(
            dict(forward_macs=-1, samples=1), "forward_macs", id="neg_macs"
        ),
        pytest.param(
            dict(forward_macs=1, samples=-1), "samples=-1", id="neg_samples"
        ),
        pytest.param(
            dict(forward_macs=1, samples=1.5), "integer", id="float_samples"
        ),
        pytest.param(
            dict(forward_macs=1, samples=True), "integer", id="bool_samples"
        ),
        pytest.param(
            dict(forward_macs=1, samples=1, backward_factor=-0.5),
            "backward_factor",
            id="neg_backward_factor",
        ),
        pytest.param(
            dict(forward_macs=float("nan"), samples=1),
            "finite",
            id="nan_macs",
        ),
    ],
)
def test_training_macs_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.training_macs(**kwargs)


def test_energy_joules_defaults_to_4_6_picojoules_per_mac():
    assert metrics.energy_joules(1e12) == pytest.approx(4.6)


def test_energy_joules_scales_with_picojoules_per_mac():
    assert metrics.energy_joules(2e12, picojoules_per_mac=1.0) == (
        pytest.approx(2.0)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param(dict(macs=-1), "macs", id="neg_macs"),
        pytest.param(dict(macs="10"), "real number", id="string_macs"),
        pytest.param(
            dict(macs=1, picojoules_per_mac=0), "> 0", id="zero_energy"
        ),
        pytest.param(
            dict(macs=1, picojoules_per_mac=-4.6), "> 0", id="neg_energy"
        ),
    ],
)
def test_energy_joules_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.energy_joules(**kwargs)
