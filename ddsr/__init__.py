"""ddsr: efficient super-resolution for BasicSR.

``import ddsr`` is light (no torch, no basicsr): it only arranges for BasicSR to be patched (:mod:`ddsr.compat`) when
it is imported and for ddsr's archs, datasets, losses, models and the OBProxSG optimizer to enter BasicSR's
registries when a registry is first used, so ``import ddsr`` followed by BasicSR's API (``build_network({'type':
'DIPNet', ...})``, ``basicsr train``) works as before while inference (``ddsr upscale``) imports only torch and the
network it runs. See :mod:`ddsr.registration` for the design. Public inference API: :class:`ddsr.ImageUpscaler`
(``ImageUpscaler.from_pretrained('DIPNet-x4')(pil_image)``), imported on first use.
"""
import importlib

from ddsr import cpu_threads as _threads
from ddsr import registration as _registration

_registration.install()

__version__ = '0.1.0'
__all__ = ['ImageUpscaler']
_LAZY = ('archs', 'bench', 'checks', 'commands', 'compat', 'compress', 'data', 'deploy', 'losses', 'models')


def __getattr__(name: str):
    """``ddsr.archs`` etc. and ``ddsr.ImageUpscaler`` without importing them up front."""
    if name in _LAZY:
        return importlib.import_module(f'{__name__}.{name}')
    if name == 'ImageUpscaler':
        _threads.apply(adapt=False)  # before ddsr.api imports torch (ddsr.cpu_threads)
        from ddsr.api import ImageUpscaler
        return ImageUpscaler
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
