"""ddsr: efficient super-resolution for BasicSR.

Importing ddsr applies the compatibility layer (:mod:`ddsr.compat`) and then imports every subpackage, whose
``__init__`` auto-imports its ``*_arch.py`` / ``*_loss.py`` / ``*_model.py`` / ``*_dataset.py`` files, so that
every class is in BasicSR's registries (ARCH, LOSS, MODEL, DATASET), and the OBProxSG optimizer is
known to BasicSR's ``get_optimizer``. Public inference API:
:class:`ddsr.ImageUpscaler` (``ImageUpscaler.from_pretrained('DIPNet-x4')(pil_image)``).
"""
from ddsr import compat

compat.apply()

from ddsr import archs, data, losses, models  # noqa: E402,F401  (registration)
from ddsr.api import ImageUpscaler  # noqa: E402  (public inference API)
from ddsr.compress import obproxsg  # noqa: E402,F401  (train.optim_g.type: OBProxSG)

__all__ = ['ImageUpscaler']

__version__ = '0.1.0'
