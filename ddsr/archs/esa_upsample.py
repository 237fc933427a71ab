"""Upsampling of ESA's coarse attention map, exact under tiled inference.

ESA (RFDN / RLFN / DIPNet / DDistill-SR) computes its attention on a coarse grid: a 3x3 stride-2 unpadded conv,
then a 7x7 stride-3 max-pool, so coarse cell ``j`` sees input rows ``6j .. 6j + 14`` (:data:`ESA_STRIDE` = 6),
and the coarse map is resized bilinearly (``align_corners=False``) back to the input size ``H``: output row ``i``
samples coarse row ``(i + 0.5) * h / H - 0.5`` with ``h`` = :func:`coarse_size` ``(H)``. Both the grid and the
resize ratio ``h / H`` depend on the whole image, so a tile run on its own gets a different attention map.

Under :func:`tile_geometry` (set by :func:`ddsr.deploy.tiling.tiled_forward` around each tile whose origin is a
multiple of :data:`ESA_STRIDE`), :func:`upsample_coarse` samples the tile's coarse map at the positions that the
whole image's resize would use, so the tile computes the whole-image attention wherever its coarse cells saw
enough context. Without a geometry it is ``F.interpolate`` itself (training, whole-image inference, ONNX export).
"""
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddsr.archs.sizes import ESA_MIN_INPUT, ESA_STRIDE

__all__ = ['ESA_MIN_INPUT', 'ESA_STRIDE', 'TileGeometry', 'coarse_size', 'grid_stride', 'tile_geometry',
           'upsample_coarse']


@dataclass(frozen=True)
class TileGeometry:
    """Where a tile lies in the whole image (LR px): the image size and the tile's top-left corner."""
    full_size: tuple[int, int]
    origin: tuple[int, int]


_GEOMETRY: ContextVar[TileGeometry | None] = ContextVar('esa_tile_geometry', default=None)


@contextmanager
def tile_geometry(full_size: Sequence[int], origin: Sequence[int]) -> Iterator[None]:
    """Run the ESA modules of a network as parts of the ``full_size`` image, for the tile at ``origin``."""
    if any(o % ESA_STRIDE for o in origin):
        raise ValueError(f'tile origin {tuple(origin)} must be a multiple of {ESA_STRIDE} (the ESA grid)')
    token = _GEOMETRY.set(TileGeometry((int(full_size[0]), int(full_size[1])), (int(origin[0]), int(origin[1]))))
    try:
        yield
    finally:
        _GEOMETRY.reset(token)


def grid_stride(net: nn.Module) -> int:
    """Coarse-grid stride of the net's ESA modules (:data:`ESA_STRIDE`), or 1 for nets without one."""
    return max((int(getattr(m, 'grid_stride', 1)) for m in net.modules()), default=1)


def coarse_size(length: int) -> int:
    """Coarse-grid length of an ESA input of ``length`` px (conv 3x3 s2 p0, then max-pool 7 s3)."""
    return ((length - 3) // 2 + 1 - 7) // 3 + 1


def _axis(out_len: int, origin: int, full_len: int, local_len: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Indices (into the tile's coarse map) and weights of the whole image's bilinear resize, along one axis."""
    scale = torch.tensor(float(coarse_size(full_len)), dtype=torch.float32) / full_len  # as F.interpolate: in / out
    dst = torch.arange(origin, origin + out_len, dtype=torch.float32)
    src = ((dst + 0.5) * scale - 0.5).clamp_min(0)
    lo = src.floor()
    frac = (src - lo).to(device)
    lo = lo.long() - origin // ESA_STRIDE
    hi = lo + (lo + origin // ESA_STRIDE < coarse_size(full_len) - 1).long()
    return lo.clamp(0, local_len - 1).to(device), hi.clamp(0, local_len - 1).to(device), frac


def upsample_coarse(low: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of the coarse map ``low`` to ``size`` (the ESA input size), tile-aware (module docstring)."""
    geometry = _GEOMETRY.get()
    if geometry is None or tuple(size) == geometry.full_size:
        return F.interpolate(low, size=tuple(size), mode='bilinear', align_corners=False)
    (h, w), (fh, fw), (y0, x0) = size, geometry.full_size, geometry.origin
    top, bottom, fy = _axis(h, y0, fh, low.shape[-2], low.device)
    left, right, fx = _axis(w, x0, fw, low.shape[-1], low.device)
    rows = low[..., top, :] * (1 - fy)[:, None] + low[..., bottom, :] * fy[:, None]
    return rows[..., left] * (1 - fx) + rows[..., right] * fx
