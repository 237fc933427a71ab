"""Checks of an option file before BasicSR runs it, so bad input is one clear line (exit 2), not a traceback.

Everything here costs a few file reads (no image is decoded, no network is run):

- the file exists and parses; the keys BasicSR needs are there; every ``type:`` (model, arch, dataset, loss,
  metric, scheduler, optimizer) is registered (unknown ones list close names);
- every data path and pretrained checkpoint exists (data under ``datasets/demo`` is built on first use);
- every ``network_*`` builds from its kwargs, and every ``path.pretrain_network_*`` fits it: the checkpoint's
  ``param_key_*`` entry is compared with the network's state_dict (key set and shapes with ``strict_load_*``
  true; at least one matching tensor otherwise), naming the first mismatching keys and shapes;
- LMDBs have ``data.mdb`` and ``meta_info.txt`` and every key listed is stored; paired sets have the same keys
  (LMDB) or a LR file for every HR file (folders);
- image sizes (LMDB ``meta_info.txt`` shapes, or image headers): HR = LR x ``scale`` for paired sets; the
  training LR patch (``gt_size`` / scale) fits in every LR image; LR inputs reach a network's minimum input size
  (:data:`MIN_INPUT`, e.g. ESA nets need >= 15 px); the networks' ``upscale`` equals ``scale``;
- a training run would not silently archive an experiment that has training states.

Problems only visible when data is decoded (a truncated PNG) surface at the point of use: ddsr.compat wraps
BasicSR's datasets so that a sample that cannot be loaded is a :class:`DDSRError` naming its files.
"""
import argparse
import copy
import inspect
import os
from os import path as osp

import torch
import yaml
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from ddsr.compress.compact import checkpoint_arch
from ddsr.data.demo import DEMO_ROOT, build_demo_data
from ddsr.errors import DDSRError, UnknownTypeError
from ddsr.models.prune_model import SELF_DESCRIBING

REQUIRED = {'train': ('name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path', 'train', 'logger'),
            'test': ('name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path', 'val')}
MAPPINGS = ('datasets', 'path', 'train', 'logger', 'val')
NOT_LOSSES = ('scheduler', )
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')  # BaseModel.setup_schedulers
OPTIMIZERS = ('Adam', )  # BaseModel.get_optimizer of basicsr 1.4.2
# Smallest LR input side per arch (ESA: stride-2 conv 3x3 + max-pool 7/3 needs >= 15 px). An arch class may
# declare its own with a ``min_input_size`` attribute.
MIN_INPUT = {'DDistillSR': 15, 'DIPNet': 15, 'RFDN': 15, 'RLFN': 15}
SHOWN = 3  # mismatching keys named per kind
# Keys a dataset type reads unconditionally (and, for training sets, the ones it reads in training).
DATASET_KEYS = {'PairedImageDataset': ('dataroot_gt', 'dataroot_lq', 'io_backend'),
                'EnhancedPairedImageDataset': ('dataroot_gt', 'dataroot_lq', 'dataroot_enhanced', 'io_backend'),
                'SingleImageDataset': ('dataroot_lq', 'io_backend')}
TRAIN_DATASET_KEYS = {'PairedImageDataset': ('gt_size', 'use_hflip', 'use_rot'),
                      'EnhancedPairedImageDataset': ('gt_size', 'use_hflip', 'use_rot')}
ARCHIVE_FLAG = '--archive'  # ddsr's own flag, removed before BasicSR parses the arguments


def option_path(args: list[str]) -> str:
    """The ``-opt`` value of a BasicSR command line (argparse's own error if missing)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', required=True)
    known, _ = parser.parse_known_args(args)
    return known.opt


def load_options(path: str) -> dict:
    """Parse an option YAML; a missing, unreadable or malformed file is a :class:`DDSRError`."""
    if not osp.isfile(path):
        raise DDSRError(f'option file not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
        opt = yaml.load(text, Loader=ordered_yaml()[0])
        yaml.safe_load(text)  # ddsr's tools read option files with the pure-Python safe loader: both must agree
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' (line {mark.line + 1}, column {mark.column + 1})' if mark else ''
        raise DDSRError(f'malformed option file {path}{where}: {getattr(err, "problem", err)}') from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DDSRError(f'cannot read option file {path}: {err}') from None
    if not isinstance(opt, dict):
        raise DDSRError(f'malformed option file {path}: top level must be a mapping of keys')
    return opt


def _get_type(path: str, key: str, section, registry):
    if not isinstance(section, dict) or 'type' not in section:
        raise DDSRError(f'{path}: {key}: missing "type:"')
    try:
        return registry.get(section['type'])
    except UnknownTypeError as err:
        raise UnknownTypeError(f'{path}: {key}.type: {err}') from None
    except TypeError:  # an unhashable type value (list, mapping)
        raise DDSRError(f'{path}: {key}.type must be a name, got {section["type"]!r}') from None


def _typed_sections(opt: dict) -> list[tuple[str, dict, object]]:
    sections = [(key, opt[key], ARCH_REGISTRY) for key in opt if str(key).startswith('network_')]
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        return sections + [('datasets', datasets, DATASET_REGISTRY)]
    sections += [(f'datasets.{phase}', ds, DATASET_REGISTRY) for phase, ds in datasets.items()]
    for key, value in (opt.get('train') or {}).items():
        if str(key).endswith('_opt') and isinstance(value, dict) and key not in NOT_LOSSES:
            sections.append((f'train.{key}', value, LOSS_REGISTRY))
    metrics = (opt.get('val') or {}).get('metrics') or {}
    if isinstance(metrics, dict):
        sections += [(f'val.metrics.{name}', metric, METRIC_REGISTRY) for name, metric in metrics.items()]
    return sections


def _check_structure(path: str, opt: dict, phase: str) -> None:
    """Required keys, mappings where BasicSR expects mappings, scheduler and optimizer types."""
    absent = [key for key in REQUIRED[phase] if key not in opt]
    if absent:
        raise DDSRError(f'{path}: missing required key(s): {", ".join(absent)}')
    for key in MAPPINGS:
        if key in opt and opt[key] is not None and not isinstance(opt[key], dict):
            raise DDSRError(f'{path}: {key} must be a mapping of keys, got {type(opt[key]).__name__}')
        if key in REQUIRED[phase] and not isinstance(opt[key], dict):
            raise DDSRError(f'{path}: {key} must be a mapping of keys, got {opt[key]!r}')
    if not isinstance(opt['name'], str) or not opt['name'].strip() or '/' in opt['name'] or opt['name'] in ('.', '..'):
        raise DDSRError(f'{path}: name must be a folder name (no "/"), got {opt["name"]!r}')
    seed = opt.get('manual_seed')
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise DDSRError(f'{path}: manual_seed must be an integer, got {seed!r}')
    if (not isinstance(opt['num_gpu'], int) or isinstance(opt['num_gpu'], bool)) and opt['num_gpu'] != 'auto':
        raise DDSRError(f'{path}: num_gpu must be an integer or auto, got {opt["num_gpu"]!r}')
    if isinstance(opt['num_gpu'], int) and not 0 <= opt['num_gpu'] <= torch.cuda.device_count():
        raise DDSRError(f'{path}: num_gpu is {opt["num_gpu"]} but this machine has {torch.cuda.device_count()} CUDA '
                        'device(s); use num_gpu: 0 (CPU) or auto')
    if 'scale' in opt and (not isinstance(opt['scale'], int) or isinstance(opt['scale'], bool) or opt['scale'] < 1):
        raise DDSRError(f'{path}: scale must be a positive integer, got {opt["scale"]!r}')
    for phase_name, ds in opt['datasets'].items():
        _check_dataset_keys(path, str(phase_name), ds, phase)
    if phase == 'test' and 'save_img' not in opt['val']:
        raise DDSRError(f'{path}: val.save_img: missing (true or false)')
    _check_channels(path, opt)
    ema = (opt.get('train') or {}).get('ema_decay', 0)
    if not isinstance(ema, (int, float)) or isinstance(ema, bool) or not 0 <= ema <= 1:
        raise DDSRError(f'{path}: train.ema_decay must be a number in [0, 1], got {ema!r}')


def _check_channels(path: str, opt: dict) -> None:
    """Networks' input/output channels against the data (3 for colour images, 1 with ``color: y``)."""
    gray = any(isinstance(ds, dict) and ds.get('color') == 'y' for ds in opt['datasets'].values())
    expected = 1 if gray else 3
    for key in [k for k in opt if str(k).startswith('network_') and isinstance(opt[k], dict)]:
        for arg in ('num_in_ch', 'num_out_ch', 'in_chans'):
            value = opt[key].get(arg)
            if arg in opt[key] and value != expected:
                raise DDSRError(f'{path}: {key}.{arg} is {value!r} but the images have {expected} channel(s)')


def _check_dataset_keys(path: str, phase_name: str, ds, phase: str) -> None:
    """Keys BasicSR's datasets and dataloaders read unconditionally (KeyError/TypeError deep inside otherwise)."""
    label = f'{path}: datasets.{phase_name}'
    if not isinstance(ds, dict):
        raise DDSRError(f'{label} must be a mapping of keys, got {ds!r}')
    needed = ['name', 'type'] + list(DATASET_KEYS.get(ds.get('type'), ()))
    training = phase == 'train' and phase_name.split('_')[0] == 'train'
    if training:
        needed += ['batch_size_per_gpu', 'num_worker_per_gpu'] + list(TRAIN_DATASET_KEYS.get(ds.get('type'), ()))
    absent = [key for key in needed if key not in ds]
    if absent:
        raise DDSRError(f'{label}: missing key(s): {", ".join(absent)}')
    if not isinstance(ds['name'], str) or not ds['name']:
        raise DDSRError(f'{label}.name must be a non-empty name, got {ds["name"]!r}')
    if 'io_backend' in ds and (not isinstance(ds['io_backend'], dict) or
                               ds['io_backend'].get('type') not in ('disk', 'lmdb', 'memcached')):
        raise DDSRError(f'{label}.io_backend must be a mapping with type: disk or lmdb, got {ds["io_backend"]!r}')
    for key, low in (('batch_size_per_gpu', 1), ('num_worker_per_gpu', 0), ('dataset_enlarge_ratio', 1)):
        value = ds.get(key, low)
        if training and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise DDSRError(f'{label}.{key} must be an integer >= {low}, got {value!r}')


def _whole(value, low: int) -> bool:
    """An integer (or a float with an integer value, as ``!!float 5e3`` gives) >= ``low``."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and
            abs(value) != float('inf') and float(value).is_integer() and value >= low)


def _check_train_section(path: str, opt: dict) -> None:
    train = opt['train']
    if not isinstance(opt['datasets'].get('train'), dict):
        raise DDSRError(f'{path}: datasets.train: missing (the training set)')
    if not _whole(train.get('total_iter'), 0):
        raise DDSRError(f'{path}: train.total_iter must be an integer >= 0, got {train.get("total_iter")!r}')
    for key in ('print_freq', 'save_checkpoint_freq'):
        value = opt['logger'].get(key)
        if not _whole(value, 1):
            raise DDSRError(f'{path}: logger.{key} must be a positive integer, got {value!r}')
    val = opt.get('val')
    if isinstance(val, dict) and 'val_freq' in val and not _whole(val['val_freq'], 1):
        raise DDSRError(f'{path}: val.val_freq must be a positive integer, got {val["val_freq"]!r}')
    model_cls = MODEL_REGISTRY.get(opt['model_type'])
    from basicsr.models.base_model import BaseModel
    for key, value in train.items():
        if str(key).startswith('optim_') and getattr(model_cls, 'get_optimizer', None) is BaseModel.get_optimizer:
            if not isinstance(value, dict) or value.get('type') not in OPTIMIZERS:
                got = value.get('type') if isinstance(value, dict) else value
                raise DDSRError(f'{path}: train.{key}.type: {got!r} is not supported by basicsr 1.4.2 '
                                f'(supported: {", ".join(OPTIMIZERS)})')
            if not isinstance(value.get('lr'), (int, float)) or isinstance(value.get('lr'), bool):
                raise DDSRError(f'{path}: train.{key}.lr must be a number, got {value.get("lr")!r}')
    sched = train.get('scheduler')
    if not isinstance(sched, dict) or sched.get('type') not in SCHEDULERS:
        got = sched.get('type') if isinstance(sched, dict) else sched
        raise DDSRError(f'{path}: train.scheduler.type: {got!r} is not one of {", ".join(SCHEDULERS)}')


def _is_demo_path(value: str, root: str) -> bool:
    demo = osp.abspath(osp.join(root, DEMO_ROOT))
    target = osp.abspath(osp.join(root, value))
    return target == demo or target.startswith(demo + osp.sep)


def _resolve(root: str, value: str) -> str:
    return osp.join(root, osp.expanduser(value))


def _check_paths(path: str, opt: dict, root: str) -> None:
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
            if osp.isdir(_resolve(root, value)):
                raise DDSRError(f'{path}: path.{key}: {value} is a folder, not a checkpoint file')
            checks.append((f'path.{key}', value))
    missing = [(key, value) for key, value in checks if not osp.exists(_resolve(root, value))]
    if any(_is_demo_path(value, root) for _, value in missing):
        print(f'Building the demo data set in {DEMO_ROOT} (first use, a few seconds)...', flush=True)
        build_demo_data(osp.join(root, DEMO_ROOT))
        missing = [(key, value) for key, value in missing if not osp.exists(_resolve(root, value))]
    if missing:
        key, value = missing[0]
        raise DDSRError(f'{path}: {key}: path does not exist: {value}')


# ---- networks and checkpoints ----


def build_arch(net_opt: dict, label: str = 'network_g') -> torch.nn.Module:
    """Instantiate an arch from its option dict (``type`` + kwargs) without BasicSR's logger (which must first
    be set up by the pipeline). Tried on the ``meta`` device first (no memory, no init cost: enough for key and
    shape checks), on the CPU when the arch computes values at build time."""
    cfg = copy.deepcopy(dict(net_opt))
    arch_cls = ARCH_REGISTRY.get(cfg.pop('type'))
    try:
        with torch.device('meta'):
            return arch_cls(**cfg)
    except Exception:  # noqa: B902  (retried on the CPU, where real errors are reported)
        pass
    try:
        return arch_cls(**cfg)
    except Exception as err:  # noqa: B902  (any failure to build from these kwargs is a bad network option)
        raise DDSRError(f'{label}: cannot build {arch_cls.__name__}({", ".join(map(str, cfg))}): '
                        f'{type(err).__name__}: {err}') from None


def check_network(net_opt, label: str = 'network_g') -> torch.nn.Module:
    """A network option (``type`` + kwargs) that builds; the network (possibly on the meta device)."""
    if not isinstance(net_opt, dict) or 'type' not in net_opt:
        raise DDSRError(f'{label}: expected a mapping with "type:" and the arch kwargs, got {net_opt!r}')
    if not isinstance(net_opt['type'], str):
        raise DDSRError(f'{label}.type must be a name, got {net_opt["type"]!r}')
    try:
        ARCH_REGISTRY.get(net_opt['type'])
    except UnknownTypeError as err:
        raise UnknownTypeError(f'{label}.type: {err}') from None
    return build_arch(net_opt, label)


def read_checkpoint(ckpt: str, label: str) -> dict:
    """``torch.load`` (weights only, CPU) of a checkpoint; unreadable or not a dict is a :class:`DDSRError`."""
    try:
        state = torch.load(ckpt, map_location='cpu', weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickled code: torch raises many types
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise DDSRError(f'{label}: cannot read checkpoint {ckpt}: {first}') from None
    if not isinstance(state, dict):
        raise DDSRError(f'{label}: checkpoint {ckpt} holds a {type(state).__name__}, not a state dict')
    return state


def select_params(state: dict, param_key: str | None, ckpt: str, label: str) -> dict[str, torch.Tensor]:
    """The state_dict BasicSR's ``load_network`` would load (``param_key``, falling back to ``params``;
    ``None``: the whole file), ``module.`` prefixes removed."""
    if param_key is not None:
        if param_key not in state and 'params' in state:
            param_key = 'params'
        if param_key not in state:
            keys = ', '.join(map(str, list(state)[:5]))
            raise DDSRError(f'{label}: checkpoint {ckpt} has no entry {param_key!r} (param_key; it has: {keys})')
        state = state[param_key]
    if not isinstance(state, dict):
        raise DDSRError(f'{label}: checkpoint {ckpt}[{param_key!r}] is not a state dict')
    return {(k[7:] if str(k).startswith('module.') else k): v for k, v in state.items()}


def _shape(value) -> str:
    return str(tuple(value.shape)) if hasattr(value, 'shape') else type(value).__name__


def compare_state(net: torch.nn.Module, params: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Human-readable differences between ``params`` and ``net.state_dict()`` that would break loading:
    shape mismatches (always dropped by BasicSR when not strict, so only reported with ``strict``), missing and
    unexpected keys (``strict`` only). Not strict and no tensor in common is reported too."""
    own = net.state_dict()
    shapes = [k for k in own if k in params and _shape(params[k]) != _shape(own[k])]
    missing = [k for k in own if k not in params]
    unexpected = [k for k in params if k not in own]
    problems = []
    if strict:
        if shapes:
            named = [f'{k} checkpoint {_shape(params[k])} vs network {_shape(own[k])}' for k in shapes[:SHOWN]]
            more = f' (+{len(shapes) - SHOWN} more)' if len(shapes) > SHOWN else ''
            problems.append(f'shape mismatch: {"; ".join(named)}{more}')
        for what, keys in (('missing in checkpoint', missing), ('unexpected in checkpoint', unexpected)):
            if keys:
                problems.append(f'{what}: {", ".join(map(str, keys[:SHOWN]))}' +
                                (f' (+{len(keys) - SHOWN} more)' if len(keys) > SHOWN else ''))
    elif own and len(shapes) + len(missing) == len(own):
        problems.append(f'no tensor in common (first network keys: {", ".join(list(own)[:SHOWN])}; first checkpoint '
                        f'keys: {", ".join(map(str, list(params)[:SHOWN]))})')
    return problems


def check_checkpoint(net: torch.nn.Module, ckpt: str, param_key: str | None = 'params', strict: bool = True,
                     label: str = 'network_g') -> None:
    """Raise a :class:`DDSRError` naming the first mismatching keys/shapes if ``ckpt`` does not fit ``net``."""
    params = select_params(read_checkpoint(ckpt, label), param_key, ckpt, label)
    problems = compare_state(net, params, strict)
    if problems:
        raise DDSRError(f'{label}: checkpoint {ckpt} does not match {type(net).__name__} '
                        f'(strict_load {strict}): {"; ".join(problems)}')


def declared_upscale(net_opt: dict) -> int | None:
    """``upscale`` (or ``scale``) of a network option, else the arch's default; None if it has neither."""
    for key in ('upscale', 'scale'):
        if key in net_opt:
            return net_opt[key]
    try:
        params = inspect.signature(ARCH_REGISTRY.get(net_opt['type'])).parameters
    except (TypeError, ValueError):
        return None
    for key in ('upscale', 'scale'):
        if key in params and isinstance(params[key].default, int):
            return params[key].default
    return None


def min_input_size(net_opt: dict) -> int:
    """Smallest LR side the network accepts (1 when unknown)."""
    arch_cls = ARCH_REGISTRY.get(net_opt['type'])
    return int(getattr(arch_cls, 'min_input_size', MIN_INPUT.get(net_opt['type'], 1)))


def rebuilt_from_checkpoint(opt: dict) -> bool:
    """Whether the model rebuilds network_g from the ``arch`` of its checkpoint (PruneSRModel, pruned widths)."""
    return opt.get('model_type') == 'PruneSRModel' and (opt.get('prune') or {}).get('mode') in SELF_DESCRIBING


def _check_networks(path: str, opt: dict, root: str) -> None:
    paths = opt.get('path') or {}
    scale = opt.get('scale')
    for key in [k for k in opt if str(k).startswith('network_')]:
        suffix = key[len('network_'):]
        up = declared_upscale(opt[key])
        if scale is not None and up is not None and up != scale:
            raise DDSRError(f'{path}: scale mismatch: {key}.upscale is {up} but scale is {scale}')
        ckpt = paths.get(f'pretrain_network_{suffix}')
        net_opt = opt[key]
        if key == 'network_g' and rebuilt_from_checkpoint(opt) and ckpt:
            arch = checkpoint_arch(_resolve(root, ckpt))  # PruneSRModel builds network_g from it (pruned widths)
            net_opt = arch if arch is not None and arch.get('type') == net_opt.get('type') else net_opt
        net = build_arch(net_opt, f'{path}: {key}')
        if ckpt:
            param_key = paths.get(f'param_key_{suffix}', 'params')
            strict = paths.get(f'strict_load_{suffix}', True)
            check_checkpoint(net, _resolve(root, ckpt), param_key, bool(strict),
                             f'{path}: path.pretrain_network_{suffix} -> {key}')


# ---- data: LMDB integrity, pairing, image sizes ----


def read_lmdb_meta(folder: str, label: str) -> dict[str, tuple[int, int]]:
    """``{key: (h, w)}`` of an LMDB's ``meta_info.txt``, after checking every listed key is stored."""
    import lmdb
    meta = osp.join(folder, 'meta_info.txt')
    if not folder.rstrip('/').endswith('.lmdb'):
        raise DDSRError(f'{label}: {folder}: an LMDB folder name must end with .lmdb (BasicSR)')
    for needed in (meta, osp.join(folder, 'data.mdb')):
        if not osp.isfile(needed):
            raise DDSRError(f'{label}: LMDB {folder} has no {osp.basename(needed)}')
    shapes = {}
    try:
        with open(meta, encoding='utf-8') as f:
            for num, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split()
                dims = parts[1].strip('()').split(',') if len(parts) > 1 else []
                if len(dims) < 2 or not all(d.strip().isdigit() for d in dims):
                    raise DDSRError(f'{label}: {meta} line {num}: expected "<name> (h,w,c) <level>", '
                                    f'got {line.strip()!r}')
                shapes[parts[0].split('.')[0]] = (int(dims[0]), int(dims[1]))
    except UnicodeDecodeError:
        raise DDSRError(f'{label}: {meta} is not a text file') from None
    if not shapes:
        raise DDSRError(f'{label}: {meta} lists no images')
    try:
        env = lmdb.open(folder, readonly=True, lock=False, readahead=False, meminit=False)
        with env.begin(write=False) as txn:
            absent = [key for key in shapes if txn.get(key.encode('ascii', 'replace')) is None]
        env.close()
    except lmdb.Error as err:
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


def _folder_sizes(folder: str, label: str) -> dict[str, tuple[int, int]]:
    from basicsr.utils import scandir
    names = sorted(scandir(folder))
    if not names:
        raise DDSRError(f'{label}: folder {folder} has no files')
    return {name: image_size(osp.join(folder, name), label) for name in names}


def _dataset_sizes(ds: dict, key: str, label: str, root: str) -> dict[str, tuple[int, int]] | None:
    """Image sizes of ``ds[key]`` (LMDB meta or folder headers); None when not a plain LMDB/folder set."""
    folder = _resolve(root, ds[key])
    backend = (ds.get('io_backend') or {}).get('type') if isinstance(ds.get('io_backend'), dict) else None
    if backend == 'lmdb':
        return read_lmdb_meta(folder, label)
    if backend == 'disk' and osp.isdir(folder) and not ds.get('meta_info_file'):
        return _folder_sizes(folder, label)
    return None


def _pairs(gt: dict[str, tuple[int, int]], lq: dict[str, tuple[int, int]], ds: dict, lmdb: bool,
           label: str) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
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


def _check_data(path: str, opt: dict, root: str, phase: str) -> None:
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
            for name, (h, w) in sizes['dataroot_lq'].items():
                if min(h, w) < need[2]:
                    raise DDSRError(f'{label}: LR image {name} is {w}x{h}, smaller than the minimum input of '
                                    f'{need[0]} ({need[1]["type"]} needs >= {need[2]}x{need[2]})')
        if training and ds.get('gt_size') is not None:
            _check_patch(path, opt, ds, scale, need, sizes.get('dataroot_lq'))
        if {'dataroot_gt', 'dataroot_lq'} <= set(sizes) and isinstance(scale, int):
            pairs = _pairs(sizes['dataroot_gt'], sizes['dataroot_lq'], ds, backend == 'lmdb', label)
            for name, (hg, wg), (hl, wl) in pairs:
                if (hg, wg) != (hl * scale, wl * scale):
                    ratio = f'{hg / hl:.3g}' if hl else '?'
                    raise DDSRError(f'{label}: scale mismatch: {name} is HR {wg}x{hg} but LR {wl}x{hl} (ratio x{ratio}'
                                    f'); scale is {scale}: HR must be exactly LR x {scale}')


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
    for name, (h, w) in (lq_sizes or {}).items():
        if min(h, w) < gt_size // scale:
            raise DDSRError(f'{label}: LR image {name} is {w}x{h}, smaller than the LR patch {gt_size // scale}x'
                            f'{gt_size // scale} (gt_size {gt_size} / scale {scale}): remove it or lower gt_size')


def apply_force_yml(opt: dict, args: list[str], path: str) -> None:
    """Apply BasicSR's ``--force_yml a:b=value`` overrides to ``opt`` as BasicSR will."""
    from basicsr.utils.options import _postprocess_yml_value
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--force_yml', nargs='+', default=None)
    known, _ = parser.parse_known_args(args)
    for entry in known.force_yml or []:
        if entry.count('=') != 1:
            raise DDSRError(f'--force_yml {entry}: expected KEY:SUBKEY=VALUE')
        keys, value = (part.strip() for part in entry.split('='))
        node = opt
        keys = keys.split(':')
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise DDSRError(f'--force_yml {entry}: {path} has no mapping {key}')
            node = node[key]
        node[keys[-1]] = _postprocess_yml_value(value)


def _check_no_silent_archive(path: str, opt: dict, args: list[str], root: str) -> None:
    name = opt['name']
    if '--debug' in args and not str(name).startswith('debug'):
        name = f'debug_{name}'
    states = osp.join(root, 'experiments', str(name), 'training_states')
    has_states = osp.isdir(states) and any(f.endswith('.state') for f in os.listdir(states))
    resume = (opt.get('path') or {}).get('resume_state')
    if has_states and '--auto_resume' not in args and ARCHIVE_FLAG not in args and not resume:
        raise DDSRError(f'{path}: experiments/{name} already has training states; continue it with --auto_resume, '
                        f'or start over with {ARCHIVE_FLAG} (BasicSR renames the old run to *_archived_*)')


def check_options(phase: str, args: list[str], root: str) -> dict:
    """Validate the option file named by ``-opt`` in ``args`` for ``phase`` ('train' or 'test'); see the module
    docstring for what is checked. Returns the options (with ``--force_yml`` applied)."""
    path = option_path(args)
    opt = load_options(path)
    apply_force_yml(opt, args, path)
    _check_structure(path, opt, phase)
    try:
        MODEL_REGISTRY.get(opt['model_type'])
    except UnknownTypeError as err:
        raise UnknownTypeError(f'{path}: model_type: {err}') from None
    except TypeError:
        raise DDSRError(f'{path}: model_type must be a name, got {opt["model_type"]!r}') from None
    if phase == 'train':
        _check_train_section(path, opt)
    for key, section, registry in _typed_sections(opt):
        _get_type(path, key, section, registry)
    _check_paths(path, opt, root)
    _check_networks(path, opt, root)
    _check_data(path, opt, root, phase)
    if phase == 'train':
        _check_no_silent_archive(path, opt, args, root)
    return opt
