"""Checks of an option file before BasicSR runs it, so bad input is one clear line (exit 2), not a traceback.

It checks that the file exists and parses, that the keys BasicSR needs are there, that every ``type:`` is
registered, that every data path and pretrained checkpoint exists, and that a training run would not silently
archive an experiment that has training states. Data paths under the demo root
(``datasets/demo``) are built on first use instead of failing.
"""
import argparse
import os
from os import path as osp
from typing import List, Tuple

import yaml
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

from ddsr.data.demo import DEMO_ROOT, build_demo_data
from ddsr.errors import DDSRError

REQUIRED = {'train': ('name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path', 'train', 'logger'),
            'test': ('name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path')}
NOT_LOSSES = ('scheduler', )
ARCHIVE_FLAG = '--archive'  # ddsr's own flag, removed before BasicSR parses the arguments


def option_path(args: List[str]) -> str:
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
            opt = yaml.load(f, Loader=ordered_yaml()[0])
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' (line {mark.line + 1}, column {mark.column + 1})' if mark else ''
        raise DDSRError(f'malformed option file {path}{where}: {getattr(err, "problem", err)}') from None
    except (OSError, UnicodeDecodeError) as err:
        raise DDSRError(f'cannot read option file {path}: {err}') from None
    if not isinstance(opt, dict):
        raise DDSRError(f'malformed option file {path}: top level must be a mapping of keys')
    return opt


def _check_type(path: str, key: str, section, registry) -> None:
    if not isinstance(section, dict) or 'type' not in section:
        raise DDSRError(f'{path}: {key}: missing "type:"')
    registry.get(section['type'])  # UnknownTypeError names close matches


def _typed_sections(opt: dict) -> List[Tuple[str, dict, object]]:
    sections = [(key, opt[key], ARCH_REGISTRY) for key in opt if key.startswith('network_')]
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        return sections + [('datasets', datasets, DATASET_REGISTRY)]
    sections += [(f'datasets.{phase}', ds, DATASET_REGISTRY) for phase, ds in datasets.items()]
    for key, value in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(value, dict) and key not in NOT_LOSSES:
            sections.append((f'train.{key}', value, LOSS_REGISTRY))
    return sections


def _is_demo_path(value: str, root: str) -> bool:
    demo = osp.abspath(osp.join(root, DEMO_ROOT))
    target = osp.abspath(osp.join(root, value))
    return target == demo or target.startswith(demo + osp.sep)


def _check_paths(path: str, opt: dict, root: str) -> None:
    checks = []
    for phase, ds in (opt.get('datasets') or {}).items():
        for key, value in ds.items():
            if (key.startswith('dataroot') or key == 'meta_info_file') and isinstance(value, str):
                checks.append((f'datasets.{phase}.{key}', value))
    for key, value in (opt.get('path') or {}).items():
        if key.startswith('pretrain_network') and isinstance(value, str):
            checks.append((f'path.{key}', value))
    missing = [(key, value) for key, value in checks if not osp.exists(osp.join(root, osp.expanduser(value)))]
    if any(_is_demo_path(value, root) for _, value in missing):
        print(f'Building the demo data set in {DEMO_ROOT} (first use, a few seconds)...', flush=True)
        build_demo_data(osp.join(root, DEMO_ROOT))
        missing = [(key, value) for key, value in missing if not osp.exists(osp.join(root, value))]
    if missing:
        key, value = missing[0]
        raise DDSRError(f'{path}: {key}: path does not exist: {value}')


def _check_no_silent_archive(path: str, opt: dict, args: List[str], root: str) -> None:
    name = opt['name']
    if '--debug' in args and not str(name).startswith('debug'):
        name = f'debug_{name}'
    states = osp.join(root, 'experiments', str(name), 'training_states')
    has_states = osp.isdir(states) and any(f.endswith('.state') for f in os.listdir(states))
    if has_states and '--auto_resume' not in args and ARCHIVE_FLAG not in args and not (opt.get('path') or {}).get('resume_state'):
        raise DDSRError(f'{path}: experiments/{name} already has training states; continue it with --auto_resume, '
                        f'or start over with {ARCHIVE_FLAG} (BasicSR renames the old run to *_archived_*)')


def check_options(phase: str, args: List[str], root: str) -> dict:
    """Validate the option file named by ``-opt`` in ``args`` for ``phase`` ('train' or 'test')."""
    path = option_path(args)
    opt = load_options(path)
    absent = [key for key in REQUIRED[phase] if key not in opt]
    if absent:
        raise DDSRError(f'{path}: missing required key(s): {", ".join(absent)}')
    MODEL_REGISTRY.get(opt['model_type'])
    for key, section, registry in _typed_sections(opt):
        _check_type(path, key, section, registry)
    _check_paths(path, opt, root)
    if phase == 'train':
        _check_no_silent_archive(path, opt, args, root)
    return opt
