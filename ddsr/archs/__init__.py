"""ddsr archs: one subpackage per architecture family (an arch unit, :mod:`ddsr.archs.units`), each owning its
``*_arch.py`` networks (DIPNet and DDistillSR: pure PyTorch, no basicsr import), their recognition from a state
dict, size requirements, published checkpoints and compaction family; shared blocks (DBB, reparameterization, ESA
upsampling) and the capability protocol live at this level.

This ``__init__`` imports nothing, so that importing one network does not import the others (EDSRmini and
SwinIRmini subclass BasicSR's archs and import basicsr); :mod:`ddsr.registration` imports them all into BasicSR's
ARCH_REGISTRY when a BasicSR registry is first used. ``_modules`` imports every unit's network modules (and is the
list of them).
"""
import importlib
from types import ModuleType


def __getattr__(name: str) -> list[ModuleType]:
    if name == '_modules':
        from ddsr.archs.units import network_modules
        return [importlib.import_module(m) for m in dict.fromkeys(network_modules().values())]
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
