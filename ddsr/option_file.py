"""BasicSR option files: which file a command line names, parsing it with BasicSR's own YAML loader, and
BasicSR's ``--force_yml`` overrides. No checks here (see :mod:`ddsr.checks`)."""
import argparse
from os import path as osp

import yaml

from ddsr.errors import DDSRError


def option_path(args: list[str]) -> str:
    """The ``-opt`` value of a BasicSR command line (argparse's own error if missing)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', required=True)
    known, _ = parser.parse_known_args(args)
    return known.opt


def load_options(path: str) -> dict:
    """Parse an option YAML with BasicSR's own loader (every ddsr tool reads option files through here); a missing,
    unreadable or malformed file is a :class:`DDSRError`."""
    from basicsr.utils.options import ordered_yaml  # BasicSR's own loader
    if not osp.isfile(path):
        raise DDSRError(f'option file not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
        opt = yaml.load(text, Loader=ordered_yaml()[0])  # what BasicSR's parse_options accepts, e.g. !!python/tuple
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' (line {mark.line + 1}, column {mark.column + 1})' if mark else ''
        raise DDSRError(f'malformed option file {path}{where}: {getattr(err, "problem", err)}') from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DDSRError(f'cannot read option file {path}: {err}') from None
    if not isinstance(opt, dict):
        raise DDSRError(f'malformed option file {path}: top level must be a mapping of keys')
    return opt


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

