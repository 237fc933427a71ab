"""EDSRmini (Jiang et al., "Compressing Deep Image Super-resolution Models"): BasicSR's EDSR at 16 features and
8 blocks, with optional non-uniform widths so that any pruned EDSR is an ordinary arch described in YAML.

State-dict keys equal BasicSR's ``EDSR`` (conv_first, body.i.conv1/conv2, conv_after_body, upsample.{0,2},
conv_last), so teacher weights carry over by slicing (ddsr.compress.edsr_compress).
``res_scale`` has BasicSR's meaning: a block returns ``x + res_scale * conv2(relu(conv1(x)))``.
"""
import copy
from collections.abc import Sequence

from basicsr.archs.arch_util import ResidualBlockNoBN
from basicsr.archs.edsr_arch import EDSR
from torch import nn

from ddsr.archs.registry import ARCH_REGISTRY
from ddsr.archs.sizes import ANY_SIZE, SizeRequirements


def upsample_stages(upscale: int) -> int:
    """Number of conv + PixelShuffle stages of BasicSR's Upsample (log2 r for 2^n, one for 3)."""
    if upscale == 3:
        return 1
    if upscale < 2 or upscale & (upscale - 1):
        raise ValueError(f'upscale {upscale} is not supported. Supported scales: 2^n and 3.')
    return upscale.bit_length() - 1


class PrunedResidualBlock(ResidualBlockNoBN):
    """ResidualBlockNoBN whose inner width (conv1 out = conv2 in) is ``mid_feat`` instead of ``num_feat``."""

    def __init__(self, num_feat: int, mid_feat: int, res_scale: float = 1):
        super().__init__(num_feat=num_feat, res_scale=res_scale, pytorch_init=True)
        self.conv1 = nn.Conv2d(num_feat, mid_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(mid_feat, num_feat, 3, 1, 1)


def pruned_upsample(upscale: int, num_feat: int, channels: Sequence[int]) -> nn.Sequential:
    """BasicSR's Upsample (same keys upsample.0, .2, ...) whose stage i outputs ``channels[i]`` maps after shuffle."""
    r = 3 if upscale == 3 else 2
    layers, in_ch = [], num_feat
    for ch in channels:
        layers += [nn.Conv2d(in_ch, r * r * ch, 3, 1, 1), nn.PixelShuffle(r)]
        in_ch = ch
    return nn.Sequential(*layers)


@ARCH_REGISTRY.register()
class EDSRmini(EDSR):
    """EDSR with per-block widths (paper defaults: 16 features, 8 blocks, res_scale 2).

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): Trunk (residual stream) channels. Default: 16.
        num_block (int): Residual blocks. Default: 8.
        upscale (int): 2^n or 3. Default: 2.
        res_scale (float): Residual scale inside each block. Default: 2.
        img_range (float): Image range. Default: 255.
        rgb_mean (tuple[float]): RGB mean subtracted at the input. Default: DIV2K mean.
        block_channels (list[int] | None): Inner width of each block (len num_block); None = num_feat everywhere.
        upsample_channels (list[int] | None): Post-shuffle channels of each upsample stage; None = num_feat.
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 16, num_block: int = 8,
                 upscale: int = 2, res_scale: float = 2, img_range: float = 255.,
                 rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040), block_channels: Sequence[int] | None = None,
                 upsample_channels: Sequence[int] | None = None):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, upscale, res_scale, img_range, rgb_mean)
        self.kwargs = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=num_block,
                           upscale=upscale, res_scale=res_scale, img_range=img_range, rgb_mean=list(rgb_mean))
        if block_channels is not None:
            self.kwargs['block_channels'] = [int(c) for c in block_channels]
        if upsample_channels is not None:
            self.kwargs['upsample_channels'] = [int(c) for c in upsample_channels]
        if block_channels is not None:
            if len(block_channels) != num_block:
                raise ValueError(f'block_channels has {len(block_channels)} entries, num_block is {num_block}')
            self.body = nn.Sequential(*[PrunedResidualBlock(num_feat, c, res_scale) for c in block_channels])
        if upsample_channels is not None:
            if len(upsample_channels) != upsample_stages(upscale):
                raise ValueError(f'upsample_channels needs {upsample_stages(upscale)} entries for x{upscale}')
            self.upsample = pruned_upsample(upscale, num_feat, upsample_channels)
            self.conv_last = nn.Conv2d(upsample_channels[-1], num_out_ch, 3, 1, 1)

    is_deployed = True  # a single form (plain convs): nothing to fuse

    def size_requirements(self) -> SizeRequirements:
        """Convolutions only: any input size, any tile origin."""
        return ANY_SIZE

    def config(self) -> dict:
        """Self-describing config ``{'type': 'EDSRmini', **kwargs}`` that rebuilds this network (pruned widths
        included)."""
        return {'type': 'EDSRmini', **copy.deepcopy(self.kwargs)}
