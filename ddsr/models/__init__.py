"""ddsr models: every `*_model.py` here registers its classes in BasicSR's MODEL_REGISTRY.

This ``__init__`` imports nothing (so that a light module here, e.g. a helper, does not pull in basicsr):
:mod:`ddsr.registration` imports the ``*_model`` modules when a BasicSR registry is first used.
``_modules`` imports every ``*_model`` module (and is the list of them).
"""


def __getattr__(name: str):
    if name == '_modules':
        from ddsr.registry_import import import_modules
        return import_modules(__name__, __path__, '_model')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
