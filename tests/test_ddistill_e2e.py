"""DDistill-SR end to end on the demo data: `basicsr train` (a few iterations) -> `ddsr reparam` -> `basicsr test`
of the train form and of the deploy form give the same PSNR/SSIM."""
import re

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils.matlab_functions import imresize

from tests.conftest import PRETRAINED, load_yaml, run_cli, write_options

DEMO_OPT = 'options/demo/train_DDistillSR_demo_x4.yml'
OFFICIAL = PRETRAINED / 'DDistill-SRx4_inference.pth'


def _metrics(proc) -> dict:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    found = {name: [float(v) for v in re.findall(rf'# {name}: ([0-9.]+)', text)] for name in ('psnr', 'ssim')}
    assert all(found.values()), text[-3000:]  # BasicSR may log each line to stdout and stderr
    return {k: v[-1] for k, v in found.items()}


def _test_options(train_opt: dict, name: str, network: dict, ckpt: str, param_key: str) -> dict:
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
        'datasets': {'test_1': dict(train_opt['datasets']['val'], phase='test')},
        'network_g': network,
        'path': {'pretrain_network_g': ckpt, 'param_key_g': param_key, 'strict_load_g': True},
        'val': {'save_img': False, 'metrics': train_opt['val']['metrics']},
    }


def test_demo_train_reparam_test_same_psnr(workdir):
    opt = load_yaml(workdir / DEMO_OPT)
    opt['name'] = 'e2e_DDistillSR'
    opt['datasets']['train'].update(batch_size_per_gpu=2)
    opt['train'].update(total_iter=4)
    opt['train']['scheduler']['milestones'] = [2]
    opt['val'].update(val_freq=4)
    opt['logger'].update(print_freq=2, save_checkpoint_freq=4)
    opt['logger'].pop('console', None)  # BasicSR's own console: _metrics reads its validation lines
    train_yml = write_options(workdir / 'train.yml', opt)
    _metrics(run_cli(['basicsr', 'train', '-opt', train_yml], workdir))
    ckpt = workdir / 'experiments' / 'e2e_DDistillSR' / 'models' / 'net_g_latest.pth'
    deploy_ckpt = workdir / 'deploy.pth'
    proc = run_cli(['reparam', '-opt', train_yml, '--ckpt', ckpt, '-o', deploy_ckpt], workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    arch = torch.load(deploy_ckpt, map_location='cpu', weights_only=True)['arch']
    assert arch['type'] == 'DDistillSR' and arch['deploy'] is True

    results = {}
    for form, network, path, key in (('train', opt['network_g'], ckpt, 'params'),
                                     ('deploy', {**arch}, deploy_ckpt, 'params')):
        test_opt = _test_options(opt, f'e2e_test_{form}', network, str(path), key)
        yml = write_options(workdir / f'test_{form}.yml', test_opt)
        results[form] = _metrics(run_cli(['basicsr', 'test', '-opt', yml], workdir))
    assert abs(results['train']['psnr'] - results['deploy']['psnr']) <= 0.01, results
    assert abs(results['train']['ssim'] - results['deploy']['ssim']) <= 1e-4, results


@pytest.mark.skipif(not OFFICIAL.is_file(), reason=f'official weights not found at {OFFICIAL}')
def test_official_weights_with_test_option_file(workdir):
    """options/test/DDistillSR/test_DDistillSR_x4.yml (plain state_dict, param_key_g: ~) on the demo val split."""
    opt = load_yaml(workdir / 'options' / 'test' / 'DDistillSR' / 'test_DDistillSR_x4.yml')
    val = {'name': 'demo_val', 'type': 'PairedImageDataset', 'dataroot_gt': 'datasets/demo/val/HR',
           'dataroot_lq': 'datasets/demo/val/LR_bicubic/X4', 'io_backend': {'type': 'disk'}}
    opt.update(num_gpu=0, datasets={'test_1': val})
    opt['path']['pretrain_network_g'] = str(OFFICIAL)
    assert opt['path']['param_key_g'] is None
    found = _metrics(run_cli(['basicsr', 'test', '-opt', write_options(workdir / 'official.yml', opt)], workdir))
    bicubic = []
    for hr_path in sorted((workdir / 'datasets' / 'demo' / 'val' / 'HR').glob('*.png')):
        hr = cv2.imread(str(hr_path)).astype(np.float64) / 255.
        lr = cv2.imread(str(hr_path.parents[1] / 'LR_bicubic' / 'X4' / hr_path.name)).astype(np.float64) / 255.
        up = np.clip(imresize(lr, 4), 0, 1)
        bicubic.append(calculate_psnr(up * 255., hr * 255., crop_border=4, test_y_channel=True))
    print(f"official x4 on demo val: Y-PSNR {found['psnr']:.2f} dB vs bicubic {np.mean(bicubic):.2f} dB")
    assert found['psnr'] >= np.mean(bicubic) + 0.8
