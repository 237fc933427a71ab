"""Quality of SR networks on paired test sets: Y-channel PSNR/SSIM with the border cropped by the scale
(the SR papers' protocol), computed by basicsr.metrics on BGR uint8 images, optionally with tiled inference."""
from collections.abc import Iterator
from dataclasses import dataclass
from os import path as osp

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import FileClient, imfrombytes, img2tensor, tensor2img
from torch import nn

from ddsr.archs.capabilities import capabilities_of
from ddsr.archs.esa_upsample import tile_geometry
from ddsr.data.image_io import list_images, read_image
from ddsr.data.lmdb_tools import read_meta_info
from ddsr.deploy import tiling
from ddsr.errors import DDSRError
from ddsr.progress import track


@dataclass
class PairedSet:
    """A paired test set: GT and LQ, both LMDBs (same keys) or both image folders (same file stems)."""
    name: str
    gt: str
    lq: str

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        return [key for key, _ in self._pairs(load=False)]

    def pairs(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(key, GT BGR uint8, LQ BGR uint8) in key order."""
        for key, gt_lq in self._pairs(load=True):
            yield (key, *gt_lq)

    def _pairs(self, load: bool):
        for path in (self.gt, self.lq):
            if not osp.exists(path):
                raise DDSRError(f'test set {self.name}: {path} not found')
        if self.gt.endswith('.lmdb') != self.lq.endswith('.lmdb'):
            raise DDSRError(f'test set {self.name}: GT and LQ must both be LMDBs or both folders')
        if self.gt.endswith('.lmdb'):
            keys = _lmdb_keys(self.gt)
            if set(keys) != set(_lmdb_keys(self.lq)):
                raise DDSRError(f'test set {self.name}: keys of {self.gt} and {self.lq} differ')
            if not load:
                yield from ((key, None) for key in keys)
                return
            client = FileClient('lmdb', db_paths=[self.gt, self.lq], client_keys=['gt', 'lq'])
            for key in keys:
                yield key, (imfrombytes(client.get(key, 'gt'), float32=False),
                            imfrombytes(client.get(key, 'lq'), float32=False))
            return
        lq_by_stem = {osp.splitext(n)[0]: n for n in list_images(self.lq)}
        for name in list_images(self.gt):
            stem = osp.splitext(name)[0]
            if stem not in lq_by_stem:
                raise DDSRError(f'test set {self.name}: no LQ image for {name} in {self.lq}')
            yield stem, ((read_image(osp.join(self.gt, name)), read_image(osp.join(self.lq, lq_by_stem[stem])))
                         if load else None)


def tiled_forward(net: nn.Module, x: torch.Tensor, scale: int, tile: int, tile_pad: int = 16) -> torch.Tensor:
    """``net(x)`` on ``tile`` x ``tile`` LR tiles reading ``tile_pad`` px of context per side, seams blended
    (:func:`ddsr.deploy.tiling.tiled_forward`; tiles padded to the net's size requirements, ESA nets tile on their
    grid: :mod:`ddsr.archs.capabilities`), so large images fit in memory; exact when ``tile_pad / 2`` covers the
    receptive field."""
    need = capabilities_of(net).size
    return tiling.tiled_forward(net, x, scale, tile, tile_pad, need.min_size, need.multiple, align=need.grid,
                                context=tile_geometry if need.grid > 1 else None)


def super_resolve(net: nn.Module, lq: np.ndarray, scale: int, device: str = 'cpu', tile: int | None = None,
                  tile_pad: int = 16) -> np.ndarray:
    """BGR uint8 LR -> BGR uint8 SR (network input RGB in [0, 1], output clamped and rounded by tensor2img)."""
    x = img2tensor(lq.astype(np.float32) / 255., bgr2rgb=True, float32=True).unsqueeze(0).to(device)
    with torch.no_grad():
        y = tiled_forward(net, x, scale, tile, tile_pad) if tile else net(x)
    return tensor2img(y, rgb2bgr=True, out_type=np.uint8, min_max=(0, 1))


def y_psnr_ssim(sr: np.ndarray, gt: np.ndarray, scale: int) -> tuple[float, float]:
    """Y-channel PSNR and SSIM, border ``scale`` cropped (basicsr.metrics on BGR uint8)."""
    if sr.shape != gt.shape:
        raise DDSRError(f'SR shape {sr.shape} differs from GT shape {gt.shape}')
    return (calculate_psnr(sr, gt, crop_border=scale, test_y_channel=True),
            calculate_ssim(sr, gt, crop_border=scale, test_y_channel=True))


def evaluate(net: nn.Module, test_set: PairedSet, scale: int, device: str = 'cpu', tile: int | None = None,
             tile_pad: int = 16, progress: bool = True, desc: str = '') -> dict:
    """Mean Y-PSNR / SSIM of ``net`` on ``test_set``: ``{'set', 'images', 'psnr', 'ssim'}``."""
    net = net.eval().to(device)
    psnrs, ssims = [], []
    pairs = track(test_set.pairs(), len(test_set), desc or test_set.name, 'img', every=15.0, disable=not progress)
    for key, gt, lq in pairs:
        if lq.shape[0] * scale != gt.shape[0] or lq.shape[1] * scale != gt.shape[1]:
            raise DDSRError(f'test set {test_set.name}: {key} LQ {lq.shape[:2]} x{scale} != GT {gt.shape[:2]}')
        psnr, ssim = y_psnr_ssim(super_resolve(net, lq, scale, device, tile, tile_pad), gt, scale)
        psnrs.append(psnr)
        ssims.append(ssim)
    if not psnrs:
        raise DDSRError(f'test set {test_set.name} is empty')
    return dict(set=test_set.name, images=len(psnrs), psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)))


def _lmdb_keys(lmdb_path: str) -> list[str]:
    return [key for key, _ in read_meta_info(lmdb_path, 'test set')]
