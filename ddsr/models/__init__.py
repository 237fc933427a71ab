"""ddsr models: every `*_model.py` here registers its classes in BasicSR's MODEL_REGISTRY.

Their building blocks (hooks, schedules, the pruner, the self-describing base, enhanced-HR generation) are in
:mod:`ddsr.models.parts`, which registers nothing. This ``__init__`` imports nothing (so that importing a part does
not pull in every model):
:mod:`ddsr.registration` imports the ``*_model`` modules when a BasicSR registry is first used.
``_modules`` imports every ``*_model`` module (and is the list of them).
"""

from ddsr.registry_import import lazy_modules_attr

__getattr__ = lazy_modules_attr(__name__, list(__path__), '_model')
