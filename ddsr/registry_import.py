"""Auto-import of a subpackage's ``*_<suffix>.py`` files, BasicSR's registration convention."""
import importlib
import pkgutil
from types import ModuleType


def import_modules(package: str, path: list[str], suffix: str) -> list[ModuleType]:
    """Import every module ``<package>.*<suffix>`` found in ``path`` (sorted, so the order is stable)."""
    names = sorted(info.name for info in pkgutil.iter_modules(path) if info.name.endswith(suffix))
    return [importlib.import_module(f'{package}.{name}') for name in names]
