"""ddsr losses: every `*_loss.py` here is imported so its classes land in BasicSR's LOSS_REGISTRY."""
from ddsr.registry_import import import_modules

_modules = import_modules(__name__, __path__, '_loss')
