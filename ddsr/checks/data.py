"""Option checks of the data, on the files each data set's class reads (:mod:`ddsr.checks.dataset_files`; types it
does not know are not checked for files): paths exist; LMDBs are complete; paired sets pair up; image sizes (LMDB
``meta_info.txt`` shapes where listed, or image headers, nothing decoded): HR = LR x ``scale`` for training pairs
(val/test HR may be larger: BasicSR crops it), the training LR patch fits in every LR image, LR inputs reach the
networks' minimum input size. Each rejection is one BasicSR itself would fail on."""
from os import path as osp

from ddsr.checks.dataset_files import Sizes, listing, path_keys
from ddsr.checks.networks import min_input_size, resolve
from ddsr.data.demo import DEMO_ROOT
from ddsr.errors import DDSRError


def is_demo_path(value: str, root: str) -> bool:
    """Whether an option path points into the embedded demo data set (built on first use by the CLI)."""
    demo = osp.abspath(osp.join(root, DEMO_ROOT))
    target = osp.abspath(osp.join(root, value))
    return target == demo or target.startswith(demo + osp.sep)


def option_paths(path: str, opt: dict) -> list[tuple[str, str]]:
    """(key, value) of every data path the data sets' classes read (:func:`dataset_files.path_keys`) and every
    pretrained checkpoint of ``opt`` (bad values are a DDSRError)."""
    checks = []
    for phase, ds in (opt.get('datasets') or {}).items():
        for key in path_keys(ds):
            value = ds[key]
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


def check_data(path: str, opt: dict, root: str, phase: str) -> None:
    """Sizes and pairs of the files each data set's class reads (:mod:`ddsr.checks.dataset_files`; a type it does
    not know is skipped). An empty list is refused where BasicSR fails on it: the training set (no iterations per
    epoch) or a set validated with metrics (BasicSR divides by the image count)."""
    scale = opt.get('scale', 1)
    nets = [(key, opt[key], min_input_size(opt[key])) for key in opt if str(key).startswith('network_')]
    need = max(nets, key=lambda n: n[2]) if nets else ('', {}, 1)
    metrics = bool((opt.get('val') or {}).get('metrics'))
    for ds_phase, ds in opt['datasets'].items():
        label = f'{path}: datasets.{ds_phase}'
        files = listing(ds, root, label)
        if files is None:
            continue
        training = phase == 'train' and ds_phase == 'train'
        empty = [key for key, sizes in files.sizes.items() if not sizes]
        if empty and (training or metrics):
            raise DDSRError(f'{label}.{empty[0]}: {ds[empty[0]]} has no files (as {ds.get("type")} reads it)')
        lq = files.sizes.get('dataroot_lq')
        if lq is not None and not training and need[2] > 1:
            for name, (h, w) in _known(lq):
                if min(h, w) < need[2]:
                    raise DDSRError(f'{label}: LR image {name} is {w}x{h}, smaller than the minimum input of '
                                    f'{need[0]} ({need[1]["type"]} needs >= {need[2]}x{need[2]})')
        if training and ds.get('gt_size') is not None:
            _check_patch(path, opt, ds, scale, need, lq)
        if files.pairs is not None and isinstance(scale, int):
            gt = files.sizes['dataroot_gt']
            pairs = [(g, gt[g], lq[q]) for g, q in files.pairs] if lq is not None else []
            _check_scale(label, pairs, scale, training, metrics)


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

