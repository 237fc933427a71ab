"""Checkpoint I/O: the one place that reads and writes network checkpoints and training states.

Formats read:

- BasicSR checkpoints ``{'params': state_dict, 'params_ema': state_dict}`` (``BaseModel.save_network``);
- ddsr's self-describing checkpoints, the same plus ``'arch': {'type': ..., **kwargs}`` (compaction, pruning
  steps, ``ddsr reparam`` / ``export``), from which the network is rebuilt without an option file;
- plain state dicts (the official DDistill-SR / DIPNet releases).

Which entry is read (:func:`select_params`) follows BasicSR's ``BaseModel.load_network``: ``param_key``, falling
back to ``params`` when the file lacks it; ``param_key=None`` reads the whole file. ddsr adds one rule: a plain
state dict (every value a tensor) is read as it is, whatever ``param_key`` says. ``module.`` prefixes (DDP) are
removed, as BasicSR does.

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``) so a kill at any moment leaves the old
or the new file, never a truncated one; the file gets the mode ``torch.save`` would give it (0666 minus the umask).

Only ``torch`` is imported at module level. Networks are built by :func:`ddsr.archs.registry.build_network` (the
one construction home, re-exported here): ddsr's archs without importing basicsr, others through BasicSR's registry.
:func:`state_mismatch` is the one answer to "does this state dict fit this network".
"""
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from os import path as osp
from typing import Any

import torch
from torch import nn

from ddsr.archs.registry import arch_class, build_network  # noqa: F401  (public here too: the one home re-exported)
from ddsr.errors import DDSRError
from ddsr.fileio import atomic_write

PARAM_KEYS = ('params', 'params_ema')


@dataclass
class Checkpoint:
    """A read checkpoint: its state dicts (``None`` when absent) and the ``arch`` of a self-describing one."""
    path: str
    raw: dict
    params: dict[str, torch.Tensor] | None
    params_ema: dict[str, torch.Tensor] | None
    arch: dict | None


def load_file(path: str | os.PathLike, label: str = 'checkpoint', map_location: Any = 'cpu',
              data: bytes | None = None) -> dict:
    """``torch.load`` (weights only) of a checkpoint or training state; missing, unreadable or not a dict is a
    :class:`DDSRError` naming ``label`` and the file. ``data``: the file's bytes, already read (``ddsr upscale``
    hashes them for its cache), so the file is not read again."""
    path = str(path)
    if data is None and not osp.isfile(path):
        raise DDSRError(f'{label}: file not found: {path}')
    try:
        obj = torch.load(io.BytesIO(data) if data is not None else path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickled code: torch raises many types
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise DDSRError(f'{label}: cannot read checkpoint {path}: {first}') from None
    if not isinstance(obj, dict):
        raise DDSRError(f'{label}: checkpoint {path} holds a {type(obj).__name__}, not a state dict')
    return obj


def is_state_dict(obj: object) -> bool:
    """Whether ``obj`` is a plain state dict (a non-empty mapping of names to tensors)."""
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the ``module.`` prefix of (Distributed)DataParallel removed from its keys."""
    return {(k[7:] if str(k).startswith('module.') else k): v for k, v in state.items()}


@dataclass(frozen=True)
class StateMismatch:
    """How a state dict differs from a network's ``state_dict()``: keys the network has and the state lacks,
    keys the state has and the network lacks, and keys in both with another shape (all in the network's order,
    unexpected ones in the state's)."""
    missing: list[str]
    unexpected: list[str]
    shapes: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)


def _shape(value: Any) -> tuple | None:
    return tuple(value.shape) if hasattr(value, 'shape') else None


def state_mismatch(own: Mapping[str, Any], state: Mapping[str, Any]) -> StateMismatch:
    """Does ``state`` fit a network whose ``state_dict()`` is ``own`` (keys and shapes, as ``load_state_dict``
    with ``strict=True`` checks them)? Falsy when it fits."""
    return StateMismatch([k for k in own if k not in state], [k for k in state if k not in own],
                         [k for k in own if k in state and _shape(state[k]) != _shape(own[k])])


def read(path: str | os.PathLike, label: str = 'checkpoint') -> Checkpoint:
    """Read ``path`` once into a :class:`Checkpoint` (a plain state dict counts as ``params``)."""
    raw = load_file(path, label)
    if is_state_dict(raw) and not any(k in raw for k in (*PARAM_KEYS, 'arch')):
        return Checkpoint(str(path), raw, dict(raw), None, None)
    entries = {key: raw.get(key) if isinstance(raw.get(key), Mapping) else None for key in PARAM_KEYS}
    arch = raw.get('arch')
    return Checkpoint(str(path), raw, entries['params'], entries['params_ema'],
                      dict(arch) if isinstance(arch, Mapping) else None)


def select_params(raw: dict, param_key: str | None, path: str = '',
                  label: str = 'checkpoint') -> dict[str, torch.Tensor]:
    """The state dict BasicSR's ``load_network`` would load from ``raw`` (see the module docstring)."""
    state: Any = raw
    if param_key is not None and not is_state_dict(raw):
        if param_key not in raw and 'params' in raw:
            param_key = 'params'
        if param_key not in raw:
            keys = ', '.join(map(str, list(raw)[:5]))
            raise DDSRError(f'{label}: checkpoint {path} has no entry {param_key!r} (param_key; it has: {keys})')
        state = raw[param_key]
    if not isinstance(state, Mapping):
        raise DDSRError(f'{label}: checkpoint {path}[{param_key!r}] is not a state dict')
    return strip_module(state)


def load_state(path: str | os.PathLike, param_key: str | None = 'params',
               label: str = 'checkpoint') -> dict[str, torch.Tensor]:
    """:func:`select_params` of the file at ``path``."""
    return select_params(load_file(path, label), param_key, str(path), label)


def checkpoint_arch(path: str | os.PathLike | None) -> dict | None:
    """The ``arch`` entry of a self-describing checkpoint; None when the file is missing or has none."""
    if not path or not osp.isfile(path):
        return None
    return read(path).arch


def load_training_state(path: str | os.PathLike, device: Any = 'cpu') -> dict:
    """A BasicSR training state (``<iter>.state``), loaded safely (``weights_only``) onto ``device``."""
    return torch.load(path, map_location=device, weights_only=True)


def atomic_save(obj: Any, path: Any) -> None:
    """``torch.save`` through :func:`ddsr.fileio.atomic_write` (temporary file, rename over ``path``; mode 0666 minus
    the umask, as ``torch.save(path)`` gives).
    A file object (not a path) is written directly, as ``torch.save`` does."""
    if not isinstance(path, (str, os.PathLike)):
        torch.save(obj, path)
        return
    with atomic_write(path) as f:
        torch.save(obj, f)


def save_self_describing(path: str | os.PathLike, params: Mapping[str, torch.Tensor], arch: Mapping,
                         params_ema: Mapping[str, torch.Tensor] | None = None, **extra: Any) -> dict:
    """Write ``{'params', 'params_ema', 'arch', **extra}`` atomically: BasicSR's ``load_network`` reads it with
    either param key, and :func:`build_from_checkpoint` rebuilds the network from ``arch``. Returns what was written."""
    ckpt = {'params': dict(params), 'params_ema': dict(params if params_ema is None else params_ema),
            'arch': dict(arch), **extra}
    atomic_save(ckpt, str(path))
    return ckpt


def network_arch(net: nn.Module, base: Mapping | None = None) -> dict:
    """The arch dict that rebuilds ``net``: its own ``config()`` when it has one, else ``base``."""
    config = getattr(net, 'config', None)
    if callable(config):
        return dict(config())
    if base is None:
        raise DDSRError(f'{type(net).__name__} has no config(): give its arch (type + kwargs)')
    return dict(base)


def load_weights(net: nn.Module, path: str | os.PathLike, param_key: str | None = 'params', strict: bool = True,
                 label: str = 'weights') -> nn.Module:
    """Load the :func:`select_params` entry of ``path`` into ``net``; a misfit is a :class:`DDSRError`."""
    state = load_state(path, param_key, label)
    try:
        net.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise DDSRError(f'{label}: {path} does not fit the network: {" ".join(str(err).split())[:300]}') from None
    return net


def build_from_checkpoint(path: str | os.PathLike, arch: Mapping | None = None, param_key: str | None = 'params',
                          label: str = 'weights') -> tuple[nn.Module, dict]:
    """``(net, arch)``: ``arch`` (or the checkpoint's own ``arch`` entry) built and loaded with the weights, in
    eval mode; the file is read once."""
    raw = load_file(path, label)
    if arch is None:
        stored = raw.get('arch')
        if not isinstance(stored, Mapping) or 'type' not in stored:
            raise DDSRError(f'{label}: {path} has no arch entry (not self-describing); give --arch TYPE '
                            '[--arch-kwargs]')
        arch = stored
    arch = dict(arch)
    net = build_network(arch)
    try:
        net.load_state_dict(select_params(raw, param_key, str(path), label), strict=True)
    except RuntimeError as err:
        raise DDSRError(f'{label}: {path} does not fit {arch["type"]}: {" ".join(str(err).split())[:300]}') from None
    return net.eval(), arch
