"""What an arch unit's detector works with: the candidate list it adds to and the key/shape readers it shares.

A detector (``ArchUnit.detect``) reads a state dict's keys and shapes and adds the network options they suggest
to a :class:`Candidates`; :func:`ddsr.detect.candidates` then keeps those that fit the state dict exactly. No
torch import: only ``.shape`` of the tensors is read.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

State = Mapping[str, Any]  # name -> tensor


@dataclass
class Detection:
    """A network option (``type`` + kwargs) that fits a state dict exactly, and how it was decided."""
    arch: dict
    form: str = ''
    rule: str = ''

    def describe(self) -> str:
        kwargs = ', '.join(f'{k}={v}' for k, v in self.arch.items() if k != 'type')
        form = f' [{self.form}]' if self.form else ''
        rule = f' ({self.rule})' if self.rule else ''
        return f'{self.arch["type"]}({kwargs}){form}{rule}'


@dataclass
class Candidates:
    """The network options proposed for one state dict, in the order the detectors added them."""
    found: list[Detection] = field(default_factory=list)

    def add(self, arch: dict, form: str = '', rule: str = '') -> None:
        self.found.append(Detection(arch, form, rule))


def indices(state: State, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.fullmatch(k))})


def out(state: State, key: str) -> int:
    """Output channels (first dimension) of the tensor at ``key``."""
    return int(state[key].shape[0])


def root(value: float) -> int | None:
    """The integer square root of ``value``, None when it is not a perfect square."""
    r = int(round(math.sqrt(value)))
    return r if r * r == value else None


def upsample_scale(state: State, prefix: str, last_in: int) -> tuple[int, list[int]] | None:
    """(upscale, post-shuffle channels per stage) of a BasicSR ``Upsample`` at ``prefix`` (.0, .2, ...)."""
    stages = indices(state, re.escape(prefix) + r'\.(\d+)\.weight')
    if not stages:
        return None
    outs = [out(state, f'{prefix}.{j}.weight') for j in stages]
    ins = [int(state[f'{prefix}.{j}.weight'].shape[1]) for j in stages[1:]] + [last_in]
    roots = [root(o / i) for o, i in zip(outs, ins, strict=True)]
    factors = [f for f in roots if f in (2, 3)]
    if len(factors) != len(roots) or (3 in factors and len(factors) > 1):
        return None
    return math.prod(factors), ins
