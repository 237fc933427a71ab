"""DDistill-SR: sizes, official key layout, exact train -> deploy conversion, official weights, converter."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import ARCH_REGISTRY
from skimage import data as skdata

import ddsr  # noqa: F401  (registration)
from ddsr.archs.dbb import DiverseBranchBlock, IdentityConv1x1
from ddsr.archs.ddistill.ddistill_arch import DDistillSR
from ddsr.archs.reparam import switch_to_deploy
from ddsr.cli import main as cli_main
from ddsr.deploy.convert import convert_checkpoint

SHARED = Path(__file__).resolve().parents[2] / 'shared'
PRETRAINED = SHARED / 'pretrained' / 'DDistill-SRx4_inference.pth'
REFERENCE = SHARED / 'reference'
PARAMS = {2: (1_154_824, 657_600), 3: (1_162_399, 665_175), 4: (1_173_004, 675_780)}
TOL = 1e-5


def _randomize_bn(net: torch.nn.Module, seed: int = 0) -> None:
    """Random affine parameters and running statistics in every BN (else the fusion test is nearly trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            elif isinstance(m, IdentityConv1x1):  # away from its identity init
                m.weight.normal_(0, 0.05, generator=gen)


def _photo_batch(size: int = 32) -> torch.Tensor:
    """Two natural-image crops in [0, 1] (astronaut, coffee), shape (2, 3, size, size)."""
    crops = [skdata.astronaut()[60:60 + size, 180:180 + size], skdata.coffee()[120:120 + size, 220:220 + size]]
    return torch.from_numpy(np.stack(crops).astype(np.float32) / 255.).permute(0, 3, 1, 2).contiguous()


def _reference_keys(form: str):
    lines = (REFERENCE / f'ddistill_x4_{form}_keys.tsv').read_text().splitlines()
    return [tuple(line.split('\t')) for line in lines]


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_param_counts(scale):
    train, deploy = PARAMS[scale]
    assert sum(p.numel() for p in DDistillSR(upscale=scale).parameters()) == train
    assert sum(p.numel() for p in DDistillSR(upscale=scale, deploy=True).parameters()) == deploy


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f'reference key lists not found at {REFERENCE}')
@pytest.mark.parametrize('form', ['train', 'deploy'])
def test_state_dict_matches_official_layout(form):
    net = DDistillSR(upscale=4, deploy=form == 'deploy')
    mine = [(k, str(tuple(v.shape))) for k, v in net.state_dict().items()]
    assert mine == _reference_keys(form)  # same keys, shapes and order
    assert ARCH_REGISTRY.get('DDistillSR') is DDistillSR


def test_dbb_block_fuses_exactly():
    """Generic DBB (in != out, 5x5): the four branches equal one conv, borders included."""
    block = DiverseBranchBlock(6, 10, 5)
    _randomize_bn(block, seed=3)
    block.eval()
    x = torch.rand(2, 6, 17, 13)
    with torch.no_grad():
        expected = block(x)
        block.switch_to_deploy()
        fused = block(x)
    assert list(block.state_dict()) == ['dbb_reparam.weight', 'dbb_reparam.bias']
    assert block.dbb_reparam.weight.shape == (10, 6, 5, 5)
    assert (fused - expected).abs().max().item() <= TOL


def _forward_unclamped(net: DDistillSR, x: torch.Tensor) -> torch.Tensor:
    """Network output before the final clamp (a randomly initialised net clamps much of its output to 0)."""
    captured = []
    hook = getattr(net, f'upsamplerx{net.upscale}').register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        out = net(x)
    hook.remove()
    assert torch.equal(out, captured[0].clamp(0, 1))
    return captured[0]


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_train_to_deploy_and_bn_folding_are_exact(scale):
    net = DDistillSR(upscale=scale)
    _randomize_bn(net, seed=scale)
    net.eval()
    x = _photo_batch()
    expected = _forward_unclamped(net, x)
    deploy = switch_to_deploy(copy.deepcopy(net))  # generic converter: the outer switch drops inner branches first
    out_deploy = _forward_unclamped(deploy, x)
    deploy.fold_dynamic_bn()
    out_folded = _forward_unclamped(deploy, x)
    assert expected.shape == (2, 3, 32 * scale, 32 * scale) and expected.std().item() > 0.05
    # 13 RDUs: 2 BNs (4 * 16 affine params) folded away, biases of q (16) and p (56) added
    assert sum(p.numel() for p in deploy.parameters()) == PARAMS[scale][1] + 13 * (16 + 56 - 4 * 16)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in deploy.modules())
    assert (out_deploy - expected).abs().max().item() <= TOL
    assert (out_folded - expected).abs().max().item() <= TOL
    # the folded form runs each RDU as one per-sample conv: a grouped conv for the batch of 2, a plain one for 1
    assert (_forward_unclamped(deploy, x[1:]) - expected[1:]).abs().max().item() <= TOL
    rebuilt = DDistillSR(**{k: v for k, v in deploy.config().items() if k != 'type'})
    rebuilt.load_state_dict(deploy.state_dict(), strict=True)  # the folded layout is self-describing too
    assert torch.equal(_forward_unclamped(rebuilt.eval(), x), out_folded)


def _cat_calls(net: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        net(x)
    return sum(e.count for e in prof.key_averages() if e.key == 'aten::cat')


def test_channels_last_forward_leaves_out_the_concatenations_and_equals_nchw():
    """The deploy runner's layout (channels_last) sums piecewise 1x1 convs instead of concatenating (the network's
    ``cres``/``c`` inputs; each folded block's mixing conv at batch 1): same outputs as the NCHW forward to float
    rounding. Concatenations NCHW -> channels_last: 10 -> 8 (unfolded deploy form), 6 -> 4 (folded form at batch 1,
    whose blocks' mixing convs are split in either layout); the 4 left are each block's ``c5`` input (no faster
    split)."""
    net = DDistillSR(upscale=2)
    _randomize_bn(net, seed=5)
    deploy = switch_to_deploy(copy.deepcopy(net.eval()))
    folded = copy.deepcopy(deploy)
    folded.fold_dynamic_bn()
    x = _photo_batch()[:1]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for form, cats in ((deploy, (10, 8)), (folded, (6, 4))):  # concatenations: NCHW, channels_last
        with torch.no_grad():
            ref = form(x)
        nchw_cats = _cat_calls(form, x)
        form.to(memory_format=torch.channels_last)
        with torch.no_grad():
            out = form(x_cl)
        assert (out - ref).abs().max().item() <= TOL and ref.std().item() > 0.05
        assert (nchw_cats, _cat_calls(form, x_cl)) == cats


# (photo, top, left) of 192x192 HR crops from three different scikit-image photos
PRETRAINED_CROPS = [('astronaut', 50, 150), ('coffee', 100, 200), ('rocket', 200, 250)]


def _y_psnr(img: np.ndarray, ref: np.ndarray) -> float:
    to_bgr255 = lambda a: np.clip(a, 0, 1)[..., ::-1] * 255.  # noqa: E731
    return calculate_psnr(to_bgr255(img), to_bgr255(ref), crop_border=4, test_y_channel=True)


@pytest.mark.skipif(not PRETRAINED.is_file(), reason=f'official weights not found at {PRETRAINED}')
def test_official_x4_weights_beat_bicubic():
    net = DDistillSR(upscale=4, deploy=True)
    net.load_state_dict(torch.load(PRETRAINED, map_location='cpu', weights_only=True), strict=True)
    net.eval()
    gains = {}
    for name, top, left in PRETRAINED_CROPS:
        hr = getattr(skdata, name)()[top:top + 192, left:left + 192, :3].astype(np.float64) / 255.
        lr = imresize(hr, 1 / 4)
        with torch.no_grad():
            sr = net(torch.from_numpy(lr).float().permute(2, 0, 1)[None])[0].permute(1, 2, 0).double().numpy()
        gains[name] = _y_psnr(sr, hr) - _y_psnr(imresize(lr, 4), hr)
    print('Y-PSNR gain over bicubic (dB):', {k: round(v, 2) for k, v in gains.items()})
    assert all(gain >= 0.8 for gain in gains.values()), gains


def test_convert_checkpoint_and_command(tmp_path):
    nets = {}
    for seed, key in enumerate(('params', 'params_ema')):
        torch.manual_seed(seed)
        nets[key] = DDistillSR(upscale=3)
        _randomize_bn(nets[key], seed=10 + seed)
    src = tmp_path / 'net_g_10.pth'
    torch.save({k: n.state_dict() for k, n in nets.items()}, src)
    dst = tmp_path / 'out' / 'deploy.pth'
    ckpt = convert_checkpoint(src, dst, {'type': 'DDistillSR', 'upscale': 3})
    assert sorted(ckpt) == ['arch', 'params', 'params_ema']
    assert ckpt['arch'] == {'type': 'DDistillSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 56, 'dyn_dim': 16,
                            'upscale': 3, 'deploy': True, 'fold_bn': False}
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert sorted(saved) == sorted(ckpt) and not list(tmp_path.glob('out/.*.tmp'))
    x = _photo_batch(24)
    for key, train_net in nets.items():
        deploy = DDistillSR(**{k: v for k, v in saved['arch'].items() if k != 'type'})
        deploy.load_state_dict(saved[key], strict=True)
        with torch.no_grad():
            diff = (deploy.eval()(x) - train_net.eval()(x)).abs().max().item()
        assert diff <= TOL, key
    # the command (in process): -opt-free form, BN folding, and a one-line error for a wrong scale
    folded = tmp_path / 'folded.pth'
    assert cli_main(['reparam', '--arch', 'DDistillSR', '--upscale', '3', '--ckpt', str(src), '-o', str(folded),
                     '--fold-bn']) == 0
    saved = torch.load(folded, map_location='cpu', weights_only=True)
    assert saved['arch']['fold_bn'] is True and not any('.bn' in k for k in saved['params'])
    assert cli_main(['reparam', '--arch', 'DDistillSR', '--ckpt', str(src), '-o', str(tmp_path / 'x.pth')]) == 2
    assert not (tmp_path / 'x.pth').exists()
