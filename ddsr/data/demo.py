"""The embedded demo data set: small, real, deterministic, built from the photographs scikit-image ships.

train: 96x96 HR sub-images (step 64) of astronaut, rocket, motorcycle (left view) and immunohistochemistry,
       with MATLAB-bicubic LR for x2/x3/x4, meta_info.txt, and LMDBs of each.
val:   held-out photos (chelsea, coffee), whole, modcropped to 12 (so x2, x3 and x4 all divide), same layout.
eval:  a larger held-out set (:func:`build_eval_data`, its own root ``datasets/demo_eval``, built on demand):
       every natural photograph scikit-image bundles that is not in train, see ``EVAL_PHOTOS``.

The build goes to a temporary sibling folder and is renamed into place at the end, so an interrupted build
never leaves a half-written data set; an existing complete build is kept (idempotent).
"""
import os
from collections.abc import Callable
from os import path as osp

import numpy as np
from skimage import data as skdata

from ddsr.data.image_io import write_png
from ddsr.data.lmdb_tools import bicubic_lr, folder_to_lmdb, modcrop, subimage_grid
from ddsr.fileio import replace_dir, temp_dir

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
# Every photograph of a real scene bundled with scikit-image (no download) that is not in TRAIN_PHOTOS. Left out:
# motorcycle_right (the other stereo view of a training photo), microscopy (cell, the training ihc), the document
# scan page, synthetic or binary images (horse, logo, checkerboard, colorwheel, phantom, binary_blobs), lfw_subset
# (25x25 faces), and every image scikit-image fetches from the internet (eagle, lily, kidney, skin, ...).
# Grayscale photos become 3 equal channels. Chosen here: each is centre-cropped to at most EVAL_MAX_SIDE (the
# telescope and fundus photos are 872x1000 and 1411x1411) so that one evaluation costs seconds on a CPU.
EVAL_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    **VAL_PHOTOS,
    'camera': skdata.camera, 'coins': skdata.coins, 'moon': skdata.moon, 'text': skdata.text, 'clock': skdata.clock,
    'brick': skdata.brick, 'grass': skdata.grass, 'gravel': skdata.gravel,
    'hubble_deep_field': skdata.hubble_deep_field, 'retina': skdata.retina, 'microaneurysms': skdata.microaneurysms,
}
EVAL_ROOT = osp.join('datasets', 'demo_eval')
EVAL_MAX_SIDE = 480
_COMPLETE = '.complete'


def _bgr(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:  # grayscale photo: 3 equal channels
        rgb = np.repeat(rgb[..., None], 3, axis=2)
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


def _eval_images() -> dict[str, np.ndarray]:
    lcm = int(np.lcm.reduce(SCALES))
    images = {}
    for name, load in EVAL_PHOTOS.items():
        img = _bgr(load())
        h, w = img.shape[:2]
        ch, cw = min(h, EVAL_MAX_SIDE), min(w, EVAL_MAX_SIDE)
        y, x = (h - ch) // 2, (w - cw) // 2
        images[name] = modcrop(img[y:y + ch, x:x + cw], lcm)
    return images


def _write_split(split_dir: str, images: dict[str, np.ndarray], lmdb: bool = True) -> None:
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
    if not lmdb:
        return
    folder_to_lmdb(hr_dir, osp.join(split_dir, 'HR.lmdb'), names)
    for scale in SCALES:
        folder_to_lmdb(osp.join(split_dir, 'LR_bicubic', f'X{scale}'), osp.join(split_dir, f'LR_bicubic_X{scale}.lmdb'),
                       names)


def is_built(root: str = DEMO_ROOT) -> bool:
    return osp.isfile(osp.join(root, _COMPLETE))


def _build_atomically(root: str, force: bool, write: Callable[[str], None]) -> str:
    """Build a data set at ``root`` through ``write(tmp)`` into a temporary sibling folder renamed into place when
    complete (skipped when already complete, unless ``force``); returns ``root``."""
    if is_built(root) and not force:
        return root
    dest = root.rstrip(os.sep)
    with temp_dir(osp.dirname(osp.abspath(dest)), f'.{osp.basename(dest)}.tmp-') as tmp:
        built = osp.join(tmp, osp.basename(dest))
        write(built)
        open(osp.join(built, _COMPLETE), 'w').close()
        replace_dir(built, dest)
    return root


def build_demo_data(root: str = DEMO_ROOT, force: bool = False) -> str:
    """Build the demo data set at ``root`` (skipped when already complete, unless ``force``); returns ``root``."""

    def write(tmp: str) -> None:
        _write_split(osp.join(tmp, 'train'), _train_images())
        _write_split(osp.join(tmp, 'val'), _val_images())

    return _build_atomically(root, force, write)


def build_eval_data(root: str = EVAL_ROOT, force: bool = False) -> str:
    """Build the held-out evaluation split (``EVAL_PHOTOS``: HR/ and LR_bicubic/X{2,3,4}/ PNG folders, no LMDB) at
    ``root``, the same way as :func:`build_demo_data` (atomic, idempotent); returns ``root``."""
    return _build_atomically(root, force, lambda tmp: _write_split(tmp, _eval_images(), lmdb=False))
