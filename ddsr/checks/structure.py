"""Option checks of the structure: the keys BasicSR reads unconditionally, mappings where it expects mappings,
every ``type:`` registered (unknown ones list close names), the train section BasicSR 1.4.2 can run, and no
silent archiving of a run that has training states."""
import os
from os import path as osp

import torch
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from ddsr.amp import check_amp
from ddsr.compat import EXTRA_OPTIMIZERS
from ddsr.errors import DDSRError, UnknownTypeError

REQUIRED = {'train': ('name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path', 'train', 'logger'),
            'test': ('name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path', 'val')}
MAPPINGS = ('datasets', 'path', 'train', 'logger', 'val')
NOT_LOSSES = ('scheduler', )
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')  # BaseModel.setup_schedulers
OPTIMIZERS = ('Adam', )  # BaseModel.get_optimizer of basicsr 1.4.2
# Keys a dataset type reads unconditionally (and, for training sets, the ones it reads in training).
DATASET_KEYS = {'PairedImageDataset': ('dataroot_gt', 'dataroot_lq', 'io_backend'),
                'EnhancedPairedImageDataset': ('dataroot_gt', 'dataroot_lq', 'dataroot_enhanced', 'io_backend'),
                'SingleImageDataset': ('dataroot_lq', 'io_backend')}
TRAIN_DATASET_KEYS = {'PairedImageDataset': ('gt_size', 'use_hflip', 'use_rot'),
                      'EnhancedPairedImageDataset': ('gt_size', 'use_hflip', 'use_rot')}
ARCHIVE_FLAG = '--archive'  # ddsr's own flag, removed before BasicSR parses the arguments


def model_class(opt: dict) -> type:
    """The class ``model_type`` builds: the registered class, or the one a registered factory picks for ``opt`` (its
    ``procedure(opt)``, e.g. ``PruneSRModel`` by ``prune.mode``)."""
    model_cls = MODEL_REGISTRY.get(opt.get('model_type'))
    pick = getattr(model_cls, 'procedure', None)
    return pick(opt) if callable(pick) else model_cls


def check_model_type(path: str, opt: dict) -> None:
    """``model_type`` names a registered model."""
    try:
        MODEL_REGISTRY.get(opt['model_type'])
    except UnknownTypeError as err:
        raise UnknownTypeError(f'{path}: model_type: {err}') from None
    except TypeError:
        raise DDSRError(f'{path}: model_type must be a name, got {opt["model_type"]!r}') from None


def check_types(path: str, opt: dict) -> None:
    """Every ``type:`` of networks, datasets, losses and metrics is registered."""
    for key, section, registry in typed_sections(opt):
        get_type(path, key, section, registry)


def get_type(path: str, key: str, section, registry):
    if not isinstance(section, dict) or 'type' not in section:
        raise DDSRError(f'{path}: {key}: missing "type:"')
    try:
        return registry.get(section['type'])
    except UnknownTypeError as err:
        raise UnknownTypeError(f'{path}: {key}.type: {err}') from None
    except TypeError:  # an unhashable type value (list, mapping)
        raise DDSRError(f'{path}: {key}.type must be a name, got {section["type"]!r}') from None


def typed_sections(opt: dict) -> list[tuple[str, dict, object]]:
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


def check_structure(path: str, opt: dict, phase: str) -> None:
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
    ds_type = str(ds.get('type'))
    needed = ['name', 'type'] + list(DATASET_KEYS.get(ds_type, ()))
    training = phase == 'train' and phase_name.split('_')[0] == 'train'
    if training:
        needed += ['batch_size_per_gpu', 'num_worker_per_gpu'] + list(TRAIN_DATASET_KEYS.get(ds_type, ()))
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


def check_train_section(path: str, opt: dict) -> None:
    train = opt['train']
    check_amp(path, opt)
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
    model_cls = model_class(opt)
    from basicsr.models.base_model import BaseModel
    for key, value in train.items():
        if str(key).startswith('optim_') and getattr(model_cls, 'get_optimizer', None) is BaseModel.get_optimizer:
            known = OPTIMIZERS + tuple(EXTRA_OPTIMIZERS)  # + ddsr's (compat patch 9: OBProxSG)
            if not isinstance(value, dict) or value.get('type') not in known:
                got = value.get('type') if isinstance(value, dict) else value
                raise DDSRError(f'{path}: train.{key}.type: {got!r} is not supported by basicsr 1.4.2 '
                                f'(supported: {", ".join(known)})')
            if not isinstance(value.get('lr'), (int, float)) or isinstance(value.get('lr'), bool):
                raise DDSRError(f'{path}: train.{key}.lr must be a number, got {value.get("lr")!r}')
    sched = train.get('scheduler')
    if not isinstance(sched, dict) or sched.get('type') not in SCHEDULERS:
        got = sched.get('type') if isinstance(sched, dict) else sched
        raise DDSRError(f'{path}: train.scheduler.type: {got!r} is not one of {", ".join(SCHEDULERS)}')


def check_no_silent_archive(path: str, opt: dict, args: list[str], root: str) -> None:
    name = opt['name']
    if '--debug' in args and not str(name).startswith('debug'):
        name = f'debug_{name}'
    states = osp.join(root, 'experiments', str(name), 'training_states')
    has_states = osp.isdir(states) and any(f.endswith('.state') for f in os.listdir(states))
    resume = (opt.get('path') or {}).get('resume_state')
    if has_states and '--auto_resume' not in args and ARCHIVE_FLAG not in args and not resume:
        raise DDSRError(f'{path}: experiments/{name} already has training states; continue it with --auto_resume, '
                        f'or start over with {ARCHIVE_FLAG} (BasicSR renames the old run to *_archived_*)')

