"""What happens to a network's output before it is written: alpha, output scale, file format, comparison picture.

Shared by ``ddsr upscale`` (its folder pipeline) and :class:`ddsr.ImageUpscaler`, so both give the same pixels:

- **alpha** (``--alpha``): ``bicubic`` (default) resizes the alpha channel with OpenCV's bicubic interpolation;
  ``network`` runs the network on the alpha as a gray image (three equal channels, output = their mean), which
  keeps edges of cut-outs sharp the way the colour is.
- **outscale** (``--outscale``, as Real-ESRGAN's inference script): the network's own scale first, then one resize
  to ``round(outscale * input size)``. Shrinking uses ``cv2.INTER_AREA`` (averages the covered pixels: no aliasing
  or moire); enlarging uses ``cv2.INTER_LANCZOS4`` (chosen here: its 8x8 windowed sinc keeps more of the network's
  fine detail than the 4x4 cubic kernel, and it is what Real-ESRGAN's script uses, so outputs compare). Integer
  outputs saturate (no wrap-around of Lanczos overshoot), floats are clipped to [0, 1]. ``outscale`` equal to the
  network's scale (or None) returns the network's output unchanged.
- **format** (``--ext``, ``--quality``): ``png`` (lossless, 8/16-bit, alpha), ``jpg`` (8-bit, no alpha), ``webp``
  (8-bit, alpha kept) or ``auto`` (the input's own format; PNG for other formats and for a 16-bit or alpha image
  that format cannot hold). An explicit format that cannot hold the image converts it and says so: 16-bit becomes
  8-bit (rounded), and alpha into JPEG is composited onto white (JPEG has no transparency).
- **compare** (``--compare``): ``<name>_compare.png``: bicubic next to the network, both at the output size,
  centre crops of at most :data:`COMPARE_MAX_SIDE` px per panel.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ddsr.data.image_io import write_png
from ddsr.data.side_by_side import centre_crop, side_by_side
from ddsr.deploy.output_choices import ALPHA_MODES, DEFAULT_QUALITY, EXTS
from ddsr.deploy.pipeline import finish, prepare
from ddsr.errors import DDSRError

COMPARE_MAX_SIDE = 512  # px per panel of a --compare picture (chosen here: two panels fit a laptop screen)
_FORMAT_OF_SUFFIX = {'.png': 'png', '.jpg': 'jpg', '.jpeg': 'jpg', '.webp': 'webp'}
Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OutputSettings:
    """How outputs are made and written (the ``--outscale/--ext/--quality/--alpha/--compare`` flags).

    Attributes:
        outscale: Final scale (None: the network's).
        ext: ``png``, ``jpg``, ``webp`` or ``auto``.
        quality: JPEG/WebP quality, 1-100.
        alpha: ``bicubic`` or ``network``.
        compare: Caption of the network's panel of a comparison picture (None: no picture).
    """
    outscale: float | None = None
    ext: str = 'png'
    quality: int = DEFAULT_QUALITY
    alpha: str = 'bicubic'
    compare: str | None = None

    def check(self) -> None:
        """DDSRError naming the flag of a bad value."""
        if self.outscale is not None and not self.outscale > 0:
            raise DDSRError(f'--outscale {self.outscale}: must be > 0')
        if self.ext not in EXTS:
            raise DDSRError(f'--ext {self.ext}: one of {", ".join(EXTS)}')
        if not 1 <= self.quality <= 100:
            raise DDSRError(f'--quality {self.quality}: must be 1-100')
        if self.alpha not in ALPHA_MODES:
            raise DDSRError(f'--alpha {self.alpha}: one of {", ".join(ALPHA_MODES)}')


def alpha_input(img: np.ndarray, settings: OutputSettings) -> np.ndarray | None:
    """Network input of ``img``'s alpha channel when ``--alpha network`` applies to it, else None."""
    if settings.alpha == 'network' and img.ndim == 3 and img.shape[2] == 4:
        return prepare(np.ascontiguousarray(img[..., 3]))
    return None


def with_network_alpha(out: np.ndarray, alpha_sr: np.ndarray | None) -> np.ndarray:
    """``out`` (cv2 image, BGRA) with its alpha replaced by the network's output on the alpha (gray: the mean of
    its three channels), rounded to ``out``'s type."""
    if alpha_sr is None:
        return out
    peak = float(np.iinfo(out.dtype).max)
    out[..., 3] = np.round(np.clip(alpha_sr[0], 0, 1).mean(axis=0) * peak).astype(out.dtype)
    return out


def resize_to(out: np.ndarray, in_hw: tuple[int, int], outscale: float | None) -> np.ndarray:
    """``out`` resized to ``round(outscale * in_hw)`` (module docstring); unchanged when it has that size."""
    if outscale is None:
        return out
    h, w = (max(1, round(outscale * side)) for side in in_hw)
    if out.shape[:2] == (h, w):
        return out
    shrink = h * w < out.shape[0] * out.shape[1]
    resized = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    return np.clip(resized, 0, 1) if np.issubdtype(resized.dtype, np.floating) else resized


def upscale_image(forward: Forward, img: np.ndarray, settings: OutputSettings) -> np.ndarray:
    """cv2 image (gray/BGR/BGRA, uint8/uint16) -> its output with ``settings`` applied (one call for
    :class:`ddsr.ImageUpscaler`; the folder pipeline runs the same steps split across its threads)."""
    x_alpha = alpha_input(img, settings)
    sr = forward(prepare(img))
    return make_output(sr, None if x_alpha is None else forward(x_alpha), img, settings)


def make_output(sr: np.ndarray, alpha_sr: np.ndarray | None, img: np.ndarray, settings: OutputSettings) -> np.ndarray:
    """The output image of the network outputs ``sr`` (and ``alpha_sr``) for the input ``img``."""
    return resize_to(with_network_alpha(finish(sr, img), alpha_sr), img.shape[:2], settings.outscale)


def output_format(src: Path, img: np.ndarray, ext: str) -> str:
    """``png``, ``jpg`` or ``webp``: ``ext``, or for ``auto`` the input's format when it can hold ``img``."""
    if ext != 'auto':
        return ext
    fmt = _FORMAT_OF_SUFFIX.get(src.suffix.lower(), 'png')
    alpha = img.ndim == 3 and img.shape[2] == 4
    if fmt != 'png' and (img.dtype == np.uint16 or (alpha and fmt == 'jpg')):
        return 'png'
    return fmt


def convert_for(fmt: str, img: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``img`` as ``fmt`` can hold it, and what was converted (empty for PNG)."""
    notes: list[str] = []
    if fmt == 'png':
        return img, notes
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float32) / 257.0).astype(np.uint8)
        notes.append(f'16-bit reduced to 8-bit ({fmt} holds 8 bits)')
    if fmt == 'jpg' and img.ndim == 3 and img.shape[2] == 4:
        alpha = img[..., 3:].astype(np.float32) / 255.0
        img = np.round(img[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        notes.append('alpha composited onto white (jpg has no transparency)')
    return img, notes


def write_image(dst: Path, img: np.ndarray, fmt: str, quality: int = DEFAULT_QUALITY,
                png_level: int | None = None) -> list[str]:
    """Write ``img`` to ``dst`` as ``fmt`` (through a temporary file renamed into place); what was converted."""
    if fmt == 'png':
        write_png(dst, img, compression=png_level)
        return []
    img, notes = convert_for(fmt, img)
    params = [cv2.IMWRITE_JPEG_QUALITY if fmt == 'jpg' else cv2.IMWRITE_WEBP_QUALITY, quality]
    tmp = dst.with_name(f'.{dst.stem}.tmp.{fmt}')
    if not cv2.imwrite(str(tmp), img, params):
        raise DDSRError(f'{dst}: could not write')
    tmp.replace(dst)
    return notes


def compare_path(dst: Path) -> Path:
    """``<output stem>_compare.png`` beside the output ``dst``."""
    return dst.with_name(f'{dst.stem}_compare.png')


def comparison(img: np.ndarray, out: np.ndarray, label: str) -> np.ndarray:
    """Bicubic of ``img`` next to the network's ``out`` (same size), centre crops of at most
    :data:`COMPARE_MAX_SIDE` px, captioned ``bicubic xS`` and ``label``."""
    scale = out.shape[1] / img.shape[1]
    bicubic = cv2.resize(img, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
    caption = f'x{scale:g}'
    return side_by_side([(f'bicubic {caption}', centre_crop(bicubic, COMPARE_MAX_SIDE)),
                         (f'{label} {caption}', centre_crop(out, COMPARE_MAX_SIDE))])


def save_output(dst: Path, src: Path, out: np.ndarray, img: np.ndarray, settings: OutputSettings,
                png_level: int | None = None) -> tuple[Path, list[str]]:
    """Write the output ``out`` of ``src`` (decoded: ``img``) to ``dst`` (and its comparison picture): the path
    written and notes on what was converted. ``dst``'s suffix is replaced when it names another format than the
    one written (e.g. an ``auto`` format that cannot hold the image: PNG under the ``.png`` name)."""
    fmt = output_format(src, img, settings.ext)
    if _FORMAT_OF_SUFFIX.get(dst.suffix.lower()) != fmt:
        dst = dst.with_suffix(f'.{fmt}')
    notes = write_image(dst, out, fmt, settings.quality, png_level)
    if settings.compare is not None:
        write_png(compare_path(dst), comparison(img, out, settings.compare), compression=png_level)
    return dst, notes


def target_name(src: Path, suffix: str, ext: str) -> str:
    """Output file name of ``src``: ``<stem><suffix>.<format>`` (``auto``: the input's format, PNG for others)."""
    fmt = ext if ext != 'auto' else _FORMAT_OF_SUFFIX.get(src.suffix.lower(), 'png')
    return f'{src.stem}{suffix}.{fmt}'
