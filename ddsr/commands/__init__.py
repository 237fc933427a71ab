"""``ddsr`` sub-commands, one module each (``NAME``, ``HELP``, ``add_arguments(parser)``, ``run(args)``), and here the
flags they share: one spelling, one meaning, one default, one help text.

Every command that takes a network checkpoint, an arch, an output, tiles or a device adds them from here:

==================  ==========================================================  =====================================
flag                meaning                                                     old spelling (hidden alias, accepted
                                                                                for one release)
==================  ==========================================================  =====================================
``--weights``       checkpoint (.pth)                                           ``--ckpt`` (reparam, compress)
``--arch``          registered arch type
``--arch-kwargs``   constructor kwargs of ``--arch``, a JSON object             ``--arch-args K=V ...`` (values
                                                                                YAML; make-enhanced-hr), ``--upscale
                                                                                N`` (reparam: kwarg ``upscale``)
``-o/--output``     output file or folder                                       ``--out``
``--tile``          tiled inference: LR tile size
``--tile-overlap``  LR context read beyond each tile side, seams blended        ``--tile-pad`` (bench quality; same
                    (:mod:`ddsr.deploy.tiling`)                                 meaning)
``--device``        ``auto`` (default), ``cpu``, ``cuda`` or ``cuda:N``
==================  ==========================================================  =====================================

``--device`` default, chosen here: ``auto`` = CUDA when available, else the CPU, for every command. Each command
that runs a network (upscale, bench, make-enhanced-hr) is faster on a GPU, and on a machine without one ``auto`` is
the CPU, so nothing changes where most runs happen (laptops, CI); before, bench and make-enhanced-hr already
defaulted to CUDA when available and upscale to the CPU. The value in the parsed namespace is the resolved device
(``cpu`` / ``cuda`` / ``cuda:N``).

Aliases are separate argparse options with ``help=argparse.SUPPRESS`` (so ``--help`` lists the new spellings
only) and the same ``dest``; a required flag with an alias is a required mutually exclusive group of the two.
Each alias is registered explicitly: argparse's prefix matching alone would take ``--out`` for ``--output`` only
where no other ``--out...`` option exists (export has ``--out-pth`` / ``--out-onnx``).
"""
import argparse
import glob
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from ddsr.errors import DDSRError

Container = argparse.ArgumentParser | argparse._ArgumentGroup  # parser, argument group or mutually exclusive group
DEVICE_DEFAULT = 'auto'
TILE_OVERLAP_DEFAULT = 16  # LR px; as before in upscale (--tile-overlap) and bench quality (--tile-pad)


def add_weights(container: Container, help: str, required: bool = False) -> None:
    """``--weights PATH`` (alias ``--ckpt``) into ``container`` (a mutually exclusive source group keeps both)."""
    if required:
        container = container.add_mutually_exclusive_group(required=True)
    container.add_argument('--weights', metavar='PATH', help=help)
    container.add_argument('--ckpt', dest='weights', help=argparse.SUPPRESS)


def add_arch(container: Container, help: str = 'registered arch type, e.g. DIPNet or EDSR') -> None:
    """``--arch TYPE``."""
    container.add_argument('--arch', metavar='TYPE', help=help)


class ArchKwargs(argparse.Action):
    """Merges one spelling of arch kwargs into ``namespace.arch_kwargs`` (a dict; later flags win per key)."""

    def __init__(self, option_strings: Sequence[str], dest: str, convert: Callable[[Any], dict],
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.convert = convert

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            new = self.convert(values)
        except ValueError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), **new})


def json_object(text: str) -> dict:
    """The dict of a JSON object (``--arch-kwargs``); ValueError naming the problem otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f'not valid JSON: {err}') from None
    if not isinstance(value, dict):
        raise ValueError(f'must be a JSON object, got {text}')
    return value


def key_values(items: Sequence[str]) -> dict:
    """``['k=v', ...]`` with YAML values (``--arch-args``, the old spelling) as a dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ValueError(f'expected KEY=VALUE, got {item}')
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f'{item}: not a YAML value ({err})') from None
    return out


def add_arch_kwargs(container: Container, help: str = 'constructor kwargs of --arch, a JSON object, e.g. '
                    '\'{"upscale": 4}\'', upscale_alias: bool = False) -> None:
    """``--arch-kwargs JSON`` (aliases ``--arch-args K=V ...``; with ``upscale_alias`` also ``--upscale N``)."""
    container.add_argument('--arch-kwargs', dest='arch_kwargs', metavar='JSON', default={}, action=ArchKwargs,
                           convert=json_object, help=help)
    container.add_argument('--arch-args', dest='arch_kwargs', nargs='*', action=ArchKwargs, convert=key_values,
                           help=argparse.SUPPRESS)
    if upscale_alias:
        container.add_argument('--upscale', dest='arch_kwargs', type=int, action=ArchKwargs,
                               convert=lambda n: {'upscale': n}, help=argparse.SUPPRESS)


def arch_from_args(args: argparse.Namespace) -> dict | None:
    """``{'type': --arch, **--arch-kwargs}``; None without ``--arch`` (kwargs without it are an error).
    ``arch_kwargs`` may also be JSON text (a namespace built in code)."""
    kwargs = args.arch_kwargs
    if isinstance(kwargs, str):
        try:
            kwargs = json_object(kwargs)
        except ValueError as err:
            raise DDSRError(f'--arch-kwargs {err}') from None
    if args.arch:
        return {'type': args.arch, **kwargs}
    if kwargs:
        raise DDSRError(f'--arch-kwargs {json.dumps(kwargs)} goes with --arch (an option file or a '
                        'self-describing checkpoint sets the arch kwargs)')
    return None


def add_output(container: Container, help: str, required: bool = False, default: str | None = None) -> None:
    """``-o/--output PATH`` (alias ``--out``)."""
    if required:
        container = container.add_mutually_exclusive_group(required=True)
    container.add_argument('-o', '--output', metavar='PATH', default=default, help=help)
    container.add_argument('--out', dest='output', help=argparse.SUPPRESS)


def add_tiles(container: Container) -> None:
    """``--tile N`` and ``--tile-overlap N`` (alias ``--tile-pad``)."""
    container.add_argument('--tile', type=int, default=None, metavar='N',
                           help='tiled inference with LR tiles of about N px (default: whole image)')
    container.add_argument('--tile-overlap', type=int, default=TILE_OVERLAP_DEFAULT, metavar='N',
                           help=f'LR context read beyond each tile side, seams blended over it (default '
                           f'{TILE_OVERLAP_DEFAULT})')
    container.add_argument('--tile-pad', dest='tile_overlap', type=int, help=argparse.SUPPRESS)


def check_tiles(args: argparse.Namespace) -> None:
    """``--tile`` larger than ``--tile-overlap`` >= 0 (one error line otherwise)."""
    if args.tile is not None and not 0 <= args.tile_overlap < args.tile:
        raise DDSRError(f'--tile {args.tile} must be larger than --tile-overlap {args.tile_overlap} (>= 0)')


def cuda_available() -> bool:
    """``torch.cuda.is_available()``; on Linux without an NVIDIA device node (``/dev/nvidia<N>``) False without
    importing torch, so that a CPU command that needs no torch (``ddsr upscale`` on its cached onnxruntime path)
    starts without it."""
    if sys.platform.startswith('linux') and 'torch' not in sys.modules and not glob.glob('/dev/nvidia[0-9]*'):
        return False
    import torch
    return torch.cuda.is_available()


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` checked (argparse type)."""
    name = name.strip().lower()
    if name == 'auto':
        return 'cuda' if cuda_available() else 'cpu'
    kind, _, index = name.partition(':')
    if kind not in ('cpu', 'cuda') or (index and (kind == 'cpu' or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"'{name}': expected auto, cpu, cuda or cuda:N")
    if kind == 'cuda' and not cuda_available():
        raise argparse.ArgumentTypeError(f"'{name}': CUDA is not available")
    if index:
        import torch
        if int(index) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"'{name}': only {torch.cuda.device_count()} CUDA device(s)")
    return name


def add_device(container: Container) -> None:
    """``--device {auto,cpu,cuda,cuda:N}`` (default auto; module docstring)."""
    container.add_argument('--device', type=resolve_device, default=DEVICE_DEFAULT, metavar='DEVICE',
                           help='auto (default: cuda when available, else cpu), cpu, cuda or cuda:N')
