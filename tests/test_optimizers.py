import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from keras_adp import optimizers as optimizers_lib
from keras_adp import rebuild as rebuild_lib

L = keras.layers

KEEP_C1 = np.array([0, 2, 5])
KEEP_C2 = np.array([1, 3, 4, 7])


def _model():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _data(samples=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 8, 8, 1)).astype("float32")
    return x, rng.integers(0, 3, samples)


def _compiled(optimizer, metrics=("accuracy",)):
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
    )
    return model


def _trained(optimizer, steps=3):
    """A compiled model whose optimizer took `steps` steps of random
    gradients (eagerly: much faster than tracing `fit`)."""
    model = _compiled(optimizer)
    rng = np.random.default_rng(1)
    variables = model.trainable_variables
    model.optimizer.build(variables)
    for _ in range(steps):
        # Backend tensors: torch's optimizers take no NumPy arrays.
        gradients = [
            keras.ops.convert_to_tensor(
                rng.normal(size=v.shape).astype("float32")
            )
            for v in variables
        ]
        model.optimizer.apply(gradients, variables)
    return model


def _expected_slices():
    """How each weight (by path) is sliced, computed with plain NumPy."""
    removed_c1 = np.setdiff1d(np.arange(8), KEEP_C1)
    return {
        "c1/kernel": lambda a: np.take(a, KEEP_C1, axis=3),
        "c1/bias": lambda a: np.delete(a, removed_c1),
        "bn1/gamma": lambda a: np.take(a, KEEP_C1),
        "bn1/beta": lambda a: np.take(a, KEEP_C1),
        "c2/kernel": lambda a: np.take(
            np.take(a, KEEP_C1, axis=2), KEEP_C2, axis=3
        ),
        "c2/bias": lambda a: np.take(a, KEEP_C2),
        "logits/kernel": lambda a: np.take(a, KEEP_C2, axis=0),
        "logits/bias": lambda a: a,
    }


def _slot_owner(slot_name):
    """The weight path a slot such as 'c2_kernel_velocity' belongs to."""
    for path in _expected_slices():
        if slot_name.startswith(path.replace("/", "_") + "_"):
            return path
    return None


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adam_amsgrad": lambda: keras.optimizers.Adam(0.01, amsgrad=True),
    "rmsprop_centered": lambda: keras.optimizers.RMSprop(
        0.01, momentum=0.5, centered=True
    ),
    "adamw_ema": lambda: keras.optimizers.AdamW(0.01, use_ema=True),
    "sgd_accumulation": lambda: keras.optimizers.SGD(
        0.05, momentum=0.9, gradient_accumulation_steps=2
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_carry_over_slices_every_slot_like_its_weight(name):
    model = _trained(OPTIMIZERS[name]())
    surgery = rebuild_lib.rebuild(model, {"c1": KEEP_C1, "c2": KEEP_C2})
    optimizers_lib.carry_over(model, surgery.model, surgery)
    old = {v.name: np.asarray(v.numpy()) for v in model.optimizer.variables}
    new = {
        v.name: np.asarray(v.numpy())
        for v in surgery.model.optimizer.variables
    }
    assert set(new) == set(old)
    assert int(new["iteration"]) == int(old["iteration"]) == 3
    slices = _expected_slices()
    slots = [name for name in old if _slot_owner(name) is not None]
    # Every trainable weight has at least one slot, and all were checked.
    assert {_slot_owner(name) for name in slots} == set(slices)
    for slot in slots:
        expected = slices[_slot_owner(slot)](old[slot])
        np.testing.assert_array_equal(new[slot], expected, err_msg=slot)
    for other in set(old) - set(slots):
        np.testing.assert_array_equal(new[other], old[other], err_msg=other)


def test_carry_over_sliced_slots_are_not_all_zero():
    # Guards the test above against comparing zeros with zeros.
    model = _trained(keras.optimizers.Adam(0.01))
    surgery = rebuild_lib.rebuild(model, {"c1": KEEP_C1, "c2": KEEP_C2})
    optimizers_lib.carry_over(model, surgery.model, surgery)
    for variable in surgery.model.optimizer.variables:
        if variable.name.startswith("c2_kernel"):
            assert np.abs(variable.numpy()).sum() > 0


def test_carry_over_continues_learning_rate_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.1, decay_steps=2, decay_rate=0.5
    )
    model = _trained(keras.optimizers.SGD(schedule, momentum=0.9), steps=6)
    old_rate = float(model.optimizer.learning_rate)
    np.testing.assert_allclose(old_rate, 0.1 * 0.5 ** (6 / 2), rtol=1e-6)
    surgery = rebuild_lib.rebuild(model, {"c1": KEEP_C1})
    optimizers_lib.carry_over(model, surgery.model, surgery)
    new_optimizer = surgery.model.optimizer
    assert new_optimizer is not model.optimizer
    assert isinstance(
        new_optimizer._learning_rate,
        keras.optimizers.schedules.ExponentialDecay,
    )
    assert int(new_optimizer.iterations) == 6
    np.testing.assert_allclose(float(new_optimizer.learning_rate), old_rate)
    x, y = _data()
    surgery.model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(
        float(new_optimizer.learning_rate), 0.1 * 0.5 ** (9 / 2), rtol=1e-6
    )


def test_carry_over_keeps_a_learning_rate_changed_during_training():
    model = _trained(keras.optimizers.Adam(0.01))
    model.optimizer.learning_rate = 0.001  # e.g. by ReduceLROnPlateau
    surgery = rebuild_lib.rebuild(model, {"c1": KEEP_C1})
    optimizers_lib.carry_over(model, surgery.model, surgery)
    np.testing.assert_allclose(
        float(surgery.model.optimizer.learning_rate), 0.001
    )


def test_carry_over_reuses_loss_and_recreates_metrics():
    accuracy = keras.metrics.SparseCategoricalAccuracy(name="acc")
    top2 = keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")
    model = _compiled(
        keras.optimizers.Adam(0.01), metrics=(accuracy, top2, "accuracy")
    )
    x, y = _data()
    before = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    surgery = rebuild_lib.rebuild(model, {"c2": KEEP_C2})
    optimizers_lib.carry_over(model, surgery.model, surgery)
    new_config = surgery.model._compile_config.config
    old_config = model._compile_config.config
    assert new_config["loss"] is old_config["loss"]
    assert new_config["metrics"][0] is not accuracy
    assert new_config["metrics"][0].name == "acc"
    after = surgery.model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert sorted(after.history) == sorted(before.history)
    assert {"acc", "top2", "accuracy", "loss"} <= set(after.history)


def test_carry_over_with_reset_starts_a_fresh_optimizer():
    model = _trained(keras.optimizers.SGD(0.05, momentum=0.9))
    surgery = rebuild_lib.rebuild(model, {"c1": KEEP_C1})
    optimizers_lib.carry_over(model, surgery.model, surgery, reset=True)
    optimizer = surgery.model.optimizer
    assert int(optimizer.iterations) == 0
    assert optimizer.get_config() == model.optimizer.get_config()
    for variable in optimizer.variables:
        if variable.name.endswith("_momentum"):
            assert not np.any(variable.numpy())


def test_carry_over_leaves_the_source_model_untouched():
    model = _trained(keras.optimizers.Adam(0.01))
    before = [np.array(v.numpy()) for v in model.optimizer.variables]
    surgery = rebuild_lib.rebuild(model, {"c1": KEEP_C1, "c2": KEEP_C2})
    optimizers_lib.carry_over(model, surgery.model, surgery)
    for variable, value in zip(model.optimizer.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_carry_over_of_an_unbuilt_optimizer_compiles_a_fresh_one():
    model = _compiled(keras.optimizers.Adam(0.01))
    surgery = rebuild_lib.rebuild(model, {"c1": KEEP_C1})
    optimizers_lib.carry_over(model, surgery.model, surgery)
    assert surgery.model.compiled
    assert int(surgery.model.optimizer.iterations) == 0


def test_compile_like_rejects_an_uncompiled_model():
    with pytest.raises(ValueError, match="compile"):
        optimizers_lib.compile_like(
            _model(), _model(), keras.optimizers.SGD()
        )


def test_fresh_optimizer_has_same_config_and_no_state():
    optimizer = keras.optimizers.Adam(0.003, beta_1=0.8, clipnorm=1.0)
    fresh = optimizers_lib.fresh_optimizer(optimizer)
    assert fresh is not optimizer
    assert type(fresh) is type(optimizer)
    assert fresh.get_config() == optimizer.get_config()
    assert not fresh.built
