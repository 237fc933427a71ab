"""ddsr archs: every `*_arch.py` here is imported so its classes land in BasicSR's ARCH_REGISTRY."""
from ddsr.registry_import import import_modules

_modules = import_modules(__name__, __path__, '_arch')
