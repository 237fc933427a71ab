"""The four training option files of Jiang et al.'s release (tests/data/jiang_release/) run with ddsr.

Only paths, ``num_gpu``, iteration counts and batch sizes are changed (checked below against the original), then each
file passes ddsr's preflight and trains for a few iterations with BasicSR's own models (``SRModel``,
``SwinIRModel``: OBProxSG built by the patched ``get_optimizer``) and ddsr's ``SRModelKD`` (the authors' KD keys).
The "pre-trained" teachers are random networks whose last conv is zero (their output is the RGB mean, inside the
range DistillSRModel's start-up probe accepts).
"""
import copy
import json
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from ddsr.checkpoint import build_network as build
from tests.conftest import run_cli

RELEASE = Path(__file__).resolve().parent / 'data' / 'jiang_release'
EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 16, 'upscale': 2,
        'res_scale': 1, 'img_range': 255.}
SWINIR_LIGHT = {'type': 'SwinIR', 'upscale': 2, 'in_chans': 3, 'img_size': 64, 'window_size': 8, 'img_range': 1.,
                'depths': [6, 6, 6, 6], 'embed_dim': 60, 'num_heads': [6, 6, 6, 6], 'mlp_ratio': 2,
                'upsampler': 'pixelshuffledirect', 'resi_connection': '1conv'}
ALLOWED = ('datasets.train.dataroot_gt', 'datasets.train.dataroot_lq', 'datasets.val.dataroot_gt',
           'datasets.val.dataroot_lq', 'path.pretrain_network_g', 'tea_path.pretrain_network_g', 'num_gpu',
           'train.total_iter', 'datasets.train.batch_size_per_gpu')


def _flat(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def _teacher(arch: dict, last: str, path: Path) -> Path:
    torch.manual_seed(0)
    state = build(arch).state_dict()
    state[f'{last}.weight'].zero_()
    state[f'{last}.bias'].zero_()
    torch.save({'params': state}, path)
    return path


def _small_val(demo_root: Path, out: Path, offsets: tuple[int, ...] = (100, )) -> tuple[str, str]:
    """96x96 HR / 48x48 LR crops (at each HR ``offsets``) of the two demo validation photos (keeps the final
    validation short)."""
    hr_dir, lr_dir = out / 'HR', out / 'LR'
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir()
    for name in ('chelsea.png', 'coffee.png'):
        hr = cv2.imread(str(demo_root / 'val' / 'HR' / name))
        lr = cv2.imread(str(demo_root / 'val' / 'LR_bicubic' / 'X2' / name))
        for o in offsets:
            crop = name if o == 100 else f'{o}_{name}'
            cv2.imwrite(str(hr_dir / crop), hr[o:o + 96, o:o + 96])
            cv2.imwrite(str(lr_dir / crop), lr[o // 2:o // 2 + 48, o // 2:o // 2 + 48])
    return str(hr_dir), str(lr_dir)


@pytest.fixture(scope='module')
def release_root(tmp_path_factory, demo_root):
    root = tmp_path_factory.mktemp('jiang')
    ckpt = {'edsr': _teacher(EDSR, 'conv_last', root / 'edsr_x2.pth'),
            'swinir': _teacher(SWINIR_LIGHT, 'upsample.0', root / 'swinir_light_x2.pth')}
    return root, ckpt, _small_val(demo_root, root / 'val')


def _adapt(name: str, root: Path, ckpt: dict, val: tuple[str, str], demo_root: Path) -> tuple[Path, dict]:
    original = yaml.safe_load((RELEASE / name).read_text())
    opt = copy.deepcopy(original)
    swin = 'SwinIR' in name
    opt['num_gpu'] = 0
    train = opt['datasets']['train']
    train['dataroot_gt'] = str(demo_root / 'val' / 'HR')  # the demo's training tiles are smaller than 128 px
    train['dataroot_lq'] = str(demo_root / 'val' / 'LR_bicubic' / 'X2')
    train['batch_size_per_gpu'] = 1 if swin else 2
    opt['datasets']['val']['dataroot_gt'], opt['datasets']['val']['dataroot_lq'] = val
    opt['train']['total_iter'] = 2
    teacher = str(ckpt['swinir' if swin else 'edsr'])
    if 'tea_path' in opt:
        opt['tea_path']['pretrain_network_g'] = teacher
    else:
        opt['path']['pretrain_network_g'] = teacher
    changed = {k for k in set(_flat(opt)) | set(_flat(original)) if _flat(opt).get(k) != _flat(original).get(k)}
    assert changed <= set(ALLOWED), changed - set(ALLOWED)
    path = root / name
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path, opt


@pytest.mark.parametrize('name', ['prune_EDSR_Mx2.yml', 'prune_SwinIRlight_SRx2.yml'])
def test_released_pruning_stage_runs(name, release_root, demo_root, tmp_path):
    root, ckpt, val = release_root
    path, opt = _adapt(name, tmp_path, ckpt, val, demo_root)
    res = run_cli(['basicsr', 'train', '-opt', path], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exp = tmp_path / 'experiments' / opt['name']
    log = next(exp.glob('train_*.log')).read_text()
    assert 'OBProxSG' in log and 'Validation Set5' in log
    start = torch.load(ckpt['swinir' if 'SwinIR' in name else 'edsr'], weights_only=True)['params']
    final = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert set(final) == {'params', 'params_ema'}  # the authors' EMA 0.999
    delta = torch.cat([(v - start[k]).abs().flatten() for k, v in final['params'].items() if v.is_floating_point()])
    assert float(delta.max()) > 0
    # plain SGD steps (lr * gradient): two Adam steps at this rate would move nearly every weight by ~lr = 5e-3
    assert float(delta.median()) < 1e-3, float(delta.median())


@pytest.mark.parametrize('name,params', [('distill_EDSR_Minix2_KD.yml', 49603),
                                         ('distill_SwinIRmini_SRx2_scratch_kd.yml', 98868)])
def test_released_distillation_stage_runs(name, params, release_root, demo_root, tmp_path):
    root, ckpt, val = release_root
    path, opt = _adapt(name, tmp_path, ckpt, val, demo_root)
    res = run_cli(['basicsr', 'train', '-opt', path], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exp = tmp_path / 'experiments' / opt['name']
    log = next(exp.glob('train_*.log')).read_text()
    teacher = ckpt['swinir' if 'SwinIR' in name else 'edsr']
    assert f'frozen, from pretrain_network_t: {teacher} [params]' in log  # tea_network_g / tea_path mapped
    if 'alpha' in yaml.safe_load((RELEASE / name).read_text())['train']:
        assert 'train.alpha (0.1) ignored' in log
    assert 'Validation Set5' in log
    final = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    n = sum(v.numel() for k, v in final.items() if not k.endswith(('relative_position_index', 'attn_mask')))
    assert n == params  # the paper's EDSRmini / SwinIRmini, trained from scratch


def test_ddsr_prune_file_auto_schedule_switches_where_the_authors_script_does(release_root, demo_root, tmp_path):
    """ddsr's equivalent of prune_EDSR_Mx2.yml (epochSize / Np: auto) for 12 iterations on 3 training crops at
    batch 3: the authors' prune script gives 1 iteration per pass, epochSize 3 (samples), 12 passes, Np 1, so the
    optimizer takes proximal steps for 1 x 3 steps and orthant steps from iteration 4 (epochSize read as iterations
    per pass, the switch would come after iteration 1)."""
    from ddsr.compress.obproxsg import authors_schedule
    root, ckpt, val = release_root
    opt = yaml.safe_load((RELEASE.parents[2] / 'options/train/EDSRmini/01_prune_x2.yml').read_text())
    assert (opt['train']['optim_g']['epochSize'], opt['train']['optim_g']['Np']) == ('auto', 'auto')
    train = tmp_path / 'train'
    hr, lr = _small_val(demo_root, train, offsets=(100, 0))
    (Path(hr) / '0_coffee.png').unlink()  # 3 samples
    (Path(lr) / '0_coffee.png').unlink()
    opt['num_gpu'] = 0
    opt['datasets']['train'].update(dataroot_gt=hr, dataroot_lq=lr, batch_size_per_gpu=3)
    opt['datasets']['val'].update(dataroot_gt=val[0], dataroot_lq=val[1])
    opt['path']['pretrain_network_g'] = str(ckpt['edsr'])
    opt['train']['total_iter'] = 12
    path = tmp_path / 'prune.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    res = run_cli(['basicsr', 'train', '-opt', path], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = next((tmp_path / 'experiments' / opt['name']).glob('train_*.log')).read_text()
    epoch_size, n_prox = authors_schedule(3, 3, 1, 12)
    assert (epoch_size, n_prox) == (3, 1)
    assert f'epochSize {epoch_size}, Np {n_prox}: proximal steps up to iteration 3' in log
    assert 'OBProxSG: orthant steps from iteration 4 (epoch 1)' in log
    report = json.loads((tmp_path / 'experiments' / opt['name'] / 'sparsity_report.json').read_text())
    assert report['optimizer']['epoch'] == 4 and report['optimizer']['phase'] == 'orthant'
