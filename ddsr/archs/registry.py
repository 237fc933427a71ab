"""ddsr's arch registry stand-in: ``@ARCH_REGISTRY.register()`` without importing basicsr, name -> class lookup.

The arch modules decorate their classes with :data:`ARCH_REGISTRY` (the same spelling as BasicSR's): the class is
recorded here and, once :func:`ddsr.registration.register_all` ran (the first use of a BasicSR registry), forwarded
to BasicSR's ARCH_REGISTRY. :func:`arch_class` resolves a ``type`` name for inference: ddsr's own archs by
importing only their module (:data:`MODULES`; pure PyTorch for DIPNet and DDistillSR), any other name (BasicSR's
archs, e.g. ``EDSR``) through BasicSR's registry.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

# type name -> module defining it (checked against the decorators by tests/test_fast_start.py)
MODULES = {'DDistillSR': 'ddsr.archs.ddistill_arch', 'DIPNet': 'ddsr.archs.dipnet_arch',
           'EDSRmini': 'ddsr.archs.edsrmini_arch', 'SwinIRmini': 'ddsr.archs.swinirmini_arch'}
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


def forward_all() -> None:
    """Forward every recorded class to BasicSR's ARCH_REGISTRY (ddsr.registration, after importing the archs)."""
    for cls in list(_CLASSES.values()):
        _forward(cls)


def arch_class(name: str) -> type:
    """The class of an arch ``type`` name: ddsr's own without importing basicsr, others from BasicSR's registry."""
    if name in MODULES:
        importlib.import_module(MODULES[name])
        return _CLASSES[name]
    from basicsr.utils.registry import ARCH_REGISTRY as BASICSR_ARCHS  # patched on import (ddsr.registration)
    return BASICSR_ARCHS.get(name)  # registers ddsr's classes first; UnknownTypeError listing close names


def build_arch(config: Mapping[str, Any]) -> Any:
    """``arch_class(config['type'])(**kwargs)`` of an arch option dict."""
    kwargs = {k: v for k, v in config.items() if k != 'type'}
    return arch_class(str(config['type']))(**kwargs)

