"""Which network a checkpoint holds, from its keys and tensor shapes (as spandrel does for its archs).

``ddsr upscale|export|bench --weights FILE`` without ``--arch``, and :meth:`ddsr.ImageUpscaler.from_file`, use it:
a self-describing checkpoint (``arch`` entry, written by ddsr) is taken at its word; a plain state dict (or a
BasicSR ``params`` / ``params_ema`` checkpoint) is recognised by the detectors of the arch units
(:mod:`ddsr.archs.units`; today DDistillSR, DIPNet, EDSRmini / BasicSR's EDSR, SwinIRmini / BasicSR's SwinIR and
BasicSR's MSRResNet, each unit's docstring says which forms and widths it reads).

Every candidate is built (on the ``meta`` device: no memory, no init cost) and kept only if its state dict has
exactly the checkpoint's keys and shapes. What weights cannot tell is filled in by rule, and each rule is stated
with the candidate (the units' detectors). Several fitting candidates are an error listing them. Nothing here
imports basicsr for ddsr's own archs (inference's promise).
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Mapping

import torch
from torch import Tensor

from ddsr.archs.detection import Candidates, Detection
from ddsr.archs.registry import arch_class, build_network
from ddsr.archs.units import detectors, known_types
from ddsr.checkpoint import is_state_dict, load_file, select_params, state_mismatch, strip_module
from ddsr.errors import DDSRError

__all__ = ['KNOWN', 'Detection', 'build_meta', 'candidates', 'detect', 'detect_file', 'mismatch',
           'other_form_message', 'params_of', 'resolve_arch']

State = Mapping[str, Tensor]
KNOWN = ', '.join(known_types())  # the archs recognised from weights, at import (the message reads them anew)


# ---- verification and entry points ----


def build_meta(arch: Mapping) -> torch.nn.Module:
    """The network of ``arch`` on the meta device (keys and shapes only), on the CPU if that fails."""
    return build_network(arch, meta=True)


def mismatch(arch: Mapping, state: State) -> list[str]:
    """Keys missing / unexpected / of another shape when loading ``state`` into ``arch`` (empty: it fits)."""
    try:
        own = build_meta(arch).state_dict()
    except Exception as err:  # noqa: B902  (kwargs that do not build: reported as a mismatch)
        return [f'cannot build {arch.get("type")}: {err}']
    misfit = state_mismatch(own, state)
    return ([f'missing {k}' for k in misfit.missing] + [f'unexpected {k}' for k in misfit.unexpected] +
            [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in misfit.shapes])


def candidates(state: State) -> list[Detection]:
    """Every known network option that fits ``state`` exactly."""
    state = strip_module(state)
    found = Candidates()
    for detector in detectors():
        try:
            detector(state, found)
        except (KeyError, IndexError, ZeroDivisionError, TypeError, ValueError):  # keys of another layout
            continue
    return [d for d in found.found if not mismatch(d.arch, state)]


def detect(state: State, label: str = 'checkpoint') -> Detection:
    """The one network that fits ``state``; DDSRError when none or several do (the error lists them)."""
    found = candidates(state)
    if len(found) == 1:
        return found[0]
    if not found:
        known = ', '.join(known_types())
        raise DDSRError(f'{label}: not a checkpoint of a known arch ({known}), recognised from its keys and shapes; '
                        'give --arch TYPE [--arch-kwargs JSON]')
    listed = '; '.join(d.describe() for d in found)
    raise DDSRError(f'{label}: the weights fit {len(found)} networks: {listed}; choose one with --arch TYPE '
                    '--arch-kwargs JSON')


def params_of(raw: Mapping, param_key: str | None = 'params', label: str = 'checkpoint') -> dict[str, Tensor]:
    """The state dict BasicSR's ``load_network`` picks from a read checkpoint (``param_key``, else ``params``), or
    the file itself when it is a plain state dict (:func:`ddsr.checkpoint.select_params`)."""
    if is_state_dict(raw):
        return strip_module(raw)
    return select_params(dict(raw), param_key, label, label)


def _defaults(arch_type: str) -> dict:
    try:
        params = inspect.signature(arch_class(arch_type)).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def _same(a: object, b: object) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def other_form_message(arch: Mapping, found: Detection, label: str) -> str:
    """One line: the file fits ``found``, the same arch as ``arch`` with other kwargs (which, and how to fix)."""
    defaults = _defaults(found.arch['type'])
    diff = {k: v for k, v in found.arch.items() if k != 'type' and not _same(arch.get(k, defaults.get(k)), v)}
    extra = [k for k in arch if k != 'type' and k not in found.arch and not _same(arch[k], defaults.get(k))]
    what = f'the {found.form} of {found.arch["type"]}' if found.form else f'a {found.arch["type"]} checkpoint'
    fix = f'set {json.dumps(diff)} in --arch-kwargs' if diff else 'use the detected config'
    dropped = f' and drop {", ".join(extra)}' if extra else ''
    return (f'{label} holds {what} ({found.describe()}), which does not match the given {dict(arch)}: {fix}{dropped}, '
            'or leave out --arch (the file is recognised)')


def resolve_arch(raw: Mapping, arch: Mapping | None = None, param_key: str | None = 'params',
                 label: str = 'checkpoint') -> dict:
    """The network option to load ``raw`` (a read checkpoint) into.

    - ``arch`` given and fitting: ``arch``. Given but not fitting: if the weights are recognised, a DDSRError in one
      line naming what they are (e.g. the deploy form of the same arch and the kwargs to change); otherwise
      ``arch`` (the loader then reports the mismatching keys).
    - no ``arch``: the checkpoint's own ``arch`` entry (self-describing), else :func:`detect`.
    """
    if arch is None and isinstance(raw.get('arch'), Mapping) and 'type' in raw['arch']:
        return dict(raw['arch'])
    state = params_of(raw, param_key, label)
    if arch is None:
        return dict(detect(state, label).arch)
    if not mismatch(arch, state):
        return dict(arch)
    found = candidates(state)
    if len(found) != 1:
        return dict(arch)
    if found[0].arch['type'] == arch.get('type'):
        raise DDSRError(other_form_message(arch, found[0], label))
    raise DDSRError(f'{label} holds {found[0].describe()}, not a {arch.get("type")}: leave out --arch (the file is '
                    f'recognised) or give --arch {found[0].arch["type"]}')


def detect_file(path: str, param_key: str | None = 'params') -> Detection:
    """:func:`detect` on a checkpoint file (its own ``arch`` entry when it has one)."""
    raw = load_file(path, path)
    if isinstance(raw.get('arch'), Mapping) and 'type' in raw['arch']:
        return Detection(dict(raw['arch']), 'self-describing')
    return detect(params_of(raw, param_key, path), path)
