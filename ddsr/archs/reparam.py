"""Structural reparameterization: fold linear branches into one convolution (kernel, bias).

Every helper works on plain tensors ``(kernel, bias)`` so that each network family (DDistill-SR's DBB
branches, DIPNet's expand-and-squeeze blocks, ...) composes them instead of re-deriving the algebra.
The transforms are those of the Diverse Branch Block (Ding et al., CVPR 2021, section 3.2):

- BN folding: ``gamma * (conv(x) + b - mu) / sigma + beta`` = conv with ``k * gamma / sigma``.
- 1x1 followed by kxk (sequential): one kxk kernel ``K[o, c] = sum_m K2[o, m] * K1[m, c]``.
- kxk followed by 1x1: one kxk kernel ``K[o, c] = sum_m W[o, m] * K1[m, c]``.
- average pooling as a fixed kxk kernel; identity as a centred one-hot kernel; 1x1 zero-padded to kxk.
- parallel branches: sum of kernels and biases (after padding to a common size).
"""
import functools
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

KernelBias = tuple[Tensor, Tensor]


def running_stats(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """``(running_mean, running_var)`` of a BatchNorm; ValueError for one that tracks none (cannot be folded)."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ValueError(f'{bn}: no running statistics (track_running_stats=False), cannot be folded')
    return mean, var


def fuse_bn(kernel: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> KernelBias:
    """Fold an eval-mode BatchNorm that follows a conv (``kernel``, optional ``bias``) into the conv."""
    mean, var = running_stats(bn)
    std = (var + bn.eps).sqrt()
    scale = bn.weight / std
    conv_bias = bias if bias is not None else torch.zeros_like(mean)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias + (conv_bias - mean) * scale


def bn_zero_response(bn: nn.BatchNorm2d) -> Tensor:
    """BN output for a zero input: the value a 'BN then pad' layer pads with (keeps fusion exact at borders)."""
    mean, var = running_stats(bn)
    return bn.bias - mean * bn.weight / (var + bn.eps).sqrt()


def merge_1x1_kxk(first: KernelBias, second: KernelBias) -> KernelBias:
    """Sequential 1x1 (C->M) then kxk (M->O) as one kxk (C->O).

    Exact when the intermediate map is padded with the first stage's bias (DBB's 'BN and pad'),
    i.e. when the composition is equivalent to applying the affine 1x1 to a zero-padded input.
    """
    k1, b1 = first
    k2, b2 = second
    kernel = F.conv2d(k2, k1.permute(1, 0, 2, 3))
    bias = (k2 * b1.reshape(1, -1, 1, 1)).sum((1, 2, 3)) + b2
    return kernel, bias


def merge_kxk_1x1(first: KernelBias, second: KernelBias) -> KernelBias:
    """Sequential kxk (C->M) then 1x1 (M->O) as one kxk (C->O); exact at borders for any padding."""
    k1, b1 = first
    k2, b2 = second
    weight = k2.flatten(1)  # (O, M)
    kernel = torch.einsum('om,mchw->ochw', weight, k1)
    return kernel, weight @ b1 + b2


def pad_to(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad a square kernel (e.g. 1x1) to ``size`` x ``size``, centred."""
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad, pad, pad, pad]) if pad > 0 else kernel


def identity_kernel(channels: int, size: int = 1, like: Tensor | None = None) -> Tensor:
    """Kernel of the identity map: centred one-hot per channel, shape ``(C, C, size, size)``."""
    kernel = torch.zeros(channels, channels, size, size)
    idx = torch.arange(channels)
    kernel[idx, idx, size // 2, size // 2] = 1.0
    return kernel.to(like) if like is not None else kernel


def avg_pool_kernel(channels: int, size: int, like: Tensor | None = None) -> Tensor:
    """Kernel of a per-channel ``size`` x ``size`` average pool (stride 1), shape ``(C, C, size, size)``."""
    kernel = torch.zeros(channels, channels, size, size)
    idx = torch.arange(channels)
    kernel[idx, idx] = 1.0 / (size * size)
    return kernel.to(like) if like is not None else kernel


def sum_branches(branches: Iterable[KernelBias]) -> KernelBias:
    """Parallel branches (same stride and centred padding) summed into one kernel and bias."""
    branches = list(branches)
    size = max(k.shape[-1] for k, _ in branches)
    kernel = functools.reduce(torch.add, [pad_to(k, size) for k, _ in branches])  # k1 + k2 + ..., in order
    bias = functools.reduce(torch.add, [b for _, b in branches])
    return kernel, bias


def conv_kernel_bias(conv: nn.Conv2d) -> KernelBias:
    """(kernel, bias) of a conv, with a zero bias when it has none."""
    bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
    return conv.weight, bias


def make_fused_conv(kernel: Tensor, bias: Tensor | None, stride: int = 1, padding: int | None = None,
                    dilation: int = 1, groups: int = 1) -> nn.Conv2d:
    """An ``nn.Conv2d`` holding the fused kernel (and bias, when not None); detached from the graph."""
    out_ch, in_per_group, k, _ = kernel.shape
    conv = nn.Conv2d(in_per_group * groups, out_ch, k, stride, k // 2 if padding is None else padding, dilation,
                     groups, bias=bias is not None)
    conv.weight.data.copy_(kernel.detach())
    if bias is not None and conv.bias is not None:
        conv.bias.data.copy_(bias.detach())
    return conv.to(kernel.device)


class Reparameterizable(nn.Module):
    """Mixin for modules with a train form and a deploy form; ``switch_to_deploy()`` converts in place."""

    def switch_to_deploy(self) -> None:
        raise NotImplementedError


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Convert every :class:`Reparameterizable` submodule of ``model`` in place (outermost first); eval mode.

    The tree is walked top-down *after* each conversion, so submodules that an outer conversion replaced or
    dropped are never visited (their conversion would be wasted work or fail on half-removed state).
    """
    model.eval()

    def convert(module: nn.Module) -> None:
        if isinstance(module, Reparameterizable):
            module.switch_to_deploy()
        for child in list(module.children()):
            convert(child)

    with torch.no_grad():
        convert(model)
    return model
