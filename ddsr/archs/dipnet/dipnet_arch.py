"""DIPNet (Yu et al., NTIRE 2023 ESR; xiumu00/DIPNet): RLFN with a pruned middle width and reparameterized blocks.

Deploy form (state_dict keys identical to the official release): ``conv_1`` 3x3 -> 4 RRFBs -> ``conv_2`` 3x3 plus
the long skip from ``conv_1`` -> ``upsampler`` (3x3 conv to ``3*s*s`` + PixelShuffle(s)); conv_1/conv_2/upsampler and
all block convs are bias-free, ESA convs are biased. Train form (``deploy=False``): each block 3x3 conv is the sum of
an expand-squeeze branch (3x3 to ``expand_width``, then 1x1), a 1x1 conv and the identity (where in == out channels);
all branches are bias-free, so the fused 3x3 is bias-free like the released one (paper section 3.3).
"""
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ddsr.archs.capabilities import ReparamESACapabilities
from ddsr.archs.esa_upsample import ESA_STRIDE, upsample_coarse
from ddsr.archs.registry import ARCH_REGISTRY
from ddsr.archs.reparam import (
    Reparameterizable,
    conv_kernel_bias,
    identity_kernel,
    make_fused_conv,
    merge_kxk_1x1,
    sum_branches,
)


class ESA(nn.Module):
    """RLFN's enhanced spatial attention: a strided, max-pooled 1/6-resolution mask gates the features.

    ``m = sigmoid(conv4(up(conv3(maxpool7s3(conv2s2(c))) + conv_f(c))))`` with ``c = conv1(x)``; output ``x * m``.
    conv2 is 3x3 stride 2 without padding, so inputs need H, W >= 15.

    Args:
        num_feat (int): Channels of the gated features.
        esa_channels (int): Channels inside the attention branch.
    """

    grid_stride = ESA_STRIDE  # tiled inference aligns tiles to the coarse grid (ddsr.archs.esa_upsample)

    def __init__(self, num_feat: int, esa_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, esa_channels, 1)
        self.conv_f = nn.Conv2d(esa_channels, esa_channels, 1)
        self.conv2 = nn.Conv2d(esa_channels, esa_channels, 3, 2, 0)
        self.conv3 = nn.Conv2d(esa_channels, esa_channels, 3, 1, 1)
        self.conv4 = nn.Conv2d(esa_channels, num_feat, 1)

    def forward(self, x: Tensor) -> Tensor:
        c1 = self.conv1(x)
        low = self.conv3(F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3))
        low = upsample_coarse(low, x.shape[-2:])
        return x * torch.sigmoid(self.conv4(low + self.conv_f(c1)))


class RepConv3x3(nn.Module):
    """Train form of a bias-free 3x3 conv: ``squeeze(expand(x)) + conv1x1(x) [+ x]``, fusable into one 3x3.

    Args:
        in_ch (int): Input channels.
        out_ch (int): Output channels; the identity branch exists only when ``in_ch == out_ch``.
        expand_width (int): Width of the 3x3 expansion in the expand-squeeze branch.
    """

    def __init__(self, in_ch: int, out_ch: int, expand_width: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(in_ch, expand_width, 3, 1, 1, bias=False)
        self.squeeze = nn.Conv2d(expand_width, out_ch, 1, bias=False)
        self.conv1x1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.has_identity = in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.squeeze(self.expand(x)) + self.conv1x1(x)
        return out + x if self.has_identity else out

    def fused_conv(self) -> nn.Conv2d:
        """The equivalent bias-free 3x3 conv (kxk-then-1x1 merge + padded 1x1 + identity kernel)."""
        branches = [merge_kxk_1x1(conv_kernel_bias(self.expand), conv_kernel_bias(self.squeeze)),
                    conv_kernel_bias(self.conv1x1)]
        if self.has_identity:
            weight = self.conv1x1.weight
            branches.append((identity_kernel(weight.shape[0], 1, like=weight), weight.new_zeros(weight.shape[0])))
        kernel, _ = sum_branches(branches)  # every branch is bias-free, so the summed bias is zero
        return make_fused_conv(kernel, None)


class RRFB(Reparameterizable):
    """Reparameterized residual feature block: 3 convs (LReLU 0.05) + input, 1x1 ``c5``, ESA.

    Args:
        num_feat (int): Block input/output channels.
        mid_ch (int): Middle width (c1_r output = c2_r input/output = c3_r input); the pruned dimension.
        esa_channels (int): ESA width.
        deploy (bool): Plain 3x3 convs (True) or :class:`RepConv3x3` branches (False).
        expand_width (int): Expansion width of the train-form branches.
    """

    def __init__(self, num_feat: int, mid_ch: int, esa_channels: int, deploy: bool, expand_width: int) -> None:
        super().__init__()

        def conv3x3(in_ch: int, out_ch: int) -> nn.Module:
            return nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False) if deploy else RepConv3x3(in_ch, out_ch, expand_width)

        self.c1_r = conv3x3(num_feat, mid_ch)
        self.c2_r = conv3x3(mid_ch, mid_ch)
        self.c3_r = conv3x3(mid_ch, num_feat)
        self.c5 = nn.Conv2d(num_feat, num_feat, 1, bias=False)
        self.esa = ESA(num_feat, esa_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu(self.c1_r(x), 0.05)
        out = F.leaky_relu(self.c2_r(out), 0.05)
        out = F.leaky_relu(self.c3_r(out), 0.05)
        return self.esa(self.c5(out + x))

    def switch_to_deploy(self) -> None:
        """Replace every :class:`RepConv3x3` by its fused 3x3 conv (idempotent)."""
        for name in ('c1_r', 'c2_r', 'c3_r'):
            conv = getattr(self, name)
            if isinstance(conv, RepConv3x3):
                setattr(self, name, conv.fused_conv())


@ARCH_REGISTRY.register()
class DIPNet(ReparamESACapabilities, Reparameterizable):
    """DIPNet: RLFN-style network of RRFBs with (per-block) pruned middle widths.

    The official x4 release is ``DIPNet()`` (44 feat, mid 38, 4 blocks, ESA 16; 243,252 params).

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): Feature channels. Default: 44.
        num_mid (int): Middle width of every block when ``mid_channels`` is None. Default: 38.
        num_block (int): Number of RRFBs. Default: 4.
        esa_channels (int): ESA width. Default: 16.
        upscale (int): Upscale factor (2, 3, 4). Default: 4.
        deploy (bool): Deploy (plain convs, official keys) or train (reparameterizable branches) form. Default: True.
        expand_width (int): Expansion width of the train-form branches. Default: 256.
        mid_channels (list[int] | None): Per-block middle widths (non-uniform pruned results). Default: None.
    """

    # Precisions measured outside issue 23's quality contract with the official x4 weights (mean PSNR change in dB on
    # the 13-photo eval split, benchmarks/bench_precision.py); bf16 holds (-0.004 dB). ``--precision auto`` never
    # tries them (ddsr.deploy.precision.misses_contract).
    precision_misses = {'int8': -0.805}

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 44, num_mid: int = 38,
                 num_block: int = 4, esa_channels: int = 16, upscale: int = 4, deploy: bool = True,
                 expand_width: int = 256, mid_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        mid_channels = [num_mid] * num_block if mid_channels is None else [int(m) for m in mid_channels]
        if len(mid_channels) != num_block:
            raise ValueError(f'mid_channels has {len(mid_channels)} entries, num_block is {num_block}')
        self.kwargs = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_mid=num_mid,
                           num_block=num_block, esa_channels=esa_channels, upscale=upscale, expand_width=expand_width)
        self.mid_channels: list[int] = mid_channels
        self.deploy = deploy
        self.conv_1 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=False)
        for i, mid in enumerate(mid_channels):
            self.add_module(f'block_{i + 1}', RRFB(num_feat, mid, esa_channels, deploy, expand_width))
        self.conv_2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False)
        self.upsampler = nn.Sequential(
            nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1, bias=False), nn.PixelShuffle(upscale))

    @property
    def blocks(self) -> list[RRFB]:
        return [getattr(self, f'block_{i + 1}') for i in range(len(self.mid_channels))]

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv_1(x)
        out = feat
        for block in self.blocks:
            out = block(out)
        return self.upsampler(self.conv_2(out) + feat)

    def switch_to_deploy(self) -> None:
        """Fuse every block's train-form convs in place; afterwards the keys are the deploy (official) keys."""
        with torch.no_grad():
            for block in self.blocks:
                block.switch_to_deploy()
        self.deploy = True

    def config(self) -> dict:
        """Self-describing config ``{'type': 'DIPNet', **kwargs}`` that rebuilds this network (widths included)."""
        return {'type': 'DIPNet', **self.kwargs, 'deploy': self.deploy, 'mid_channels': list(self.mid_channels)}
