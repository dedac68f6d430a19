"""keras-adp on other Keras backends than TensorFlow (issue 13).

Each check runs in a subprocess with its own `KERAS_BACKEND`, since Keras
picks its backend once per process. JAX checks are skipped with the reason
when JAX is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from tests import processes

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

requires_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="JAX is not installed (pip install -e '.[jax]')",
)

# A small CNN with weights set from NumPy (each backend's initializers draw
# differently), calibration data, a policy; prints densities and widths as
# JSON on the last line.
_DECISIONS = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import keras
    import keras_adp

    rng = np.random.default_rng(7)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(
        6, 3, padding="same", activation="relu", name="conv2"
    )(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(h)
    model = keras.Model(inputs, outputs)
    model.set_weights(
        [
            rng.normal(0.0, 0.5, size=w.shape).astype("float32")
            if "variance" not in w.path else np.ones(w.shape, "float32")
            for w in model.weights
        ]
    )
    x = rng.normal(size=(48, 8, 8, 3)).astype("float32")
    densities = keras_adp.measure_density(model, x, batch_size=16)
    from keras_adp import scoring

    groups = keras_adp.channel_groups(model)
    keep = {}
    for rule in ("density", "live"):
        policy = keras_adp.ADPPolicy(
            recovery_updates=None, width_rule=rule, min_reduction=0.0)
        scores = scoring.channel_scores(model, groups, policy.selection)
        gammas = {
            g.name: scoring.first_gamma(model, g)
            for g in groups if g.prunable
        }
        plan = policy.plan(groups, densities, scores, gammas)
        keep[rule] = {k: [int(i) for i in v] for k, v in plan.items()}
    pruned = keras_adp.prune_channels(
        model, {k: np.asarray(v) for k, v in keep["density"].items()}
    )
    print(json.dumps({
        "backend": keras.backend.backend(),
        "keep": keep,
        "pruned_output": pruned.predict(x[:8], verbose=0).tolist(),
        "overall": {k: v.overall for k, v in densities.items()},
        "channels": {k: v.channels.tolist() for k, v in densities.items()},
        "samples": {k: v.samples for k, v in densities.items()},
    }))
    """
)


def _run(code: str, backend: str, *, block_tf: bool = False, env=None):
    prefix = 'import sys; sys.modules["tensorflow"] = None\n' if block_tf else ""
    environment = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=_REPO,
        **processes.JAX_CACHE,
        **(env or {}),
    )
    result = subprocess.run(
        [sys.executable, "-c", prefix + code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        cwd=_REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@requires_jax
def test_jax_without_tensorflow_measures_and_trains():
    code = textwrap.dedent(
        """
        import numpy as np
        import keras
        import keras_adp
        from keras_adp import callbacks, checkpoints, density, report
        from keras_adp import training

        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(
            8, 3, padding="same", activation="relu", name="conv1"
        )(inputs)
        h = keras.layers.Conv2D(
            8, 3, padding="same", activation="relu", name="conv2"
        )(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        outputs = keras.layers.Dense(3, activation="softmax")(h)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer="adam", loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
        y = rng.integers(0, 3, size=64)
        densities = keras_adp.measure_density(model, x[:32])
        assert set(densities) == {"conv1", "conv2"}, densities
        result = keras_adp.ADPTrainer(
            keras_adp.ADPPolicy(
                recovery_updates=None,
                warmup_epochs=1, width_rule="density", max_accuracy_drop=None
            ),
            verbose=0, seed=1,
        ).fit(model, x, y, epochs=3, batch_size=16)
        assert result.model.predict(x[:4], verbose=0).shape == (4, 3)
        assert sys.modules["tensorflow"] is None
        print("backend", keras.backend.backend())
        """
    )
    out = _run("import sys\n" + code, "jax", block_tf=True)
    assert "backend jax" in out


@requires_jax
def test_tf_only_feature_without_tensorflow_says_what_to_install():
    code = textwrap.dedent(
        """
        import sys
        from keras_adp import distribution
        try:
            distribution.import_tensorflow("A tf.data pipeline of inputs")
        except ImportError as error:
            print("MESSAGE", error)
        """
    )
    out = _run(code, "jax", block_tf=True)
    assert "MESSAGE A tf.data pipeline of inputs needs TensorFlow" in out
    assert "pip install tensorflow" in out


def _decisions(backend: str, env=None) -> dict:
    out = _run(_DECISIONS, backend, env=env)
    return json.loads(out.strip().splitlines()[-1])


@requires_jax
def test_same_densities_on_jax_as_on_tensorflow():
    tf_side = _decisions("tensorflow")
    jax_side = _decisions("jax")
    assert tf_side["backend"] == "tensorflow"
    assert jax_side["backend"] == "jax"
    assert tf_side["samples"] == jax_side["samples"]
    assert tf_side["channels"] == jax_side["channels"]
    assert tf_side["overall"] == jax_side["overall"]
    assert tf_side["keep"] == jax_side["keep"]
    assert tf_side["keep"]["density"], "the policy should prune something"
    np.testing.assert_allclose(
        tf_side["pruned_output"], jax_side["pruned_output"], atol=1e-5
    )


# Two virtual CPU devices; the same process trains once on one device (no
# distribution) and once under keras.distribution.DataParallel over both.
# Prints, per run, the widths and densities of every epoch, the samples and
# per-channel densities of one measurement of 63 samples, where the final
# model's variables and optimizer slots live, and the resumed run's.
_DATA_PARALLEL = textwrap.dedent(
    """
    import json, os, sys, tempfile
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    import keras
    import numpy as np
    import keras_adp
    from keras_adp import distribution

    L = keras.layers

    def build():
        keras.utils.set_random_seed(7)
        inputs = keras.Input((8, 8, 1))
        x = L.Conv2D(12, 3, padding="same", name="c1")(inputs)
        x = L.BatchNormalization(name="bn1")(x)
        x = L.ReLU(name="relu1")(x)
        x = L.Conv2D(12, 3, padding="same", activation="relu", name="c2")(x)
        x = L.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, L.Dense(3, name="logits")(x))
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 128)
    x = (rng.normal(size=(128, 8, 8, 1)) + y[:, None, None, None]).astype(
        "float32"
    )
    policy = keras_adp.ADPPolicy(
        recovery_updates=None,
        warmup_epochs=1, min_channels=2, calibration_samples=64,
        max_accuracy_drop=None, width_rule="density",
    )

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    def where(variables):
        return sorted({
            len(v.value.sharding.device_set) for v in variables
        })

    def run(devices, root):
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices())
            if devices == 2 else None
        )
        model = build()
        odd = keras_adp.measure_density(model, x[:63], batch_size=15)
        trainer = keras_adp.ADPTrainer(
            policy, run_dir=os.path.join(root, "full"), seed=0, verbose=0
        )
        result = trainer.fit(model, x, y, epochs=4, batch_size=32)
        half = keras_adp.ADPTrainer(
            policy, run_dir=os.path.join(root, "half"), seed=0, verbose=0
        )
        try:  # Interrupted after the epoch-2 checkpoint.
            half.fit(build(), x, y, epochs=4, batch_size=32,
                     callbacks=[Interrupt()])
        except KeyboardInterrupt:
            pass
        resumed = half.fit(build(), x, y, epochs=4, batch_size=32,
                           resume=True)
        final = result.model
        momentum = [
            v for v in final.optimizer.variables
            if v.name.startswith("c1_kernel")
        ][0]
        return {
            "replicas": distribution.replicas(model),
            "widths": [r["widths"] for r in result.history],
            "density": [r["density"] for r in result.history],
            "odd_samples": {k: d.samples for k, d in odd.items()},
            "odd_channels": {k: d.channels.tolist() for k, d in odd.items()},
            "weight_devices": where(final.weights),
            "slot_devices": where(final.optimizer.variables),
            "iterations": int(final.optimizer.iterations.numpy()),
            "momentum_shape": list(momentum.shape),
            "kernel_shape": list(final.get_layer("c1").kernel.shape),
            "resumed_widths": [r["widths"] for r in resumed.history],
            "resumed_matches": all(
                np.allclose(a, b, atol=1e-5)
                for a, b in zip(
                    resumed.model.get_weights(), final.get_weights(),
                    strict=True,
                )
            ),
        }

    with tempfile.TemporaryDirectory() as root:
        one = run(1, os.path.join(root, "one"))
        two = run(2, os.path.join(root, "two"))
        # Uneven counts on two devices: of 126 samples the guard holds 13
        # out (cut to 12 for validation); the last batch of 17 (113 =
        # 3 * 32 + 17) cannot be split in two and is left out.
        guarded = keras_adp.ADPTrainer(
            keras_adp.ADPPolicy(
                recovery_updates=None, warmup_epochs=1, min_channels=2),
            seed=0, verbose=0,
        ).fit(build(), x[:126], y[:126], epochs=2, batch_size=32)
        two["guarded_iterations"] = int(
            guarded.model.optimizer.iterations.numpy()
        )
        try:
            keras_adp.ADPTrainer(policy, verbose=0).fit(
                build(), x, y, epochs=2, batch_size=31
            )
        except ValueError as error:
            two["odd_batch_error"] = str(error)
    # The reference of the densities: the fraction of positive activations
    # per channel, from the model's own outputs on one device.
    keras.distribution.set_distribution(None)
    model = build()
    sites = keras.Model(
        model.inputs,
        [model.get_layer("relu1").output, model.get_layer("c2").output],
    )
    reference = {
        name: (np.asarray(a) > 0).mean(axis=(0, 1, 2)).tolist()
        for name, a in zip(("c1", "c2"), sites.predict(x[:63], verbose=0))
    }
    print(json.dumps({"one": one, "two": two, "reference": reference}))
    """
)


@requires_jax
def test_data_parallel_on_two_jax_devices_prunes_like_one_device():
    out = _run(_DATA_PARALLEL, "jax", block_tf=True)
    runs = json.loads(out.strip().splitlines()[-1])
    one, two = runs["one"], runs["two"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    # The same pruning decisions on both devices as on one.
    assert two["widths"] == one["widths"]
    assert two["widths"][-1] != two["widths"][0], "nothing was pruned"
    for a, b in zip(one["density"], two["density"], strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert abs(a[name] - b[name]) < 1e-3, (name, a, b)
    # 63 calibration samples in batches of 15 (padded per replica on two
    # devices): every real sample counted once, padding for nothing.
    for side in (one, two):
        assert side["odd_samples"] == {"c1": 63, "c2": 63}
        for name, channels in side["odd_channels"].items():
            np.testing.assert_allclose(
                channels, runs["reference"][name], atol=1e-6
            )
    # The rebuilt model and its optimizer live on both devices; the
    # optimizer state went across (iterations go on, slots sliced like
    # the weights).
    assert (one["weight_devices"], one["slot_devices"]) == ([1], [1])
    assert (two["weight_devices"], two["slot_devices"]) == ([2], [2])
    assert two["iterations"] == one["iterations"] == 16
    assert two["momentum_shape"] == two["kernel_shape"]
    assert two["kernel_shape"][-1] == two["widths"][-1]["c1"]
    assert two["guarded_iterations"] == 6  # 3 batches per epoch
    assert "Received batch_size=31 for 2 replicas" in two["odd_batch_error"]
    assert "batch_size=32" in two["odd_batch_error"]
    # Resumed from the epoch-2 checkpoint: same widths and weights as the
    # uninterrupted run.
    for side in (one, two):
        assert side["resumed_widths"] == side["widths"]
        assert side["resumed_matches"]
