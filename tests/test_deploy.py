"""Deployment path: tiled inference, ``ddsr upscale`` (modes, bit depths, failures), ``ddsr export`` (deploy
checkpoint + ONNX checked against PyTorch)."""
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from ddsr.cli import ddsr_main
from ddsr.deploy.backends import onnx_upscaler, to_deploy, to_inference_form, torch_upscaler
from ddsr.deploy.export import export_onnx, natural_image, stored_mask_sizes
from ddsr.deploy.runner import RunSettings, make_plan
from ddsr.deploy.source import from_weights
from tests.conftest import PRETRAINED

DIPNET = PRETRAINED / 'DIPNet_x4.pth'
DDISTILL = PRETRAINED / 'DDistill-SRx4_inference.pth'


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b)**2).mean()))


def edsrmini_ckpt(path: Path, upscale: int = 2) -> Path:
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('EDSRmini')(upscale=upscale)
    torch.save({'params': net.state_dict(), 'arch': {'type': 'EDSRmini', 'upscale': upscale}}, path)
    return path


def dipnet() -> torch.nn.Module:
    if not DIPNET.is_file():
        pytest.skip(f'official weights missing: {DIPNET}')
    return from_weights(DIPNET, {'type': 'DIPNet'}).network


def test_tiled_equals_whole_for_conv_net():
    """EDSRmini x2 (convolutions only, receptive-field radius 19 LR px): overlap 24 (>= the radius)."""
    torch.manual_seed(0)
    up = torch_upscaler(ARCH_REGISTRY.get('EDSRmini')(upscale=2))
    x = natural_image(81)[..., :70]
    whole = up(x)
    tiled = up(x, tile=40, overlap=24)
    assert tiled.shape == whole.shape == (1, 3, 162, 140)
    assert (tiled - whole).abs().max() <= 1 / 255
    assert (up(x, tile=40, overlap=0) - whole).abs().max() > 1 / 255  # no context: visible seams


def test_tiled_dipnet_equals_whole():
    """DIPNet (official weights): ESA pools on a stride-6 grid and resizes with the whole image's ratio; tiles
    aligned to the grid and resized with that ratio (tile_geometry) match whole-image output within 1/255."""
    up = torch_upscaler(dipnet())
    assert up.align == 6 and up.tile_context is not None
    x = natural_image(96)[..., :85]
    whole = up(x)
    assert torch.equal(up(x, tile=96, overlap=16), whole)  # one tile
    tiled = up(x, tile=40, overlap=32)
    assert tiled.shape == (1, 3, 384, 340)
    assert (tiled - whole).abs().max() <= 1 / 255
    up.tile_context = None  # grid-aligned tiles resized with their own ratio: visibly off
    assert (up(x, tile=40, overlap=32) - whole).abs().max() > 1 / 255


def write_inputs(folder: Path) -> dict:
    folder.mkdir()
    rgb = natural_image(40)[0].permute(1, 2, 0).numpy()[..., ::-1]  # BGR float
    imgs = {
        'rgb8_odd.png': np.round(rgb[:23, :17] * 255).astype(np.uint8),
        'gray8.png': np.round(rgb[:19, :21, 1] * 255).astype(np.uint8),
        'gray16.tif': np.round(rgb[:21, :18, 0] * 65535).astype(np.uint16),
        'rgba16_small.png': np.round(np.dstack([rgb[:13, :11], np.linspace(0, 1, 143).reshape(13, 11)]) *
                                     65535).astype(np.uint16),
        'photo.jpg': np.round(rgb[:30, :30] * 255).astype(np.uint8),
    }
    for name, img in imgs.items():
        assert cv2.imwrite(str(folder / name), img)
    (folder / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
    return imgs


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_upscale_modes_depths_and_failures(tmp_path, capsys):
    ckpt = edsrmini_ckpt(tmp_path / 'edsrmini_x2.pth')
    imgs = write_inputs(tmp_path / 'in')
    before = digest(tmp_path / 'in')
    code = ddsr_main(['upscale', '--weights', str(ckpt), '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'),
                      '--tile', '20', '--tile-overlap', '8', '--suffix', '_x2'])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1
    assert 'upscaled 5/6 images x2 with ' in captured.out and 'fastest of torch' in captured.out  # auto: timed
    assert 'failed: ' in err and 'corrupt.png' in err
    assert digest(tmp_path / 'in') == before
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == sorted(
        f'{Path(n).stem}_x2.png' for n in imgs)
    for name, img in imgs.items():
        out = cv2.imread(str(tmp_path / 'out' / f'{Path(name).stem}_x2.png'), cv2.IMREAD_UNCHANGED)
        assert out.dtype == img.dtype, name
        assert out.shape == (img.shape[0] * 2, img.shape[1] * 2, *img.shape[2:]), name
    alpha = cv2.imread(str(tmp_path / 'out' / 'rgba16_small_x2.png'), cv2.IMREAD_UNCHANGED)[..., 3]
    assert alpha[0, 0] < 2000 and alpha[-1, -1] > 63000  # bicubic alpha keeps the ramp
    # PyTorch gives the same images within one 8-bit level
    assert ddsr_main(['upscale', '--weights', str(ckpt), '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'ref'),
                      '--tile', '20', '--tile-overlap', '8', '--suffix', '_x2', '--backend', 'torch']) == 1
    for name in imgs:
        out, ref = (cv2.imread(str(tmp_path / d / f'{Path(name).stem}_x2.png'), cv2.IMREAD_UNCHANGED).astype(float)
                    for d in ('out', 'ref'))
        assert np.abs(out - ref).max() <= (257 if imgs[name].dtype == np.uint16 else 1), name


def test_upscale_refuses_output_in_input_folder(tmp_path, capsys):
    ckpt = edsrmini_ckpt(tmp_path / 'edsrmini_x2.pth')
    write_inputs(tmp_path / 'in')
    before = digest(tmp_path / 'in')
    assert ddsr_main(['upscale', '--weights', str(ckpt), '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'in')]) == 2
    assert 'never overwritten' in capsys.readouterr().err
    assert digest(tmp_path / 'in') == before


def pruned_swinirmini() -> torch.nn.Module:
    return ARCH_REGISTRY.get('SwinIRmini')(upscale=2, depths=[2, 2], num_heads=[6, 6], head_dim=4,
                                           layer_heads=[[2, 3], [1, 6]], layer_mlp_hidden=[[8, 48], [5, 30]])


def onnx_cases():
    cases = [('EDSRmini', lambda: ARCH_REGISTRY.get('EDSRmini')(upscale=3)),
             ('SwinIRmini', lambda: ARCH_REGISTRY.get('SwinIRmini')(upscale=4)),
             ('SwinIRmini-pruned', pruned_swinirmini)]
    if DIPNET.is_file():
        cases.append(('DIPNet', dipnet))
    if DDISTILL.is_file():
        cases.append(('DDistillSR', lambda: from_weights(DDISTILL, {'type': 'DDistillSR', 'deploy': True}).network))
        cases.append(('DDistillSR-folded', lambda: to_inference_form(from_weights(DDISTILL, {
            'type': 'DDistillSR', 'deploy': True}).network)))
    return cases


@pytest.mark.parametrize('name,make', onnx_cases(), ids=[c[0] for c in onnx_cases()])
def test_onnx_matches_pytorch(tmp_path, name, make):
    torch.manual_seed(0)
    net = to_deploy(make())
    meta = export_onnx(net, tmp_path / f'{name}.onnx', size=16)
    up = onnx_upscaler(str(tmp_path / f'{name}.onnx'))
    assert up.scale == meta['scale']
    # the export size, another size, and (Swin) the size whose shift mask the blocks store (img_size 64)
    sizes = ((16, 16), (27, 20)) if meta['multiple'] == 1 else ((16, 16), (64, 64), (40, 72))
    for h, w in sizes:
        x = natural_image(80)[..., :h, :w]
        with torch.no_grad():
            ref = net(x)
        out = up.forward(x)
        assert out.shape == ref.shape == (1, 3, h * up.scale, w * up.scale)
        assert (out - ref).abs().max() <= 1e-4, (name, h, w)


def test_folded_ddistill_export_takes_batch_one(tmp_path):
    """The inference form of DDistill-SR convolves each sample with its own kernels, so its graph is traced for
    one sample: the export says so (static batch 1) instead of accepting a batch it would get wrong."""
    import onnxruntime as ort
    torch.manual_seed(0)
    net = to_inference_form(ARCH_REGISTRY.get('DDistillSR')(upscale=2, num_feat=16, dyn_dim=4))
    assert net.fold_bn and net.per_sample_weights
    export_onnx(net, tmp_path / 'ddistill.onnx', size=16)
    session = ort.InferenceSession(str(tmp_path / 'ddistill.onnx'), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].shape[0] == 1 and session.get_inputs()[0].shape[1] == 3
    x = natural_image(40)[..., :23, :31]
    with torch.no_grad():
        assert (onnx_upscaler(str(tmp_path / 'ddistill.onnx'))(x) - net(x)).abs().max() <= 1e-4


def one_image(folder: Path, h: int, w: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    path = folder / f'img_{h}x{w}.png'
    rgb = natural_image(max(h, w))[0].permute(1, 2, 0).numpy()[:h, :w, ::-1]
    assert cv2.imwrite(str(path), np.round(rgb * 255).astype(np.uint8))
    return [path]


def test_auto_path_times_both_backends_and_swin_onnx_matches(tmp_path, monkeypatch):
    """The default CPU path (the one runtime, :func:`ddsr.deploy.runner.make_plan`) times PyTorch and onnxruntime
    and keeps the faster (which one wins is a benchmark figure, not asserted here: it depends on the machine's
    load); the SwinIRmini export works at any input size (padded to the window) and matches PyTorch."""
    monkeypatch.setenv('DDSR_CACHE_DIR', str(tmp_path / 'cache'))
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('SwinIRmini')(upscale=2).eval()
    torch.save({'params': net.state_dict(), 'arch': net.config()}, tmp_path / 'swin.pth')
    plan = make_plan(from_weights(tmp_path / 'swin.pth'), RunSettings(), one_image(tmp_path / 'in', 27, 45))
    timings = plan.info['timings_ms']
    assert set(timings) == {'torch', 'onnxruntime'} and timings[plan.info['backend']] == min(timings.values())
    x = natural_image(64)[..., :27, :45]
    with torch.no_grad():
        assert np.abs(plan.forward(x.numpy()) - torch_upscaler(net)(x).numpy()).max() <= 1e-4
    export_onnx(net, tmp_path / 'swin.onnx', size=16)
    assert (onnx_upscaler(str(tmp_path / 'swin.onnx'))(x) - torch_upscaler(net)(x)).abs().max() <= 1e-4


def test_tiled_esa_net_upscale_uses_pytorch(tmp_path, monkeypatch):
    """--tile with an ESA net (DIPNet) takes the exact PyTorch tiling path; without --tile the timed auto choice."""
    monkeypatch.setenv('DDSR_CACHE_DIR', str(tmp_path / 'cache'))
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('DIPNet')(upscale=2)
    torch.save({'params': net.state_dict(), 'arch': net.config()}, tmp_path / 'dipnet.pth')
    files = one_image(tmp_path / 'in', 70, 90)
    tiled = make_plan(from_weights(tmp_path / 'dipnet.pth'), RunSettings(tile=32, tile_overlap=24), files)
    assert tiled.info['backend'] == 'torch'
    whole = make_plan(from_weights(tmp_path / 'dipnet.pth'), RunSettings(), files)
    assert set(whole.info['timings_ms']) == {'torch', 'onnxruntime'}
    x = natural_image(90)[..., :70, :90].numpy()
    assert np.abs(tiled.forward(x) - torch_upscaler(net)(torch.from_numpy(x)).numpy()).max() <= 1 / 255


def test_swin_export_is_traced_off_the_stored_mask_size(tmp_path):
    """Traced at the size of the stored shift mask, the graph would keep that mask for every size; the export
    moves to another window multiple, so the ONNX model also fits a 64x64 input (the stored size)."""
    net = ARCH_REGISTRY.get('SwinIRmini')(upscale=2).eval()
    assert stored_mask_sizes(net) == {64}
    export_onnx(net, tmp_path / 'swin.onnx', size=64)
    up = onnx_upscaler(str(tmp_path / 'swin.onnx'))
    x = natural_image(80)[..., :48, :56]
    with torch.no_grad():
        assert (up.forward(x) - net(x)).abs().max() <= 1e-4


def test_export_command_train_form_to_deploy_and_onnx(tmp_path, capsys):
    """A train-form DIPNet checkpoint -> deploy checkpoint (fused keys, same outputs) + ONNX run by upscale."""
    torch.manual_seed(0)
    train = ARCH_REGISTRY.get('DIPNet')(deploy=False, expand_width=16).eval()
    torch.save({'params': train.state_dict(), 'arch': train.config()}, tmp_path / 'train.pth')
    code = ddsr_main(['export', '--weights', str(tmp_path / 'train.pth'), '--out-pth', str(tmp_path / 'deploy.pth'),
                      '--out-onnx', str(tmp_path / 'net.onnx'), '--check-size', '24'])
    assert code == 0
    report = capsys.readouterr().out
    diff = float(report.split('24px crop: ')[1].split()[0])
    assert diff <= 1e-4
    ckpt = torch.load(tmp_path / 'deploy.pth', weights_only=True)
    assert ckpt['arch']['deploy'] is True and set(ckpt) == {'params', 'arch'}
    deploy = from_weights(tmp_path / 'deploy.pth').network
    assert deploy.state_dict().keys() == ARCH_REGISTRY.get('DIPNet')().state_dict().keys()
    assert sum(p.numel() for p in deploy.parameters()) == 243252
    x = natural_image(24)
    with torch.no_grad():
        assert (deploy(x) - train(x)).abs().max() <= 1e-4
    (tmp_path / 'in').mkdir()
    lr = np.round(x[0].permute(1, 2, 0).numpy()[..., ::-1] * 255).astype('uint8')
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), lr)
    assert ddsr_main(['upscale', '--onnx', str(tmp_path / 'net.onnx'), '-i', str(tmp_path / 'in' / '*.png'), '-o',
                      str(tmp_path / 'out')]) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'a.png'))
    assert out.shape == (96, 96, 3)
