"""Issue 23 (inference): ``--precision {auto,fp32,bf16,int8}`` in ``ddsr upscale`` and ``ImageUpscaler``; ``auto``
falls back to fp32 where the CPU lacks the native flags or the probe timed a reduced precision slower (or below the
quality floor); bf16/int8 outputs of the official networks against their fp32 outputs on two eval photos."""
import copy
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ddsr import ImageUpscaler
from ddsr.archs.registry import arch_class
from ddsr.cli import ddsr_main
from ddsr.data.demo import EVAL_PHOTOS, bicubic_lr
from ddsr.deploy import cache, precision, runner
from ddsr.errors import DDSRError
from tests.conftest import PRETRAINED, upscale

ARCH = {'type': 'DIPNet', 'num_feat': 8, 'num_mid': 8, 'num_block': 1, 'esa_channels': 4, 'upscale': 2}
OFFICIAL = {'DIPNet': 'DIPNet_x4.pth', 'DDistill-SR': 'DDistill-SRx4_inference.pth'}
BF16_FLOOR = 45.0  # dB vs fp32 output (= precision.MIN_PSNR_VS_FP32; measured 51-55 dB for both nets)
INT8_FLOOR_DIPNET = 35.0  # dB vs fp32 output (measured 38.6-42.5 dB on eval photos: below auto's floor)


@pytest.fixture(autouse=True)
def no_recheck(monkeypatch):
    monkeypatch.setattr(runner, 'RECHECK_FACTOR', float('inf'))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = arch_class('DIPNet')(**{k: v for k, v in ARCH.items() if k != 'type'})
    torch.save({'params': net.state_dict(), 'arch': ARCH}, tmp_path / 'net.pth')
    (tmp_path / 'in').mkdir()
    for name, load in list(EVAL_PHOTOS.items())[:2]:
        img = np.asarray(load())[..., :3] if np.asarray(load()).ndim == 3 else np.repeat(load()[..., None], 3, 2)
        cv2.imwrite(str(tmp_path / 'in' / f'{name}.png'), np.ascontiguousarray(img[:40, :48, ::-1]))
    return tmp_path


def outputs(folder: Path, out: str) -> np.ndarray:
    return np.stack([cv2.imread(str(p)).astype(np.float64) / 255 for p in sorted((folder / out).glob('*.png'))])


def the_entry() -> dict:
    [path] = cache.deploy_dir().glob('*/choice.json')
    return json.loads(path.read_text())


def test_cli_accepts_each_precision_and_refuses_bad_ones(folder, capsys):
    assert upscale(folder, 'fp32', capsys)[0] == 0
    code, out, _ = upscale(folder, 'bf16', capsys, '--precision', 'bf16')
    assert code == 0 and 'with torch bf16' in out
    code, out, _ = upscale(folder, 'int8', capsys, '--precision', 'int8')
    assert code == 0 and 'with onnxruntime int8' in out, out
    ref = outputs(folder, 'fp32')
    assert precision.psnr_vs(ref, outputs(folder, 'bf16')) >= 40
    assert precision.psnr_vs(ref, outputs(folder, 'int8')) >= 25  # random weights: int8 only has to run
    code, _, err = upscale(folder, 'x', capsys, '--precision', 'int8', '--backend', 'torch')
    assert code == 2 and 'error: --precision int8 runs onnxruntime' in err
    code, _, err = upscale(folder, 'x', capsys, '--precision', 'bf16', '--backend', 'onnxruntime')
    assert code == 2 and 'error: --precision bf16 runs PyTorch' in err
    with pytest.raises(SystemExit) as exc:
        ddsr_main(['upscale', '--weights', str(folder / 'net.pth'), '-i', 'x', '-o', 'y', '--precision', 'fp16'])
    assert exc.value.code == 2


def test_api_precision(folder):
    img = cv2.imread(str(next((folder / 'in').iterdir())))
    ups = {p: ImageUpscaler.from_file(folder / 'net.pth', precision=p) for p in ('fp32', 'bf16', 'int8')}
    assert {p: up.precision for p, up in ups.items()} == {'fp32': 'fp32', 'bf16': 'bf16', 'int8': 'int8'}
    ref = ups['fp32'](img).astype(np.float64) / 255
    assert precision.psnr_vs(ref, ups['bf16'](img) / 255) >= 40
    assert ups['int8'](img).shape == ref.shape
    assert ImageUpscaler.from_file(folder / 'net.pth', precision='auto').precision in ('fp32', 'bf16', 'int8')
    with pytest.raises(DDSRError, match="precision 'fp16'"):
        ImageUpscaler.from_file(folder / 'net.pth', precision='fp16')


def test_auto_skips_what_misses_the_contract(folder, capsys, monkeypatch):
    """DIPNet int8 missed the contract (``DIPNet.precision_misses``): auto's probe does not even quantize it; bf16 is
    probed."""
    from ddsr.archs.ddistill.ddistill_arch import DDistillSR
    from ddsr.archs.dipnet.dipnet_arch import DIPNet
    monkeypatch.setattr(precision, 'cpu_flags', lambda: {'amx_bf16', 'amx_int8'})
    assert precision.auto_may_use(DDistillSR, 'bf16') and precision.auto_may_use(DIPNet, 'bf16')
    assert not precision.auto_may_use(DIPNet, 'int8') and not precision.auto_may_use(DDistillSR, 'int8')
    assert upscale(folder, 'auto', capsys, '--precision', 'auto')[0] == 0
    entry = the_entry()
    assert set(entry['timings_ms']) == {'torch', 'onnxruntime', 'torch-bf16'} and 'onnx_int8' not in entry


def test_native_flags():
    assert precision.native('fp32', set())
    assert not precision.native('bf16', set()) and not precision.native('int8', {'avx2', 'avx512f'})
    assert precision.native('int8', {'avx512_vnni'}) and precision.native('int8', {'amx_int8'})
    assert precision.native('bf16', {'avx512_bf16'}) == torch.backends.mkldnn.is_available()


def test_auto_without_native_flags_probes_and_runs_fp32_only(folder, capsys, monkeypatch):
    monkeypatch.setattr(precision, 'cpu_flags', lambda: {'sse4_2', 'avx2'})  # e.g. a CPU without AVX512/AMX
    code, out, _ = upscale(folder, 'auto', capsys, '--precision', 'auto')
    entry = the_entry()
    assert code == 0 and set(entry['timings_ms']) <= {'torch', 'onnxruntime'} and 'psnr_vs_fp32' not in entry
    assert ' bf16' not in out and ' int8' not in out


@pytest.mark.parametrize('timings, psnr, expected', [
    ({'torch': 100, 'onnxruntime': 90, 'torch-bf16': 120, 'onnxruntime-int8': 95}, 50, 'onnxruntime'),  # slower
    ({'torch': 100, 'onnxruntime': 90, 'torch-bf16': 40, 'onnxruntime-int8': 30}, 44.9, 'onnxruntime'),  # quality
    ({'torch': 100, 'onnxruntime': 90, 'torch-bf16': 40, 'onnxruntime-int8': 60}, 50, 'torch-bf16'),
    ({'torch': 100, 'onnxruntime': 90, 'torch-bf16': 40, 'onnxruntime-int8': 30}, 50, 'onnxruntime-int8'),
])
def test_auto_takes_a_reduced_precision_only_when_faster_and_good(timings, psnr, expected):
    entry = {'timings_ms': timings, 'torch_import_s': 0.0, 'probe': 96, 'onnx_path': 'a.onnx',
             'onnx_int8_path': 'b.onnx', 'psnr_vs_fp32': {'torch-bf16': psnr, 'onnxruntime-int8': psnr}}
    assert runner.choose(entry, 2, 96 * 96, False) == expected


def test_auto_falls_back_when_the_probe_times_reduced_precision_slower(folder, capsys, monkeypatch):
    """The probe's timings are simulated: bf16 and int8 slower than both float32 backends."""
    monkeypatch.setattr(precision, 'cpu_flags', lambda: {'amx_bf16', 'amx_int8'})
    monkeypatch.setattr('ddsr.archs.dipnet.dipnet_arch.DIPNet.precision_misses', {})  # every candidate is probed
    times = iter([10.0, 12.0, 30.0, 50.0])  # torch, onnxruntime, onnxruntime-int8, torch-bf16 (probe order)
    monkeypatch.setattr('ddsr.deploy.backends.min_ms', lambda fn, runs=3: next(times))
    code, out, _ = upscale(folder, 'auto', capsys, '--precision', 'auto')
    entry = the_entry()
    assert code == 0 and set(entry['timings_ms']) == {'torch', 'onnxruntime', 'onnxruntime-int8', 'torch-bf16'}
    assert entry['backend'] == 'torch' and 'with torch (' in out


def _photo_pair(name: str) -> np.ndarray:
    img = np.asarray(EVAL_PHOTOS[name]())
    img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
    return bicubic_lr(np.ascontiguousarray(img[:240, :240, ::-1]), 4)


@pytest.mark.skipif(not PRETRAINED.is_dir(), reason='official weights not present')
@pytest.mark.parametrize('net', ['DIPNet', 'DDistill-SR'])
def test_official_nets_bf16_and_int8_against_fp32(net):
    """Two eval photos (60x60 LR crops): bf16 >= BF16_FLOOR dB vs fp32 for both nets; int8 >= INT8_FLOOR_DIPNET for
    DIPNet, while auto's floor (MIN_PSNR_VS_FP32) rejects int8 for both (it does not hold the 0.05 dB contract)."""
    path = PRETRAINED / OFFICIAL[net]
    ups = {p: ImageUpscaler.from_file(path, precision=p) for p in ('fp32', 'bf16', 'int8')}
    for name in ('camera', 'chelsea'):
        lr = _photo_pair(name)
        ref = ups['fp32'](lr) / 255.
        bf16, int8 = (precision.psnr_vs(ref, ups[p](lr) / 255.) for p in ('bf16', 'int8'))
        assert bf16 >= BF16_FLOOR, (name, bf16)
        assert int8 < precision.MIN_PSNR_VS_FP32, (name, int8)
        if net == 'DIPNet':
            assert int8 >= INT8_FLOOR_DIPNET, (name, int8)
        assert math.isfinite(bf16)


def test_bf16_keeps_the_named_children_in_float32():
    """DDistill-SR's fusion tail (``bf16_float32``) keeps its original float32 weights in bf16 mode (not rounded
    through bf16); the trunk is bf16; a tiny random net's bf16 output is closer to fp32 with the tail than without."""
    from ddsr.deploy.backends import _cast, to_inference_form
    torch.manual_seed(0)
    net = to_inference_form(arch_class('DDistillSR')(num_feat=16, dyn_dim=4, upscale=2, deploy=True).eval())
    tail = set(net.bf16_float32)
    assert tail == {'cres', 'c', 'PAconv', 'LR_conv', 'upsamplerx2'}
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    mixed = _cast(copy.deepcopy(net), 'cpu', torch.bfloat16)
    for name, value in mixed.state_dict().items():
        if not value.is_floating_point():
            continue
        if name.split('.')[0] in tail:
            assert value.dtype == torch.float32 and torch.equal(value, ref[name]), name
        else:
            assert value.dtype == torch.bfloat16, name
    x = torch.rand(1, 3, 24, 24)
    with torch.inference_mode():
        want = net(x)
        err_mixed = (mixed(x.bfloat16()).float() - want).abs().mean()
        err_all = (copy.deepcopy(net).bfloat16()(x.bfloat16()).float() - want).abs().mean()
    assert err_mixed < err_all


def test_bf16_runs_swinir_at_a_size_other_than_img_size():
    """BasicSR's SwinIR computes its attention mask in float32 for a new image size; the bf16 copy casts it (and every
    layer input) to the layer's weight dtype, so the forward stays bf16 and close to fp32."""
    torch.manual_seed(0)
    net = arch_class('SwinIRmini')(upscale=2, depths=(2,), num_heads=(2,), embed_dim=12, window_size=4,
                                   img_size=16).eval()
    x = torch.rand(1, 3, 20, 20)
    want, got = (precision.upscaler(net, 'cpu', p)(x) for p in ('fp32', 'bf16'))
    assert got.dtype == torch.float32 and got.shape == want.shape == (1, 3, 40, 40)
    assert 0 < float((got - want).abs().max()) < 0.05
