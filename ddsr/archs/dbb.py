"""Diverse Branch Block (Ding et al., CVPR 2021): four linear branches at train time, one kxk conv at deploy time.

Train form (stride 1, groups 1, bias-free branches, key names as in the DBB / DDistill-SR releases)::

    dbb_origin   kxk conv + BN
    dbb_1x1      1x1 conv + BN
    dbb_avg      1x1 conv + BN(pad) + kxk avg-pool (pad 0) + BN            keys conv, bn.bn, avgbn
    dbb_1x1_kxk  identity-init 1x1 + BN(pad) + kxk conv (pad 0) + BN        keys idconv1, bn1.bn, conv2, bn2

Deploy form: ``dbb_reparam``, one kxk conv with bias, equal to the sum of the branches in eval mode. 'BN(pad)'
pads its output with the BN's response to a zero input, so a 1x1 stage followed by a pad-0 kxk stage equals one
kxk conv on the zero-padded input, borders included (DBB section 3.2, transforms I, III, V, VI).
"""
from collections import OrderedDict

from torch import Tensor, nn
from torch.nn import functional as F

from ddsr.archs.reparam import (
    KernelBias,
    Reparameterizable,
    avg_pool_kernel,
    bn_zero_response,
    fuse_bn,
    identity_kernel,
    make_fused_conv,
    merge_1x1_kxk,
    sum_branches,
)


class BNAndPad(nn.Module):
    """BatchNorm2d then padding with the BN's zero-input response (not 0), so that fusion stays exact at borders.

    Args:
        num_features (int): Channels.
        pad (int): Pixels padded on each side.
    """

    def __init__(self, num_features: int, pad: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn(x)
        if self.pad == 0:
            return out
        # running statistics also in training (as released): the pad value is a constant, not a batch statistic
        value = bn_zero_response(self.bn).detach().reshape(1, -1, 1, 1)
        # pad(out - value, 0) + value == pad(out, value)
        return F.pad(out - value, [self.pad] * 4) + value


class IdentityConv1x1(nn.Conv2d):
    """Bias-free 1x1 conv whose effective kernel is ``weight + I`` (weight zero-initialised: starts as identity)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 1, bias=False)
        nn.init.zeros_(self.weight)

    def kernel(self) -> Tensor:
        return self.weight + identity_kernel(self.in_channels, 1, like=self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel())


def _weight(module: nn.Module | Tensor) -> Tensor:
    """The weight of a conv sub-module (typed access for the fusion code)."""
    assert isinstance(module, nn.Conv2d)
    return module.weight


def _bn(module: nn.Module | Tensor) -> nn.BatchNorm2d:
    """The BatchNorm2d of a branch stage: the module itself, or the ``bn`` inside a :class:`BNAndPad`."""
    bn = module.bn if isinstance(module, BNAndPad) else module
    assert isinstance(bn, nn.BatchNorm2d)
    return bn


def _conv_bn(in_ch: int, out_ch: int, kernel_size: int) -> nn.Sequential:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, 1, kernel_size // 2, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_ch)))


class DiverseBranchBlock(Reparameterizable):
    """Static DBB conv (``in_ch -> out_ch``, ``kernel_size`` odd, stride 1), train or deploy form.

    ``forward`` returns the static response ``S(x)`` (no activation). ``switch_to_deploy`` replaces the four
    branches by ``dbb_reparam`` (exact in eval mode).

    Args:
        in_ch (int): Input channels.
        out_ch (int): Output channels.
        kernel_size (int): Odd kernel size k.
        deploy (bool): Build the fused ``dbb_reparam`` conv (True) or the four branches (False).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, deploy: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        self.kernel_size = kernel_size
        pad = kernel_size // 2
        if deploy:
            self.dbb_reparam = nn.Conv2d(in_ch, out_ch, kernel_size, 1, pad, bias=True)
            return
        self.dbb_origin = _conv_bn(in_ch, out_ch, kernel_size)
        self.dbb_avg = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_ch, out_ch, 1, bias=False),
                bn=BNAndPad(out_ch, pad),
                avg=nn.AvgPool2d(kernel_size, 1, 0),
                avgbn=nn.BatchNorm2d(out_ch)))
        self.dbb_1x1 = _conv_bn(in_ch, out_ch, 1)
        self.dbb_1x1_kxk = nn.Sequential(
            OrderedDict(
                idconv1=IdentityConv1x1(in_ch),
                bn1=BNAndPad(in_ch, pad),
                conv2=nn.Conv2d(in_ch, out_ch, kernel_size, 1, 0, bias=False),
                bn2=nn.BatchNorm2d(out_ch)))

    @property
    def deploy(self) -> bool:
        return hasattr(self, 'dbb_reparam')

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.dbb_reparam(x)
        return self.dbb_origin(x) + self.dbb_1x1(x) + self.dbb_avg(x) + self.dbb_1x1_kxk(x)

    def equivalent_kernel_bias(self) -> KernelBias:
        """(kernel, bias) of the single kxk conv equal to the four branches (eval-mode BN statistics)."""
        k = self.kernel_size
        origin = fuse_bn(_weight(self.dbb_origin.conv), None, _bn(self.dbb_origin.bn))
        one = fuse_bn(_weight(self.dbb_1x1.conv), None, _bn(self.dbb_1x1.bn))
        avg = self.dbb_avg
        avgbn = _bn(avg.avgbn)
        avg_second = fuse_bn(avg_pool_kernel(avgbn.num_features, k, like=_weight(avg.conv)), None, avgbn)
        avg_branch = merge_1x1_kxk(fuse_bn(_weight(avg.conv), None, _bn(avg.bn)), avg_second)
        seq = self.dbb_1x1_kxk
        idconv = seq.idconv1
        assert isinstance(idconv, IdentityConv1x1)
        seq_branch = merge_1x1_kxk(
            fuse_bn(idconv.kernel(), None, _bn(seq.bn1)), fuse_bn(_weight(seq.conv2), None, _bn(seq.bn2)))
        return sum_branches([origin, one, avg_branch, seq_branch])

    def switch_to_deploy(self) -> None:
        """Replace the branches by ``dbb_reparam`` (idempotent)."""
        if self.deploy:
            return
        kernel, bias = self.equivalent_kernel_bias()
        for name in ('dbb_origin', 'dbb_avg', 'dbb_1x1', 'dbb_1x1_kxk'):
            delattr(self, name)
        self.dbb_reparam = make_fused_conv(kernel, bias)
