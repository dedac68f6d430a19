"""Test helpers: the reference for "pruning = zeroing the removed inputs".

Removing channel `c` of a group must give the same outputs as keeping the
original model and zeroing input slice `c` of every consumer of the group.
`zeroed_copy` builds that reference with plain NumPy on a copy of the model.
"""

import keras
import numpy as np

L = keras.layers

# Axis of a consumer's kernel that indexes its input channels.
_INPUT_AXIS = {
    L.Conv1D: ("kernel", -2),
    L.Conv2D: ("kernel", -2),
    L.Conv3D: ("kernel", -2),
    L.Dense: ("kernel", 0),
    L.Conv1DTranspose: ("kernel", -1),
    L.Conv2DTranspose: ("kernel", -1),
    L.Conv3DTranspose: ("kernel", -1),
    L.SeparableConv1D: ("depthwise_kernel", -2),
    L.SeparableConv2D: ("depthwise_kernel", -2),
}


def get_layer(model, qualified_name):
    """Look up 'outer/inner/layer' through nested models."""
    *path, name = qualified_name.split("/")
    for part in path:
        model = model.get_layer(part)
    return model.get_layer(name)


def copy_model(model):
    """Copy with the same weights; nested models keep their names (a
    keras-hub backbone's own `from_config` would give it a new one)."""

    def clone_layer(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone_layer)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def zeroed_copy(model, groups, keep):
    """Copy of `model` with removed channels' consumer inputs set to zero."""
    clone = copy_model(model)
    by_name = {g.name: g for g in groups}
    for name, kept in keep.items():
        group = by_name[name]
        removed = np.setdiff1d(np.arange(group.size), kept)
        if removed.size == 0:
            continue
        for consumer in group.consumer_slices:
            layer = get_layer(clone, consumer.layer)
            weight_name, axis = _INPUT_AXIS[type(layer)]
            variable = next(w for w in layer.weights if w.name == weight_name)
            value = np.array(variable.numpy())
            indices = consumer.input_indices(removed)
            if getattr(layer, "groups", 1) > 1:
                _zero_grouped_inputs(value, layer.groups, indices)
            else:
                index = [slice(None)] * value.ndim
                index[axis] = indices
                value[tuple(index)] = 0.0
            variable.assign(value)
    return clone


def _zero_grouped_inputs(kernel, groups, indices):
    """Zero input channels `indices` of a grouped kernel `(*k, in / groups,
    out)`: input channel `c` is row `c % (in / groups)` of the filters of
    group `c // (in / groups)`."""
    in_per = kernel.shape[-2]
    out_per = kernel.shape[-1] // groups
    for channel in indices:
        start = (channel // in_per) * out_per
        kernel[..., channel % in_per, start:start + out_per] = 0.0


def random_keep(groups, rng, min_fraction=0.2):
    """A random non-empty subset of channels for every prunable group."""
    keep = {}
    for group in groups:
        if not group.prunable:
            continue
        low = max(1, int(np.ceil(min_fraction * group.size)))
        count = int(rng.integers(low, group.size + 1))
        keep[group.name] = rng.choice(group.size, size=count, replace=False)
    return keep
