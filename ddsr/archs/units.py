"""The arch units: one folder per architecture family, named in :data:`UNITS`, the one list every table reads.

A unit is a subpackage of ``ddsr.archs`` (or any importable package) whose ``__init__`` defines ``UNIT``, an
:class:`ArchUnit`: which networks its ``*_arch.py`` modules define (registered with ``@ARCH_REGISTRY.register()``),
how a state dict of the family is recognised, the size requirements of other packages' networks of the family,
its published checkpoints and its compaction family. The unit's ``__init__`` imports no torch and no basicsr (the
zoo and ``ddsr models`` read it); the networks are imported when they are built.

Adding an architecture is one folder (``__init__.py`` with ``UNIT`` plus its ``*_arch.py``) and one line in
:data:`UNITS` (docs/architectures.md). Everything arch-specific elsewhere reads these functions:

- :func:`network_modules`: ``ddsr.archs.registry`` (type -> module, builds without importing basicsr) and
  ``ddsr.registration`` (imports them into BasicSR's registry);
- :func:`detectors`, :func:`known_types`: ``ddsr.detect``;
- :func:`known_requirements`: ``ddsr.archs.capabilities``;
- :func:`pretrained_models`: ``ddsr.zoo``;
- :func:`compaction_modules`, :func:`compaction_presets`: ``ddsr.compress.compact``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ddsr.archs.detection import Candidates, State
from ddsr.archs.sizes import SizeRequirements

# The registry list: one line per unit, in detection order (several fitting candidates are listed in this order).
UNITS: tuple[str, ...] = (
    'ddsr.archs.ddistill',
    'ddsr.archs.dipnet',
    'ddsr.archs.edsr',
    'ddsr.archs.swinir',
    'ddsr.archs.msrresnet',
)


@dataclass(frozen=True)
class PretrainedModel:
    """One published checkpoint: what it is, where it comes from, how to build its network (``ddsr.zoo``)."""
    name: str
    arch: Mapping  # network_g: {'type': ..., **kwargs}, the form the file holds
    url: str
    sha256: str
    license: str
    form: str  # 'deploy' (inference weights, branches fused) or 'train'
    source: str  # the work that published it
    notes: str = ''
    param_key: str | None = None  # entry holding the weights (None: a plain state dict)
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def file_name(self) -> str:
        return Path(urlparse(self.url).path).name

    @property
    def scale(self) -> int:
        return int(self.arch.get('upscale', 4))


def released(name: str, arch: dict, github_file: str, sha256: str, license: str, source: str, notes: str,
             aliases: tuple[str, ...]) -> PretrainedModel:
    """A deploy-form plain state dict published in a GitHub repository (``owner/repo/branch/path``)."""
    return PretrainedModel(name, arch, f'https://raw.githubusercontent.com/{github_file}', sha256, license, 'deploy',
                           source, notes, aliases=aliases)


@dataclass(frozen=True)
class ArchUnit:
    """One architecture family.

    Attributes:
        name: The family's name (docs, error messages).
        networks: ddsr's own arch ``type`` names -> the module defining them (``@ARCH_REGISTRY.register()``).
        detects: Every ``type`` its detector can propose, own and other packages' (listed in "known archs").
        detect: Adds the network options a state dict's keys and shapes suggest (:mod:`ddsr.archs.detection`);
            each is kept only if it fits exactly. None: the family is not recognised from weights.
        requirements: Size requirements of other packages' networks of the family, by ``type`` (ddsr's own archs
            answer ``size_requirements()`` themselves).
        models: Its published checkpoints (``ddsr models``, ``--model NAME``, ``ddsr://NAME``).
        compaction: ``type`` -> module of its compaction family (``ddsr compress``; normalize / scores /
            compress / compact_arch / structure / config_for_alpha).
        presets: Named compaction targets (``--target NAME``) -> arch option.
    """
    name: str
    networks: Mapping[str, str] = field(default_factory=dict)
    detects: tuple[str, ...] = ()
    detect: Callable[[State, Candidates], None] | None = None
    requirements: Mapping[str, SizeRequirements] = field(default_factory=dict)
    models: tuple[PretrainedModel, ...] = ()
    compaction: Mapping[str, str] = field(default_factory=dict)
    presets: Mapping[str, Mapping] = field(default_factory=dict)


def units() -> list[ArchUnit]:
    """The ``UNIT`` of every module in :data:`UNITS`, in order (imports only the units' light ``__init__``)."""
    return [importlib.import_module(name).UNIT for name in UNITS]


def _merged(pick: Callable[[ArchUnit], Mapping]) -> dict:
    """One dict from a mapping of every unit; a name claimed by two units is an error (each table exists once)."""
    merged: dict = {}
    for unit in units():
        for key, value in pick(unit).items():
            if key in merged:
                raise ValueError(f'arch unit {unit.name}: {key!r} is already declared by another unit')
            merged[key] = value
    return merged


def network_modules() -> dict[str, str]:
    """ddsr's arch ``type`` -> module defining it."""
    return _merged(lambda unit: unit.networks)


def detectors() -> list[Callable[[State, Candidates], None]]:
    """The units' detectors, in :data:`UNITS` order."""
    return [unit.detect for unit in units() if unit.detect is not None]


def known_types() -> list[str]:
    """Every ``type`` recognised from weights: ddsr's own first, then other packages', each in unit order."""
    found = [t for unit in units() for t in unit.detects]
    own = network_modules()
    return [t for t in found if t in own] + [t for t in found if t not in own]


def known_requirements() -> dict[str, SizeRequirements]:
    """Size requirements of other packages' networks, by ``type``."""
    return _merged(lambda unit: unit.requirements)


def pretrained_models() -> dict[str, PretrainedModel]:
    """Every unit's published checkpoints, by name."""
    return _merged(lambda unit: {m.name: m for m in unit.models})


def compaction_modules() -> dict[str, str]:
    """Arch ``type`` -> module of its compaction family."""
    return _merged(lambda unit: unit.compaction)


def compaction_presets() -> dict[str, Mapping]:
    """Named compaction targets -> arch option."""
    return _merged(lambda unit: unit.presets)
