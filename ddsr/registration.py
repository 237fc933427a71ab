"""When ddsr's classes enter BasicSR's registries: lazily, so that inference never imports the ``basicsr`` package.

Importing ``basicsr`` imports every BasicSR arch, model, dataset, loss and torchvision (~3 s on a 2-core machine);
``ddsr upscale`` needs none of it: the deploy networks (:mod:`ddsr.archs.dipnet.dipnet_arch`, ...) are pure PyTorch
modules. So ``import ddsr`` is light (no torch, no basicsr) and the BasicSR side is wired up in two steps:

1. **When ``basicsr`` is imported** (by anyone, after ``import ddsr``): a one-shot ``sys.meta_path`` hook
   (:class:`_BasicSRHook`) wraps the import of the ``basicsr`` package. Before BasicSR's ``__init__`` runs it applies
   the shims BasicSR needs to import at all (:func:`ddsr.compat.apply_pre_import`), afterwards every other patch
   (:func:`ddsr.compat.apply`), including the registry patch of step 2. If ``basicsr`` was imported before ddsr,
   ``import ddsr`` does this at once.
2. **When a BasicSR registry is first used** (``ARCH_REGISTRY.get``, ``in``, iteration, ``keys``; e.g. by
   ``build_network({'type': 'DIPNet'})``, ``build_model``, ``basicsr train``): :func:`register_all` imports every
   arch unit's ``*_arch.py`` and every ``*_dataset.py`` / ``*_loss.py`` / ``*_model.py`` of ddsr, as ``import ddsr``
   did before. Doing
   this on first use rather than right after BasicSR's import means it never runs while some ddsr module is
   half-imported (a ddsr module importing ``basicsr`` at its top triggers step 1, not step 2).

Why not simply register in ``ddsr/__init__``: that forces ``basicsr`` (and thus torchvision and all of BasicSR) into
every process that imports any ddsr module, the 3 s ``ddsr upscale`` and ``ddsr --help`` paid before. Why not an
explicit ``ddsr.register()`` call: ``import ddsr`` followed by BasicSR's own API must keep working unchanged.

ddsr's archs use :data:`ddsr.archs.registry.ARCH_REGISTRY`, a stand-in with BasicSR's ``register()`` decorator
that records classes without importing basicsr and forwards them to BasicSR's ARCH_REGISTRY once step 2 ran;
inference resolves ddsr arch names through :func:`ddsr.archs.registry.arch_class` without BasicSR.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

from ddsr.registry_import import REGISTRATION as STATE

SUBPACKAGES = {'data': '_dataset', 'losses': '_loss', 'models': '_model'}  # archs: the arch units' networks


def register_all() -> None:
    """Import every registering module of ddsr (once; re-entrant calls during the imports return at once)."""
    if STATE['registered'] or STATE['registering']:
        return
    STATE['registering'] = True
    try:
        from ddsr.archs import registry
        from ddsr.registry_import import import_modules
        registry.import_networks()  # every arch unit's *_arch modules (ddsr.archs.units)
        for package, suffix in SUBPACKAGES.items():
            pkg = importlib.import_module(f'ddsr.{package}')
            import_modules(pkg.__name__, list(pkg.__path__), suffix)
        importlib.import_module('ddsr.compress.obproxsg')  # train.optim_*.type: OBProxSG (compat.register_optimizer)
        STATE['registered'] = True
        registry.forward_all()
    finally:
        STATE['registering'] = False


def patch_basicsr() -> None:
    """Apply ddsr.compat to an imported basicsr (idempotent)."""
    from ddsr import compat
    compat.apply()


class _HookedLoader(importlib.abc.Loader):
    """The loader of the ``basicsr`` package, with ddsr's shims before and its patches after BasicSR's ``__init__``."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        from ddsr import compat
        compat.apply_pre_import()
        self._loader.exec_module(module)
        patch_basicsr()

    def __getattr__(self, name: str):  # get_data, get_resource_reader, ...: the original loader's
        return getattr(self._loader, name)


class _BasicSRHook(importlib.abc.MetaPathFinder):
    """One-shot finder: hooks the first import of the ``basicsr`` package, then removes itself."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != 'basicsr':
            return None
        uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _HookedLoader(spec.loader)
        return spec


def uninstall() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _BasicSRHook)]


def install() -> None:
    """Called by ``import ddsr``: patch basicsr now if it is imported, else when it will be."""
    STATE['on_first_use'] = register_all
    if 'basicsr' in sys.modules:
        patch_basicsr()
    elif not any(isinstance(finder, _BasicSRHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BasicSRHook())


def ensure() -> None:
    """BasicSR imported and patched and ddsr's classes in its registries (for code that needs all of them)."""
    import basicsr  # noqa: F401  (the hook patches it)
    patch_basicsr()
    register_all()
