"""Python API for inference: ``ddsr.ImageUpscaler``, a pretrained or trained network as an image -> image function.

    from ddsr import ImageUpscaler
    from PIL import Image

    up = ImageUpscaler.from_pretrained('DIPNet-x4')          # or ImageUpscaler.from_file('net_g_latest.pth')
    up(Image.open('photo.png')).save('photo_x4.png')

It wraps the runtime that ``ddsr upscale`` uses (network in deploy form under ``torch.inference_mode``, any input
size, exact tiling for ESA nets); the low-level runner of that runtime is the ``Upscaler`` dataclass of
:mod:`ddsr.deploy.backends`, which works on (1, 3, h, w) tensors only. Inputs and outputs:

- ``PIL.Image``: mode L, RGB or RGBA in, the same mode out (other modes are converted to RGB);
- ``numpy`` array: H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA); uint8 / uint16 in, the same out; float in
  [0, 1] in, float32 out;
- ``torch.Tensor``: (3, H, W) or (N, 3, H, W) float in [0, 1], the same layout out.

Alpha is upscaled by bicubic interpolation (``alpha='network'``: by the network, as a gray image), gray runs as
three equal channels (as in ``ddsr upscale``). ``outscale``, ``alpha``, ``ext`` and ``quality`` mean what the
``ddsr upscale`` flags of the same names mean (:mod:`ddsr.deploy.output`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ddsr import cpu_threads
from ddsr.deploy.backends import Upscaler
from ddsr.deploy.output import DEFAULT_QUALITY, OutputSettings, resize_to, upscale_image

if TYPE_CHECKING:
    from ddsr.deploy.source import NetworkSource

_UNSET: Any = object()


def upscale_array(up: Upscaler, img: np.ndarray, tile: int | None = None, overlap: int = 16,
                  progress: Any = None, output: OutputSettings | None = None) -> np.ndarray:
    """Super-resolve a cv2 image (gray, BGR or BGRA; uint8 or uint16); same mode and bit depth out (the pixel
    conversions of :mod:`ddsr.deploy.pipeline` and :mod:`ddsr.deploy.output`, shared with ``ddsr upscale``)."""
    return upscale_image(lambda x: up(torch.from_numpy(x), tile, overlap, progress).numpy(), img,
                         output or OutputSettings())


def _is_pil(image: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # numpy and tensors work without Pillow
        return False
    return isinstance(image, Image.Image)


class ImageUpscaler:
    """A super-resolution network ready for images.

    Args:
        net: The network (train or deploy form; converted to the deploy form).
        arch: Its network option (``type`` + kwargs).
        device: ``cpu`` or ``cuda``.
        tile: Default tile size in LR px (None: whole image).
        tile_overlap: Default context per tile side in LR px.
        name: Shown in ``repr``.
        outscale: Final scale (None: the network's); alpha: ``bicubic`` or ``network``; ext, quality: the format
            :meth:`upscale_file` writes (``png``, ``jpg``, ``webp`` or ``auto``: the input's). As the ``ddsr
            upscale`` flags of these names.
        precision: ``fp32`` (default), ``bf16`` (PyTorch bfloat16), ``int8`` (onnxruntime int8 quantization,
            CPU) or ``auto`` (:func:`ddsr.deploy.precision.pick`: a reduced precision only where the CPU runs it
            natively, it is faster and its output holds the quality floor; decided here, not cached). See
            docs/deploy.md.
    """

    def __init__(self, net: nn.Module, arch: Mapping, device: str = 'cpu', tile: int | None = None,
                 tile_overlap: int = 64, name: str = '', outscale: float | None = None, alpha: str = 'bicubic',
                 ext: str = 'png', quality: int = DEFAULT_QUALITY, precision: str = 'fp32') -> None:
        self.output = OutputSettings(outscale=outscale, ext=ext, quality=quality, alpha=alpha)
        self.output.check()
        from ddsr.deploy.precision import upscaler
        cpu_threads.apply(adapt=False)  # torch already loaded: thread count only (ddsr.cpu_threads)
        self.arch = dict(arch)
        self.name = name or str(self.arch.get('type', 'network'))
        self.tile, self.tile_overlap = tile, tile_overlap
        self.runner = upscaler(net, device, precision)
        self.precision: str = self.runner.info.get('precision', 'fp32')
        self.scale: int = self.runner.scale

    def __repr__(self) -> str:
        return f'ImageUpscaler({self.name}, x{self.scale}, tile={self.tile}, tile_overlap={self.tile_overlap})'

    @classmethod
    def from_pretrained(cls, name: str, quiet: bool = False, **kwargs: Any) -> ImageUpscaler:
        """A network of ``ddsr models`` by name, downloaded (and verified) on first use."""
        from ddsr import zoo
        from ddsr.deploy.source import from_model
        kwargs.setdefault('name', zoo.lookup(name).name)
        return cls._of(from_model(name, quiet=quiet), **kwargs)

    @classmethod
    def from_file(cls, path: str | os.PathLike, arch: Mapping | None = None, param_key: str | None = 'params',
                  **kwargs: Any) -> ImageUpscaler:
        """A checkpoint: self-describing, a BasicSR ``params``/``params_ema`` file or a plain state dict; the
        network is recognised from the weights unless ``arch`` (``{'type': ..., **kwargs}``) is given."""
        from ddsr.deploy.source import from_weights
        from ddsr.errors import DDSRError
        path = str(path)
        if not os.path.isfile(path):
            raise DDSRError(f'weights not found: {path}')
        kwargs.setdefault('name', Path(path).name)
        return cls._of(from_weights(path, arch, param_key, label=path), **kwargs)

    @classmethod
    def _of(cls, source: NetworkSource, **kwargs: Any) -> ImageUpscaler:
        return cls(source.network, source.arch, **kwargs)

    def _tensor(self, x: Tensor, tile: int | None, overlap: int) -> Tensor:
        return self.runner(x.float().cpu(), tile, overlap).clamp(0, 1)

    def __call__(self, image: Any, tile: int | None = _UNSET, tile_overlap: int | None = None) -> Any:
        """Super-resolve ``image`` (PIL image, numpy array or tensor: see the module docstring)."""
        tile = self.tile if tile is _UNSET else tile
        overlap = self.tile_overlap if tile_overlap is None else tile_overlap
        if isinstance(image, Tensor):
            batch = image if image.ndim == 4 else image[None]
            out = torch.cat([self._resized(self._tensor(x[None], tile, overlap), x.shape[-2:]) for x in batch])
            out = out.to(image.device, image.dtype)
            return out if image.ndim == 4 else out[0]
        if _is_pil(image):
            from PIL import Image
            mode = image.mode if image.mode in ('L', 'RGB', 'RGBA') else 'RGB'
            return Image.fromarray(self._array(np.asarray(image.convert(mode)), tile, overlap), mode)
        if isinstance(image, np.ndarray):
            return self._array(image, tile, overlap)
        raise TypeError(f'ImageUpscaler takes a PIL image, a numpy array or a tensor, not {type(image).__name__}')

    def _array(self, img: np.ndarray, tile: int | None, overlap: int) -> np.ndarray:
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
            raise ValueError(f'expected an H x W, H x W x 3 or H x W x 4 image, got shape {img.shape}')
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if img.dtype in (np.uint8, np.uint16):
            bgr = img if img.ndim == 2 else img[..., [2, 1, 0, 3][:img.shape[2]]]  # ddsr's runtime reads cv2's BGR
            out = upscale_array(self.runner, np.ascontiguousarray(bgr), tile, overlap, output=self.output)
            return out if out.ndim == 2 else np.ascontiguousarray(out[..., [2, 1, 0, 3][:out.shape[2]]])
        if not np.issubdtype(img.dtype, np.floating):
            raise TypeError(f'unsupported pixel type {img.dtype} (uint8, uint16 or float in [0, 1])')
        rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None]
        sr = self._tensor(x, tile, overlap)[0].numpy().transpose(1, 2, 0)
        if img.ndim == 2:
            return resize_to(np.ascontiguousarray(sr.mean(axis=2)), img.shape[:2], self.output.outscale)
        if img.shape[2] == 4:
            if self.output.alpha == 'network':
                a = torch.from_numpy(np.ascontiguousarray(img[..., 3], dtype=np.float32))
                alpha = self._tensor(a.expand(1, 3, *a.shape), tile, overlap)[0].mean(0).numpy()
            else:
                import cv2
                alpha = cv2.resize(img[..., 3].astype(np.float32), (sr.shape[1], sr.shape[0]),
                                   interpolation=cv2.INTER_CUBIC)
            sr = np.concatenate([sr, np.clip(alpha, 0, 1)[..., None]], axis=2)
        return resize_to(np.ascontiguousarray(sr, dtype=np.float32), img.shape[:2], self.output.outscale)

    def _resized(self, sr: Tensor, hw: Any) -> Tensor:
        """A (1, 3, H, W) output resized to ``outscale`` (as every other output, in NumPy with OpenCV)."""
        if self.output.outscale is None:
            return sr
        arr = resize_to(np.ascontiguousarray(sr[0].permute(1, 2, 0).numpy()), tuple(hw), self.output.outscale)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]

    def upscale_file(self, src: str | os.PathLike, dst: str | os.PathLike, tile: int | None = _UNSET,
                     tile_overlap: int | None = None) -> Path:
        """Read an image file, super-resolve it, write it via a temporary file in the ``ext`` format (PNG by
        default: same bit depth and mode); the path written (``dst``, its suffix replaced when it names another
        format)."""
        from ddsr.data.image_io import read_image
        from ddsr.deploy.output import save_output
        from ddsr.deploy.pipeline import PNG_LEVEL
        tile = self.tile if tile is _UNSET else tile
        overlap = self.tile_overlap if tile_overlap is None else tile_overlap
        img = read_image(src, 'unchanged')
        out = upscale_array(self.runner, img, tile, overlap, output=self.output)
        return save_output(Path(dst), Path(src), out, img, self.output, PNG_LEVEL)[0]
