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
import textwrap

import numpy as np
import pytest

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
        policy = keras_adp.ADPPolicy(width_rule=rule, min_reduction=0.0)
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
