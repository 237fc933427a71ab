"""Make ``torchvision.transforms.functional_tensor`` importable again, lazily (the ``.pth`` startup hook of ddsr).

torchvision 0.17 removed that module; basicsr 1.4.2 imports ``rgb_to_grayscale`` from it, so plain
``import basicsr`` fails on today's torchvision. ddsr installs ``ddsr_torchvision_shim.pth`` next to this module in
site-packages; Python runs its one line (``import ddsr_torchvision_shim``) at start-up, which only appends
:class:`FunctionalTensorFinder` to ``sys.meta_path``.

Every Python process of the environment runs this, so it imports nothing: ``sys`` is built in, and the spec class
is the one the import system already used for this module (``type(__spec__)``). No ``importlib.abc`` (it pulls in
~28 modules), no ``from __future__``, no evaluated annotations (tests/test_dropin_hook.py checks that
``sys.modules`` gains only this module; benchmarks/bench_startup_hook.py measures the cost).

The finder is asked last, i.e. only when no installed torchvision provides the module. When something imports
``torchvision.transforms.functional_tensor``, it imports ``torchvision.transforms._functional_tensor`` (the
private successor, same functions) and registers it under the old name. Every other import is untouched.

Remove the hook: delete ``ddsr_torchvision_shim.pth`` from site-packages (``pip uninstall ddsr`` does too).
"""
import sys

OLD = 'torchvision.transforms.functional_tensor'
NEW = 'torchvision.transforms._functional_tensor'
_ModuleSpec = type(__spec__)  # importlib.machinery.ModuleSpec, without importing importlib


class FunctionalTensorFinder:
    """Finds only :data:`OLD`; loading it puts the successor module :data:`NEW` in its place. A meta path finder
    and loader by protocol (``find_spec``; ``create_module``/``exec_module``), not by importlib.abc base classes."""

    @classmethod
    def find_spec(cls, fullname: str, path: 'object' = None, target: 'object' = None) -> 'object | None':
        if fullname != OLD:
            return None
        return _ModuleSpec(fullname, cls())

    def create_module(self, spec: 'object') -> None:
        return None  # a placeholder module, replaced in exec_module

    def exec_module(self, module: 'object') -> None:
        __import__(NEW)
        sys.modules[OLD] = sys.modules[NEW]  # the import system returns what sys.modules holds


def install() -> None:
    """Append the finder to ``sys.meta_path`` once."""
    if not any(isinstance(finder, type) and finder.__name__ == 'FunctionalTensorFinder' for finder in sys.meta_path):
        sys.meta_path.append(FunctionalTensorFinder)


install()
