"""ddsr's arch registry stand-in (``@ARCH_REGISTRY.register()`` without importing basicsr), name -> class lookup,
and the one place a network is constructed from an arch dict (:func:`build_network`).

The arch modules decorate their classes with :data:`ARCH_REGISTRY` (the same spelling as BasicSR's): the class is
recorded here and, once :func:`ddsr.registration.register_all` ran (the first use of a BasicSR registry), forwarded
to BasicSR's ARCH_REGISTRY. :func:`arch_class` resolves a ``type`` name: ddsr's own archs by importing only their
module (:func:`ddsr.archs.units.network_modules`; pure PyTorch for DIPNet and DDistillSR), any other name
(BasicSR's archs, e.g. ``EDSR``) through BasicSR's registry.
"""
from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from typing import Any

from ddsr.archs.units import network_modules
from ddsr.errors import DDSRError, UnknownTypeError

_CLASSES: dict[str, type] = {}


def _forward(cls: type) -> None:
    from basicsr.utils.registry import ARCH_REGISTRY as BASICSR_ARCHS
    BASICSR_ARCHS.register(cls)


class _ArchRegistry:
    """``register()`` as BasicSR's Registry (decorator or call), recording the class."""

    def register(self, obj: type | None = None):
        def deco(cls: type) -> type:
            _CLASSES[cls.__name__] = cls
            from ddsr.registry_import import REGISTRATION
            if REGISTRATION['registered'] or REGISTRATION['registering']:
                _forward(cls)
            return cls

        return deco if obj is None else deco(obj)


ARCH_REGISTRY = _ArchRegistry()


def import_networks() -> None:
    """Import every arch unit's network modules (their decorators record the classes)."""
    for module in dict.fromkeys(network_modules().values()):
        importlib.import_module(module)


def forward_all() -> None:
    """Forward every recorded class to BasicSR's ARCH_REGISTRY (ddsr.registration, after importing the archs)."""
    for cls in list(_CLASSES.values()):
        _forward(cls)


def arch_class(name: str) -> type:
    """The class of an arch ``type`` name: ddsr's own without importing basicsr, others from BasicSR's registry
    (KeyError / UnknownTypeError listing close names when unknown)."""
    modules = network_modules()
    if name in modules:
        importlib.import_module(modules[name])
        return _CLASSES[name]
    from basicsr.utils.registry import ARCH_REGISTRY as BASICSR_ARCHS  # patched on import (ddsr.registration)
    return BASICSR_ARCHS.get(name)  # registers ddsr's classes first; UnknownTypeError listing close names


def build_network(arch: Mapping, *, meta: bool = False, **overrides: Any) -> Any:
    """Instantiate ``arch['type']`` with the other keys (and ``overrides``) as kwargs (deep-copied: the network
    never shares a list with the option dict).

    ``meta``: build on the ``meta`` device (keys and shapes only, no memory, no init cost), on the CPU when the arch
    computes values at build time. A malformed ``arch`` is a :class:`DDSRError`, an unknown type an
    :class:`UnknownTypeError`; what the constructor raises is passed on.
    """
    if not isinstance(arch, Mapping) or not isinstance(arch.get('type'), str):
        raise DDSRError(f'an arch is a mapping with a "type" name and the kwargs, got {arch!r}')
    try:
        cls = arch_class(arch['type'])
    except KeyError as err:  # UnknownTypeError names close names
        if isinstance(err, UnknownTypeError):
            raise
        raise UnknownTypeError(str(err.args[0]) if err.args else arch['type']) from None
    kwargs = copy.deepcopy({k: v for k, v in arch.items() if k != 'type'})
    kwargs.update(overrides)
    if meta:
        import torch
        try:
            with torch.device('meta'):
                return cls(**copy.deepcopy(kwargs))
        except Exception:  # noqa: B902  (an arch that computes values at build time: built on the CPU)
            pass
    return cls(**kwargs)
