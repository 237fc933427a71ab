"""The image files a data set will read, listed the way the dataset class named by ``type`` lists them.

A check may refuse a data set only where BasicSR itself would fail, so it must read the same files BasicSR's
class reads (basicsr 1.4.2, ``basicsr/data/*_dataset.py``):

- ``PairedImageDataset`` (and ddsr's ``EnhancedPairedImageDataset``): LMDB pairs by key; on disk
  ``meta_info_file`` lists GT names (sub-folders allowed), the LQ name is ``filename_tmpl`` + extension in the LQ
  folder; otherwise both folders are scanned, not recursively, and paired by ``filename_tmpl``;
- ``SingleImageDataset``: ``dataroot_lq`` only (LMDB, ``meta_info_file`` names, or the folder);
- ``RealESRGANDataset``: ``dataroot_gt`` only; LMDB, or on disk the ``meta_info`` file (not ``meta_info_file``)
  lists paths relative to the GT folder, usually in sub-folders; images of any size (the class pads/crops);
- ``RealESRGANPairedDataset``: LMDB pairs; on disk ``meta_info`` lines ``gt_path, lq_path``; otherwise folders.

Any other type (video sets, FFHQ, third-party classes) is not listed: its files are not checked.
"""
from collections.abc import Callable
from dataclasses import dataclass
from os import path as osp

from ddsr.checks.networks import SHOWN, resolve
from ddsr.errors import DDSRError

Size = tuple[int, int] | None  # (h, w); None: unknown (names-only LMDB meta_info line, or not needed)
Sizes = dict[str, Size]


@dataclass(frozen=True)
class Listing:
    """What a data set reads: ``{name: size}`` per root it uses (``dataroot_gt``/``dataroot_lq``) and, for paired
    classes, the (gt name, lq name) pairs in the class's order."""
    sizes: dict[str, Sizes]
    pairs: list[tuple[str, str]] | None


def _backend(ds: dict) -> str | None:
    io = ds.get('io_backend')
    return io.get('type') if isinstance(io, dict) else None


def read_lmdb_meta(folder: str, label: str) -> Sizes:
    """``{key: (h, w)}`` of an LMDB's ``meta_info.txt`` (None for a names-only line: size unknown), after checking
    every listed key is stored."""
    from ddsr.data.lmdb_tools import LmdbError, LmdbReader, read_meta_info
    meta = osp.join(folder, 'meta_info.txt')
    if not folder.rstrip('/').endswith('.lmdb'):
        raise DDSRError(f'{label}: {folder}: an LMDB folder name must end with .lmdb (BasicSR)')
    for needed in (meta, osp.join(folder, 'data.mdb')):
        if not osp.isfile(needed):
            raise DDSRError(f'{label}: LMDB {folder} has no {osp.basename(needed)}')
    entries = read_meta_info(folder, label)
    shapes = {key: None if shape is None else (shape[0], shape[1]) for key, shape in entries}
    try:
        with LmdbReader(folder) as reader:
            absent = [key for key, _ in entries if reader.get(key) is None]
    except LmdbError as err:
        raise DDSRError(f'{label}: LMDB {folder} cannot be opened: {err}') from None
    if absent:
        raise DDSRError(f'{label}: LMDB {folder}: {len(absent)} key(s) listed in meta_info.txt are not stored, '
                        f'first: {", ".join(absent[:SHOWN])}')
    return shapes


def image_size(file: str, label: str) -> tuple[int, int]:
    """(h, w) from the image header (nothing decoded)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(file) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DDSRError(f'{label}: {file} is not a readable image ({err})') from None
    return h, w


def _files(folder: str, names: list[str], label: str, sized: bool = True) -> Sizes:
    """``{name: size}`` of ``names`` under ``folder``; a missing file is an error (BasicSR fails reading it)."""
    missing = [n for n in names if not osp.isfile(osp.join(folder, n))]
    if missing:
        raise DDSRError(f'{label}: {len(missing)} listed image(s) missing under {folder}, first: '
                        f'{", ".join(missing[:SHOWN])}')
    return {n: image_size(osp.join(folder, n), label) if sized else None for n in names}


def _folder(folder: str, label: str) -> Sizes:
    """Every file directly in ``folder`` (BasicSR's ``scandir``, not recursive), sorted."""
    from basicsr.utils import scandir
    return _files(folder, sorted(scandir(folder)), label)


def _meta_names(meta: str, label: str, sep: str | None = ' ') -> list[list[str]]:
    """The lines of a meta info file split as BasicSR splits them (``line.strip().split(sep)``)."""
    try:
        with open(meta, encoding='utf-8') as f:
            return [line.strip().split(sep) for line in f]
    except (OSError, UnicodeDecodeError) as err:
        raise DDSRError(f'{label}: meta info file {meta} cannot be read ({err})') from None


def _lq_name(gt_name: str, tmpl: str) -> str:
    stem, ext = osp.splitext(osp.basename(gt_name))
    return f'{tmpl.format(stem)}{ext}'


def _paired(ds: dict, root: str, label: str, meta_key: str) -> Listing:
    gt, lq = resolve(root, ds['dataroot_gt']), resolve(root, ds['dataroot_lq'])
    tmpl = ds.get('filename_tmpl', '{}')
    if _backend(ds) == 'lmdb':
        sizes = {'dataroot_gt': read_lmdb_meta(gt, f'{label}.dataroot_gt'),
                 'dataroot_lq': read_lmdb_meta(lq, f'{label}.dataroot_lq')}
        diff = sorted(set(sizes['dataroot_gt']) ^ set(sizes['dataroot_lq']))
        if diff:
            where = 'dataroot_lq' if diff[0] in sizes['dataroot_gt'] else 'dataroot_gt'
            raise DDSRError(f'{label}: the GT and LQ LMDBs have different keys; {diff[0]} is missing from {where}')
        return Listing(sizes, [(k, k) for k in sizes['dataroot_gt']])
    meta = ds.get(meta_key)
    if meta is not None:
        meta = resolve(root, meta)
        if meta_key == 'meta_info':  # RealESRGANPairedDataset: "gt_path, lq_path" per line
            pairs = [(parts[0], parts[1]) for parts in _meta_names(meta, label, ', ') if len(parts) > 1]
        else:
            pairs = [(parts[0], _lq_name(parts[0], tmpl)) for parts in _meta_names(meta, label)]
        return Listing({'dataroot_gt': _files(gt, [g for g, _ in pairs], f'{label}.dataroot_gt'),
                        'dataroot_lq': _files(lq, [q for _, q in pairs], f'{label}.dataroot_lq')}, pairs)
    sizes = {'dataroot_gt': _folder(gt, f'{label}.dataroot_gt'), 'dataroot_lq': _folder(lq, f'{label}.dataroot_lq')}
    pairs = []
    for name in sizes['dataroot_gt']:  # BasicSR's paired_paths_from_folder
        lq_name = _lq_name(name, tmpl)
        if lq_name not in sizes['dataroot_lq']:
            raise DDSRError(f'{label}: no LR image {lq_name} in dataroot_lq for {name} (filename_tmpl {tmpl!r})')
        pairs.append((name, lq_name))
    if len(sizes['dataroot_lq']) != len(sizes['dataroot_gt']):
        raise DDSRError(f'{label}: dataroot_gt has {len(sizes["dataroot_gt"])} images, dataroot_lq '
                        f'{len(sizes["dataroot_lq"])}')
    return Listing(sizes, pairs)


def _one_root(ds: dict, root: str, label: str, key: str, meta_key: str) -> Listing:
    """A set read from one root: SingleImageDataset (``dataroot_lq``; LMDB, ``meta_info_file`` names or the folder)
    or RealESRGANDataset (``dataroot_gt``; LMDB or the ``meta_info`` list, which it requires on disk; images of any
    size, as the class pads/crops them)."""
    folder, where = resolve(root, ds[key]), f'{label}.{key}'
    if _backend(ds) == 'lmdb':
        return Listing({key: read_lmdb_meta(folder, where)}, None)
    realesrgan = meta_key == 'meta_info'
    if ds.get(meta_key) is not None:
        names = [parts[0] for parts in _meta_names(resolve(root, ds[meta_key]), label)]
        return Listing({key: _files(folder, names, where, sized=not realesrgan)}, None)
    if realesrgan:
        raise DDSRError(f'{label}: RealESRGANDataset reads its image list from meta_info (a text file of paths '
                        'relative to dataroot_gt); meta_info is not set')
    return Listing({key: _folder(folder, where)}, None)


READERS: dict[str, tuple[tuple[str, ...], Callable[[dict, str, str], Listing]]] = {
    # type: (the option keys it reads files from, its lister)
    'PairedImageDataset': (('dataroot_gt', 'dataroot_lq', 'meta_info_file'),
                           lambda ds, root, label: _paired(ds, root, label, 'meta_info_file')),
    'EnhancedPairedImageDataset': (('dataroot_gt', 'dataroot_lq', 'dataroot_enhanced', 'meta_info_file'),
                                   lambda ds, root, label: _paired(ds, root, label, 'meta_info_file')),
    'RealESRGANPairedDataset': (('dataroot_gt', 'dataroot_lq', 'meta_info'),
                                lambda ds, root, label: _paired(ds, root, label, 'meta_info')),
    'SingleImageDataset': (('dataroot_lq', 'meta_info_file'),
                           lambda ds, root, label: _one_root(ds, root, label, 'dataroot_lq', 'meta_info_file')),
    'RealESRGANDataset': (('dataroot_gt', 'meta_info'),
                          lambda ds, root, label: _one_root(ds, root, label, 'dataroot_gt', 'meta_info')),
}


def path_keys(ds: dict) -> list[str]:
    """The option keys of ``ds`` naming files or folders its class reads: the known classes' own keys (where set);
    for any other type every ``dataroot*`` key and ``meta_info_file``."""
    known = READERS.get(ds.get('type'))  # type: ignore[arg-type]
    if known is not None:
        return [k for k in known[0] if k in ds]
    return [k for k in ds if str(k).startswith('dataroot') or k == 'meta_info_file']


def listing(ds: dict, root: str, label: str) -> Listing | None:
    """The files ``ds`` reads, with their sizes, or None for a type whose files are not checked."""
    known = READERS.get(ds.get('type'))  # type: ignore[arg-type]
    return None if known is None else known[1](ds, root, label)
