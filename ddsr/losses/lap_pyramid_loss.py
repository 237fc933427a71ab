"""Laplacian-pyramid distillation loss of Jiang et al. (compressing deep SR models, KD stage).

L_dis(S, T) = LapL1(S, T) + LapL1(S - G(S), T - G(T)), with LapL1(a, b) = sum_l 2^l * mean|L_l(a) - L_l(b)|
over ``levels`` Laplacian levels. G is the 5x5 binomial blur ([1,4,6,4,1]^T [1,4,6,4,1] / 256, per channel,
reflect padding); reduce = blur + 2x average pooling; expand = zero insertion + blur with 4G; the last level
is the low-pass residual (Jiang et al., KD stage).

How it is computed (same value, a fraction of the work; ``tests/test_distill.py`` checks it against the
formula written out directly):

- Every step (reflect padding, G, reduce, expand) is linear, so L_l(a) - L_l(b) = L_l(a - b) and
  (S - G(S)) - (T - G(T)) = D - G(D) with D = S - T. Only two pyramids are built, of D and of D - G(D), and
  both in ONE pass over their concatenation along the batch dimension (equal sizes, so the sum of the two
  per-level means is twice the mean over the concatenation).
- G is separable ([1,4,6,4,1] / 16 along H, then W) and applied with shifted slices of one reflect-padded
  tensor: no per-channel kernels or convolutions (a depthwise 5x5 convolution is slow on CPU, its backward
  slower).
- reduce (blur, then 2x2 average pooling) is one strided separable filter [1,5,10,10,5,1] / 32 per axis.
- All weights are exact binary fractions, so they are applied inside the taps (no separate normalisation).
- expand is polyphase: even outputs (d[i-1] + 6 d[i] + d[i+1]) / 8, odd outputs (d[i] + d[i+1]) / 2 per axis,
  where the reflect padding of the zero-inserted image amounts to d[-1] = d[1] and d[n] = d[n-1]; the zeros
  are never multiplied.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

# Separable 1-D weights (exact binary fractions, so the scaling adds no rounding): G = BINOMIAL^T BINOMIAL;
# reduce = G then 2x2 average pooling = [1,4,6,4,1] / 16 convolved with [1,1] / 2 per axis, taken at stride 2.
_BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
_REDUCE = (1 / 32, 5 / 32, 10 / 32, 10 / 32, 5 / 32, 1 / 32)


def _strided(x: torch.Tensor, dim: int, start: int, length: int, step: int) -> torch.Tensor:
    """View of x[start + step * i] along ``dim`` for i < ``length``."""
    view = x.narrow(dim, start, step * (length - 1) + 1)
    return view if step == 1 else view[(slice(None), ) * dim + (slice(None, None, step), )]


class _Taps(torch.autograd.Function):
    """y[i] = sum_k w[k] * x[start + k + step * i] along one axis; the backward scatters with in-place adds
    into one zero tensor (autograd's slice backward would allocate and fill a full-size tensor per tap)."""

    @staticmethod
    def forward(ctx, x, dim, weights, length, step, start):
        dim = dim % x.dim()
        ctx.args = (x.shape, dim, weights, length, step, start)
        out = None
        for k, weight in enumerate(weights):
            term = _strided(x, dim, start + k, length, step)
            if out is None:
                out = term * weight
            else:
                out.add_(term, alpha=weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        shape, dim, weights, length, step, start = ctx.args
        grad_x = grad.new_zeros(shape)
        for k, weight in enumerate(weights):
            _strided(grad_x, dim, start + k, length, step).add_(grad, alpha=weight)
        return grad_x, None, None, None, None, None


def _taps(x: torch.Tensor, dim: int, weights, length: int, step: int = 1, start: int = 0) -> torch.Tensor:
    """sum_k weights[k] * x[start + k + step * i] along ``dim`` for i < ``length``."""
    return _Taps.apply(x, dim, tuple(weights), length, step, start)


def blur(x: torch.Tensor) -> torch.Tensor:
    """G(x): 5x5 binomial blur of each channel, reflect padding by 2 (size preserved)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (2, 2, 2, 2), mode='reflect')
    return _taps(_taps(padded, -2, _BINOMIAL, h), -1, _BINOMIAL, w)


def reduce(x: torch.Tensor) -> torch.Tensor:
    """Pyramid reduce: G(x) followed by 2x2 average pooling, as one strided separable filter."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (2, 2, 2, 2), mode='reflect')
    return _taps(_taps(padded, -2, _REDUCE, h // 2, 2), -1, _REDUCE, w // 2, 2)


def _expand_axis(d: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero insertion along ``dim``, then the [1,4,6,4,1] / 8 filter with reflect padding (polyphase)."""
    n = d.shape[dim]
    ext = torch.cat((d.narrow(dim, 1, 1), d, d.narrow(dim, n - 1, 1)), dim)  # d[-1] = d[1], d[n] = d[n - 1]
    even = _taps(ext, dim, (1 / 8, 6 / 8, 1 / 8), n)
    odd = _taps(ext, dim, (1 / 2, 1 / 2), n, start=1)
    dim = dim % d.dim()
    shape = list(d.shape)
    shape[dim] = 2 * n
    return torch.stack((even, odd), dim + 1).reshape(shape)


def expand(d: torch.Tensor) -> torch.Tensor:
    """Pyramid expand to twice the size: zero insertion, then blur with 4G (reflect padding)."""
    return _expand_axis(_expand_axis(d, -2), -1)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list:
    """``levels`` band-pass images: L_l = x_l - expand(reduce(x_l)) for l < levels - 1, then the residual."""
    bands = []
    current = x
    for _ in range(levels - 1):
        down = reduce(current)
        bands.append(current - expand(down))
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

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        """L_dis(pred, target), both (N, C, H, W) of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f'LapPyramidLoss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ')
        diff = self._pad(pred - target)  # reflect padding is linear too
        both = torch.cat((diff, diff - blur(diff)), 0)  # pyramids of S - T and (S - G(S)) - (T - G(T))
        total = torch.zeros((), device=pred.device)
        for level, band in enumerate(laplacian_pyramid(both, self.levels)):
            # mean: mean|L(D)| + mean|L(D - G(D))| = 2 * mean over the concatenation (equal sizes)
            level_loss = band.abs().sum() if self.reduction == 'sum' else 2 * band.abs().mean()
            total = total + 2**level * level_loss
        return self.loss_weight * total


@LOSS_REGISTRY.register()
class MultiLapLoss(LapPyramidLoss):
    """The authors' name for the same loss (Jiang et al.'s release, ``dis_opt: {type: MultiLapLoss}``).

    Their class accepts ``reduction`` ('none' | 'mean' | 'sum') but always takes per-level means; so does this
    one, so that their option files give the same loss.

    Args:
        loss_weight (float): Weight of the loss. Default: 1.0.
        reduction (str): Accepted and ignored, as in the authors' class. Default: 'mean'.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f"MultiLapLoss: unsupported reduction '{reduction}'")
        super().__init__(loss_weight=loss_weight, levels=5, reduction='mean')
