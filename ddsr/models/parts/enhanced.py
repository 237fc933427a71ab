"""Offline enhanced-HR targets (DIPNet pipeline, step 2): run a teacher over a training LR set once.

The outputs (clamped to [0, 1], 8-bit PNG, same names as the LR images) go to a folder and optionally to an
LMDB in BasicSR's layout (``data.mdb``, ``meta_info.txt``), which EnhancedPairedImageDataset reads as
``dataroot_enhanced``. Everything is written to a temporary sibling first and renamed into place at the end,
so an interrupted run never leaves a half-written target set.
"""
import functools
import os
from collections.abc import Callable
from os import path as osp

import numpy as np
import torch
from basicsr.utils import imfrombytes, img2tensor, tensor2img
from torch import nn

from ddsr.data.image_io import list_images, read_image, write_png
from ddsr.data.lmdb_tools import LmdbReader, folder_to_lmdb, read_meta_info
from ddsr.errors import DDSRError
from ddsr.fileio import replace_dir, temp_dir
from ddsr.progress import track


def _lr_items(lq: str) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(output name, loader of the BGR float32 image) for every LR image of a folder or a BasicSR LMDB."""
    if lq.endswith('.lmdb'):
        keys = [key for key, _ in read_meta_info(lq, 'make-enhanced-hr --lq')]
        reader = LmdbReader(lq)

        def from_lmdb(key: str) -> np.ndarray:
            return imfrombytes(reader.get(key), float32=True)

        return [(f'{key}.png', functools.partial(from_lmdb, key)) for key in keys]
    if not osp.isdir(lq):
        raise DDSRError(f'LR set not found (folder or .lmdb): {lq}')
    names = list_images(lq)
    if not names:
        raise DDSRError(f'no images in {lq}')
    return [(osp.splitext(n)[0] + '.png', functools.partial(_read_float, osp.join(lq, n))) for n in names]


def _read_float(path: str) -> np.ndarray:
    return read_image(path).astype(np.float32) / 255.


@torch.no_grad()
def make_enhanced_hr(net: nn.Module, lq: str, out: str, write_lmdb: bool = False, device: str = 'cpu',
                     progress: bool = True) -> list[str]:
    """Run ``net`` (eval) on every image of ``lq`` and write the outputs to the folder ``out`` (and to
    ``out + '.lmdb'`` when ``write_lmdb``). Returns the written file names."""
    out = out.rstrip('/\\')
    targets = [out] + ([out + '.lmdb'] if write_lmdb else [])
    items = _lr_items(lq)
    net = net.to(device).eval()
    with temp_dir(osp.dirname(osp.abspath(out)), '.enhanced_tmp_') as tmp:
        tmp_folder = osp.join(tmp, 'png')
        os.makedirs(tmp_folder)
        names = []
        for name, load in track(items, desc='enhanced HR', unit='img', every=15.0, disable=not progress):
            img = img2tensor(load(), bgr2rgb=True, float32=True).unsqueeze(0).to(device)
            write_png(osp.join(tmp_folder, name), tensor2img(net(img).clamp_(0, 1), rgb2bgr=True))
            names.append(name)
        if write_lmdb:
            folder_to_lmdb(tmp_folder, osp.join(tmp, 'lmdb.lmdb'), names)
        for target, built in zip(targets, (tmp_folder, osp.join(tmp, 'lmdb.lmdb')), strict=False):
            replace_dir(built, target)
    return names
