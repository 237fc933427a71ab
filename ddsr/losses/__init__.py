"""ddsr losses: every `*_loss.py` here registers its classes in BasicSR's LOSS_REGISTRY.

This ``__init__`` imports nothing (so that a light module here, e.g. a helper, does not pull in basicsr):
:mod:`ddsr.registration` imports the ``*_loss`` modules when a BasicSR registry is first used.
``_modules`` imports every ``*_loss`` module (and is the list of them).
"""


def __getattr__(name: str):
    if name == '_modules':
        from ddsr.registry_import import import_modules
        return import_modules(__name__, __path__, '_loss')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
