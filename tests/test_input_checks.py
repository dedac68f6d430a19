"""Bad input to the library gets a clear error before any training time is
spent, or is handled correctly: one test per case of issue 15 (the export
and command-line cases are in test_export.py and test_cli.py)."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_adp
from keras_adp import inputs as inputs_lib

L = keras.layers
POLICY = keras_adp.ADPPolicy(
    warmup_epochs=1, min_channels=2, calibration_samples=32,
    max_accuracy_drop=None,
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(optimizer="sgd", filters=6):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(filters, 3, padding="same", activation="relu", name="c1")(
        inputs
    )
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(x), name="tiny")
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _data(samples=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 8, 8, 1)).astype("float32")
    y = (np.arange(samples) % 3).astype("int64")
    return x, y


class _Calls(keras.callbacks.Callback):
    """Records whether training started."""

    def __init__(self):
        super().__init__()
        self.began = 0

    def on_train_begin(self, logs=None):
        self.began += 1


def _fit(model=None, *args, trainer=None, **kwargs):
    trainer = trainer or keras_adp.ADPTrainer(POLICY, verbose=0)
    calls = _Calls()
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("callbacks", [calls])
    result = trainer.fit(model or _model(), *args, **kwargs)
    return result, calls


# ------------------------------------------------------- infinite datasets
def test_infinite_dataset_without_steps_per_epoch_raises_at_once():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    with pytest.raises(ValueError, match="infinite dataset.*steps_per_epoch"):
        _fit(None, dataset)


def test_infinite_dataset_with_steps_per_epoch_trains_and_counts_samples():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    result, _ = _fit(None, dataset, steps_per_epoch=3)
    record = result.history[0]
    # 3 steps of 16 samples: 48 samples, 3x forward MACs each.
    assert record["train_macs"] == pytest.approx(3 * record["macs"] * 48)


def test_finite_dataset_is_read_once_per_epoch_and_counted_exactly():
    x, y = _data(50)
    passes = []

    def generate():
        for start in range(0, 50, 16):  # batches of 16, 16, 16, 2
            yield x[start:start + 16], y[start:start + 16]
        passes.append(1)

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, 8, 8, 1), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        ),
    )
    result, _ = _fit(None, dataset, epochs=2)
    # One full pass per epoch: no counting pass before training.
    assert len(passes) == 2
    for record in result.history:
        assert record["train_macs"] == pytest.approx(3 * record["macs"] * 50)


def test_measure_density_on_an_infinite_dataset_needs_steps():
    x, _ = _data()
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16).repeat()
    with pytest.raises(ValueError, match="infinite dataset.*steps"):
        keras_adp.measure_density(_model(), dataset)
    densities = keras_adp.measure_density(_model(), dataset, steps=2)
    assert densities["c1"].samples == 32


# ------------------------------------------------------- non-finite values
@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, "inf")])
def test_non_finite_calibration_arrays_raise(bad, kind):
    x, _ = _data()
    x[3, 1, 2, 0] = bad
    with pytest.raises(ValueError, match=rf"data\[3, 1, 2, 0\] is {kind}"):
        keras_adp.measure_density(_model(), x)
    clean, y = _data()
    with pytest.raises(ValueError, match=rf"\[3, 1, 2, 0\] is {kind}"):
        _fit(None, clean, y, calibration_data=x)


def test_non_finite_values_in_a_calibration_dataset_raise():
    x, _ = _data()
    x[40, 0, 0, 0] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16)
    with pytest.raises(ValueError, match="NaN or inf.*batch 3"):
        keras_adp.measure_density(_model(), dataset)


def test_non_finite_validation_data_raises_before_training():
    x, y = _data()
    x_val = x[:8].copy()
    x_val[2, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"validation_data\[0\].*\[2, 0, 0, 0\] is inf"):
        _fit(None, x, y, validation_data=(x_val, y[:8]))


@pytest.mark.parametrize(
    "labels, match",
    [
        ("nan", r"y\[5\] is NaN"),
        ("high", r"y\[5\] = 3.*\[0, 3\)"),
        ("negative", r"y\[5\] = -1"),
    ],
)
def test_bad_labels_raise_before_training(labels, match):
    x, y = _data()
    y = y.astype("float32")
    y[5] = {"nan": np.nan, "high": 3, "negative": -1}[labels]
    calls = _Calls()
    with pytest.raises(ValueError, match=match):
        _fit(None, x, y, callbacks=[calls])
    assert calls.began == 0


def test_one_hot_labels_of_the_wrong_width_raise():
    x, y = _data()
    model = _model()
    model.compile("sgd", "categorical_crossentropy")
    with pytest.raises(ValueError, match="4 columns.*3 outputs"):
        _fit(model, x, np.eye(4)[y % 4])


# ------------------------------------------------------ argument types
def test_string_threshold_is_rejected_everywhere():
    x, _ = _data()
    with pytest.raises(ValueError, match="threshold='0.1'"):
        keras_adp.measure_density(_model(), x, threshold="0.1")
    with pytest.raises(ValueError, match="threshold='0.1'"):
        keras_adp.ActivationDensity(x, threshold="0.1")
    with pytest.raises(ValueError, match="threshold"):
        keras_adp.ADPPolicy(threshold="0.1")


@pytest.mark.parametrize("batch_size", [0, -8, "8", 2.0, True])
def test_bad_batch_sizes_raise_before_training(batch_size):
    x, y = _data()
    with pytest.raises(ValueError, match="batch_size"):
        _fit(None, x, y, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        keras_adp.measure_density(_model(), x, batch_size=batch_size)


@pytest.mark.parametrize("resume", ["yes", 1, None])
def test_resume_must_be_a_bool(tmp_path, resume):
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=tmp_path, verbose=0)
    with pytest.raises(ValueError, match="resume"):
        _fit(None, *_data(), trainer=trainer, resume=resume)


def test_a_callback_not_in_a_list_is_a_type_error():
    x, y = _data()
    with pytest.raises(TypeError, match=r"callbacks=\[EarlyStopping"):
        _fit(None, x, y, callbacks=keras.callbacks.EarlyStopping())
    with pytest.raises(TypeError, match=r"callbacks\[0\]"):
        _fit(None, x, y, callbacks=[print])


def test_validation_data_of_one_item_raises():
    x, y = _data()
    with pytest.raises(ValueError, match="tuple of 1 item"):
        _fit(None, x, y, validation_data=(x,))


def test_unbatched_dataset_raises_before_training():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match=r"single samples.*\.batch"):
        _fit(None, dataset)


# ---------------------------------------------------- shapes of the data
def test_calibration_data_of_the_wrong_shape_raises_before_training():
    x, y = _data()
    wrong = np.zeros((16, 9, 9, 1), "float32")
    calls = _Calls()
    with pytest.raises(ValueError, match=r"model 'tiny' expects.*\(16, 9, 9, 1\)|Model 'tiny' expects"):
        _fit(None, x, y, calibration_data=wrong, callbacks=[calls])
    assert calls.began == 0


def test_measure_density_shape_error_names_the_users_model():
    wrong = np.zeros((4, 9, 9, 1), "float32")
    with pytest.raises(ValueError) as info:
        keras_adp.measure_density(_model(), wrong)
    message = str(info.value)
    assert "'tiny'" in message and "probe" not in message
    assert "(None, 8, 8, 1)" in message


# ------------------------------------------------------- calibration set
def _calibration_forms(x, y):
    slices = tf.data.Dataset.from_tensor_slices
    return {
        "array": (x, {}),
        "x_y_tuple": ((x, y), {}),
        "batched_dataset": (slices((x, y)).batch(5), {}),
        "infinite_batched_dataset": (slices(x).batch(5).repeat(), {}),
        "unbatched_dataset_with_input_rank": (slices(x), {"input_rank": 4}),
    }


@pytest.mark.parametrize(
    "form",
    ["array", "x_y_tuple", "batched_dataset", "infinite_batched_dataset",
     "unbatched_dataset_with_input_rank"],
)
def test_calibration_inputs_are_the_first_count_inputs(form):
    x, y = _data(24)
    data, kwargs = _calibration_forms(x, y)[form]

    inputs = inputs_lib.calibration_inputs(data, 12, **kwargs)

    np.testing.assert_array_equal(inputs, x[:12])


def test_calibration_inputs_of_a_multi_input_list_are_one_list():
    x, _ = _data(10)
    other = np.arange(10, dtype="float32")[:, None]

    inputs = inputs_lib.calibration_inputs([x, other], 4)

    assert isinstance(inputs, list) and len(inputs) == 2
    np.testing.assert_array_equal(inputs[0], x[:4])
    np.testing.assert_array_equal(inputs[1], other[:4])


def test_calibration_inputs_are_a_copy_and_take_all_when_count_is_none():
    x, _ = _data(10)

    inputs = inputs_lib.calibration_inputs(x, None)
    x[:] = 0.0

    assert inputs.shape == (10, 8, 8, 1) and np.any(inputs != 0.0)


def test_calibration_inputs_check_only_the_samples_taken_for_nan():
    x, _ = _data(10)
    x[6, 0, 0, 0] = np.nan

    assert inputs_lib.calibration_inputs(x, 6).shape == (6, 8, 8, 1)
    with pytest.raises(ValueError, match=r"data\[6, 0, 0, 0\] is NaN"):
        inputs_lib.calibration_inputs(x, 7)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(4)
    with pytest.raises(ValueError, match=r"data\[6, 0, 0, 0\] is NaN"):
        inputs_lib.calibration_inputs(dataset, 8)


@pytest.mark.parametrize(
    "data, count, match",
    [
        (None, 4, "Received: None"),
        (np.zeros((0, 8, 8, 1)), 4, "at least one input sample.*shape"),
        (tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 1))).batch(2),
         4, "Received: an empty tf.data.Dataset"),
        (tf.data.Dataset.from_tensor_slices(np.zeros((2, 8, 8, 1))).repeat(),
         None, "Expected a finite dataset"),
        ({"image": np.zeros((2, 8, 8, 1))}, 4, "Received: dict"),
        ((np.zeros((8, 8, 1)) for _ in range(2)), 4, "Received: generator"),
        (np.zeros((2, 8, 8, 1)), 0, "count=0"),
    ],
    ids=["none", "empty_array", "empty_dataset", "infinite_all_samples",
         "dict", "generator", "count_0"],
)
def test_calibration_inputs_reject_bad_data(data, count, match):
    with pytest.raises(ValueError, match=match):
        inputs_lib.calibration_inputs(data, count)


# ------------------------------------------------------------- resuming
def test_resume_with_nothing_to_resume_says_so(tmp_path):
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=tmp_path / "run", verbose=0)
    with pytest.warns(UserWarning, match="holds no checkpoint.*new run"):
        result, _ = _fit(None, *_data(), trainer=trainer, resume=True)
    assert len(result.history) == 2


def test_resume_refuses_a_model_of_another_architecture(tmp_path):
    run_dir = tmp_path / "run"
    _fit(None, *_data(), trainer=keras_adp.ADPTrainer(
        POLICY, run_dir=run_dir, verbose=0))
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, verbose=0)
    with pytest.raises(ValueError, match="started from model 'tiny'.*differ"):
        _fit(_model(filters=8), *_data(), trainer=trainer, resume=True,
             epochs=3)


def test_resume_refuses_another_optimizer(tmp_path):
    run_dir = tmp_path / "run"
    _fit(None, *_data(), trainer=keras_adp.ADPTrainer(
        POLICY, run_dir=run_dir, verbose=0))
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, verbose=0)
    with pytest.raises(ValueError, match="optimizer SGD.*compiled with Adam"):
        _fit(_model(optimizer="adam"), *_data(), trainer=trainer,
             resume=True, epochs=3)


def test_resume_with_fewer_epochs_than_done_raises(tmp_path):
    run_dir = tmp_path / "run"
    _fit(None, *_data(), epochs=3, trainer=keras_adp.ADPTrainer(
        POLICY, run_dir=run_dir, verbose=0))
    trainer = keras_adp.ADPTrainer(POLICY, run_dir=run_dir, verbose=0)
    with pytest.raises(ValueError, match="already trained 3 epochs.*epochs=2"):
        _fit(None, *_data(), trainer=trainer, resume=True, epochs=2)
    result, _ = _fit(None, *_data(), trainer=trainer, resume=True, epochs=3)
    assert len(result.history) == 3


# ------------------------------------------------ replicas, partial batches
PARTIAL_BATCHES_SCRIPT = textwrap.dedent(
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
    import keras_adp

    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 1))
        x = keras.layers.Conv2D(6, 3, padding="same", name="c1")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3)(x))
        model.compile("sgd", "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 6, 6, 1)).astype("float32")
    y = np.arange(13) % 3
    policy = keras_adp.ADPPolicy(warmup_epochs=1, min_channels=2,
                                 calibration_samples=13,
                                 max_accuracy_drop=None)
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1", "/cpu:2"])
    results = {}
    with strategy.scope():
        # 13 samples in batches of 6: a last batch of 1 sample for 3
        # replicas; 7 validation samples.
        arrays = keras_adp.ADPTrainer(policy, verbose=0).fit(
            build(), x, y, batch_size=6, epochs=2,
            validation_data=(x[:7], y[:7]))
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
        batches = keras_adp.ADPTrainer(policy, verbose=0).fit(
            build(), dataset, epochs=2, validation_data=dataset)
        try:  # Every batch of 4 splits 2, 2, 0.
            keras_adp.ADPTrainer(policy, verbose=0).fit(
                build(), x, y, batch_size=4, epochs=2)
            results["batch_size_4"] = "accepted"
        except ValueError as error:
            results["batch_size_4"] = str(error)
    for name, result in (("arrays", arrays), ("dataset", batches)):
        results[name] = [
            {key: record["logs"].get(key) for key in ("loss", "val_loss")}
            for record in result.history
        ]
    print(json.dumps(results))
    """
)


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_trainer_never_hands_a_replica_an_empty_batch(onednn):
    environment = dict(
        os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="",
        TF_ENABLE_ONEDNN_OPTS=onednn,
    )
    completed = subprocess.run(
        [sys.executable, "-c", PARTIAL_BATCHES_SCRIPT],
        capture_output=True, text=True, timeout=300, env=environment,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert "multiple of 3, e.g. batch_size=6" in results.pop("batch_size_4")
    for history in results.values():
        assert len(history) == 2
        for logs in history:
            assert np.isfinite(logs["loss"]) and np.isfinite(logs["val_loss"])
