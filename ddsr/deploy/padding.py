"""Input padding to a network's size constraints: the one rule, for PyTorch tensors and NumPy arrays.

Bottom/right padding up to ``min_size`` and to a multiple of ``multiple``; reflection where the image is larger than
the padding (no repeated edge row), replication otherwise (reflection cannot pad more than the image). The output is
cropped back to ``scale * (H, W)`` by the caller. No torch import here: onnxruntime runs on NumPy without torch.
"""
from __future__ import annotations

import numpy as np


def pad_amounts(h: int, w: int, min_size: int = 1, multiple: int = 1) -> tuple[int, int, bool]:
    """``(pad_bottom, pad_right, reflect)`` for an ``h`` x ``w`` input (``reflect`` False: replicate the edge)."""
    ph = max(min_size - h, 0) + (-(max(h, min_size))) % multiple
    pw = max(min_size - w, 0) + (-(max(w, min_size))) % multiple
    return ph, pw, ph < h and pw < w


def pad_numpy(x: np.ndarray, min_size: int = 1, multiple: int = 1) -> np.ndarray:
    """``x`` (N, C, H, W) padded as :func:`pad_amounts` says (the NumPy twin of
    :func:`ddsr.deploy.tiling.pad_to_constraints`)."""
    ph, pw, reflect = pad_amounts(x.shape[-2], x.shape[-1], min_size, multiple)
    if not (ph or pw):
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode='reflect' if reflect else 'edge')
