"""Image files: one reader and one PNG writer for every ddsr tool (data preparation, benchmarks, inference).

- :func:`read_image` ``mode='bgr'`` gives 3-channel BGR uint8 as BasicSR's data pipeline reads images (gray is
  replicated, alpha dropped, 16-bit scaled to 8); ``mode='unchanged'`` keeps gray/BGR/BGRA and 8/16-bit for
  inference, which writes the same mode and bit depth back.
- :func:`write_png` writes through a temporary file renamed into place (no half-written outputs) at a chosen zlib
  level (3 is BasicSR's default for extracted sub-images) or with OpenCV's default settings (``None``, what
  ``ddsr upscale`` uses: the fastest, see :mod:`ddsr.deploy.pipeline`).
"""
import os
from pathlib import Path

import cv2
import numpy as np

from ddsr.errors import DDSRError

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


def list_images(folder: str) -> list[str]:
    """Sorted image file names (not paths) in ``folder``."""
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS))


def read_image(path: str | os.PathLike, mode: str = 'bgr') -> np.ndarray:
    """Read an image file (see the module docstring for ``mode``); DDSRError naming the file when unreadable."""
    flag = cv2.IMREAD_COLOR if mode == 'bgr' else cv2.IMREAD_UNCHANGED
    img = cv2.imread(str(path), flag)
    if img is None or img.size == 0:
        raise DDSRError(f'{path}: unreadable image')
    if mode == 'bgr':
        return img
    if img.dtype not in (np.uint8, np.uint16):
        raise DDSRError(f'{path}: unsupported pixel type {img.dtype} (8- or 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        raise DDSRError(f'{path}: unsupported channel count {img.shape[2]}')
    return img


def write_png(path: str | os.PathLike, img: np.ndarray, compression: int | None = 3) -> None:
    """Write ``img`` (cv2 layout) as PNG at zlib level ``compression`` (None: OpenCV's own default settings) via a
    temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(f'.{path.stem}.tmp.png')
    params = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, compression]
    if not cv2.imwrite(str(tmp), img, params):
        raise DDSRError(f'{path}: could not write')
    tmp.replace(path)
