"""Input size requirements of a network (no torch import: arch units declare them at registry level).

:class:`SizeRequirements` is what :func:`ddsr.archs.capabilities.size_requirements` answers; ddsr's archs return
it from their own ``size_requirements()``, arch units name it for other packages' networks of their family.
"""
from dataclasses import dataclass

ESA_STRIDE = 6  # ESA: stride-2 conv then stride-3 max-pool (ddsr.archs.esa_upsample)
ESA_MIN_INPUT = 15  # smallest input side with one coarse cell: (15 - 3) // 2 + 1 = 7 = the max-pool window


@dataclass(frozen=True)
class SizeRequirements:
    """Input constraints of a network, in LR px.

    Attributes:
        min_size: Smallest input side the forward accepts (ESA nets: 15).
        multiple: Input sides must be multiples of this (Swin nets: the window size); inputs are padded up to it.
        grid: Tile origins must be multiples of this for tiled inference to be exact (ESA nets: 6).
    """
    min_size: int = 1
    multiple: int = 1
    grid: int = 1

    def fit(self, side: int) -> int:
        """Smallest side >= ``side`` that meets both ``min_size`` and ``multiple``."""
        side = max(side, self.min_size)
        return side + (-side) % self.multiple

    @property
    def smallest(self) -> int:
        """Smallest side meeting both ``min_size`` and ``multiple``."""
        return self.fit(1)


ANY_SIZE = SizeRequirements()
# ESA (RFDN, RLFN, DIPNet, DDistill-SR): conv 3x3 stride 2 unpadded, then max-pool 7 stride 3 -> >= 15 px.
ESA_REQUIREMENTS = SizeRequirements(min_size=ESA_MIN_INPUT, multiple=1, grid=ESA_STRIDE)
