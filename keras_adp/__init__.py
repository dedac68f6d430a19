"""keras_adp: Activation Density driven Pruning in training for Keras 3.

Pipeline: graph analysis (`channel_groups`) -> density (`measure_density`,
`ActivationDensity`) -> policy (`ADPPolicy`) -> rebuild (`prune_channels`)
-> metrics (`keras_adp.metrics`) -> export (`export_tflite`).
"""

from keras_adp import data, guard, metrics, models
from keras_adp.callbacks import ActivationDensity
from keras_adp.density import Density, measure_density
from keras_adp.export import benchmark_tflite, export_tflite, verify_tflite
from keras_adp.graph import ChannelGroup, channel_groups
from keras_adp.layers import supported_layers
from keras_adp.policy import ADPPolicy
from keras_adp.rebuild import prune_channels
from keras_adp.training import ADPResult, ADPTrainer, TrainingDivergedError

__version__ = "0.1.0"
