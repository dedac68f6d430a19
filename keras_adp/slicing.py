"""Pure slicing functions: the smaller config and weights of a pruned layer.

Each layer handler (`keras_adp.layers.Handler`) names two of these: `config`
(the layer's config with its channel counts set to the kept counts) and
`weights` (the retained slices of its weights, by variable name). They take
the layer, the value to slice, and `keep_in` / `keep_out`: sorted
`np.ndarray`s of the surviving indices of the layer's input and output
channel axes, or `None` when every channel survives. They never modify the
layer or their inputs.

Kernel layouts:
    Conv*D, Dense: `(*kernel_size, in, out)`.
    Conv*DTranspose: `(*kernel_size, out, in)`.
    SeparableConv*D: depthwise `(*kernel_size, in, multiplier)`, pointwise
        `(*1, in * multiplier, out)`.
    DepthwiseConv*D: `(*kernel_size, in, 1)`; a grouped `Conv` with
        `groups == channels`: `(*kernel_size, 1, channels)`.
    Grouped Conv*D (`groups = G`): `(*kernel_size, in / G, out)`; output
        channel `o` (in block `o // (out / G)`) reads input channel
        `block * (in / G) + i` at kernel index `i`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = [
    "Weights",
    "take",
    "same_config",
    "same_weights",
    "filters_config",
    "count_config",
    "per_channel_config",
    "reshape_config",
    "grouped_depthwise_config",
    "conv_weights",
    "grouped_conv_weights",
    "conv_transpose_weights",
    "separable_weights",
    "per_channel_weights",
    "depthwise_weights",
    "grouped_depthwise_weights",
    "prelu_weights",
    "normalization_weights",
]

Weights = dict[str, np.ndarray]


def take(array: np.ndarray, keep: np.ndarray | None, axis: int) -> np.ndarray:
    """`array` restricted to indices `keep` on `axis` (all when None)."""
    return array if keep is None else np.take(array, keep, axis=axis)


def same_config(layer: Any, config: dict, keep_in, keep_out) -> dict:
    """The config unchanged (no channel count in it)."""
    return config


def same_weights(layer: Any, weights: Weights, keep_in, keep_out) -> Weights:
    """The weights unchanged (none per channel)."""
    return weights


def _replaced(
    weights: Weights, kernels: Weights, keep_bias: np.ndarray | None
) -> Weights:
    """`weights` with `kernels` put in and the bias (if any) restricted to
    `keep_bias`."""
    out = dict(weights, **kernels)
    if "bias" in weights:
        out["bias"] = take(weights["bias"], keep_bias, 0)
    return out


# ------------------------------------------------------------- producers
def filters_config(key: str) -> Callable:
    """A producer's config function: entry `key` (`"filters"`, `"units"`)
    set to the number of kept output channels."""

    def config(layer, config, keep_in, keep_out):
        if keep_out is not None:
            config = dict(config, **{key: int(len(keep_out))})
        return config

    return config


def conv_weights(layer: Any, weights: Weights, keep_in, keep_out) -> Weights:
    """Conv*D / Dense: kernel `(*kernel_size, in, out)`, bias `(out,)`."""
    kernel = take(take(weights["kernel"], keep_in, -2), keep_out, -1)
    return _replaced(weights, {"kernel": kernel}, keep_out)


def _in_block(keep: np.ndarray | None, block: int, per_block: int):
    """The indices of `keep` inside `block` (of `per_block` channels),
    counted from the block's start; None (all) when `keep` is None."""
    if keep is None:
        return None
    start = block * per_block
    inside = keep[(keep >= start) & (keep < start + per_block)]
    return inside - start


def grouped_conv_weights(
    layer: Any, weights: Weights, keep_in, keep_out
) -> Weights:
    """Grouped Conv*D: kernel `(*kernel_size, in / groups, out)`, bias
    `(out,)`. Each group's block of the kernel is sliced on its own: its
    kept output channels, and its kept input channels counted from the
    start of its input block. Every block must keep as many channels as
    the others (`keras_adp.channel_blocks`), so that the layer keeps its
    `groups`."""
    groups = int(layer.groups)
    kernel = weights["kernel"]
    in_per, out_per = kernel.shape[-2], kernel.shape[-1] // groups
    blocks = []
    for block in range(groups):
        ins = _in_block(keep_in, block, in_per)
        outs = _in_block(keep_out, block, out_per)
        part = kernel[..., block * out_per:(block + 1) * out_per]
        blocks.append(take(take(part, ins, -2), outs, -1))
    counts = {(b.shape[-2], b.shape[-1]) for b in blocks}
    if len(counts) != 1:
        raise ValueError(
            f"Cannot slice grouped convolution '{layer.name}' "
            f"(groups={groups}): expected the same number of kept channels "
            "in every group, received (input, output) counts "
            f"{[(b.shape[-2], b.shape[-1]) for b in blocks]}. Pass `keep` "
            "through `prune_channels`, which evens them out."
        )
    kernel = np.concatenate(blocks, axis=-1)
    return _replaced(weights, {"kernel": kernel}, keep_out)


def conv_transpose_weights(
    layer: Any, weights: Weights, keep_in, keep_out
) -> Weights:
    """Conv*DTranspose: kernel `(*kernel_size, out, in)`, bias `(out,)`."""
    kernel = take(take(weights["kernel"], keep_in, -1), keep_out, -2)
    return _replaced(weights, {"kernel": kernel}, keep_out)


def separable_weights(
    layer: Any, weights: Weights, keep_in, keep_out
) -> Weights:
    """SeparableConv*D: depthwise kernel `(*k, in, mult)`, pointwise kernel
    `(*1, in * mult, out)` (input channel `c`, multiplier `m` at index
    `c * mult + m`), bias `(out,)`."""
    mult = weights["depthwise_kernel"].shape[-1]
    keep_mid = None
    if keep_in is not None:
        keep_mid = (keep_in[:, None] * mult + np.arange(mult)[None, :]).ravel()
    kernels = {
        "depthwise_kernel": take(weights["depthwise_kernel"], keep_in, -2),
        "pointwise_kernel": take(
            take(weights["pointwise_kernel"], keep_mid, -2), keep_out, -1
        ),
    }
    return _replaced(weights, kernels, keep_out)


# ---------------------------------------------------------- channelwise
def per_channel_weights(
    layer: Any, weights: Weights, keep_in, keep_out
) -> Weights:
    """Slice every weight whose last axis is the channel axis."""
    out = {}
    for name, value in weights.items():
        if np.ndim(value) >= 1 and keep_in is not None:
            out[name] = take(value, keep_in, -1 if np.ndim(value) > 1 else 0)
        else:
            out[name] = value
    return out


def grouped_depthwise_weights(
    layer: Any, weights: Weights, keep_in, keep_out
) -> Weights:
    """A `Conv` with groups == channels: kernel `(*kernel_size, 1,
    channels)`, bias `(channels,)`."""
    kernel = take(weights["kernel"], keep_in, -1)
    return _replaced(weights, {"kernel": kernel}, keep_in)


def grouped_depthwise_config(
    layer: Any, config: dict, keep_in, keep_out
) -> dict:
    """A `Conv` with groups == channels: `filters` and `groups` set to the
    kept count."""
    if keep_in is None:
        return config
    return dict(config, filters=int(len(keep_in)), groups=int(len(keep_in)))


def depthwise_weights(
    layer: Any, weights: Weights, keep_in, keep_out
) -> Weights:
    """DepthwiseConv*D: kernel `(*kernel_size, in, 1)`, bias `(in,)`."""
    kernel = take(weights["kernel"], keep_in, -2)
    return _replaced(weights, {"kernel": kernel}, keep_in)


def prelu_weights(layer: Any, weights: Weights, keep_in, keep_out) -> Weights:
    """PReLU: `alpha` on its last axis, unless shared across channels."""
    alpha = weights["alpha"]
    if alpha.shape[-1] == 1:  # channel axis shared
        return dict(weights)
    return {"alpha": take(alpha, keep_in, -1)}


def normalization_weights(
    layer: Any, weights: Weights, keep_in, keep_out
) -> Weights:
    """Normalization: its per-channel `mean` and `variance`."""
    out = dict(weights)
    for name in ("mean", "variance"):
        if name in weights and np.ndim(weights[name]) >= 1:
            out[name] = take(weights[name], keep_in, -1)
    return out


def per_channel_config(*keys: str) -> Callable:
    """Slice config entries that hold one value per channel."""

    def config(layer, config, keep_in, keep_out):
        if keep_in is None:
            return config
        config = dict(config)
        for key in keys:
            value = config.get(key)
            if value is not None and np.size(value) > 1:
                config[key] = np.take(
                    np.asarray(value), keep_in, axis=-1
                ).tolist()
        return config

    return config


def reshape_config(layer: Any, config: dict, keep_in, keep_out) -> dict:
    """Reshape: the last entry of `target_shape` set to the kept count."""
    if keep_in is None:
        return config
    target = list(config["target_shape"])
    target[-1] = int(len(keep_in))
    return dict(config, target_shape=tuple(target))


def count_config(key: str) -> Callable:
    """Set config entry `key` (a channel count) to the kept count."""

    def config(layer, config, keep_in, keep_out):
        if keep_in is None:
            return config
        return dict(config, **{key: int(len(keep_in))})

    return config
