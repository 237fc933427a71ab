"""Index-slicing of state-dict tensors: the one primitive every compressor uses to carry weights over.

Torch-Pruning treats PixelShuffle as element-wise and has no notion of attention heads, so the compressors map
channels themselves: they compute keep-indices per dependency group and slice each tensor along its axes.
"""
from collections.abc import Sequence

import torch


def take(t: torch.Tensor, dims: dict[int, Sequence[int] | None]) -> torch.Tensor:
    """``t`` restricted to ``dims[d]`` indices along each listed axis d (None = keep all)."""
    for d, idx in dims.items():
        if idx is not None:
            t = t.index_select(d, torch.as_tensor(list(idx), dtype=torch.long, device=t.device))
    return t.clone()


def shuffle_groups(channels: Sequence[int], r: int) -> list[int]:
    """Conv output rows feeding post-PixelShuffle(r) channels: channel c <- rows c*r^2 ... c*r^2 + r^2 - 1."""
    return [c * r * r + k for c in channels for k in range(r * r)]
