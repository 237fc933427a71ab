"""DIPNet multi-stage demo chain (options/demo/DIPNet) and PruneSRModel's iterative pruning (prune.mode: iterative).

The chain runs once per module with its option files shrunk (iterations, teacher width); the pruning tests start
from its reparameterized student. Exactness of pruning all-zero middle channels on its own is covered by
tests/test_dipnet.py::test_pruning_zero_filters_is_exact.
"""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ddsr.archs.dipnet.dipnet_arch import DIPNet
from ddsr.compress.dipnet_prune import importance, iterative_schedule, prune_dipnet
from tests.conftest import REPO_ROOT, run_cli, write_options

DEMO = REPO_ROOT / 'options' / 'demo' / 'DIPNet'
EXP = 'experiments/demo_DIPNet_x4_{}'
RATIO, STEPS, MID = 0.25, 2, 28


def _ok(res):
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def _psnrs(text: str):
    return [float(v) for v in re.findall(r'# psnr: ([0-9.]+)', text)]


def _opt(file: str, **changes) -> dict:
    """A demo option file with nested ``changes`` ('a:b' keys) applied."""
    opt = yaml.safe_load((DEMO / file).read_text())
    for keys, value in changes.items():
        *parents, last = keys.split(':')
        node = opt
        for key in parents:
            node = node[key]
        node[last] = value
    return opt


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _build(arch: dict) -> DIPNet:
    return DIPNet(**{k: v for k, v in arch.items() if k != 'type'}).eval()


@pytest.fixture(scope='module')
def chain(tmp_path_factory, demo_root):
    """Run 01 teacher -> 02 enhanced HR -> 03 distil -> 04 reparam -> 05 prune -> 06 L2 -> 07 test (shrunk)."""
    root = tmp_path_factory.mktemp('dipnet_chain')
    (root / 'datasets').mkdir()
    (root / 'datasets' / 'demo').symlink_to(demo_root)
    opts = root / 'options'
    logs = {}
    small = {}
    for sub, size in (('HR', 128), ('LR_bicubic/X4', 32)):  # 32x32 LR crops of the demo val photos: fast val
        (root / 'val_small' / sub).mkdir(parents=True)
        for path in sorted((demo_root / 'val' / sub).glob('*.png')):
            cv2.imwrite(str(root / 'val_small' / sub / path.name), cv2.imread(str(path))[:size, :size])
        small['dataroot_gt' if sub == 'HR' else 'dataroot_lq'] = str(root / 'val_small' / sub)

    def write(name, **changes):
        opt = _opt(name, **changes)
        for key, ds in opt.get('datasets', {}).items():
            if key != 'train':
                ds.update(small)
        return write_options(opts / name, opt)

    # narrower teacher (num_feat 16): the anchors body.1 .. body.7 stay valid
    o1 = write('01_teacher_x4.yml', **{'train:total_iter': 4, 'val:val_freq': 100, 'network_g:num_feat': 16})
    logs['01'] = _ok(run_cli(['basicsr', 'train', '-opt', o1], root))
    o2 = write('02_enhanced_hr_x4.yml', **{'network_t:num_feat': 16})
    logs['02'] = _ok(run_cli(['make-enhanced-hr', '-opt', o2, '--lq', 'datasets/demo/train/LR_bicubic_X4.lmdb', '-o',
                              EXP.format('02_enhanced_hr') + '/enhanced', '--lmdb', '--device', 'cpu'], root))
    o3 = write('03_distill_x4.yml', **{'train:total_iter': 8, 'train:progressive:milestones': [2, 4, 6],
                                       'val:val_freq': 100, 'network_t:num_feat': 16})
    logs['03'] = _ok(run_cli(['basicsr', 'train', '-opt', o3], root))
    o4 = write('04_reparam_x4.yml')
    logs['04'] = _ok(run_cli(['reparam', '-opt', o4, '--ckpt', EXP.format('03_distill') + '/models/net_g_latest.pth',
                              '-o', EXP.format('04_reparam') + '/net_g_deploy.pth'], root))
    o5 = write('05_prune_x4.yml', **{'train:total_iter': STEPS * 2 + 1, 'val:val_freq': 100,
                                     'prune': {'mode': 'iterative', 'ratio': RATIO, 'step_iters': 2, 'steps': STEPS,
                                               'max_psnr_drop': None}})
    logs['05'] = _ok(run_cli(['basicsr', 'train', '-opt', o5], root))
    o6 = write('06_finetune_l2_x4.yml', **{'train:total_iter': 2, 'val:val_freq': 100})
    logs['06'] = _ok(run_cli(['basicsr', 'train', '-opt', o6], root))
    logs['07'] = _ok(run_cli(['basicsr', 'test', '-opt', write('07_test_x4.yml')], root))
    return root, logs, small


def test_demo_chain_artifacts(chain):
    root, logs, _ = chain
    exp = {k: root / EXP.format(k) for k in ('01_teacher', '02_enhanced_hr', '03_distill', '04_reparam', '05_prune',
                                             '06_finetune_l2')}
    teacher = _load(exp['01_teacher'] / 'models/net_g_latest.pth')['params']
    assert teacher['conv_first.weight'].shape == (16, 3, 3, 3) and 'body.7.conv2.weight' in teacher
    lr_keys = (root / 'datasets/demo/train/LR_bicubic_X4.lmdb/meta_info.txt').read_text().split('\n')
    lr_keys = sorted(line.split('.')[0] for line in lr_keys if line)
    pngs = sorted(p.stem for p in (exp['02_enhanced_hr'] / 'enhanced').glob('*.png'))
    assert pngs == lr_keys and len(pngs) == 294
    assert cv2.imread(str(exp['02_enhanced_hr'] / 'enhanced' / f'{pngs[0]}.png')).shape == (96, 96, 3)
    assert (exp['02_enhanced_hr'] / 'enhanced.lmdb' / 'data.mdb').is_file()
    assert 'Feature anchors: student widths [32, 32, 32, 32] -> teacher widths [16, 16, 16, 16]' in logs['03']
    assert 'Progressive stage 3 at iter 7: gt_size 96' in logs['03']
    train_form = _load(exp['03_distill'] / 'models/net_g_latest.pth')['params']
    assert 'block_1.c1_r.expand.weight' in train_form
    assert len(_load(exp['03_distill'] / 'models/net_adapters_latest.pth')['params']) == 8  # 4 adapters: w + b
    # 04: exact reparameterization of the stage-3 student
    deploy = _load(exp['04_reparam'] / 'net_g_deploy.pth')
    assert deploy['arch']['deploy'] and deploy['arch']['mid_channels'] == [MID] * 4
    net_train = DIPNet(**{**{k: v for k, v in deploy['arch'].items() if k != 'type'}, 'deploy': False}).eval()
    net_train.load_state_dict(train_form)
    x = torch.rand(1, 3, 20, 20)
    net_deploy = _build(deploy['arch'])
    net_deploy.load_state_dict(deploy['params'])
    with torch.inference_mode():
        assert (net_train(x) - net_deploy(x)).abs().max() <= 1e-5
    # 05 -> 06 -> 07: the pruned widths flow through the self-describing checkpoints
    assert (exp['05_prune'] / 'prune_history.json').is_file()
    best = _load(exp['05_prune'] / 'models/net_g_pruned_best.pth')
    final = _load(exp['06_finetune_l2'] / 'models/net_g_latest.pth')
    assert final['arch'] == best['arch'] and best['arch']['mid_channels'] == [iterative_schedule(MID, RATIO, 2)[-1]] * 4
    assert final['params']['block_1.c2_r.weight'].shape[:2] == (15, 15)
    psnr_06, psnr_07 = _psnrs(logs['06'])[-1], _psnrs(logs['07'])[-1]
    assert 10 < psnr_07 < 40 and abs(psnr_06 - psnr_07) < 1e-3  # the test run sees the fine-tuned network


def test_iterative_widths_follow_schedule(chain):
    root, logs, _ = chain
    exp = root / EXP.format('05_prune')
    history = yaml.safe_load((exp / 'prune_history.json').read_text())  # JSON is YAML
    widths = [MID] + iterative_schedule(MID, RATIO, STEPS)
    assert widths == [28, 21, 15]
    assert [h['mid_channels'] for h in history['history']] == [[w] * 4 for w in widths]
    assert [h['iter'] for h in history['history']] == [0, 2, 4] and history['step'] == STEPS and history['stopped']
    params = [h['params'] for h in history['history']]
    assert params[0] > params[1] > params[2]
    base = history['history'][0]['psnr']
    for k, (entry, width) in enumerate(zip(history['history'], widths, strict=False)):
        ckpt = _load(exp / f'models/net_g_prune_step{k}.pth')
        assert ckpt['step'] == k and ckpt['arch']['mid_channels'] == [width] * 4
        assert ckpt['params']['block_4.c3_r.weight'].shape[1] == width
        assert sum(v.numel() for v in ckpt['params'].values()) == entry['params']
        assert ckpt['psnr'] == pytest.approx(entry['psnr']) and entry['drop'] == pytest.approx(base - entry['psnr'])
        assert f'Prune step {k} at iter {entry["iter"]}: mid_channels {[width] * 4}' in logs['05']
    latest = _load(exp / 'models/net_g_latest.pth')
    assert latest['arch']['mid_channels'] == [widths[-1]] * 4 and latest['arch']['type'] == 'DIPNet'


def test_pruned_checkpoint_rebuilds_from_yaml_and_tests(chain):
    """A plain SRModel test option whose network_g is the checkpoint's arch reproduces the step's PSNR."""
    root, _, small = chain
    exp = root / EXP.format('05_prune')
    ckpt = _load(exp / 'models/net_g_pruned_best.pth')
    opt = _opt('04_reparam_x4.yml', name='test_pruned', network_g=ckpt['arch'])
    opt['datasets']['test_1'].update(small)  # the val set stage 5 measured on
    opt['model_type'] = 'SRModel'
    opt['path'] = {'pretrain_network_g': str(exp / 'models/net_g_pruned_best.pth'), 'param_key_g': 'params',
                   'strict_load_g': True}
    text = _ok(run_cli(['basicsr', 'test', '-opt', write_options(root / 'test_pruned.yml', opt)], root))
    history = yaml.safe_load((exp / 'prune_history.json').read_text())['history']
    assert 'DIPNet, with parameters: {:,}'.format(history[ckpt['step']]['params']) in text
    assert _psnrs(text)[-1] == pytest.approx(ckpt['psnr'], abs=1e-3)


def _self_val(root: Path, net: DIPNet, folder: str) -> dict:
    """A val set on which ``net`` is almost perfect: GT = its own (8-bit) output + a +-1 checkerboard.

    Any change of the output lowers the PSNR, so the drop of a pruning step is > 0 unless it is exact.
    """
    src = root / 'datasets/demo/val/LR_bicubic/X4'
    lq_dir, gt_dir = root / folder / 'lq', root / folder / 'gt'
    lq_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for path in sorted(src.glob('*.png')):
        lq = cv2.imread(str(path))[:32, :32]
        cv2.imwrite(str(lq_dir / path.name), lq)
        with torch.inference_mode():
            out = net(torch.from_numpy(lq[..., ::-1] / 255.).permute(2, 0, 1)[None].float())
        sr = np.round(out[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1] * 255)
        checker = (np.indices(sr.shape[:2]).sum(0) % 2 * 2 - 1)[..., None]
        cv2.imwrite(str(gt_dir / path.name), np.clip(sr + checker, 0, 255).astype(np.uint8))
    return {'name': 'self', 'type': 'PairedImageDataset', 'dataroot_gt': str(gt_dir), 'dataroot_lq': str(lq_dir),
            'io_backend': {'type': 'disk'}}


def _prune_opt(name: str, start: Path, val: dict, **changes) -> dict:
    opt = _opt('05_prune_x4.yml', name=name, **changes)
    opt['path']['pretrain_network_g'] = str(start)
    opt['datasets']['val'] = val
    opt['val']['val_freq'] = 1000
    return opt


@pytest.fixture(scope='module')
def stop_run(chain):
    """lr 0, ratio 0.5, max_psnr_drop 0.05 from a start whose weaker half of middle channels is all zero: step 1
    (28 -> 14) is exact, step 2 (14 -> 7) is not. Run to iteration 3 (step 2 pruned, not yet measured), then
    resume to 6: step 2 is measured after the resume, exceeds the drop and step 1 is restored.

    With lr 0 the weights change only by pruning, so every network is exactly prune_dipnet of the start.
    """
    root, _, _ = chain
    start = _load(root / EXP.format('04_reparam') / 'net_g_deploy.pth')
    net = _build(start['arch'])
    net.load_state_dict(start['params'])
    with torch.no_grad():
        for block, scores in zip(net.blocks, importance(net), strict=False):  # zero the weaker half of both middle maps
            block.c1_r.weight[scores[0].argsort()[:MID // 2]] = 0
            block.c2_r.weight[scores[1].argsort()[:MID // 2]] = 0
    torch.save({'params': net.state_dict(), 'arch': net.config()}, root / 'zeroed.pth')
    opt = _prune_opt('prune_stop', root / 'zeroed.pth', _self_val(root, net, 'self_val'),
                     prune={'mode': 'iterative', 'ratio': 0.5, 'step_iters': 2, 'steps': 3, 'max_psnr_drop': 0.05},
                     **{'train:total_iter': 3, 'train:optim_g:lr': 0.0, 'logger:save_checkpoint_freq': 3})
    yml = write_options(root / 'prune_stop.yml', opt)
    first = _ok(run_cli(['basicsr', 'train', '-opt', yml], root))
    exp = root / 'experiments/prune_stop'
    state3 = _load(exp / 'training_states/3.state')
    resumed = _ok(run_cli(['basicsr', 'train', '-opt', yml, '--auto_resume', '--force_yml', 'train:total_iter=6'],
                          root))
    return net, exp, state3, first, resumed


def test_resume_mid_pruning_rebuilds_pruned_arch(stop_run):
    net, exp, state3, first, resumed = stop_run
    assert state3['prune']['step'] == 2 and [h['step'] for h in state3['prune']['history']] == [0, 1]
    ckpt3 = _load(exp / 'models/net_g_3.pth')
    assert ckpt3['arch']['mid_channels'] == [7] * 4
    twice = prune_dipnet(prune_dipnet(net, ratio=0.5), ratio=0.5).state_dict()
    assert all(torch.equal(ckpt3['params'][k], v) for k, v in twice.items())
    assert 'Resuming training from epoch: 0, iter: 3.' in resumed
    assert 'Resumed iterative pruning at step 2 (mid_channels [7, 7, 7, 7])' in resumed
    assert 'Prune step 2 at iter 4: mid_channels [7, 7, 7, 7]' in resumed  # measured after the resume
    history = yaml.safe_load((exp / 'prune_history.json').read_text())['history']
    assert [h['iter'] for h in history] == [0, 2, 4] and [h['mid_channels'][0] for h in history] == [28, 14, 7]


def test_psnr_drop_stop_keeps_last_good(stop_run):
    net, exp, _, _, resumed = stop_run
    state = yaml.safe_load((exp / 'prune_history.json').read_text())
    drops = [h['drop'] for h in state['history']]
    assert state['history'][0]['psnr'] > 45 and abs(drops[1]) < 0.01 and drops[2] > 0.05
    assert state['stopped'] and state['good'] == 1 and state['step'] == 2
    assert 'stop, restore step 1' in resumed
    expected = prune_dipnet(net, ratio=0.5).state_dict()
    for name in ('net_g_prune_step1.pth', 'net_g_pruned_best.pth', 'net_g_latest.pth'):
        ckpt = _load(exp / 'models' / name)
        assert ckpt['arch']['mid_channels'] == [14] * 4
        assert all(torch.equal(ckpt['params'][k], v) for k, v in expected.items())
