"""Smaller first-hour fixes (issue 17): same-stem inputs name both files, a missing checkpoint of an option file
names its key, plain progress lines off a terminal, `bench quality --output` draws its plot."""
import cv2
import numpy as np
import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from tests.conftest import run_cli, write_options

ARCH = {'type': 'DIPNet', 'num_feat': 8, 'num_mid': 6, 'num_block': 1, 'esa_channels': 4, 'upscale': 2}


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('DIPNet')(**{k: v for k, v in ARCH.items() if k != 'type'})
    torch.save(net.state_dict(), tmp_path / 'tiny.pth')  # plain state dict: recognised without --arch
    return tmp_path / 'tiny.pth'


def test_same_stem_inputs_are_named_and_progress_has_no_carriage_returns(tiny, tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    cv2.imwrite(str(src / 'coffee.png'), np.full((20, 24, 3), 80, np.uint8))
    cv2.imwrite(str(src / 'coffee.jpg'), np.full((20, 24, 3), 80, np.uint8))
    env = {'OMP_NUM_THREADS': '1'}
    res = run_cli(['upscale', '-i', src, '-o', tmp_path / 'out', '--weights', tiny], tmp_path, env=env)
    assert res.returncode == 2
    assert f'{src / "coffee.jpg"} and {src / "coffee.png"} would both be written to' in res.stderr
    (src / 'coffee.jpg').unlink()
    res = run_cli(['upscale', '-i', src, '-o', tmp_path / 'out', '--weights', tiny, '--backend', 'torch'], tmp_path,
                  env=env)
    assert res.returncode == 0, res.stderr
    assert '\r' not in res.stderr and 'upscale: 1/1 (100%)' in res.stderr  # captured: plain lines
    assert cv2.imread(str(tmp_path / 'out' / 'coffee.png')).shape == (40, 48, 3)


def test_option_file_missing_checkpoint_names_the_key(tmp_path):
    cv2.imwrite(str(tmp_path / 'p.png'), np.full((20, 20, 3), 9, np.uint8))
    opt = write_options(tmp_path / 'o.yml', {'network_g': ARCH, 'path': {'pretrain_network_g': 'gone/net.pth'}})
    res = run_cli(['upscale', '-opt', opt, '-i', tmp_path / 'p.png', '-o', tmp_path / 'out'], tmp_path)
    assert res.returncode == 2 and res.stderr.count('\n') == 1
    assert 'path.pretrain_network_g' in res.stderr and 'gone/net.pth' in res.stderr


def test_bench_quality_output_writes_the_plot(tiny, tmp_path, demo_root):
    val = demo_root / 'val'
    res = run_cli(['bench', 'quality', '--weights', tiny, '--dataset', val / 'HR', val / 'LR_bicubic' / 'X2',
                   '-o', tmp_path / 'q', '--device', 'cpu', '--quiet'], tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, res.stderr[-2000:]
    plot = tmp_path / 'q' / 'quality_HR_psnr_vs_params.png'
    assert plot.is_file() and plot.stat().st_size > 1000
    assert (tmp_path / 'q' / 'quality.csv').is_file()
