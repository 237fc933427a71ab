"""DDistill-SR (Wang et al., 2023; icandle/DDistill-SR): reparameterized dynamic distillation network.

State_dict keys equal the official release in both forms (train: DBB branches; deploy: ``dbb_reparam``), so the
released ``DDistill-SRx4_inference.pth`` loads into ``DDistillSR(upscale=4, deploy=True)`` with ``strict=True``.
Building blocks (paper section 3):

- RDU (reparameterized dynamic unit): ``out = act(a(x) * S(x) + D(x))``, also returns ``D(x)``. ``S`` is a static
  DBB conv (4 branches fused into one kxk at deploy), ``a`` per-channel input-dependent weights, ``D`` a dynamic
  low-rank branch (:class:`DynamicBranch`).
- DFDB (dynamic feature distillation block): RFDN-style distillation with RDUs, a gated fusion of the units'
  dynamic residuals and ESA.
- DDF (dynamic distillation fusion): the same gated fusion of the blocks' residuals at network level.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ddsr.archs.capabilities import ReparamESACapabilities
from ddsr.archs.dbb import DiverseBranchBlock
from ddsr.archs.esa_upsample import ESA_STRIDE, upsample_coarse
from ddsr.archs.registry import ARCH_REGISTRY
from ddsr.archs.reparam import Reparameterizable, fuse_bn, make_fused_conv, running_stats


def hard_sigmoid(x: Tensor) -> Tensor:
    """``ReLU6(x + 3) / 3`` (range [0, 2]), the gate of the dynamic branch."""
    return F.relu6(x + 3.) / 3.


class SqueezeGate(nn.Module):
    """``z * hsig(W z)``: the small squeeze-excitation on the pooled descriptor (key ``fc.0``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels, bias=False))

    def forward(self, z: Tensor) -> Tensor:
        return z * hard_sigmoid(self.fc(z))


class DynamicBranch(nn.Module):
    """Dynamic part of an RDU (dynamic convolution decomposition, DCD-style), returns ``(a, D)``.

    ``y = GAP(x)``, ``z = SE(W_fc y)`` (C -> s, s = max(C, d^2) // 16), ``Phi = reshape(W_phi z)`` (d x d),
    ``a = hsig(W_scale z)`` (one weight per output channel), ``Q = BN2d(q(x))`` (1x1 C -> d),
    ``Q' = BN1d(Phi Q) + Q``, ``D = p(Q')`` (1x1 d -> C_out).

    After :meth:`fold_bn` (eval only, exact): ``bn1`` lives in ``q``'s bias, ``bn2``'s scale in ``fc_phi``'s rows and
    its shift in ``p``'s bias, and ``D = (W_p (Phi' + I)) Q + b_p`` is one batched matmul per sample.

    Args:
        in_ch (int): Input channels C.
        out_ch (int): Output channels.
        dim (int): Rank d of the dynamic matrix.
        fold_bn (bool): Build the folded form (no BN layers, biased q and p).
    """

    def __init__(self, in_ch: int, out_ch: int, dim: int, fold_bn: bool = False) -> None:
        super().__init__()
        self.dim = dim
        squeeze = max(in_ch, dim * dim) // 16
        self.q = nn.Conv2d(in_ch, dim, 1, bias=fold_bn)
        self.p = nn.Conv2d(dim, out_ch, 1, bias=fold_bn)
        if not fold_bn:
            self.bn1 = nn.BatchNorm2d(dim)
            self.bn2 = nn.BatchNorm1d(dim)
        self.fc = nn.Sequential(nn.Linear(in_ch, squeeze, bias=False), SqueezeGate(squeeze))
        self.fc_phi = nn.Linear(squeeze, dim * dim, bias=False)
        self.fc_scale = nn.Linear(squeeze, out_ch, bias=False)

    @property
    def folded(self) -> bool:
        return not hasattr(self, 'bn1')

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, _, h, w = x.shape
        z = self.fc(x.mean((2, 3)))
        phi = self.fc_phi(z).view(b, self.dim, self.dim)
        scale = hard_sigmoid(self.fc_scale(z)).view(b, -1, 1, 1)
        if self.folded:
            eye = torch.eye(self.dim, dtype=phi.dtype, device=phi.device)
            mix = torch.matmul(self.p.weight.flatten(1), phi + eye)  # (b, C_out, d)
            bias = self.p.bias
            assert bias is not None  # the folded p is biased
            res = torch.baddbmm(bias.view(1, -1, 1), mix, self.q(x).flatten(2))
            return scale, res.view(b, -1, h, w)
        q = self.bn1(self.q(x)).flatten(2)
        q = self.bn2(torch.matmul(phi, q)) + q
        return scale, self.p(q.view(b, self.dim, h, w))

    def linear_form(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Folded form only: ``(a, W, c)`` with ``D(x) = W x + c`` for each sample (a 1x1 conv whose weights depend
        on ``x`` through its pooled descriptor): ``W = W_p (Phi' + I) W_q`` (b, C_out, C_in), ``c = W_p (Phi' + I)
        b_q + b_p`` (b, C_out), and ``a`` (b, C_out). Composing the rank-d factors costs O(C_out d C_in) per sample,
        independent of the image size."""
        b = x.shape[0]
        z = self.fc(x.mean((2, 3)))
        phi = self.fc_phi(z).view(b, self.dim, self.dim)
        scale = hard_sigmoid(self.fc_scale(z))
        eye = torch.eye(self.dim, dtype=phi.dtype, device=phi.device)
        mix = torch.matmul(self.p.weight.flatten(1), phi + eye)  # (b, C_out, d)
        q_bias, p_bias = self.q.bias, self.p.bias
        assert q_bias is not None and p_bias is not None  # the folded q and p are biased
        weight = torch.matmul(mix, self.q.weight.flatten(1))
        return scale, weight, torch.matmul(mix, q_bias) + p_bias

    @torch.no_grad()
    def fold_bn(self) -> None:
        """Fold the eval-mode ``bn1``/``bn2`` into ``q``, ``fc_phi`` and ``p`` (outputs unchanged; idempotent)."""
        if self.folded:
            return
        self.q = make_fused_conv(*fuse_bn(self.q.weight, None, self.bn1))
        mean, var = running_stats(self.bn2)
        std = (var + self.bn2.eps).sqrt()
        gain = self.bn2.weight / std
        shift = self.bn2.bias - mean * gain
        self.fc_phi.weight.mul_(gain.repeat_interleave(self.dim).unsqueeze(1))  # row i of Phi scaled by gain_i
        self.p = make_fused_conv(self.p.weight, self.p.weight.flatten(1) @ shift)
        del self.bn1, self.bn2


class DynamicDBB(DiverseBranchBlock):
    """Static DBB conv modulated by a :class:`DynamicBranch`: returns ``(a * S(x) + D(x), D(x))``.

    Key layout ``dy_branch.*`` then the DBB branches (or ``dbb_reparam``), as released.

    Args:
        in_ch (int): Input channels.
        out_ch (int): Output channels.
        kernel_size (int): Kernel size of the static conv.
        dyn_dim (int): Rank d of the dynamic branch.
        deploy (bool): Deploy form of the static conv.
        fold_bn (bool): Folded (BN-free) dynamic branch; deploy only.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dyn_dim: int, deploy: bool = False,
                 fold_bn: bool = False) -> None:
        super().__init__(in_ch, out_ch, kernel_size, deploy)
        self.dy_branch = DynamicBranch(in_ch, out_ch, dyn_dim, fold_bn)
        self._modules = {'dy_branch': self._modules.pop('dy_branch'), **self._modules}  # released key order

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]  # also returns D(x)
        scale, res = self.dy_branch(x)
        return scale * super().forward(x) + res, res

    def fused_forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Deploy + folded form: ``a * S(x) + D(x)`` as ONE per-sample kxk conv, plus D's ``(W, c)``.

        ``S`` is the conv ``(K, k)`` and ``D(x) = W x + c`` a 1x1 conv (:meth:`DynamicBranch.linear_form`), so
        ``a * S(x) + D(x)`` is the kxk conv with kernel ``a K + W`` (``W`` on the centre tap) and bias ``a k + c``.
        Exact up to float rounding; it replaces the q/p convs, the per-sample matmul, the scaling and the sum over
        the image by one conv (the pooled descriptor still reads ``x`` once)."""
        scale, weight, bias = self.dy_branch.linear_form(x)
        conv = self.dbb_reparam
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        k = self.kernel_size
        tap = torch.zeros(k, k, dtype=weight.dtype, device=weight.device)
        tap[k // 2, k // 2] = 1.  # one-hot centre tap (a broadcast, not a pad: ONNX needs the kernel's static shape)
        kernel = scale[:, :, None, None, None] * conv.weight + weight[..., None, None] * tap
        out = per_sample_conv(x, kernel, scale * conv.bias + bias, k // 2)
        return out, weight, bias


def per_sample_conv(x: Tensor, weight: Tensor, bias: Tensor, padding: int) -> Tensor:
    """Conv of each sample ``x[i]`` with its own ``weight[i]`` (b, C_out, C_in, k, k) and ``bias[i]`` (b, C_out):
    a plain conv for one sample, a grouped conv over the batch otherwise."""
    b = x.shape[0]
    if b == 1:
        return F.conv2d(x, weight[0], bias[0], padding=padding)
    out = F.conv2d(x.reshape(1, -1, *x.shape[2:]), weight.flatten(0, 1), bias.flatten(), padding=padding, groups=b)
    return out.view(b, -1, *out.shape[2:])


def conv1x1_of_cat(pieces: list[Tensor], weights: list[Tensor], bias: Tensor | None) -> Tensor:
    """``conv2d(cat(pieces, 1), cat(weights, 1), bias)`` for 1x1 weights, without building the concatenation: the
    sum of each piece's conv with its block of input columns (equal up to float rounding). A channel concatenation
    of channels_last tensors copies every pixel with a stride; on this CPU (2 threads, official DDistill-SR x4,
    480x270) leaving out the network's two 4-way concatenations and each block's 3-way one took 10% off the fp32
    and 15% off the bf16 forward (measured side by side in one process). Pieces are cast to the weights' dtype (the
    bf16 runner keeps ``cres`` and ``c`` in float32). (Each block's 4-way ``c5`` input, of C/2-channel pieces, was
    no faster split, so it stays a concatenation.)"""
    dtype = weights[0].dtype
    out = F.conv2d(pieces[0].to(dtype), weights[0], bias)
    for piece, weight in zip(pieces[1:], weights[1:], strict=True):
        out = out + F.conv2d(piece.to(dtype), weight)
    return out


def conv_of_cat(conv: nn.Module, pieces: list[Tensor]) -> Tensor:
    """``conv(torch.cat(pieces, 1))`` for a 1x1 :class:`nn.Conv2d` ``conv``: without the concatenation
    (:func:`conv1x1_of_cat`) for channels_last pieces (the deploy runner's layout), where it pays; as written for
    NCHW pieces (training), whose concatenation is a few block copies, so training runs exactly as before."""
    assert isinstance(conv, nn.Conv2d)
    first = pieces[0]
    if first.is_contiguous() or not first.is_contiguous(memory_format=torch.channels_last):
        return conv(torch.cat(pieces, 1))
    return conv1x1_of_cat(pieces, list(conv.weight.split([p.shape[1] for p in pieces], 1)), conv.bias)


class RDU(nn.Module):
    """Reparameterized dynamic unit: ``(act(a * S(x) + D(x)), D(x))``; key prefix ``unit``.

    Args:
        num_feat (int): Input and output channels.
        dyn_dim (int): Rank of the dynamic branch.
        act (bool): Apply LeakyReLU(0.05) to the output (False for the network's ``LR_conv``).
        deploy (bool): Deploy form.
        fold_bn (bool): Folded dynamic branch (deploy only).
    """

    def __init__(self, num_feat: int, dyn_dim: int, act: bool = True, deploy: bool = False,
                 fold_bn: bool = False) -> None:
        super().__init__()
        self.unit = DynamicDBB(num_feat, num_feat, 3, dyn_dim, deploy, fold_bn)
        self.act = act

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, res = self.unit(x)
        return self.activate(out), res

    def activate(self, out: Tensor) -> Tensor:
        return F.leaky_relu(out, 0.05) if self.act else out

    def fused_forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Folded form: ``(act(a * S(x) + D(x)), W, c)`` with ``D(x) = W x + c`` (:meth:`DynamicDBB.fused_forward`)."""
        out, weight, bias = self.unit.fused_forward(x)
        return self.activate(out), weight, bias


class ESA(nn.Module):
    """RFDN's enhanced spatial attention (f = C / 4), keys conv1, conv_f, conv_max, conv2, conv3, conv3_, conv4.

    ``c = conv1(x)``; ``v = relu(conv_max(maxpool7s3(conv2_s2(c))))``; ``u = conv3_(relu(conv3(v)))``;
    ``x * sigmoid(conv4(up(u) + conv_f(c)))``. conv2 is unpadded, so H, W >= 15.

    Args:
        num_feat (int): Channels of the gated features.
    """

    grid_stride = ESA_STRIDE  # tiled inference aligns tiles to the coarse grid (ddsr.archs.esa_upsample)

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        f = num_feat // 4
        self.conv1 = nn.Conv2d(num_feat, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, 1, 1)
        self.conv2 = nn.Conv2d(f, f, 3, 2, 0)
        self.conv3 = nn.Conv2d(f, f, 3, 1, 1)
        self.conv3_ = nn.Conv2d(f, f, 3, 1, 1)
        self.conv4 = nn.Conv2d(f, num_feat, 1)

    def forward(self, x: Tensor) -> Tensor:
        c1 = self.conv1(x)
        v = F.relu(self.conv_max(F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3)))
        u = self.conv3_(F.relu(self.conv3(v)))
        u = upsample_coarse(u, x.shape[-2:])
        return x * torch.sigmoid(self.conv4(u + self.conv_f(c1)))


class DFDB(nn.Module):
    """Dynamic feature distillation block; returns ``(ESA(F_d + R_b), R_b)``.

    Three steps ``d_i = lrelu(c_i_d(.))`` (1x1 C -> C/2) and ``(r_i, h_i) = c_i_r(.)`` (RDU), ``r4 = c4(r3)``,
    ``F_d = c5(cat[d1, d2, d3, r4])``; the dynamic residuals are fused as
    ``R_b = sigmoid(PAconv(F_d)) * conv1x1(cat[x, h1, h2, h3])``.

    Args:
        num_feat (int): Channels C.
        dyn_dim (int): Rank of the RDUs' dynamic branches.
        deploy (bool): Deploy form of the RDUs.
        fold_bn (bool): Folded dynamic branches (deploy only).
    """

    def __init__(self, num_feat: int, dyn_dim: int, deploy: bool = False, fold_bn: bool = False) -> None:
        super().__init__()
        dc = num_feat // 2
        for i in (1, 2, 3):
            self.add_module(f'c{i}_d', nn.Conv2d(num_feat, dc, 1))
            self.add_module(f'c{i}_r', RDU(num_feat, dyn_dim, True, deploy, fold_bn))
        self.c4 = nn.Conv2d(num_feat, dc, 1)
        self.c5 = nn.Conv2d(4 * dc, num_feat, 1)
        self.PAconv = nn.Conv2d(num_feat, num_feat, 1)
        self.conv1x1 = nn.Conv2d(4 * num_feat, num_feat, 1)
        self.esa = ESA(num_feat)

    @property
    def folded(self) -> bool:
        """The RDUs' dynamic branches are folded (:meth:`DDistillSR.fold_dynamic_bn`)."""
        rdu = self.c1_r
        assert isinstance(rdu, RDU)
        return rdu.unit.dy_branch.folded

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.folded:
            return self.fused_forward(x)
        distilled, residuals, r = [], [x], x
        for i in (1, 2, 3):
            distilled.append(F.leaky_relu(getattr(self, f'c{i}_d')(r), 0.05))
            r, res = getattr(self, f'c{i}_r')(r)
            residuals.append(res)
        fused = self.c5(torch.cat(distilled + [self.c4(r)], 1))
        res = torch.sigmoid(self.PAconv(fused)) * self.conv1x1(torch.cat(residuals, 1))
        return self.esa(fused + res), res

    def fused_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Folded form, same outputs: every RDU is one per-sample conv (:meth:`RDU.fused_forward`) and the dynamic
        residuals ``h_i = W_i r_{i-1} + c_i`` are never built: with ``conv1x1 = [V_0 V_1 V_2 V_3]`` (blocks of C
        columns), ``conv1x1(cat[x, h1, h2, h3]) = (V_0 + V_1 W_1) x + V_2 W_2 r_1 + V_3 W_3 r_2 + b + sum V_i c_i``,
        one per-sample 1x1 conv over ``cat[x, r_1, r_2]``."""
        blocks = self.conv1x1.weight.flatten(1).split(x.shape[1], dim=1)  # V_0 .. V_3
        assert self.conv1x1.bias is not None
        distilled, inputs, coefs, bias, r = [], [], [], self.conv1x1.bias, x
        for i in (1, 2, 3):
            distilled.append(F.leaky_relu(getattr(self, f'c{i}_d')(r), 0.05))
            inputs.append(r)
            r, weight, shift = getattr(self, f'c{i}_r').fused_forward(r)
            coefs.append(torch.matmul(blocks[i], weight))  # (b, C, C)
            bias = bias + torch.matmul(shift, blocks[i].t())
        coefs[0] = coefs[0] + blocks[0]
        fused = self.c5(torch.cat(distilled + [self.c4(r)], 1))
        if x.shape[0] == 1:  # the common inference case: no concatenation (conv1x1_of_cat)
            mixed = conv1x1_of_cat(inputs, [coef[0, ..., None, None] for coef in coefs], bias[0])
        else:
            mixed = per_sample_conv(torch.cat(inputs, 1), torch.cat(coefs, 2)[..., None, None], bias, 0)
        res = torch.sigmoid(self.PAconv(fused)) * mixed
        return self.esa(fused + res), res


@ARCH_REGISTRY.register()
class DDistillSR(ReparamESACapabilities, Reparameterizable):
    """DDistill-SR: 4 DFDBs, DDF fusion, RDU ``LR_conv``, pixel-shuffle upsampler with a 3x3 refinement conv.

    ``F0 = fea_conv(x)``; ``(B_i, R_i) = DFDB_i(B_{i-1})``; ``Rc = lrelu0.1(cres(cat R))``,
    ``Bc = lrelu0.1(c(cat B))``; ``L = LR_conv(Bc + sigmoid(PAconv(Bc)) * Rc) + F0``;
    ``y = clamp(conv1(PixelShuffle(conv0(L))), 0, 1)``. Input RGB in [0, 1].

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): Feature channels (official: 56). Default: 56.
        dyn_dim (int): Rank L of the dynamic branches (official: 16). Default: 16.
        upscale (int): Upscale factor (2, 3, 4; official releases for each). Default: 4.
        deploy (bool): Deploy form (fused ``dbb_reparam`` convs, released inference keys). Default: False.
        fold_bn (bool): Deploy form with the dynamic branches' BNs folded (CPU-faster; own key layout). Default:
            False.
    """

    num_block = 4

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 56, dyn_dim: int = 16,
                 upscale: int = 4, deploy: bool = False, fold_bn: bool = False) -> None:
        super().__init__()
        if fold_bn and not deploy:
            raise ValueError('fold_bn=True needs deploy=True (folding uses eval-mode BN statistics)')
        self.kwargs = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, dyn_dim=dyn_dim,
                           upscale=upscale)
        self.deploy, self.fold_bn, self.upscale = deploy, fold_bn, upscale
        self.fea_conv = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        for i in range(1, self.num_block + 1):
            self.add_module(f'B{i}', DFDB(num_feat, dyn_dim, deploy, fold_bn))
        self.PAconv = nn.Conv2d(num_feat, num_feat, 1)
        self.cres = nn.Sequential(nn.Conv2d(self.num_block * num_feat, num_feat, 1), nn.LeakyReLU(0.1))
        self.c = nn.Sequential(nn.Conv2d(self.num_block * num_feat, num_feat, 1), nn.LeakyReLU(0.1))
        self.LR_conv = RDU(num_feat, dyn_dim, False, deploy, fold_bn)
        upsampler = nn.Sequential(
            nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1), nn.PixelShuffle(upscale),
            nn.Conv2d(num_out_ch, num_out_ch, 3, 1, 1))
        self.add_module(f'upsamplerx{upscale}', upsampler)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.fea_conv(x)
        outs, residuals, out = [], [], feat
        for i in range(1, self.num_block + 1):
            out, res = getattr(self, f'B{i}')(out)
            outs.append(out)
            residuals.append(res)
        res = self.cres[1](conv_of_cat(self.cres[0], residuals))  # cres(cat R), c(cat B) (conv1x1_of_cat)
        out = self.c[1](conv_of_cat(self.c[0], outs))
        fuse_in = out + torch.sigmoid(self.PAconv(out)) * res
        low = self.LR_conv.fused_forward(fuse_in)[0] if self.fold_bn else self.LR_conv(fuse_in)[0]
        return getattr(self, f'upsamplerx{self.upscale}')(low + feat).clamp(0, 1)

    # Precisions measured outside issue 23's quality contract with the official x4 weights (mean PSNR change in dB on
    # the 13-photo eval split, benchmarks/bench_precision.py): static QDQ int8 quantizes the dynamic kernels, computed
    # at run time, as activations. ``--precision auto`` never tries them (ddsr.deploy.precision.misses_contract).
    precision_misses = {'int8': -4.183}  # 2026-12-06 (-4.354 dB with the concatenations, 2026-12-05)

    @property
    def bf16_float32(self) -> tuple[str, ...]:
        """Children that bf16 inference (:mod:`ddsr.deploy.precision`) keeps in float32: the fusion tail (``cres``,
        ``c``, ``PAconv``, ``LR_conv``, the upsampler; 13% of the weights). Measured with the official x4 weights on
        the 13-photo eval split (mean Y PSNR vs float32): the whole network in bf16 -0.049 dB, outside issue 23's
        +-0.02 dB; only the upsampler in float32 -0.035 dB, ``LR_conv`` + upsampler -0.025 dB, the whole tail
        -0.013 dB (-0.009 dB once the tail's inputs were no longer concatenated, 2026-12-06). (The bf16 copy feeds
        each layer its inputs in its weights' dtype: :func:`ddsr.deploy.backends.torch_upscaler`.)"""
        return 'cres', 'c', 'PAconv', 'LR_conv', f'upsamplerx{self.upscale}'

    @property
    def per_sample_weights(self) -> bool:
        """The folded form convolves each sample with its own kernels (an ONNX export of it takes batch 1)."""
        return self.fold_bn

    def switch_to_deploy(self, fold_bn: bool = False) -> None:
        """Fuse every RDU's DBB branches into ``dbb_reparam`` in place (eval mode, idempotent).

        Args:
            fold_bn (bool): Also fold the dynamic branches' BNs (:meth:`fold_dynamic_bn`). Default: False.
        """
        self.eval()
        with torch.no_grad():
            for module in list(self.modules()):
                if isinstance(module, DiverseBranchBlock):
                    module.switch_to_deploy()
        self.deploy = True
        if fold_bn:
            self.fold_dynamic_bn()

    def fold_dynamic_bn(self) -> None:
        """Fold every dynamic branch's eval-mode BNs into its linear layers (deploy form only; exact)."""
        if not self.deploy:
            raise RuntimeError('fold_dynamic_bn needs the deploy form: call switch_to_deploy() first')
        self.eval()
        for module in self.modules():
            if isinstance(module, DynamicBranch):
                module.fold_bn()
        self.fold_bn = True

    def config(self) -> dict:
        """Self-describing config ``{'type': 'DDistillSR', **kwargs}`` that rebuilds this network's form."""
        return {'type': 'DDistillSR', **self.kwargs, 'deploy': self.deploy, 'fold_bn': self.fold_bn}
