import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_adp
from keras_adp import density
from keras_adp import graph
from tests import zoo

L = keras.layers
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A 3x3 "valid" convolution on 8x8 inputs has 6x6 = 36 output positions.
# Channel 0 copies the input at the kernel centre, channel 1 is -1 everywhere
# (never fires) and channel 2 is +1 everywhere (always fires).
POSITIONS = 36


def exact_kernel():
    kernel = np.zeros((3, 3, 1, 3), "float32")
    kernel[1, 1, 0, 0] = 1.0
    return kernel, np.array([0.0, -1.0, 1.0], "float32")


def exact_inputs():
    """Two 8x8 samples of -1 with +1 at 4 kernel centres and 2 borders."""
    x = -np.ones((2, 8, 8, 1), "float32")
    for sample, row, col in [(0, 1, 1), (0, 2, 3), (0, 6, 6), (1, 3, 3)]:
        x[sample, row, col, 0] = 1.0  # Interior: a conv output fires.
    x[0, 0, 0, 0] = 1.0  # Borders are never a kernel centre.
    x[1, 7, 4, 0] = 1.0
    return x


# Channel 0 fires at the 4 interior +1s out of 2 * 36 positions.
EXACT_CHANNELS = np.array([4 / (2 * POSITIONS), 0.0, 1.0])


def exact_model(activation="relu", activation_layer=None, dropout=None):
    """Conv2D with the hand-set kernel, then logits."""
    inputs = keras.Input((8, 8, 1))
    conv = L.Conv2D(
        3,
        3,
        activation=None if activation_layer is not None else activation,
        name="conv",
    )
    x = conv(inputs)
    if dropout is not None:
        x = L.Dropout(dropout, name="drop")(x)
    if activation_layer is not None:
        x = activation_layer(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(2, name="logits", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="exact")
    conv.set_weights(list(exact_kernel()))
    return model


def chain_model(first_activation, input_shape=(8, 8, 2)):
    inputs = keras.Input(input_shape)
    x = L.Conv2D(4, 3, padding="same", activation=first_activation,
                 name="conv_a")(inputs)
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="conv_b")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="chain")


def random_inputs(model, count=6, seed=0):
    shape = tuple(graph.graph_of(model).inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count,) + shape).astype("float32")


def reference_densities(model, x, threshold=0.0):
    """Per-channel densities computed in NumPy from the activation maps."""
    groups = [
        group
        for group in keras_adp.channel_groups(model)
        if group.prunable and group.density_site is not None
        and group.density_site.activation in density.GATING_ACTIVATIONS
    ]
    # Sites inside nested sub-models are reached by tracing them inline
    # (test_nested.py checks those densities against the sub-model itself).
    tensors = graph.site_tensors(model, [g.density_site for g in groups])
    maps = keras.Model(graph.graph_of(model).inputs, tensors).predict(
        x, verbose=0
    )
    if len(groups) == 1:
        maps = [maps]
    result = {}
    for group, activation in zip(groups, maps):
        offset = group.density_site.offset
        fired = activation[..., offset : offset + group.size] > threshold
        result[group.name] = fired.reshape(-1, group.size).mean(axis=0)
    return result


@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_measure_density_counts_hand_set_activations_exactly():
    densities = density.measure_density(exact_model(), exact_inputs())

    assert list(densities) == ["conv"]
    result = densities["conv"]
    np.testing.assert_array_equal(result.channels, EXACT_CHANNELS)
    assert result.overall == pytest.approx((4 / 72 + 0.0 + 1.0) / 3, abs=1e-15)
    assert result.measured_at == "conv"
    assert result.samples == 2
    # Independent NumPy check: the kernel centre sees the 6x6 interior.
    interior = exact_inputs()[:, 1:-1, 1:-1, 0]
    assert result.channels[0] == (interior > 0).mean()


def test_density_layer_is_a_deprecated_alias_of_overall():
    result = density.Density(
        overall=0.25, channels=np.array([0.0, 0.5]), measured_at="relu",
        samples=4,
    )

    with pytest.warns(DeprecationWarning, match="Density.overall"):
        value = result.layer

    assert value == result.overall == 0.25


def test_measure_density_counts_only_activations_above_threshold():
    x = exact_inputs()
    x[0, 4, 4, 0] = 0.25  # Fires at threshold 0, not at 0.5.

    at_zero = density.measure_density(exact_model(), x)["conv"]
    at_half = density.measure_density(exact_model(), x, threshold=0.5)["conv"]

    np.testing.assert_array_equal(at_zero.channels, [5 / 72, 0.0, 1.0])
    np.testing.assert_array_equal(at_half.channels, EXACT_CHANNELS)


@pytest.mark.parametrize(
    "activation", ["relu", "relu6", "gelu", "swish", "elu", "selu",
                   "leaky_relu", "mish"]
)
def test_measure_density_counts_positive_branch_of_fused_activation(
    activation,
):
    # Pre-activations are exactly -1 or +1: every rule agrees with `> 0`.
    result = density.measure_density(
        exact_model(activation), exact_inputs()
    )["conv"]

    np.testing.assert_array_equal(result.channels, EXACT_CHANNELS)
    assert result.measured_at == "conv"


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: L.ReLU(name="act"),
        lambda: L.Activation("relu", name="act"),
        lambda: L.Activation("gelu", name="act"),
        lambda: L.LeakyReLU(name="act"),
        lambda: L.ELU(name="act"),
        lambda: L.PReLU(name="act"),
    ],
    ids=["ReLU", "Activation_relu", "Activation_gelu", "LeakyReLU", "ELU",
         "PReLU"],
)
def test_separate_activation_layer_gives_same_density_as_fused(make_layer):
    fused = density.measure_density(exact_model("relu"), exact_inputs())
    separate = density.measure_density(
        exact_model(activation_layer=make_layer()), exact_inputs()
    )

    np.testing.assert_array_equal(
        separate["conv"].channels, fused["conv"].channels
    )
    assert separate["conv"].overall == fused["conv"].overall
    assert separate["conv"].measured_at == "act"


def test_measure_density_uses_inference_mode():
    # Dropout(0.9) before the ReLU would silence most activations in training.
    model = exact_model(activation_layer=L.ReLU(name="act"), dropout=0.9)

    result = density.measure_density(model, exact_inputs())["conv"]

    np.testing.assert_array_equal(result.channels, EXACT_CHANNELS)


@pytest.mark.parametrize("activation", ["sigmoid", "softplus", "tanh"])
def test_probe_skips_groups_without_silent_branch(activation):
    probe = density.DensityProbe(chain_model(activation))

    assert probe.names == ["conv_b"]
    assert list(probe.skipped) == ["conv_a"]
    assert f"'{activation}'" in probe.skipped["conv_a"]
    densities = probe.measure(random_inputs(probe.model))
    assert list(densities) == ["conv_b"]  # Logits are not measured either.


def test_probe_skips_linear_group_and_never_measures_logits():
    probe = density.DensityProbe(chain_model(None))

    assert probe.names == ["conv_b"]
    assert "no nonlinearity" in probe.skipped["conv_a"]
    assert "logits" not in probe.skipped and "logits" not in probe.names


def test_probe_without_measurable_group_raises_naming_groups():
    inputs = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 3, activation="sigmoid", name="conv_a")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(x))

    with pytest.raises(ValueError) as error:
        density.DensityProbe(model)

    message = str(error.value)
    assert "no channel group whose activation density can be measured" in message
    assert "conv_a" in message and "'sigmoid'" in message
    assert "logits" in message and "model output" in message


@pytest.mark.parametrize(
    "factory",
    ["vgg", "resnet_basic", "resnet_bottleneck", "mobilenet_v2_block",
     "densenet_block", "se_block", "flatten_dense", "sequential",
     "nested_and_shared"],
)
def test_measure_density_matches_numpy_reference_on_zoo_models(factory):
    model = zoo.FACTORIES[factory]()
    x = random_inputs(model, count=5)

    densities = density.measure_density(model, x, batch_size=2)

    expected = reference_densities(model, x)
    assert list(densities) == list(expected)
    for name, channels in expected.items():
        np.testing.assert_allclose(densities[name].channels, channels,
                                   rtol=0, atol=1e-12)
        assert densities[name].overall == pytest.approx(channels.mean())
        assert densities[name].samples == 5


def test_residual_identity_group_is_measured_at_its_measured_at_site():
    model = zoo.resnet_basic()
    group = {g.name: g for g in keras_adp.channel_groups(model)}["stem_conv"]
    x = random_inputs(model)

    result = density.measure_density(model, x)["stem_conv"]

    # The identity group (stem, b1c2, the Add and the ReLU after it) is
    # measured at its first site, the stem's ReLU.
    assert result.measured_at == group.density_site.layer == "stem_relu"
    stem_relu = keras.Model(model.inputs, model.get_layer("stem_relu").output)
    expected = (stem_relu.predict(x, verbose=0) > 0).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(result.channels, expected, rtol=0, atol=1e-12)


def test_measure_density_handles_dynamic_spatial_shapes():
    inputs = keras.Input((None, None, 1))
    x = L.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="logits")(x))
    small = random_inputs(exact_model(), count=3, seed=1)
    large = np.random.default_rng(2).normal(size=(2, 12, 12, 1))
    data = tf.data.Dataset.from_tensors(small).concatenate(
        tf.data.Dataset.from_tensors(large.astype("float32"))
    )

    result = density.measure_density(model, data)["conv"]

    conv = keras.Model(inputs, model.get_layer("conv").output)
    fired_small = conv.predict(small, verbose=0) > 0
    fired_large = conv.predict(large, verbose=0) > 0
    expected = (fired_small.sum((0, 1, 2)) + fired_large.sum((0, 1, 2))) / (
        3 * 6 * 6 + 2 * 10 * 10
    )
    np.testing.assert_allclose(result.channels, expected, rtol=0, atol=1e-12)
    assert result.samples == 5


def _input_forms(x, y):
    slices = tf.data.Dataset.from_tensor_slices
    return {
        "array": x,
        "x_y_tuple": (x, y),
        "x_y_w_tuple": (x, y, np.ones(len(y))),
        "batched_x": slices(x).batch(5),
        "batched_x_y": slices((x, y)).batch(5),
        "unbatched_x": slices(x),
        "unbatched_x_y": slices((x, y)),
        "batched_drop_remainder_x_y": slices((x, y)).batch(4, True),
    }


@pytest.mark.parametrize(
    "form",
    ["array", "x_y_tuple", "x_y_w_tuple", "batched_x", "batched_x_y",
     "unbatched_x", "unbatched_x_y", "batched_drop_remainder_x_y"],
)
def test_measure_density_accepts_arrays_tuples_and_datasets(form):
    model = chain_model("relu")
    x = random_inputs(model, count=12)
    y = np.arange(12) % 3
    probe = density.DensityProbe(model)
    expected = probe.measure(x)

    result = probe.measure(_input_forms(x, y)[form], batch_size=5)

    for name in expected:
        np.testing.assert_allclose(result[name].channels,
                                   expected[name].channels, atol=1e-12)
        assert result[name].samples == 12


@pytest.mark.parametrize("form", ["array", "unbatched_x_y"])
def test_measure_density_steps_limits_the_batches(form):
    model = chain_model("relu")
    x = random_inputs(model, count=12)
    probe = density.DensityProbe(model)

    result = probe.measure(_input_forms(x, np.zeros(12))[form], steps=2,
                           batch_size=5)

    expected = probe.measure(x[:10])
    assert result["conv_b"].samples == 10
    np.testing.assert_allclose(result["conv_b"].channels,
                               expected["conv_b"].channels, atol=1e-12)


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        (np.zeros((0, 8, 8, 2), "float32"), {}, "empty data"),
        (tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 2), "float32")),
         {}, "empty data"),
        (tf.data.Dataset.from_tensor_slices(np.zeros((3, 8, 8, 2), "float32"))
         .filter(lambda x: False).batch(2), {}, "empty data"),
        (np.zeros((3, 8, 8, 2), "float32"), {"steps": 0}, "steps=0"),
        (np.zeros((3, 8, 8, 2), "float32"), {"batch_size": 0},
         "batch_size=0"),
        (iter([np.zeros((3, 8, 8, 2), "float32")]), {}, "list_iterator"),
    ],
    ids=["empty_array", "empty_dataset", "filtered_empty_dataset", "steps_0",
         "batch_size_0", "iterator"],
)
def test_measure_rejects_bad_data_and_arguments(data, kwargs, match):
    probe = density.DensityProbe(chain_model("relu"))

    with pytest.raises(ValueError, match=match):
        probe.measure(data, **kwargs)


def test_measure_reports_model_errors_as_they_are():
    probe = density.DensityProbe(chain_model("relu"))

    with pytest.raises(Exception) as error:
        probe.measure(np.zeros((3, 8, 8, 5), "float32"))  # 5 channels, not 2.

    assert "empty data" not in str(error.value)


@pytest.mark.parametrize("threshold", [float("nan"), "high", None])
def test_probe_rejects_non_finite_threshold(threshold):
    with pytest.raises(ValueError, match="Expected `threshold` to be a finite"):
        density.DensityProbe(chain_model("relu"), threshold=threshold)


def test_measure_density_under_mixed_float16(mixed_float16):
    model = exact_model(activation_layer=L.ReLU(name="act"))
    assert model.get_layer("act").output.dtype == "float16"

    result = density.measure_density(model, exact_inputs())["conv"]

    np.testing.assert_array_equal(result.channels, EXACT_CHANNELS)
    assert result.channels.dtype == np.float64


def test_probe_shares_weights_with_the_model():
    model = exact_model()
    probe = density.DensityProbe(model)
    before = probe.measure(exact_inputs())["conv"]
    kernel, bias = exact_kernel()
    model.get_layer("conv").set_weights([kernel, -bias])

    after = probe.measure(exact_inputs())["conv"]

    np.testing.assert_array_equal(before.channels, EXACT_CHANNELS)
    np.testing.assert_array_equal(after.channels, [4 / 72, 1.0, 0.0])


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import numpy as np
    from keras_adp import callbacks, density

    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 2))
        x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU(name="relu")(x)
        x = keras.layers.Conv2D(5, 3, activation="relu", name="c2")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
        model.compile("sgd", "sparse_categorical_crossentropy")
        return model

    x = np.random.default_rng(0).normal(size=(13, 8, 8, 2)).astype("float32")
    y = np.arange(13) % 3
    single = density.measure_density(build(), x, batch_size=4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build()
    mirrored = density.measure_density(model, x, batch_size=4)
    callback = callbacks.ActivationDensity(x, batch_size=4)
    # Training on 12 samples: plain Keras `fit` hands a replica an empty
    # batch when the last batch has fewer samples than replicas.
    history = model.fit(x[:12], y[:12], batch_size=4, epochs=1, verbose=0,
                        callbacks=[callback])
    after_fit = density.measure_density(model, x, batch_size=4)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "single": {k: v.channels.tolist() for k, v in single.items()},
        "mirrored": {k: v.channels.tolist() for k, v in mirrored.items()},
        "samples": {k: v.samples for k, v in mirrored.items()},
        "logged": {k: v for k, v in history.history.items()
                   if k.startswith("density/")},
        "after_fit": {k: v.overall for k, v in after_fit.items()},
    }))
    """
)


@pytest.mark.tensorflow_only("tf.distribute.MirroredStrategy")
def test_measure_density_under_mirrored_strategy_matches_single_device():
    # Logical devices must be configured before TensorFlow initialises its
    # devices, so this runs in a fresh interpreter.
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["replicas"] == 2
    assert result["samples"] == {"c1": 13, "c2": 13}
    for name, channels in result["single"].items():
        np.testing.assert_allclose(result["mirrored"][name], channels,
                                   rtol=0, atol=1e-12)
        assert result["logged"][f"density/{name}"] == [
            pytest.approx(result["after_fit"][name], abs=1e-12)
        ]


WHOLE_BATCHES_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 3
    )
    import keras
    import numpy as np
    from keras_adp import density

    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 2))
        x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU(name="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1", "/cpu:2"])
    with strategy.scope():
        mirrored = build()
    single = build()
    cases = []
    for samples in (1, 2, 4, 7):
        for batch_size in (1, 2, 4, 32):
            x = np.random.default_rng(samples).normal(
                size=(samples, 6, 6, 2)).astype("float32")
            dataset = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
            one = density.measure_density(single, x, batch_size=batch_size)
            arrays = density.measure_density(
                mirrored, x, batch_size=batch_size)
            batches = density.measure_density(mirrored, dataset)
            cases.append({
                "samples": samples,
                "batch_size": batch_size,
                "one": one["c1"].channels.tolist(),
                "arrays": arrays["c1"].channels.tolist(),
                "dataset": batches["c1"].channels.tolist(),
                "counted": [arrays["c1"].samples, batches["c1"].samples],
            })
    print(json.dumps(cases))
    """
)


@pytest.mark.tensorflow_only("tf.distribute.MirroredStrategy")
def test_measure_density_never_hands_a_replica_an_empty_batch():
    # 3 replicas and last batches of 1, 2 or 3 samples: a strategy that
    # split them as they are would leave replicas empty, which crashes
    # oneDNN's CPU kernels. Densities must equal one device's exactly.
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, "-c", WHOLE_BATCHES_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    cases = json.loads(completed.stdout.strip().splitlines()[-1])
    assert len(cases) == 16
    for case in cases:
        assert case["arrays"] == case["one"], case
        assert case["dataset"] == case["one"], case
        assert case["counted"] == [case["samples"]] * 2, case
