"""Issue 9: every bad input is one ``error: ...`` line naming the file/key, exit code 2, and nothing half-written.

Runs the command line in-process (``tests.conftest.run_cli_inprocess``): a case costs milliseconds, not the ~3 s of
a new interpreter importing basicsr. ``BAD_INPUTS`` counts the cases tried and passed (printed at the end, ``-s``).
"""
import gc
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY
from torch import nn

from ddsr import checkpoint
from tests.conftest import REPO_ROOT, load_yaml, run_cli, run_cli_inprocess, write_options

BAD_INPUTS = {'tried': 0, 'passed': 0}


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(scope='module', autouse=True)
def _report():
    yield
    print(f"\nbad inputs: {BAD_INPUTS['passed']}/{BAD_INPUTS['tried']} gave one error line and exit code 2")


def expect_error(args, cwd, *needles, code: int = 2, kept: str | None = None, fresh_process: bool = False) -> str:
    """Run ``args``; assert exit ``code``, one ``error:`` line containing every needle, no traceback, and no
    experiments/results folder left behind, except ``kept`` (a run folder BasicSR had written its log to: it stays,
    and the output says so). Returns the error line."""
    BAD_INPUTS['tried'] += 1
    if fresh_process:  # as a user runs it (DataLoader worker processes start from a clean interpreter state)
        done = run_cli(args, cwd)
        rc, err = done.returncode, done.stderr
    else:
        gc.collect()  # earlier tests' DataLoaders shut down now, not while this run's stderr is captured
        rc, _, err = run_cli_inprocess(args, cwd)
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert rc == code, err[-3000:]
    assert 'Traceback' not in err and len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    if code == 2 and args[0] == 'basicsr':
        left = [str(p.relative_to(cwd)) for p in (*Path(cwd).glob('experiments/*'), *Path(cwd).glob('results/*'))]
        assert left == ([kept] if kept else []), lines[0]
    if kept:
        assert list((Path(cwd) / kept).glob('*_*.log')) and f'run folder kept: {kept}' in err, err[-2000:]
    BAD_INPUTS['passed'] += 1
    return lines[0]


def tiny_train(name: str = 'bad', total_iter: int = 2, **train) -> dict:
    """A CPU-second MSRResNet x4 training option dict on the demo LMDBs."""
    opt = load_yaml(REPO_ROOT / 'options' / 'demo' / 'train_MSRResNet_demo_x4.yml')
    opt['name'] = name
    opt['network_g'].update(num_feat=8, num_block=1)
    opt['datasets']['train'].update(gt_size=48, batch_size_per_gpu=2)
    opt['train'].update(total_iter=total_iter, **train)
    opt['train']['scheduler']['milestones'] = [max(1, total_iter // 2)]
    opt['logger'].update(print_freq=1, save_checkpoint_freq=max(1, total_iter // 2))
    opt.pop('val')
    return opt


def train(workdir: Path, opt: dict, *extra) -> list:
    return ['basicsr', 'train', '-opt', write_options(workdir / f'{opt["name"]}.yml', opt), *extra]


def write_img(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def paired_folders(root: Path, sizes, scale: int = 4) -> tuple:
    """HR/LR folders with images ``name: (lr_h, lr_w)``; HR = LR x scale."""
    for i, (name, (h, w)) in enumerate(sizes.items()):
        write_img(root / 'HR' / f'{name}.png', h * scale, w * scale, i)
        write_img(root / 'LR' / f'{name}.png', h, w, i)
    return str(root / 'HR'), str(root / 'LR')


# ---- unknown types, missing keys ----


@pytest.mark.parametrize('where, value, close', [
    (('network_g', 'type'), 'MSRResNett', 'MSRResNet'),
    (('model_type', ), 'SRModle', 'SRModel'),
    (('train', 'pixel_opt', 'type'), 'L1Los', 'L1Loss'),
    (('datasets', 'train', 'type'), 'PairedImageDatset', 'PairedImageDataset'),
])
def test_unknown_type_lists_close_names(workdir, where, value, close):
    opt = tiny_train()
    node = opt
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    line = expect_error(train(workdir, opt), workdir, value, 'Close names', close)
    assert '.'.join(where) in line or where[0] in line


def test_unknown_metric_scheduler_optimizer(workdir):
    opt = tiny_train()
    opt['val'] = {'val_freq': 1, 'metrics': {'psnr': {'type': 'calculate_psnrr', 'crop_border': 4}}}
    expect_error(train(workdir, opt), workdir, 'val.metrics.psnr.type', 'calculate_psnr')
    opt = tiny_train()
    opt['train']['scheduler']['type'] = 'StepLR'
    expect_error(train(workdir, opt), workdir, 'train.scheduler.type', 'MultiStepLR')
    opt = tiny_train()
    opt['train']['optim_g']['type'] = 'Adamm'
    expect_error(train(workdir, opt), workdir, 'train.optim_g.type', 'Adam')


@pytest.mark.parametrize('key', ['network_g', 'datasets', 'train', 'model_type'])
def test_missing_required_key(workdir, key):
    opt = tiny_train()
    opt.pop(key)
    expect_error(train(workdir, opt), workdir, 'missing required key', key)


def test_missing_nested_keys_and_bad_values(workdir):
    opt = tiny_train()
    opt['network_g'].pop('type')
    expect_error(train(workdir, opt), workdir, 'network_g', 'missing "type:"')
    opt = tiny_train()
    opt['network_g']['num_feats'] = 8  # constructor kwarg that does not exist
    expect_error(train(workdir, opt), workdir, 'network_g', 'cannot build MSRResNet', 'num_feats')
    opt = tiny_train()
    opt['train']['total_iter'] = 'many'
    expect_error(train(workdir, opt), workdir, 'train.total_iter')
    opt = tiny_train()
    opt['datasets']['train']['dataroot_lq'] = 'datasets/nowhere.lmdb'
    expect_error(train(workdir, opt), workdir, 'datasets.train.dataroot_lq', 'datasets/nowhere.lmdb')
    expect_error(['basicsr', 'train', '-opt', workdir / 'absent.yml'], workdir, 'option file not found')
    (workdir / 'broken.yml').write_text('name: x\nnetwork_g: {type: EDSR\n')
    expect_error(['basicsr', 'test', '-opt', workdir / 'broken.yml'], workdir, 'malformed option file', 'line')


# ---- checkpoints that do not match their arch ----


def _edsr_ckpt(path: Path, num_feat: int, key: str = 'params') -> Path:
    net = EDSR(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=2, upscale=4)
    torch.save({key: net.state_dict()}, path)
    return path


def distill_opt(teacher_ckpt: Path, name: str = 'kd') -> dict:
    opt = tiny_train(name)
    opt['model_type'] = 'DistillSRModel'
    opt['network_t'] = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4)
    opt['path'].update(pretrain_network_t=str(teacher_ckpt), param_key_t='params', strict_load_t=True)
    opt['train']['distill_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
    return opt


def test_teacher_checkpoint_that_does_not_match_names_keys_and_shapes(workdir):
    bad = _edsr_ckpt(workdir / 'teacher_w8.pth', num_feat=8)
    line = expect_error(train(workdir, distill_opt(bad)), workdir, 'pretrain_network_t', 'network_t', 'EDSR',
                        'shape mismatch', 'conv_first.weight', '(8, 3, 3, 3)', '(16, 3, 3, 3)')
    assert str(bad) in line
    # a checkpoint of another arch: missing / unexpected keys named
    torch.save({'params': {'conv.weight': torch.zeros(1)}}, workdir / 'other.pth')
    expect_error(train(workdir, distill_opt(workdir / 'other.pth')), workdir, 'missing in checkpoint',
                 'conv_first.weight', 'unexpected in checkpoint: conv.weight')
    # wrong param key, unreadable file
    _edsr_ckpt(workdir / 'ema_only.pth', 16, key='weights')
    expect_error(train(workdir, distill_opt(workdir / 'ema_only.pth')), workdir, "no entry 'params'")
    (workdir / 'garbage.pth').write_bytes(b'\x00garbage' * 10)
    expect_error(train(workdir, distill_opt(workdir / 'garbage.pth')), workdir, 'cannot read checkpoint')


def test_pretrain_network_g_respects_strict_load(workdir):
    net = EDSR(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4)
    state = net.state_dict()
    state['conv_first.weight'] = torch.zeros(16, 3, 3, 3)  # one tensor of the wrong shape
    torch.save({'params': state}, workdir / 'g.pth')
    opt = tiny_train('strict')
    opt['network_g'] = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4)
    opt['path'].update(pretrain_network_g=str(workdir / 'g.pth'), strict_load_g=True)
    expect_error(train(workdir, opt), workdir, 'path.pretrain_network_g', 'conv_first.weight',
                 'checkpoint (16, 3, 3, 3) vs network (8, 3, 3, 3)')
    opt['path']['strict_load_g'] = False  # BasicSR drops the mismatching tensor and loads the rest: allowed
    BAD_INPUTS['tried'] += 1
    rc, _, err = run_cli_inprocess(train(workdir, opt), workdir)
    assert rc == 0, err[-2000:]
    BAD_INPUTS['passed'] += 1


def test_ddsr_commands_reject_mismatching_weights(workdir):
    bad = _edsr_ckpt(workdir / 'w8.pth', num_feat=8)
    write_img(workdir / 'in' / 'a.png', 20, 20)
    kwargs = '{"num_in_ch": 3, "num_out_ch": 3, "num_feat": 16, "num_block": 2}'
    expect_error(['upscale', '--weights', bad, '--arch', 'EDSR', '--arch-kwargs', kwargs, '-i', workdir / 'in',
                  '-o', workdir / 'out', '--backend', 'torch'], workdir, str(bad), 'conv_first.weight')
    assert not (workdir / 'out').exists()
    expect_error(['bench', 'efficiency', '--arch', 'EDSR', '--arch-kwargs', kwargs, '--weights', bad, '--runs', '0',
                  '--no-memory'], workdir, str(bad))
    expect_error(['upscale', '--weights', bad, '--arch', 'EDSR', '--arch-kwargs', '{"num_feat": 16}', '-i',
                  workdir / 'in', '-o', workdir / 'out'], workdir, '--arch', 'cannot build EDSR', 'num_in_ch')
    expect_error(['bench', 'efficiency', '--arch', 'EDSRR', '--runs', '0'], workdir, 'EDSRR', 'EDSR')


# ---- data: LMDB, image sizes, scale ----


def test_lmdb_without_meta_info_or_with_missing_keys(workdir, demo_root):
    lmdb = workdir / 'lr.lmdb'
    shutil.copytree(demo_root / 'train' / 'LR_bicubic_X4.lmdb', lmdb)
    opt = tiny_train()
    opt['datasets']['train']['dataroot_lq'] = str(lmdb)
    (lmdb / 'meta_info.txt').rename(workdir / 'meta.txt')
    expect_error(train(workdir, opt), workdir, 'datasets.train.dataroot_lq', 'no meta_info.txt', str(lmdb))
    lines = (workdir / 'meta.txt').read_text().splitlines()
    (lmdb / 'meta_info.txt').write_text('\n'.join(lines + ['ghost_s001.png (24,24,3) 1']) + '\n')
    expect_error(train(workdir, opt), workdir, 'not stored', 'ghost_s001')
    (lmdb / 'meta_info.txt').write_text('\n'.join(lines[1:]) + '\n')  # LQ lacks a key the GT LMDB has
    expect_error(train(workdir, opt), workdir, 'different keys', lines[0].split('.')[0])
    shutil.copytree(demo_root / 'train' / 'LR_bicubic_X4.lmdb', workdir / 'nometa.lmdb')
    (workdir / 'nometa.lmdb' / 'meta_info.txt').unlink()
    expect_error(['make-enhanced-hr', '--arch', 'EDSR', '--arch-args', 'num_in_ch=3', 'num_out_ch=3', 'num_block=2',
                  '--weights', _edsr_ckpt(workdir / 't.pth', 64), '--lq', workdir / 'nometa.lmdb', '-o',
                  workdir / 'enh'], workdir, 'nometa.lmdb', 'meta_info.txt')
    assert not (workdir / 'enh').exists()


def test_image_smaller_than_patch_or_network_minimum(workdir):
    gt, lq = paired_folders(workdir / 'small', {'ok': (16, 16), 'tiny': (10, 10)})
    opt = tiny_train()
    opt['datasets']['train'].update(dataroot_gt=gt, dataroot_lq=lq, io_backend={'type': 'disk'}, gt_size=48)
    expect_error(train(workdir, opt), workdir, 'tiny.png', '10x10', 'smaller than the LR patch 12x12', 'gt_size')
    # ESA networks need LR >= 15: a 48 px HR patch at x4 is 12 px
    opt = tiny_train()
    opt['network_g'] = {'type': 'DIPNet', 'num_feat': 8, 'num_mid': 8, 'num_block': 1, 'esa_channels': 4,
                        'upscale': 4}
    expect_error(train(workdir, opt), workdir, 'gt_size 48', '12x12', 'DIPNet needs >= 15x15')
    test_opt = {'name': 'esa_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
                'datasets': {'test_1': {'name': 's', 'type': 'PairedImageDataset', 'dataroot_gt': gt,
                                        'dataroot_lq': lq, 'io_backend': {'type': 'disk'}}},
                'network_g': dict(opt['network_g']), 'path': {'pretrain_network_g': None}, 'val': {'save_img': False}}
    yml = write_options(workdir / 'esa_test.yml', test_opt)
    expect_error(['basicsr', 'test', '-opt', yml], workdir, 'datasets.test_1', 'tiny.png', '10x10', 'DIPNet')


def test_scale_mismatch_between_data_and_network(workdir, demo_root):
    opt = tiny_train()
    opt['datasets']['train']['dataroot_lq'] = str(demo_root / 'train' / 'LR_bicubic_X2.lmdb')
    expect_error(train(workdir, opt), workdir, 'scale mismatch', 'ratio x2', 'scale is 4')
    opt = tiny_train()
    opt['network_g']['upscale'] = 2
    expect_error(train(workdir, opt), workdir, 'scale mismatch', 'network_g.upscale is 2', 'scale is 4')


@pytest.mark.parametrize('workers', [0, 2])
def test_corrupt_image_found_at_point_of_use_names_the_file(workdir, workers):
    """A truncated PNG has a valid header (preflight passes); loading it fails with that file named (not its GT
    partner), in the main process or a DataLoader worker; the run folder with BasicSR's log is kept."""
    gt, lq = paired_folders(workdir / 'data', {f'im{i}': (16, 16) for i in range(3)})
    data = (Path(lq) / 'im1.png').read_bytes()
    (Path(lq) / 'im1.png').write_bytes(data[:len(data) // 2])
    opt = tiny_train()
    opt['datasets']['train'].update(dataroot_gt=gt, dataroot_lq=lq, io_backend={'type': 'disk'}, use_hflip=False,
                                    use_rot=False, batch_size_per_gpu=3, num_worker_per_gpu=workers)
    line = expect_error(train(workdir, opt), workdir, 'datasets.train', f'cannot load {lq}/im1.png',
                        'truncated image', 'AttributeError', kept='experiments/bad', fresh_process=workers > 0)
    assert 'HR/im1.png' not in line


# ---- NaN / Inf loss ----


@LOSS_REGISTRY.register()
class NaNAfterLoss(nn.Module):
    """L1 loss that turns NaN from its ``at``-th call on (a diverging run, reproducibly)."""

    def __init__(self, at: int = 3, loss_weight: float = 1.0):
        super().__init__()
        self.at, self.calls, self.loss_weight = at, 0, loss_weight

    def forward(self, pred, target):
        self.calls += 1
        loss = (pred - target).abs().mean() * self.loss_weight
        return loss * float('nan') if self.calls >= self.at else loss


@pytest.mark.parametrize('model_type', ['SRModel', 'PruneSRModel', 'DistillSRModel'])
def test_nan_loss_stops_with_iteration_and_saves_last_good_state(workdir, model_type):
    opt = tiny_train('nan', total_iter=20)
    if model_type == 'DistillSRModel':
        opt = distill_opt(_edsr_ckpt(workdir / 'teacher.pth', num_feat=16), 'nan')
        opt['train']['total_iter'] = 20
    opt['train']['pixel_opt'] = {'type': 'NaNAfterLoss', 'at': 5}
    opt['model_type'] = model_type
    if model_type == 'PruneSRModel':  # plain training (mode proximal needs OBProxSG, tested in test_compress.py)
        opt['prune'] = {'mode': 'finetune'}
    opt['logger']['save_checkpoint_freq'] = 3
    opt['train']['scheduler']['milestones'] = [2]
    BAD_INPUTS['tried'] += 1
    rc, _, err = run_cli_inprocess(train(workdir, opt), workdir)
    assert rc == 2 and 'Traceback' not in err, err[-3000:]
    assert 'error: non-finite loss/gradient at iteration 5' in err and 'iteration 4' in err, err[-2000:]
    exp = workdir / 'experiments' / 'nan'
    states = exp / 'training_states'
    assert sorted(p.name for p in states.glob('*.state')) == ['3.state', '4.state']
    good, periodic = (checkpoint.load_training_state(str(states / f'{i}.state'), 'cpu') for i in (4, 3))
    assert good['iter'] == 4 and good['schedulers'][0]['last_epoch'] == periodic['schedulers'][0]['last_epoch'] + 1
    assert good['optimizers'][0]['param_groups'][0]['lr'] == pytest.approx(5e-4)
    weights = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)['params']
    assert all(torch.isfinite(v).all() for v in weights.values())
    # resume from the last good state with a fixed loss
    rc, _, err = run_cli_inprocess(train(workdir, opt, '--auto_resume', '--force_yml', 'train:pixel_opt:at=1000',
                                         'train:total_iter=6'), workdir)
    assert rc == 0, err[-3000:]
    assert checkpoint.load_training_state(str(states / '6.state'), 'cpu')['iter'] == 6
    BAD_INPUTS['passed'] += 1


@ARCH_REGISTRY.register()
class NaNOnWideInput(nn.Module):
    """x4 conv + pixel shuffle whose output is NaN, in eval mode, for inputs at least ``width`` pixels wide (finite
    weights that overflow on some inputs)."""

    def __init__(self, width: int = 18):
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(3, 48, 3, padding=1)

    def forward(self, x):
        out = nn.functional.pixel_shuffle(self.conv(x), 4)
        return out * float('nan') if not self.training and x.shape[-1] >= self.width else out


def test_validation_output_with_nan_is_named_in_a_warning(workdir):
    """A validation image whose output is NaN (BasicSR scores it as black, silently) gets one warning line naming
    it and the count; training goes on and ends normally."""
    gt, lq = paired_folders(workdir / 'val', {'fine': (12, 16), 'wide': (12, 20), 'also_fine': (10, 12)})
    opt = tiny_train('nanval', total_iter=2)
    opt['network_g'] = {'type': 'NaNOnWideInput', 'width': 18}
    opt['datasets']['val'] = {'name': 'three', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
                              'io_backend': {'type': 'disk'}}
    opt['val'] = {'val_freq': 2, 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': False}}}
    rc, out, err = run_cli_inprocess(train(workdir, opt), workdir)
    assert rc == 0, err[-3000:]
    text = out + err
    # BasicSR validates at val_freq and once more after its loop: one warning each, naming only the bad image
    warnings = [line for line in text.splitlines() if 'the network output has NaN/Inf' in line]
    assert len(warnings) == 2 and all('on 1 of 3 images (wide);' in line for line in warnings), text[-3000:]
    assert warnings[0].startswith('warning: validation at iteration 2 on three:')
    log = next((workdir / 'experiments' / 'nanval').glob('train_*.log')).read_text()
    assert 'NaN/Inf on 1 of 3 images (wide)' in log


def test_nan_loss_with_obproxsg_saves_the_last_good_state(workdir):
    """The pruning stage's optimizer (OBProxSG, PruneSRModel proximal) under the NaN guard: the step of iteration 5
    is refused and iteration 4 is saved with its schedule (lr 1e-3 halved at milestone 2)."""
    opt = tiny_train('nan', total_iter=20)
    opt['train']['pixel_opt'] = {'type': 'NaNAfterLoss', 'at': 5}
    opt['model_type'] = 'PruneSRModel'
    opt['prune'] = {'mode': 'proximal'}
    opt['train']['optim_g'] = {'type': 'OBProxSG', 'lr': 1e-3, 'lambda_': 1e-4, 'epochSize': 2, 'Np': 2}
    opt['logger']['save_checkpoint_freq'] = 3
    opt['train']['scheduler']['milestones'] = [2]
    rc, _, err = run_cli_inprocess(train(workdir, opt), workdir)
    assert rc == 2 and 'error: non-finite loss/gradient at iteration 5' in err, err[-2000:]
    states = workdir / 'experiments' / 'nan' / 'training_states'
    assert sorted(p.name for p in states.glob('*.state')) == ['3.state', '4.state']
    good = checkpoint.load_training_state(str(states / '4.state'), 'cpu')
    assert good['iter'] == 4 and good['schedulers'][0]['last_epoch'] == 3
    assert good['optimizers'][0]['param_groups'][0]['lr'] == pytest.approx(5e-4)


# ---- resume across devices, same schedule and EMA ----


def retag_as_cuda(path: Path) -> None:
    """Rewrite a torch zip checkpoint so its tensors are recorded as ``cuda:0`` storages (as if saved on a GPU).

    The location is a pickled unicode string ``X\\x03\\x00\\x00\\x00cpu``; it becomes ``X\\x06\\x00\\x00\\x00cuda:0``
    (the 4-byte little-endian length fixed). The pickle is written back as the first zip entry's replacement.
    """
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as zout:
        for info, data in items:
            if info.filename.endswith('data.pkl'):
                count = data.count(b'X\x03\x00\x00\x00cpu')
                assert count > 0
                data = data.replace(b'X\x03\x00\x00\x00cpu', b'X\x06\x00\x00\x00cuda:0')
            zout.writestr(info, data)


def test_resume_of_a_gpu_state_on_cpu_continues_schedule_and_ema(workdir):
    """A training state written on a GPU resumes on this CPU-only machine (map_location); the resumed run ends
    with the same LR schedule as an uninterrupted one, and its EMA continues from the saved EMA weights."""
    def opt(name, total):
        o = tiny_train(name, total_iter=total, ema_decay=1.0)  # decay 1: EMA keeps the initial weights exactly
        o['train']['scheduler']['milestones'] = [3, 5]
        o['logger']['save_checkpoint_freq'] = 2
        return o

    assert run_cli_inprocess(train(workdir, opt('whole', 6)), workdir)[0] == 0
    rc, _, err = run_cli_inprocess(train(workdir, opt('parts', 4)), workdir)
    assert rc == 0, err[-2000:]
    states = workdir / 'experiments' / 'parts' / 'training_states'
    retag_as_cuda(states / '4.state')
    if not torch.cuda.is_available():  # the rewritten state really is a GPU one: plain torch.load fails here
        with pytest.raises(RuntimeError, match='CUDA'):
            torch.load(states / '4.state', weights_only=True)
    rc, _, err = run_cli_inprocess(train(workdir, opt('parts', 6), '--auto_resume'), workdir)
    assert rc == 0, err[-3000:]
    log = '\n'.join(p.read_text() for p in (workdir / 'experiments' / 'parts').glob('train_*.log'))
    assert 'Resuming training from epoch: 0, iter: 4' in log
    whole_states = workdir / 'experiments' / 'whole' / 'training_states'
    whole = checkpoint.load_training_state(str(whole_states / '6.state'), 'cpu')
    parts = checkpoint.load_training_state(str(states / '6.state'), 'cpu')
    for key in ('last_epoch', 'base_lrs', '_last_lr', 'milestones'):
        assert parts['schedulers'][0][key] == whole['schedulers'][0][key], key
    assert parts['optimizers'][0]['param_groups'][0]['lr'] == pytest.approx(2.5e-4)
    ema = {name: torch.load(workdir / 'experiments' / name / 'models' / 'net_g_6.pth', weights_only=True)['params_ema']
           for name in ('whole', 'parts')}
    assert all(torch.equal(ema['whole'][k], ema['parts'][k]) for k in ema['whole'])
