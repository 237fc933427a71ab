"""Option checks of the data: paths exist; LMDBs are complete; paired sets pair up; image sizes (LMDB
``meta_info.txt`` shapes where listed, or image headers, nothing decoded): HR = LR x ``scale`` for training pairs
(val/test HR may be larger: BasicSR crops it), the training LR patch fits in every LR image, LR inputs reach the
networks' minimum input size. Each rejection is one BasicSR itself would fail on."""
from os import path as osp

from ddsr.checks.networks import SHOWN, min_input_size, resolve
from ddsr.data.demo import DEMO_ROOT
from ddsr.data.lmdb_tools import LmdbError, LmdbReader, read_meta_info
from ddsr.errors import DDSRError


def is_demo_path(value: str, root: str) -> bool:
    """Whether an option path points into the embedded demo data set (built on first use by the CLI)."""
    demo = osp.abspath(osp.join(root, DEMO_ROOT))
    target = osp.abspath(osp.join(root, value))
    return target == demo or target.startswith(demo + osp.sep)


def option_paths(path: str, opt: dict) -> list[tuple[str, str]]:
    """(key, value) of every data path and pretrained checkpoint of ``opt`` (bad values are a DDSRError)."""
    checks = []
    for phase, ds in (opt.get('datasets') or {}).items():
        for key, value in ds.items():
            if str(key).startswith('dataroot') or key == 'meta_info_file':
                if value is not None and (not isinstance(value, str) or not value.strip()):
                    raise DDSRError(f'{path}: datasets.{phase}.{key} must be a path, got {value!r}')
                if value:
                    checks.append((f'datasets.{phase}.{key}', value))
    for key, value in (opt.get('path') or {}).items():
        if str(key).startswith('pretrain_network') and value is not None:
            if not isinstance(value, str) or not value.strip():
                raise DDSRError(f'{path}: path.{key} must be a path, got {value!r}')
            checks.append((f'path.{key}', value))
    return checks


def check_paths(path: str, opt: dict, root: str) -> None:
    """Every data path and ``path.pretrain_network_*`` exists."""
    checks = option_paths(path, opt)
    for key, value in checks:
        if key.startswith('path.') and osp.isdir(resolve(root, value)):
            raise DDSRError(f'{path}: {key}: {value} is a folder, not a checkpoint file')
    missing = [(key, value) for key, value in checks if not osp.exists(resolve(root, value))]
    if missing:
        key, value = missing[0]
        raise DDSRError(f'{path}: {key}: path does not exist: {value}')


def read_lmdb_meta(folder: str, label: str) -> dict[str, tuple[int, int] | None]:
    """``{key: (h, w)}`` of an LMDB's ``meta_info.txt`` (None for a names-only line: size unknown), after checking
    every listed key is stored."""
    meta = osp.join(folder, 'meta_info.txt')
    if not folder.rstrip('/').endswith('.lmdb'):
        raise DDSRError(f'{label}: {folder}: an LMDB folder name must end with .lmdb (BasicSR)')
    for needed in (meta, osp.join(folder, 'data.mdb')):
        if not osp.isfile(needed):
            raise DDSRError(f'{label}: LMDB {folder} has no {osp.basename(needed)}')
    entries = read_meta_info(folder, label)
    shapes = {key: None if shape is None else (shape[0], shape[1]) for key, shape in entries}
    if not entries:
        raise DDSRError(f'{label}: {meta} lists no images')
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


def _folder_sizes(folder: str, label: str) -> dict[str, tuple[int, int] | None]:
    from basicsr.utils import scandir
    names = sorted(scandir(folder))
    if not names:
        raise DDSRError(f'{label}: folder {folder} has no files')
    return {name: image_size(osp.join(folder, name), label) for name in names}


def _dataset_sizes(ds: dict, key: str, label: str, root: str) -> dict[str, tuple[int, int] | None] | None:
    """Image sizes of ``ds[key]`` (LMDB meta or folder headers); None when not a plain LMDB/folder set."""
    folder = resolve(root, ds[key])
    backend = (ds.get('io_backend') or {}).get('type') if isinstance(ds.get('io_backend'), dict) else None
    if backend == 'lmdb':
        return read_lmdb_meta(folder, label)
    if backend == 'disk' and osp.isdir(folder) and not ds.get('meta_info_file'):
        return _folder_sizes(folder, label)
    return None


Sizes = dict[str, tuple[int, int] | None]


def _pairs(gt: Sizes, lq: Sizes, ds: dict, lmdb: bool,
           label: str) -> list[tuple[str, tuple[int, int] | None, tuple[int, int] | None]]:
    """(gt name, gt size, lq size) as BasicSR pairs them (same LMDB keys; folder: filename_tmpl + extension)."""
    pairs = []
    if lmdb:
        diff = sorted(set(gt) ^ set(lq))
        if diff:
            where = 'dataroot_lq' if diff[0] in gt else 'dataroot_gt'
            raise DDSRError(f'{label}: the GT and LQ LMDBs have different keys; {diff[0]} is missing from {where}')
        return [(k, gt[k], lq[k]) for k in gt]
    tmpl = ds.get('filename_tmpl', '{}')
    for name, size in gt.items():
        stem, ext = osp.splitext(name)
        lq_name = f'{tmpl.format(stem)}{ext}'
        if lq_name not in lq:
            raise DDSRError(f'{label}: no LR image {lq_name} in dataroot_lq for {name} (filename_tmpl {tmpl!r})')
        pairs.append((name, size, lq[lq_name]))
    if len(lq) != len(gt):
        raise DDSRError(f'{label}: dataroot_gt has {len(gt)} images, dataroot_lq {len(lq)}')
    return pairs


def check_data(path: str, opt: dict, root: str, phase: str) -> None:
    scale = opt.get('scale', 1)
    nets = [(key, opt[key], min_input_size(opt[key])) for key in opt if str(key).startswith('network_')]
    need = max(nets, key=lambda n: n[2]) if nets else ('', {}, 1)
    for ds_phase, ds in opt['datasets'].items():
        label = f'{path}: datasets.{ds_phase}'
        backend = (ds.get('io_backend') or {}).get('type') if isinstance(ds.get('io_backend'), dict) else None
        sizes = {}
        for key in [k for k in ds if str(k).startswith('dataroot') and ds[k]]:
            got = _dataset_sizes(ds, key, f'{label}.{key}', root)
            if got is not None:
                sizes[key] = got
        training = phase == 'train' and ds_phase == 'train'
        if 'dataroot_lq' in sizes and not training and need[2] > 1:
            for name, (h, w) in _known(sizes['dataroot_lq']):
                if min(h, w) < need[2]:
                    raise DDSRError(f'{label}: LR image {name} is {w}x{h}, smaller than the minimum input of '
                                    f'{need[0]} ({need[1]["type"]} needs >= {need[2]}x{need[2]})')
        if training and ds.get('gt_size') is not None:
            _check_patch(path, opt, ds, scale, need, sizes.get('dataroot_lq'))
        if {'dataroot_gt', 'dataroot_lq'} <= set(sizes) and isinstance(scale, int):
            pairs = _pairs(sizes['dataroot_gt'], sizes['dataroot_lq'], ds, backend == 'lmdb', label)
            _check_scale(label, pairs, scale, training, bool((opt.get('val') or {}).get('metrics')))


def _known(sizes: Sizes) -> list[tuple[str, tuple[int, int]]]:
    """(name, (h, w)) of the images whose size is known."""
    return [(name, size) for name, size in sizes.items() if size is not None]


def _check_scale(label: str, pairs: list, scale: int, training: bool, metrics: bool) -> None:
    """HR = LR x scale where BasicSR needs it. Training pairs must match exactly (``paired_random_crop`` raises
    "Scale mismatches" otherwise). Val/test pairs: BasicSR's paired datasets crop the HR to LR x scale (on purpose,
    for benchmark sets), so a larger HR is fine (one note); a smaller one fails BasicSR's metrics (different
    shapes), so it is an error only when metrics are computed."""
    cropped = []
    for name, gt_size, lq_size in pairs:
        if gt_size is None or lq_size is None:  # names-only LMDB meta_info: size unknown
            continue
        (hg, wg), (hl, wl) = gt_size, lq_size
        if (hg, wg) == (hl * scale, wl * scale):
            continue
        if not training and hg >= hl * scale and wg >= wl * scale:
            cropped.append(name)
            continue
        if not training and not metrics:
            continue
        ratio = f'{hg / hl:.3g}' if hl else '?'
        need = 'exactly' if training else 'at least'
        raise DDSRError(f'{label}: scale mismatch: {name} is HR {wg}x{hg} but LR {wl}x{hl} (ratio x{ratio}); scale '
                        f'is {scale}: HR must be {need} LR x {scale}')
    if cropped:
        print(f'note: {label}: {len(cropped)} HR image(s) not an exact multiple of LR x {scale} (first: '
              f'{cropped[0]}); BasicSR crops them to LR x {scale}', flush=True)


def _check_patch(path: str, opt: dict, ds: dict, scale: int, need: tuple, lq_sizes) -> None:
    gt_size = ds['gt_size']
    label = f'{path}: datasets.train'
    if not isinstance(gt_size, int) or gt_size < 1:
        raise DDSRError(f'{label}.gt_size must be a positive integer, got {gt_size!r}')
    if gt_size % scale:
        raise DDSRError(f'{label}.gt_size {gt_size} is not divisible by scale {scale}')
    prog = (opt.get('train') or {}).get('progressive') or {}
    smallest = min([gt_size] + [s for s in (prog.get('gt_size') or []) if isinstance(s, int)])
    if smallest // scale < need[2]:
        what = 'gt_size' if smallest == gt_size else 'train.progressive.gt_size'
        raise DDSRError(f'{label}: {what} {smallest} / scale {scale} gives {smallest // scale}x{smallest // scale} LR '
                        f'patches, smaller than the minimum input of {need[0]} ({need[1]["type"]} needs >= '
                        f'{need[2]}x{need[2]})')
    for name, (h, w) in _known(lq_sizes or {}):
        if min(h, w) < gt_size // scale:
            raise DDSRError(f'{label}: LR image {name} is {w}x{h}, smaller than the LR patch {gt_size // scale}x'
                            f'{gt_size // scale} (gt_size {gt_size} / scale {scale}): remove it or lower gt_size')

