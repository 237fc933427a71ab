"""ddsr archs: every ``*_arch.py`` here defines networks (DIPNet and DDistillSR: pure PyTorch, no basicsr import).

This ``__init__`` imports nothing, so that importing one network does not import the others (EDSRmini and
SwinIRmini subclass BasicSR's archs and import basicsr); :mod:`ddsr.registration` imports them all into BasicSR's
ARCH_REGISTRY when a BasicSR registry is first used. ``_modules`` imports every ``*_arch`` module (and is the
list of them).
"""

from ddsr.registry_import import lazy_modules_attr

__getattr__ = lazy_modules_attr(__name__, list(__path__), '_arch')
