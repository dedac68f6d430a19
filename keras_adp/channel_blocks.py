"""Equal channel blocks: what keeps a grouped convolution a grouped one.

A `Conv1D/2D/3D` with `1 < groups < channels` cuts its input channels into
`groups` contiguous blocks of `in / groups` channels and its output channels
into `groups` blocks of `out / groups`; output block `g` sees input block `g`
only. Pruned, it must stay a convolution with the same `groups`, so every
block keeps the same number of channels. The graph analysis records that
constraint on the channel group (`ChannelGroup.blocks`: the number of equal
contiguous blocks, 1 when there is none); these two functions turn a wanted
width or a wanted set of channels into one that meets it.

Pure NumPy: nothing here reads a Keras model.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["block_count", "equal_blocks"]


def block_count(
    width: int, size: int, blocks: int, minimum: int = 1
) -> int:
    """Channels to keep in each block, for a wanted total `width`.

    Args:
        width: the wanted number of channels in all.
        size: the group's channel count (a multiple of `blocks`).
        blocks: the number of equal blocks.
        minimum: the total never goes below this (nor below one channel a
            block); `ADPPolicy.min_channels`. Defaults to `1`.

    Returns:
        `width / blocks` rounded to the nearest integer (halves up), raised
        to `ceil(minimum / blocks)` and to 1, at most `size / blocks`.

    Raises:
        ValueError: `size` is not a multiple of `blocks`.
    """
    if blocks < 1 or size % blocks:
        raise ValueError(
            f"Expected a channel count that is a multiple of the number of "
            f"blocks. Received: size={size}, blocks={blocks}"
        )
    count = math.floor(width / blocks + 0.5)
    count = max(count, math.ceil(minimum / blocks), 1)
    return int(min(count, size // blocks))


def equal_blocks(
    order: Sequence[int], count: int, size: int, blocks: int
) -> np.ndarray:
    """`count` channels of each block, most important first.

    Args:
        order: channel indices, most worth keeping first; it may list only
            some channels (a requested `keep`), then a block with fewer
            than `count` of them listed is completed with its other
            channels, lowest index first.
        count: channels to keep in each block (`block_count`).
        size: the group's channel count (a multiple of `blocks`).
        blocks: the number of equal contiguous blocks.

    Returns:
        The kept indices, sorted, `count` in every block.
    """
    per_block = size // blocks
    order = np.asarray(order, dtype=np.int64)
    listed = np.zeros(size, dtype=bool)
    listed[order] = True
    # Listed channels in their order, then the others by index.
    ranked = np.concatenate([order, np.flatnonzero(~listed)])
    kept = []
    for block in range(blocks):
        inside = ranked[ranked // per_block == block]
        kept.append(inside[:count])
    return np.sort(np.concatenate(kept))
