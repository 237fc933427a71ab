"""Inference on images of any size: padding to a network's input constraints and tiled inference with blended seams.

Tiling: the LR image is cut into a grid of cores (about ``tile`` px each); every tile reads ``overlap`` px of
context beyond its core on each side (clipped at the image border). Outputs are blended with a linear
(feathered) window that ramps across a band of width ``overlap`` centred on each core boundary, so the weights of
neighbouring tiles sum to 1 and every blended pixel comes from tiles that saw at least ``overlap / 2`` px of
context around it. For a translation-equivariant network (convolutions only) whose receptive-field radius is
<= ``overlap / 2``, the result equals whole-image inference up to float rounding.

Networks with ESA (DIPNet, DDistill-SR) pool on a stride-6 grid and resize the pooled map with a ratio set by the
whole image; with ``align=6`` and a ``context`` (:func:`ddsr.archs.esa_upsample.tile_geometry`) every tile starts
on that grid (its context is extended up/left to the next multiple) and resizes as the whole image would, which
makes these nets exact too when the overlap covers their (wide, ESA-extended) receptive field.
"""
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from ddsr.deploy.padding import pad_amounts
from ddsr.errors import DDSRError

Forward = Callable[[Tensor], Tensor]
TileContext = Callable[[Sequence[int], Sequence[int]], AbstractContextManager]  # (image size, tile origin) -> context


def pad_to_constraints(x: Tensor, min_size: int = 1, multiple: int = 1) -> tuple[Tensor, int, int]:
    """Pad ``x`` (N, C, H, W) at the bottom/right to >= ``min_size`` and a multiple of ``multiple``.

    The rule is :func:`ddsr.deploy.padding.pad_amounts` (shared with onnxruntime's NumPy path). Returns
    ``(x, H, W)`` with the original size, so that the output can be cropped back to ``scale * (H, W)``.
    """
    h, w = x.shape[-2:]
    ph, pw, reflect = pad_amounts(h, w, min_size, multiple)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode='reflect' if reflect else 'replicate')
    return x, h, w


def padded_forward(forward: Forward, x: Tensor, scale: int, min_size: int = 1, multiple: int = 1) -> Tensor:
    """``forward(x)`` for any size: pad to the constraints, run, crop the output back to ``scale * (H, W)``."""
    padded, h, w = pad_to_constraints(x, min_size, multiple)
    return forward(padded)[..., :h * scale, :w * scale]


def core_bounds(length: int, tile: int) -> list[int]:
    """Boundaries of ``ceil(length / tile)`` nearly equal cores covering ``[0, length)``."""
    n = max(1, math.ceil(length / tile))
    return [round(i * length / n) for i in range(n + 1)]


def blend_ramp(start: int, stop: int, lo: int, hi: int, length: int, overlap: int, scale: int) -> Tensor:
    """1-D output weights of the core ``[start, stop)`` (LR px) over the output span of the tile ``[lo, hi)``.

    The weight ramps linearly from 0 to 1 across ``[start - overlap/2, start + overlap/2]`` (likewise at
    ``stop``) and is 0 outside the ramps' reach; no ramp at the image border. Pixel centres are evaluated in LR
    coordinates.
    """
    t = (torch.arange(lo * scale, hi * scale, dtype=torch.float32) + 0.5) / scale
    w = torch.ones_like(t)
    if overlap > 0:
        if start > 0:
            w = torch.minimum(w, (0.5 + (t - start) / overlap).clamp(0, 1))
        if stop < length:
            w = torch.minimum(w, (0.5 + (stop - t) / overlap).clamp(0, 1))
    return w


def tiled_forward(forward: Forward, x: Tensor, scale: int, tile: int | None, overlap: int = 16,
                  min_size: int = 1, multiple: int = 1, progress: Callable[[], None] | None = None,
                  align: int = 1, context: TileContext | None = None) -> Tensor:
    """Super-resolve ``x`` (1, C, H, W) tile by tile (``tile=None`` or an image within one tile: whole image).

    Args:
        forward (callable): The network, LR (1, C, h, w) -> SR (1, C', scale*h, scale*w).
        x (Tensor): LR image.
        scale (int): Upscale factor of ``forward``.
        tile (int | None): Core size in LR px (> ``overlap``).
        overlap (int): Context read beyond each core, per side, in LR px; the blend band is this wide.
        min_size (int): Smallest input the network accepts (tiles are padded up to it).
        multiple (int): Input sizes must be a multiple of this (window size of Swin-type nets).
        progress (callable | None): Called once per finished tile.
        align (int): Tile origins are multiples of this (the ESA grid, 6, for nets with ESA).
        context (callable | None): ``context(image_size, tile_origin)`` is entered around each tile's forward.

    Returns:
        Tensor: SR image (1, C', scale*H, scale*W).
    """
    h, w = x.shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        out = padded_forward(forward, x, scale, min_size, multiple)
        if progress:
            progress()
        return out
    if overlap < 0 or tile <= overlap:
        raise DDSRError(f'--tile ({tile}) must be larger than --tile-overlap ({overlap}) and the overlap >= 0')
    rows, cols = core_bounds(h, tile), core_bounds(w, tile)
    acc: Tensor | None = None
    weight = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32, device=x.device)
    for y0, y1 in zip(rows[:-1], rows[1:], strict=False):
        ty, ty1 = max(y0 - overlap, 0) // align * align, min(y1 + overlap, h)
        wy = blend_ramp(y0, y1, ty, ty1, h, overlap, scale).to(x.device)
        for x0, x1 in zip(cols[:-1], cols[1:], strict=False):
            tx, tx1 = max(x0 - overlap, 0) // align * align, min(x1 + overlap, w)
            wx = blend_ramp(x0, x1, tx, tx1, w, overlap, scale).to(x.device)
            with context((h, w), (ty, tx)) if context else nullcontext():
                sr = padded_forward(forward, x[..., ty:ty1, tx:tx1], scale, min_size, multiple).float()
            if acc is None:
                acc = torch.zeros(1, sr.shape[1], h * scale, w * scale, dtype=torch.float32, device=x.device)
            win = wy[:, None] * wx[None, :]
            ys, xs = slice(ty * scale, ty1 * scale), slice(tx * scale, tx1 * scale)
            acc[..., ys, xs] += sr * win
            weight[..., ys, xs] += win
            if progress:
                progress()
    assert acc is not None  # at least one tile
    return acc / weight.clamp_min(1e-8)


def num_tiles(h: int, w: int, tile: int | None) -> int:
    """How many tiles :func:`tiled_forward` runs for an H x W image."""
    if tile is None or (h <= tile and w <= tile):
        return 1
    return (len(core_bounds(h, tile)) - 1) * (len(core_bounds(w, tile)) - 1)
