"""Image-set preparation in BasicSR's conventions: modcrop, sub-image extraction, MATLAB-bicubic LR, LMDB.

LMDBs are written with ``basicsr.utils.lmdb_util.make_lmdb_from_imgs`` so BasicSR's ``io_backend: lmdb``
reads them (``data.mdb``, ``lock.mdb``, ``meta_info.txt``; keys are file stems without extension).
:class:`LmdbReader` is ddsr's one reader of an LMDB's entries (and this module the only one that opens LMDBs,
``tests/test_layout.py``); :func:`read_meta_info` its one parser of ``meta_info.txt``.
:func:`make_lmdbs` (``ddsr make-lmdb``) writes its own LMDBs in the same layout from images in memory (HR modcropped,
LR generated or read, optionally cut into sub-images), verifies them and renames them into place.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from os import path as osp
from typing import Any

import cv2
import lmdb
import numpy as np

from ddsr.data.image_io import IMAGE_EXTS, list_images, read_image
from ddsr.errors import DDSRError
from ddsr.fileio import replace_dir, temp_dir
from ddsr.progress import track


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of ``scale`` (top-left anchored, as BasicSR/MATLAB do)."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale, ...]


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """uint8 LR image = round(MATLAB-bicubic ``imresize(hr / 255, 1 / scale)`` * 255); ``hr`` must be modcropped."""
    from basicsr.utils.matlab_functions import imresize  # basicsr: only when used (ddsr.registration)
    lr = imresize(hr.astype(np.float64) / 255., 1 / scale)
    return np.clip(np.round(lr * 255.), 0, 255).astype(np.uint8)


def subimage_grid(h: int, w: int, crop_size: int, step: int, thresh_size: int = 0) -> Iterator[tuple[int, int]]:
    """Top-left corners of BasicSR's ``extract_subimages`` grid (the last row/column is kept if it leaves
    more than ``thresh_size`` pixels uncovered)."""
    h_space = list(range(0, h - crop_size + 1, step))
    if h - (h_space[-1] + crop_size) > thresh_size:
        h_space.append(h - crop_size)
    w_space = list(range(0, w - crop_size + 1, step))
    if w - (w_space[-1] + crop_size) > thresh_size:
        w_space.append(w - crop_size)
    for y in h_space:
        for x in w_space:
            yield y, x


def folder_to_lmdb(folder: str, lmdb_path: str, names: Sequence[str] | None = None) -> list[str]:
    """Pack the images of ``folder`` (all, or ``names``) into an LMDB at ``lmdb_path``; returns the keys."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs  # basicsr: only when used (ddsr.registration)
    names = list(names) if names is not None else list_images(folder)
    keys = [osp.splitext(name)[0] for name in names]
    make_lmdb_from_imgs(folder, lmdb_path, names, keys, batch=5000, compress_level=1, multiprocessing_read=False)
    return keys


def lmdb_key(name: str) -> str:
    """LMDB key of an image file name: the stem with dots replaced (BasicSR splits meta_info names at '.')."""
    return osp.splitext(name)[0].replace('.', '_')


def write_lmdb(lmdb_path: str, items: Iterable[tuple[str, np.ndarray]], compress_level: int = 1,
               commit_every: int = 500) -> list[tuple[str, tuple[int, ...]]]:
    """Write (key, BGR image) pairs as PNG bytes into a new LMDB in BasicSR's layout (``data.mdb``, ``lock.mdb``,
    ``meta_info.txt`` with ``<key>.png (h,w,c) <level>`` lines); the map grows as needed. Returns (key, shape)."""
    os.makedirs(lmdb_path)
    env = lmdb.open(lmdb_path, map_size=1 << 28)
    written: list[tuple[str, tuple[int, ...]]] = []
    pending: list[tuple[bytes, bytes]] = []

    def commit() -> None:
        while True:
            try:
                with env.begin(write=True) as txn:
                    for key_bytes, value in pending:
                        txn.put(key_bytes, value)
                break
            except lmdb.MapFullError:
                env.set_mapsize(env.info()['map_size'] * 2)
        pending.clear()

    try:
        for key, img in items:
            ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
            if not ok:
                raise OSError(f'could not encode {key}')
            pending.append((key.encode('ascii'), buf.tobytes()))
            written.append((key, img.shape))
            if len(pending) >= commit_every:
                commit()
        commit()
    finally:
        env.close()
    with open(osp.join(lmdb_path, 'meta_info.txt'), 'w') as f:
        for key, shape in written:
            shape_str = ','.join(map(str, shape if len(shape) == 3 else (*shape, 1)))
            f.write(f'{key}.png ({shape_str}) {compress_level}\n')
    return written


def _shape(token: str) -> tuple[int, ...] | None:
    dims = token.strip('()').split(',')
    return tuple(int(d) for d in dims) if len(dims) >= 2 and all(d.strip().isdigit() for d in dims) else None


def read_meta_info(lmdb_path: str, label: str = 'LMDB') -> list[tuple[str, tuple[int, ...] | None]]:
    """(key, shape) of every line of an LMDB's ``meta_info.txt``, the one parser of that file in ddsr.

    The key is the name before its first '.', as BasicSR's LMDB datasets read it (``<key>.png (h,w,c) <level>``);
    BasicSR reads only the name, so a names-only line is valid: its shape is None (size checks then skip it)."""
    path = osp.join(lmdb_path, 'meta_info.txt')
    if not osp.isfile(path):
        raise DDSRError(f'{label}: LMDB {lmdb_path} has no meta_info.txt')
    try:
        with open(path, encoding='utf-8') as f:
            lines = [line.split() for line in f if line.strip()]
    except UnicodeDecodeError:
        raise DDSRError(f'{label}: {path} is not a text file') from None
    return [(parts[0].split('.')[0], _shape(parts[1]) if len(parts) > 1 else None) for parts in lines]


class LmdbError(OSError):
    """An LMDB that cannot be opened or read (the message is lmdb's)."""


class LmdbReader:
    """Read-only access to the entries of an LMDB folder, opened as BasicSR's LMDB backend opens it (no lock, no
    readahead), so reading never writes next to the data. ``get(key)`` returns the stored bytes or None; ``len`` is
    the number of entries. A context manager; lmdb's errors are raised as :class:`LmdbError`."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
        except lmdb.Error as err:
            raise LmdbError(str(err)) from None

    def get(self, key: str) -> bytes | None:
        try:
            with self.env.begin(write=False) as txn:
                return txn.get(key.encode('ascii', 'replace'))
        except lmdb.Error as err:
            raise LmdbError(str(err)) from None

    def __len__(self) -> int:
        return int(self.env.stat()['entries'])

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> LmdbReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_lmdb_images(lmdb_path: str) -> Iterator[tuple[str, np.ndarray]]:
    """(key, BGR uint8 image) of every entry in ``meta_info.txt`` order, read through BasicSR's LMDB backend."""
    from basicsr.utils import FileClient, imfrombytes  # basicsr: only when used (ddsr.registration)
    client = FileClient('lmdb', db_paths=[lmdb_path])
    for key, _ in read_meta_info(lmdb_path):
        value = client.get(key)
        if value is None:
            raise KeyError(f'{lmdb_path}: key {key} listed in meta_info.txt is missing')
        yield key, imfrombytes(value, float32=False)


# ---- ``ddsr make-lmdb``: folders of HR (and optionally LR) images -> HR.lmdb + LR_bicubic_X{s}.lmdb ----

TEST_SET_PRESETS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109', 'DIV2K-valid')
# BasicSR's scripts/data_preparation/extract_subimages.py settings for DIV2K (HR 480/240/0; LR divided by scale).
PRESETS: dict[str, dict] = {
    **{name: dict(scales=(2, 3, 4), crop_size=None) for name in TEST_SET_PRESETS},
    'DIV2K-train': dict(scales=(2, 3, 4), crop_size=480, step=240, thresh_size=0),
}


def lmdb_targets(out: str, scales: Sequence[int]) -> dict[str | int, str]:
    """Output paths: ``{'HR': <out>/HR.lmdb, s: <out>/LR_bicubic_X<s>.lmdb}``."""
    return {'HR': osp.join(out, 'HR.lmdb'), **{s: osp.join(out, f'LR_bicubic_X{s}.lmdb') for s in scales}}


def _find_lr(folder: str, stem: str) -> str:
    for ext in IMAGE_EXTS:
        for name in (stem + ext, stem + ext.upper()):
            if osp.isfile(osp.join(folder, name)):
                return osp.join(folder, name)
    raise DDSRError(f'no LR image for {stem} in {folder}')


def _check_args(hr: str, scales: Sequence[int], lr_dirs: dict[int, str], crop_size: int | None, step: int,
                thresh_size: int) -> None:
    if not osp.isdir(hr):
        raise DDSRError(f'HR folder not found: {hr}')
    for scale, folder in lr_dirs.items():
        if scale not in scales:
            raise DDSRError(f'LR folder for x{scale} given ({folder}) but x{scale} is not in the scales {list(scales)}')
        if not osp.isdir(folder):
            raise DDSRError(f'LR folder for x{scale} not found: {folder}')
    if crop_size is not None:
        for value, what in ((crop_size, 'crop size'), (step, 'step'), (thresh_size, 'thresh size')):
            bad = [s for s in scales if value % s]
            if bad:
                raise DDSRError(f'{what} {value} is not divisible by scale(s) {bad}')


def _pair_items(hr_dir: str, names: Sequence[str], scale: int | None, lr_dir: str | None, mod: int,
                crop_size: int | None, step: int | None, thresh_size: int) -> Iterator[tuple[str, np.ndarray]]:
    """(key, image) of the HR set (``scale`` None) or of its x``scale`` LR, whole or as sub-images."""
    for name in names:
        key = lmdb_key(name)
        hr = modcrop(read_image(osp.join(hr_dir, name)), mod)
        img, factor = hr, 1
        if scale is not None:
            factor = scale
            img = read_image(_find_lr(lr_dir, osp.splitext(name)[0])) if lr_dir else bicubic_lr(hr, scale)
            if img.shape[0] * scale != hr.shape[0] or img.shape[1] * scale != hr.shape[1]:
                raise DDSRError(f'{name}: LR x{scale} is {img.shape[1]}x{img.shape[0]}, HR (modcrop {mod}) is '
                                f'{hr.shape[1]}x{hr.shape[0]}; use --modcrop to match')
        if crop_size is None:
            yield key, img
            continue
        if min(hr.shape[:2]) < crop_size:
            raise DDSRError(f'{name}: {hr.shape[1]}x{hr.shape[0]} is smaller than the crop size {crop_size}')
        grid = subimage_grid(hr.shape[0], hr.shape[1], crop_size, step or crop_size // 2, thresh_size)
        for idx, (y, x) in enumerate(grid, 1):
            y, x, size = y // factor, x // factor, crop_size // factor
            yield f'{key}_s{idx:03d}', np.ascontiguousarray(img[y:y + size, x:x + size])


def verify_lmdbs(paths: dict[str | int, str]) -> list[dict]:
    """Read every LMDB back through BasicSR's LMDB backend; check counts, shapes against meta_info.txt, equal
    key sets, and LR shape x scale = HR shape. Returns one summary dict per LMDB."""
    shapes: dict[str | int, dict[str, tuple[int, ...]]] = {}
    summary = []
    for which, path in paths.items():
        meta = dict(read_meta_info(path))
        with LmdbReader(path) as reader:
            entries = len(reader)
        if entries != len(meta):
            raise DDSRError(f'{path}: {entries} entries but {len(meta)} lines in meta_info.txt')
        got = {}
        for key, img in read_lmdb_images(path):
            if meta[key] is not None and img.shape != meta[key]:
                raise DDSRError(f'{path}: {key} decodes to {img.shape}, meta_info.txt says {meta[key]}')
            got[key] = img.shape
        shapes[which] = got
        sizes = sorted({s[:2] for s in got.values()})
        summary.append(dict(path=path, images=len(got), min_hw=sizes[0], max_hw=sizes[-1],
                            mbytes=osp.getsize(osp.join(path, 'data.mdb')) / 2**20))
    hr = shapes.get('HR', {})
    for which, got in shapes.items():
        if which == 'HR':
            continue
        if set(got) != set(hr):
            raise DDSRError(f'{paths[which]}: keys differ from {paths["HR"]}')
        bad = [k for k, s in got.items() if (s[0] * which, s[1] * which) != hr[k][:2]]
        if bad:
            raise DDSRError(f'{paths[which]}: {bad[0]} is not HR / {which}')
    return summary


def make_lmdbs(hr: str, out: str, scales: Sequence[int] = (2, 3, 4), lr_dirs: dict[int, str] | None = None,
               crop_size: int | None = None, step: int | None = None, thresh_size: int = 0,
               mod: int | None = None, overwrite: bool = False, compress_level: int = 1,
               progress: bool = True) -> list[dict]:
    """Build ``<out>/HR.lmdb`` and ``<out>/LR_bicubic_X<s>.lmdb`` from the HR folder ``hr``.

    HR images are modcropped to ``mod`` (default: lcm of the scales, so one HR set serves every scale); LR is read
    from ``lr_dirs[s]`` (same file stems) or generated with BasicSR's MATLAB-bicubic ``imresize``. With
    ``crop_size``, images are split into sub-images on BasicSR's extract_subimages grid (``crop_size``, ``step``,
    ``thresh_size`` for HR, each divided by s for LR; keys ``<stem>_s001``...), else stored whole (test sets).
    Everything is built in a temporary folder inside ``out``, verified (:func:`verify_lmdbs`) and only then renamed
    into place. Existing outputs are an error unless ``overwrite``. Returns the verification summary.
    """
    lr_dirs = dict(lr_dirs or {})
    scales = sorted({int(s) for s in scales})
    step = crop_size // 2 if crop_size is not None and step is None else step
    _check_args(hr, scales, lr_dirs, crop_size, step or 0, thresh_size)
    names = list_images(hr)
    if not names:
        raise DDSRError(f'no images in HR folder {hr}')
    keys = [lmdb_key(n) for n in names]
    if len(set(keys)) != len(keys):
        raise DDSRError(f'{hr}: file names collide as LMDB keys (dots become "_")')
    targets = lmdb_targets(out, scales)
    existing = [p for p in targets.values() if osp.exists(p)]
    if existing and not overwrite:
        raise DDSRError(f'{existing[0]} already exists (pass --overwrite to replace it)')
    mod = int(np.lcm.reduce(scales)) if mod is None else mod
    with temp_dir(out, '.make-lmdb-') as tmp:
        tmp_paths = {which: osp.join(tmp, osp.basename(path)) for which, path in targets.items()}
        for which, path in tmp_paths.items():
            scale = None if which == 'HR' else int(which)
            lr_dir = lr_dirs.get(scale) if scale is not None else None
            items = _pair_items(hr, names, scale, lr_dir, mod, crop_size, step, thresh_size)
            total = len(names) if crop_size is None else None
            unit = 'img' if crop_size is None else 'sub-image'
            write_lmdb(path, track(items, total, osp.basename(path), unit, every=15.0, disable=not progress),
                       compress_level)
        if progress:
            print(f'verifying {len(tmp_paths)} LMDBs (reading every image back)', file=sys.stderr, flush=True)
        summary = verify_lmdbs(tmp_paths)
        for which, path in targets.items():
            replace_dir(tmp_paths[which], path)
        for row, path in zip(summary, targets.values(), strict=False):
            row['path'] = path
        return summary
