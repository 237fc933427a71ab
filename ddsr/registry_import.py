"""Auto-import of a subpackage's ``*_<suffix>.py`` files, BasicSR's registration convention."""
import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType


def import_modules(package: str, path: list[str], suffix: str) -> list[ModuleType]:
    """Import every module ``<package>.*<suffix>`` found in ``path`` (sorted, so the order is stable)."""
    names = sorted(info.name for info in pkgutil.iter_modules(path) if info.name.endswith(suffix))
    return [importlib.import_module(f'{package}.{name}') for name in names]


def lazy_modules_attr(package: str, path: list[str], suffix: str) -> Callable[[str], list[ModuleType]]:
    """A package ``__getattr__`` whose ``_modules`` imports every ``*<suffix>`` module of the package (and is the list
    of them), so that the package's ``__init__`` itself imports nothing."""

    def __getattr__(name: str) -> list[ModuleType]:
        if name == '_modules':
            return import_modules(package, path, suffix)
        raise AttributeError(f'module {package!r} has no attribute {name!r}')

    return __getattr__


# When ddsr's classes enter BasicSR's registries (ddsr.registration fills this in; kept here, at the bottom layer, so
# that ddsr.compat's registry patch and ddsr.archs.registry can consult it without importing upward).
REGISTRATION: dict = {'registered': False, 'registering': False, 'on_first_use': None}


def first_use() -> None:
    """Called by every lookup in a BasicSR registry: runs ddsr.registration.register_all once."""
    callback = REGISTRATION['on_first_use']
    if callback is not None:
        callback()
