import csv
import glob
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_adp import callbacks
from keras_adp import density

L = keras.layers
GROUPS = ["c1", "c2"]
KEYS = [f"density/{name}" for name in GROUPS]


def small_model(seed=0, name="small"):
    """c1 (fused ReLU) -> c2 -> BN -> ReLU -> logits, compiled."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Conv2D(6, 3, use_bias=False, name="c2")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
    )
    return model


def training_data(count=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 8, 8, 1)).astype("float32")
    y = (np.arange(count) % 3).astype("int64")
    return x, y


def fit(model, x, y, callback_list, epochs=2, **kwargs):
    return model.fit(
        x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
        callbacks=callback_list, **kwargs,
    )


def test_fit_logs_density_of_every_group_in_history():
    x, y = training_data()
    model = small_model()
    callback = callbacks.ActivationDensity(x, num_samples=16, batch_size=8)

    history = fit(model, x, y, [callback], epochs=2)

    for key in KEYS:
        assert len(history.history[key]) == 2
        assert all(0.0 <= value <= 1.0 for value in history.history[key])
    assert [record["epoch"] for record in callback.history] == [0, 1]
    last = callback.history[-1]
    expected = density.measure_density(model, x[:16])
    for name in GROUPS:
        assert last["density"][name] == pytest.approx(expected[name].overall)
        np.testing.assert_allclose(last["channels"][name],
                                   expected[name].channels, atol=1e-12)
        assert history.history[f"density/{name}"][-1] == last["density"][name]
    assert last["channels"]["c2"].shape == (6,)


def test_csv_logger_after_the_callback_writes_density_columns(tmp_path):
    x, y = training_data()
    path = str(tmp_path / "log.csv")

    fit(small_model(), x, y,
        [callbacks.ActivationDensity(x), keras.callbacks.CSVLogger(path)])

    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2
    for key in KEYS:
        assert 0.0 <= float(rows[-1][key]) <= 1.0


def test_frequency_measures_every_nth_epoch_only():
    x, y = training_data()
    callback = callbacks.ActivationDensity(x, frequency=2)

    history = fit(small_model(), x, y, [callback], epochs=5)

    assert [record["epoch"] for record in callback.history] == [1, 3]
    assert len(history.history["density/c1"]) == 2
    assert len(history.history["loss"]) == 5


def test_callback_does_not_change_training_results():
    x, y = training_data()
    plain = small_model(seed=0)
    fit(plain, x, y, [], epochs=3)
    measured = small_model(seed=0)
    fit(measured, x, y, [callbacks.ActivationDensity(x, batch_size=5)],
        epochs=3)

    for expected, actual in zip(plain.get_weights(), measured.get_weights()):
        np.testing.assert_array_equal(actual, expected)


def test_callback_is_reusable_across_fit_calls_and_models():
    x, y = training_data()
    callback = callbacks.ActivationDensity(x, num_samples=16)
    first = small_model(seed=0, name="first")
    fit(first, x, y, [callback], epochs=2)
    fit(first, x, y, [callback], epochs=1)
    assert [record["epoch"] for record in callback.history] == [0]

    second = small_model(seed=1, name="second")  # A new model object.
    history = fit(second, x, y, [callback], epochs=1)

    expected = density.measure_density(second, x[:16])
    assert len(callback.history) == 1
    for name in GROUPS:
        assert history.history[f"density/{name}"] == [
            pytest.approx(expected[name].overall, abs=1e-12)
        ]


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        (np.zeros((0, 8, 8, 1)), {}, "at least one input sample"),
        ((np.zeros((0, 8, 8, 1)), np.zeros(0)), {}, "at least one input"),
        (tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 1))), {},
         "Received: an empty tf.data.Dataset"),
        (np.zeros((4, 8, 8, 1)), {"frequency": 0},
         "Expected `frequency` to be an integer >= 1. Received: frequency=0"),
        (np.zeros((4, 8, 8, 1)), {"frequency": 1.5},
         "Received: frequency=1.5"),
        (np.zeros((4, 8, 8, 1)), {"frequency": True},
         "Received: frequency=True"),
        (np.zeros((4, 8, 8, 1)), {"num_samples": 0}, "num_samples=0"),
        (np.zeros((4, 8, 8, 1)), {"batch_size": 0}, "batch_size=0"),
        (np.zeros((4, 8, 8, 1)), {"steps": 0}, "steps=0"),
        (np.zeros((4, 8, 8, 1)), {"verbose": 2}, "verbose=2"),
        (np.zeros((4, 8, 8, 1)), {"threshold": "high"}, "threshold='high'"),
        (tf.data.Dataset.from_tensor_slices(np.zeros((2, 8, 8, 1))).repeat(),
         {"num_samples": None}, "Expected a finite dataset"),
        ((np.zeros((8, 8, 1)) for _ in range(2)), {}, "generator"),
    ],
    ids=["empty_array", "empty_tuple", "empty_dataset", "frequency_0",
         "frequency_float", "frequency_bool", "num_samples_0", "batch_size_0",
         "steps_0", "verbose_2", "threshold_str", "infinite_all_samples",
         "generator"],
)
def test_bad_arguments_raise_value_error(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        callbacks.ActivationDensity(data, **kwargs)


def test_model_without_measurable_group_raises_at_train_begin():
    x, y = training_data()
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, activation="sigmoid", name="gate")(inputs)
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, L.Dense(3, name="logits")(h))
    model.compile("sgd", "sparse_categorical_crossentropy")

    with pytest.raises(ValueError) as error:
        fit(model, x, y, [callbacks.ActivationDensity(x)], epochs=1)

    assert "no channel group whose activation density" in str(error.value)
    assert "'gate'" in str(error.value) and "'sigmoid'" in str(error.value)


@pytest.mark.parametrize(
    "make_data",
    [
        lambda x, y: (x, y),
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)),
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(5),
        lambda x, y: tf.data.Dataset.from_tensor_slices(x).batch(8, True),
    ],
    ids=["tuple", "unbatched_dataset", "batched_dataset",
         "static_batch_dataset"],
)
def test_calibration_set_is_the_first_num_samples_inputs(make_data):
    x, y = training_data()
    callback = callbacks.ActivationDensity(make_data(x, y), num_samples=10)
    callback.set_model(small_model())

    callback.on_train_begin()  # Merges static batches, knowing the model.

    np.testing.assert_array_equal(callback.calibration_inputs, x[:10])


def test_calibration_set_is_a_copy_of_the_array():
    x, _ = training_data()
    callback = callbacks.ActivationDensity(x, num_samples=None)
    x[:] = 0.0

    assert callback.calibration_inputs.shape == (24, 8, 8, 1)
    assert np.any(callback.calibration_inputs != 0.0)


def test_calibration_set_of_a_multi_input_model_is_one_array_per_input():
    x, y = training_data()
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    scale = keras.Input((1,), name="scale")
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(image)
    h = L.Concatenate()([L.GlobalAveragePooling2D()(h), scale])
    model = keras.Model([image, scale], L.Dense(3, name="logits")(h))
    model.compile("sgd", "sparse_categorical_crossentropy")
    scales = np.linspace(0, 1, len(x), dtype="float32")[:, None]
    callback = callbacks.ActivationDensity([x, scales], num_samples=10)

    fit(model, [x, scales], y, [callback], epochs=1)

    np.testing.assert_array_equal(callback.calibration_inputs[0], x[:10])
    np.testing.assert_array_equal(callback.calibration_inputs[1], scales[:10])
    expected = density.measure_density(model, [x[:10], scales[:10]])
    assert callback.history[-1]["density"]["c1"] == pytest.approx(
        expected["c1"].overall
    )


def test_log_dir_gets_density_scalars_and_histograms(tmp_path):
    x, y = training_data()
    log_dir = str(tmp_path / "logs")
    callback = callbacks.ActivationDensity(x, log_dir=log_dir)

    fit(small_model(), x, y, [callback], epochs=2)

    files = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert len(files) == 1
    values, plugins = {}, {}
    for event in tf.compat.v1.train.summary_iterator(files[0]):
        for value in event.summary.value:
            values.setdefault(value.tag, []).append(
                (event.step, tf.make_ndarray(value.tensor))
            )
            plugins.setdefault(value.tag, value.metadata.plugin_data.plugin_name)
    for name, size in [("c1", 4), ("c2", 6)]:
        scalars = values[f"density/{name}"]
        assert [step for step, _ in scalars] == [0, 1]
        for (_, scalar), record in zip(scalars, callback.history):
            assert scalar == pytest.approx(record["density"][name], rel=1e-6)
        histograms = values[f"density_channels/{name}"]
        assert [step for step, _ in histograms] == [0, 1]
        buckets = histograms[-1][1]
        assert buckets.shape == (callbacks.HISTOGRAM_BUCKETS, 3)
        assert buckets[0, 0] == 0.0 and buckets[-1, 1] == 1.0
        assert buckets[:, 2].sum() == size
        assert plugins[f"density/{name}"] == "scalars"
        assert plugins[f"density_channels/{name}"] == "histograms"
    assert callback._writer is None  # Closed at the end of training.


def test_verbose_prints_one_line_per_measurement(capsys):
    x, y = training_data()

    fit(small_model(), x, y,
        [callbacks.ActivationDensity(x, frequency=2, verbose=1)], epochs=4)

    lines = [
        line for line in capsys.readouterr().out.splitlines()
        if "activation density" in line
    ]
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 2: activation density (mean ")
    assert "c1=" in lines[0] and "c2=" in lines[0]


def test_callback_measures_mixed_float16_model():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x, y = training_data()
        model = small_model()
        assert model.get_layer("relu").output.dtype == "float16"
        history = fit(model, x, y, [callbacks.ActivationDensity(x)], epochs=1)
    finally:
        keras.mixed_precision.set_global_policy(previous)

    for key in KEYS:
        assert 0.0 < history.history[key][0] < 1.0
