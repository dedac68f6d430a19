"""keras_adp: Activation Density driven Pruning in training for Keras 3."""

from keras_adp.graph import ChannelGroup, channel_groups
from keras_adp.layers import supported_layers
from keras_adp.rebuild import prune_channels

__version__ = "0.1.0"
