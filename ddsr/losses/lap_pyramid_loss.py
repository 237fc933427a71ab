"""Laplacian-pyramid distillation loss of Jiang et al. (compressing deep SR models, KD stage).

L_dis(S, T) = LapL1(S, T) + LapL1(S - G(S), T - G(T)), with LapL1(a, b) = sum_l 2^l * mean|L_l(a) - L_l(b)|
over ``levels`` Laplacian levels. G is the 5x5 binomial blur ([1,4,6,4,1]^T [1,4,6,4,1] / 256, per channel,
reflect padding); reduce = blur + 2x average pooling; expand = zero insertion + blur with 4G; the last level
is the low-pass residual. See DESIGN.md section 3.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

_BINOMIAL = (1., 4., 6., 4., 1.)


def binomial_kernel(channels: int) -> torch.Tensor:
    """Depthwise 5x5 binomial kernel G, shape (channels, 1, 5, 5), sum 1 per channel."""
    k1 = torch.tensor(_BINOMIAL)
    return (torch.outer(k1, k1) / 256.).expand(channels, 1, 5, 5).contiguous()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel convolution with ``kernel`` after reflect padding by 2 (size preserved)."""
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode='reflect'), kernel, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, kernel: torch.Tensor, levels: int) -> list:
    """``levels`` band-pass images: L_l = x_l - expand(reduce(x_l)) for l < levels - 1, then the residual."""
    bands = []
    current = x
    for _ in range(levels - 1):
        down = F.avg_pool2d(blur(current, kernel), 2)
        up = torch.zeros_like(current)
        up[..., ::2, ::2] = down
        bands.append(current - blur(up, 4 * kernel))
        current = down
    bands.append(current)
    return bands


@LOSS_REGISTRY.register()
class LapPyramidLoss(nn.Module):
    """Distillation loss L_dis(S, T) of the compression paper (output-only KD between student and teacher).

    Inputs whose height or width is not a multiple of 2^(levels-1) are reflect-padded at the bottom/right up
    to the next multiple (both inputs alike, so identical inputs still give 0). After padding, each side must
    be at least 2^levels (32 for 5 levels) so that every blurred level keeps >= 4 pixels; smaller inputs are
    rejected with a ValueError naming the size.

    Args:
        loss_weight (float): Weight of the loss. Default: 1.0.
        levels (int): Number of pyramid levels (the last one is the residual). Default: 5.
        reduction (str): 'mean' (the paper's per-level mean) or 'sum' (per-level sum). Default: 'mean'.
    """

    def __init__(self, loss_weight: float = 1.0, levels: int = 5, reduction: str = 'mean'):
        super().__init__()
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"LapPyramidLoss: unsupported reduction '{reduction}' (use 'mean' or 'sum')")
        if levels < 1:
            raise ValueError(f'LapPyramidLoss: levels must be >= 1, got {levels}')
        self.loss_weight = loss_weight
        self.levels = levels
        self.reduction = reduction

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        mult = 2**(self.levels - 1)
        h, w = x.shape[-2:]
        ph, pw = (-h) % mult, (-w) % mult
        if min(h + ph, w + pw) < 2**self.levels and self.levels > 1:
            raise ValueError(f'LapPyramidLoss: input {h}x{w} is too small for {self.levels} levels '
                             f'(each side must reach at least {2**self.levels} after padding to a multiple of {mult})')
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode='reflect')
        return x

    def lap_l1(self, a: torch.Tensor, b: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """LapL1(a, b) = sum_l 2^l * mean|L_l(a) - L_l(b)|."""
        reduce = torch.mean if self.reduction == 'mean' else torch.sum
        bands_a = laplacian_pyramid(a, kernel, self.levels)
        bands_b = laplacian_pyramid(b, kernel, self.levels)
        return sum(2**lvl * reduce(torch.abs(la - lb)) for lvl, (la, lb) in enumerate(zip(bands_a, bands_b)))

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        """L_dis(pred, target), both (N, C, H, W) of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f'LapPyramidLoss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ')
        pred, target = self._pad(pred), self._pad(target)
        kernel = binomial_kernel(pred.shape[1]).to(pred)
        high_pred = pred - blur(pred, kernel)
        high_target = target - blur(target, kernel)
        return self.loss_weight * (self.lap_l1(pred, target, kernel) + self.lap_l1(high_pred, high_target, kernel))
