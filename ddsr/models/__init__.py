"""ddsr models: every `*_model.py` here is imported so its classes land in BasicSR's MODEL_REGISTRY."""
from ddsr.registry_import import import_modules

_modules = import_modules(__name__, __path__, '_model')
