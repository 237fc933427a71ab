"""ddsr data: every `*_dataset.py` here registers its classes in BasicSR's DATASET_REGISTRY.

This ``__init__`` imports nothing (so that a light module here, e.g. a helper, does not pull in basicsr):
:mod:`ddsr.registration` imports the ``*_dataset`` modules when a BasicSR registry is first used.
``_modules`` imports every ``*_dataset`` module (and is the list of them).
"""

from ddsr.registry_import import lazy_modules_attr

__getattr__ = lazy_modules_attr(__name__, list(__path__), '_dataset')
