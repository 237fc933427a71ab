"""Side-by-side comparison pictures: equally sized panels in a row, each with a caption bar under it.

Used by ``ddsr upscale --compare`` (bicubic next to the network, for the user's own image) and by
``benchmarks/make_comparison_figure.py`` (README's bicubic / DIPNet / DDistill-SR / HR crops). Images are uint8
BGR arrays as :mod:`ddsr.data.image_io` reads them; captions are drawn with OpenCV's built-in Hershey font (no
font files needed).
"""
from __future__ import annotations

import cv2
import numpy as np

CAPTION_HEIGHT = 22  # px of the caption bar under each panel
GAP = 4  # px between panels (white)


def bicubic_upscale(img: np.ndarray, scale: float) -> np.ndarray:
    """``img`` (H x W [x C], uint8/uint16/float) resized by ``scale`` with OpenCV's bicubic interpolation."""
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)


def _as_bgr8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:  # float in [0, 1]
        img = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def side_by_side(panels: list[tuple[str, np.ndarray]], gap: int = GAP) -> np.ndarray:
    """One uint8 BGR picture: the panels left to right, each captioned with its label (one line, shrunk to fit).

    Every panel must have the same height and width (crop or resize them first)."""
    if not panels:
        raise ValueError('side_by_side needs at least one panel')
    images = [_as_bgr8(img) for _, img in panels]
    h, w = images[0].shape[:2]
    if any(img.shape[:2] != (h, w) for img in images):
        raise ValueError(f'panels differ in size: {[img.shape[:2] for img in images]}')
    n = len(images)
    canvas = np.full((h + CAPTION_HEIGHT, n * w + (n - 1) * gap, 3), 255, np.uint8)
    for idx, ((label, _), img) in enumerate(zip(panels, images, strict=True)):
        x0 = idx * (w + gap)
        canvas[:h, x0:x0 + w] = img
        scale = 0.5
        while scale > 0.25 and cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > w - 4:
            scale -= 0.05
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        origin = (x0 + max(2, (w - tw) // 2), h + (CAPTION_HEIGHT + th) // 2)
        cv2.putText(canvas, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def crop(img: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop at (top, left), clamped into the image."""
    h, w = img.shape[:2]
    top, left = max(0, min(top, h - size)), max(0, min(left, w - size))
    return img[top:top + size, left:left + size]


def centre_crop(img: np.ndarray, max_side: int) -> np.ndarray:
    """The centre of ``img``, at most ``max_side`` px high and wide (the whole image when it is smaller)."""
    h, w = img.shape[:2]
    ch, cw = min(h, max_side), min(w, max_side)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]
