"""ddsr: efficient super-resolution for BasicSR.

Importing ddsr applies the compatibility layer (:mod:`ddsr.compat`) and then imports every subpackage, whose
``__init__`` auto-imports its ``*_arch.py`` / ``*_loss.py`` / ``*_model.py`` / ``*_dataset.py`` files, so that
every class is in BasicSR's registries (ARCH, LOSS, MODEL, DATASET).
"""
from ddsr import compat

compat.apply()

from ddsr import archs, data, losses, models  # noqa: E402,F401  (registration)

__version__ = '0.1.0'
