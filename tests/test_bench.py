"""Efficiency counts against published numbers (NTIRE ESR protocol), which ops count, quality metrics, and both
``ddsr bench`` commands on the demo LMDBs."""
import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from ddsr.bench.efficiency import benchmark, count_macs_activations, count_params, forms
from ddsr.bench.quality import PairedSet, evaluate, tiled_forward, y_psnr_ssim
from ddsr.cli import main
from tests.conftest import run_cli


def test_edsr_x4_counts_match_ntire():
    net = EDSR(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4)  # EDSR-baseline x4
    macs, acts, convs = count_macs_activations(net, (256, 256))
    assert count_params(net) == 1_517_571
    assert round(macs / 1e9, 2) == 129.97 and round(acts / 1e6, 2) == 229.64 and convs == 37


def test_dipnet_and_ddistill_forms():
    train = ARCH_REGISTRY.get('DIPNet')(deploy=False)
    (name_t, net_t), (name_d, net_d) = forms(train)
    assert (name_t, name_d) == ('train', 'deploy') and net_t is train and count_params(net_d) == 243_252
    macs, acts, convs = count_macs_activations(net_d, (256, 256))
    assert round(macs / 1e9, 1) == 14.9 and round(acts / 1e6, 2) == 72.97 and convs == 39  # NTIRE 2023 report
    assert [f for f, _ in forms(ARCH_REGISTRY.get('DIPNet')())] == ['deploy']  # already deployed: one form
    ddistill = dict(forms(ARCH_REGISTRY.get('DDistillSR')(upscale=4, deploy=False)))
    assert count_params(ddistill['train']) == 1_173_004 and count_params(ddistill['deploy']) == 675_780


class _Toy(nn.Module):
    """conv 3->4 (3x3) on 8x8, linear 4->5 per pixel, attention-like bmm: MACs known in closed form."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)  # 1 x 64 x 4
        q = self.fc(t)  # 1 x 64 x 5
        return torch.relu(q @ q.transpose(1, 2)).sum()  # 1 x 64 x 64, inner 5


def test_counted_ops_are_conv_linear_matmul():
    macs, acts, convs = count_macs_activations(_Toy(), (8, 8))
    assert macs == 64 * 4 * 3 * 9 + 64 * 4 * 5 + 64 * 64 * 5
    assert acts == 64 * 4 and convs == 1


def test_benchmark_fields_small_input():
    row = benchmark(MSRResNet(num_feat=8, num_block=1, upscale=4), 'tiny', input_size=(16, 16),
                    count_size=(16, 16), runs=3, warmup=1).as_dict()
    assert row['runtime_ms'] > 0 and row['runtime_iqr_ms'] >= 0 and row['runs'] == 3
    assert row['memory_mb'] is not None and row['memory_mb'] >= 0
    assert row['params'] == count_params(MSRResNet(num_feat=8, num_block=1, upscale=4)) and row['macs'] > 0


def test_y_psnr_of_known_pair():
    rng = np.random.default_rng(0)
    gt = rng.integers(20, 200, (40, 40, 3), dtype=np.uint8)
    sr = gt + np.uint8(10)  # every channel +10 -> Y +10 * 219 / 255 everywhere
    psnr, ssim = y_psnr_ssim(sr, gt, 4)
    assert abs(psnr - 20 * math.log10(255 / (10 * 219 / 255))) < 1e-3
    assert abs(psnr - calculate_psnr(sr, gt, crop_border=4, test_y_channel=True)) < 1e-4 and 0 < ssim < 1


def test_tiled_forward_equals_full():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))
    x = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(net, x, 2, tile=10, tile_pad=4), net(x), rtol=0, atol=1e-6)


def _tiny_weights(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({'params': MSRResNet(num_feat=8, num_block=1, upscale=4).state_dict()}, path)
    return path


def test_quality_on_demo_lmdb_matches_png_pipeline(demo_root: Path, tmp_path: Path):
    net = MSRResNet(num_feat=8, num_block=1, upscale=4)
    net.load_state_dict(torch.load(_tiny_weights(tmp_path / 'w.pth'))['params'])
    res = evaluate(net, PairedSet('val', str(demo_root / 'val/HR.lmdb'), str(demo_root / 'val/LR_bicubic_X4.lmdb')),
                   4, progress=False)
    psnrs = []
    for hr_path in sorted((demo_root / 'val/HR').glob('*.png')):  # same images, read from the PNG folders
        gt, lq = cv2.imread(str(hr_path)), cv2.imread(str(demo_root / 'val/LR_bicubic/X4' / hr_path.name))
        with torch.no_grad():
            sr = tensor2img(net(img2tensor(lq / 255., bgr2rgb=True, float32=True)[None]), min_max=(0, 1))
        psnrs.append(calculate_psnr(sr, gt, crop_border=4, test_y_channel=True))
    assert res['images'] == len(psnrs) == 2 and abs(res['psnr'] - np.mean(psnrs)) < 1e-4


def test_bench_cli_quality_and_efficiency(demo_root: Path, tmp_path: Path, capsys):
    weights = _tiny_weights(tmp_path / 'w.pth')
    model = ['--arch', 'MSRResNet', '--arch-kwargs', '{"num_feat": 8, "num_block": 1, "upscale": 4}',
             '--weights', weights, '--name', 'tiny']
    data = ['--dataset', demo_root / 'val/HR.lmdb', demo_root / 'val/LR_bicubic_X4.lmdb', '--quiet']
    assert main(['bench', 'quality', *map(str, model + data), '--tile', '64', '--out', str(tmp_path / 'q')]) == 0
    assert 'PSNR-Y' in capsys.readouterr().out
    (qrow, ) = json.loads((tmp_path / 'q/quality.json').read_text())
    assert qrow['name'] == 'tiny' and qrow['set'] == 'val' and qrow['images'] == 2 and 5 < qrow['psnr'] < 60
    eff = run_cli(['bench', 'efficiency', *model, *data, '--size', '16', '16', '--runs', '2', '--out', tmp_path / 'e'],
                  tmp_path)
    assert eff.returncode == 0, eff.stderr
    (erow, ) = json.loads((tmp_path / 'e/efficiency.json').read_text())
    assert erow['runtime_ms'] > 0 and erow['memory_mb'] >= 0 and erow['input_size'] == '16x16'
    assert abs(erow['psnr_val'] - qrow['psnr']) < 0.05  # full vs tiled inference (pad 16): nearly the same
    assert (tmp_path / 'e/psnr_val_vs_cost.png').stat().st_size > 1000 and 'tiny' in eff.stdout
