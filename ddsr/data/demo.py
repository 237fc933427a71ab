"""The embedded demo data set: small, real, deterministic, built from the photographs scikit-image ships.

train: 96x96 HR sub-images (step 64) of astronaut, rocket, motorcycle (left view) and immunohistochemistry,
       with MATLAB-bicubic LR for x2/x3/x4, meta_info.txt, and LMDBs of each.
val:   held-out photos (chelsea, coffee), whole, modcropped to 12 (so x2, x3 and x4 all divide), same layout.

The build goes to a temporary sibling folder and is renamed into place at the end, so an interrupted build
never leaves a half-written data set; an existing complete build is kept (idempotent).
"""
import os
import shutil
from collections.abc import Callable
from os import path as osp

import numpy as np
from skimage import data as skdata

from ddsr.data.image_io import write_png
from ddsr.data.lmdb_tools import bicubic_lr, folder_to_lmdb, modcrop, subimage_grid

DEMO_ROOT = osp.join('datasets', 'demo')
SCALES = (2, 3, 4)
CROP_SIZE, STEP = 96, 64
TRAIN_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    'astronaut': skdata.astronaut,
    'rocket': skdata.rocket,
    'motorcycle': lambda: skdata.stereo_motorcycle()[0],
    'ihc': skdata.immunohistochemistry,
}
VAL_PHOTOS: dict[str, Callable[[], np.ndarray]] = {'chelsea': skdata.chelsea, 'coffee': skdata.coffee}
_COMPLETE = '.complete'


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., :3][..., ::-1])


def _train_images() -> dict[str, np.ndarray]:
    images = {}
    for name, load in TRAIN_PHOTOS.items():
        img = _bgr(load())
        h, w = img.shape[:2]
        for idx, (y, x) in enumerate(subimage_grid(h, w, CROP_SIZE, STEP)):
            images[f'{name}_s{idx:03d}'] = img[y:y + CROP_SIZE, x:x + CROP_SIZE]
    return images


def _val_images() -> dict[str, np.ndarray]:
    lcm = int(np.lcm.reduce(SCALES))
    return {name: modcrop(_bgr(load()), lcm) for name, load in VAL_PHOTOS.items()}


def _write_split(split_dir: str, images: dict[str, np.ndarray]) -> None:
    hr_dir = osp.join(split_dir, 'HR')
    os.makedirs(hr_dir)
    for scale in SCALES:
        os.makedirs(osp.join(split_dir, 'LR_bicubic', f'X{scale}'))
    names = []
    for key, hr in images.items():
        name = f'{key}.png'
        names.append(name)
        write_png(osp.join(hr_dir, name), hr)
        for scale in SCALES:
            write_png(osp.join(split_dir, 'LR_bicubic', f'X{scale}', name), bicubic_lr(hr, scale))
    with open(osp.join(split_dir, 'meta_info.txt'), 'w') as f:
        f.writelines(f'{name}\n' for name in names)
    folder_to_lmdb(hr_dir, osp.join(split_dir, 'HR.lmdb'), names)
    for scale in SCALES:
        folder_to_lmdb(osp.join(split_dir, 'LR_bicubic', f'X{scale}'), osp.join(split_dir, f'LR_bicubic_X{scale}.lmdb'),
                       names)


def is_built(root: str = DEMO_ROOT) -> bool:
    return osp.isfile(osp.join(root, _COMPLETE))


def build_demo_data(root: str = DEMO_ROOT, force: bool = False) -> str:
    """Build the demo data set at ``root`` (skipped when already complete, unless ``force``); returns ``root``."""
    if is_built(root) and not force:
        return root
    tmp = f'{root.rstrip(os.sep)}.tmp-{os.getpid()}'
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_split(osp.join(tmp, 'train'), _train_images())
        _write_split(osp.join(tmp, 'val'), _val_images())
        open(osp.join(tmp, _COMPLETE), 'w').close()
        if osp.exists(root):
            shutil.rmtree(root)
        os.makedirs(osp.dirname(osp.abspath(root)), exist_ok=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
