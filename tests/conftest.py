"""Test configuration shared by every module.

`@pytest.mark.tensorflow_only(reason)`: a test that cannot apply on another
Keras backend (tf.distribute, tf.data specifics, TFLite) is skipped there,
with the reason, instead of passing silently.
"""

import keras
import pytest


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    for item in items:
        marker = item.get_closest_marker("tensorflow_only")
        if marker is None:
            continue
        why = marker.args[0] if marker.args else marker.kwargs.get(
            "reason", "needs TensorFlow"
        )
        item.add_marker(
            pytest.mark.skip(
                reason=f"TensorFlow backend only ({why}); running on {backend}"
            )
        )
