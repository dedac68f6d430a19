"""keras_adp: Activation Density driven Pruning in training for Keras 3.

Pipeline: graph analysis (`channel_groups`) -> density (`measure_density`,
`ActivationDensity`) -> policy (`ADPPolicy`) -> rebuild (`prune_channels`)
-> metrics (`keras_adp.metrics`) -> export (`export_tflite`, or
`export_onnx` with the `onnx` extra).

The names below and the submodules are imported on first use (PEP 562), so
`import keras_adp` does not load TensorFlow: the `keras-adp` command sets up
TensorFlow's logging before it loads (see `keras_adp.cli`). Importing the
package changes no setting.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module defining it.
_EXPORTS = {
    "ActivationDensity": "keras_adp.callbacks",
    "Density": "keras_adp.density",
    "measure_density": "keras_adp.density",
    "benchmark_tflite": "keras_adp.export",
    "export_tflite": "keras_adp.export",
    "verify_tflite": "keras_adp.export",
    "benchmark_onnx": "keras_adp.onnx_export",
    "export_onnx": "keras_adp.onnx_export",
    "measure_onnx": "keras_adp.onnx_export",
    "verify_onnx": "keras_adp.onnx_export",
    "ChannelGroup": "keras_adp.graph",
    "channel_groups": "keras_adp.graph",
    "supported_layers": "keras_adp.layers",
    "ADPPolicy": "keras_adp.policy",
    "prune_channels": "keras_adp.rebuild",
    "ADPResult": "keras_adp.training",
    "ADPTrainer": "keras_adp.training",
    "TrainingDivergedError": "keras_adp.training",
}
_SUBMODULES = (
    "callbacks",
    "channel_blocks",
    "channel_partition",
    "channel_sections",
    "checkpoints",
    "cli",
    "command_export",
    "command_options",
    "command_parsers",
    "command_report",
    "command_train",
    "commands",
    "compiling",
    "data",
    "data_loaders",
    "data_pipeline",
    "density",
    "distribute",
    "epoch_loop",
    "experiment",
    "export",
    "graph",
    "graph_types",
    "guard",
    "idx",
    "inputs",
    "keras_graph",
    "layers",
    "litert",
    "litert_interpreter",
    "metrics",
    "models",
    "onnx_export",
    "op_nodes",
    "optimizers",
    "parity",
    "permutation_rule",
    "policy",
    "pruning_steps",
    "rebuild",
    "report",
    "report_data",
    "report_markdown",
    "report_plots",
    "scoring",
    "slicing",
    "training",
    "training_callbacks",
    "training_result",
    "validation",
)

__all__ = ["data", "guard", "metrics", "models", *_EXPORTS]

if TYPE_CHECKING:
    from keras_adp import data, guard, metrics, models
    from keras_adp.callbacks import ActivationDensity
    from keras_adp.density import Density, measure_density
    from keras_adp.export import benchmark_tflite, export_tflite, verify_tflite
    from keras_adp.graph import ChannelGroup, channel_groups
    from keras_adp.layers import supported_layers
    from keras_adp.onnx_export import (
        benchmark_onnx,
        export_onnx,
        measure_onnx,
        verify_onnx,
    )
    from keras_adp.policy import ADPPolicy
    from keras_adp.rebuild import prune_channels
    from keras_adp.training import ADPResult, ADPTrainer, TrainingDivergedError


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
