"""Make ``torchvision.transforms.functional_tensor`` importable again, lazily (the ``.pth`` startup hook of ddsr).

torchvision 0.17 removed that module; basicsr 1.4.2 imports ``rgb_to_grayscale`` from it, so plain
``import basicsr`` fails on today's torchvision. ddsr installs ``ddsr_torchvision_shim.pth`` next to this module in
site-packages; Python runs its one line (``import ddsr_torchvision_shim``) at start-up, which only appends
:class:`FunctionalTensorFinder` to ``sys.meta_path``. Nothing else is imported (no torch, torchvision or basicsr).

The finder is asked last, i.e. only when no installed torchvision provides the module. When something imports
``torchvision.transforms.functional_tensor``, it imports ``torchvision.transforms._functional_tensor`` (the
private successor, same functions) and registers it under the old name. Every other import is untouched.

Remove the hook: delete ``ddsr_torchvision_shim.pth`` from site-packages (``pip uninstall ddsr`` does too).
"""
import importlib
import importlib.abc
import importlib.machinery
import sys

OLD = 'torchvision.transforms.functional_tensor'
NEW = 'torchvision.transforms._functional_tensor'


class FunctionalTensorFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds only :data:`OLD`; loading it puts the successor module :data:`NEW` in its place."""

    @classmethod
    def find_spec(cls, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname != OLD:
            return None
        return importlib.machinery.ModuleSpec(fullname, cls())

    def create_module(self, spec):
        return None  # a placeholder module, replaced in exec_module

    def exec_module(self, module) -> None:
        sys.modules[OLD] = importlib.import_module(NEW)  # the import system returns what sys.modules holds


def install() -> None:
    """Append the finder to ``sys.meta_path`` once."""
    if not any(isinstance(finder, type) and finder.__name__ == 'FunctionalTensorFinder' for finder in sys.meta_path):
        sys.meta_path.append(FunctionalTensorFinder)


install()
