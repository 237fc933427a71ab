"""Issue 27 (2): a run interrupted at random iterations and resumed equals the uninterrupted run bit for bit, with
random crops, flips and rotations on 5 images, validation after each checkpoint, and 0 or 2 DataLoader workers
(and 2 DDP ranks with 0 workers).

Each case trains 40 iterations (batch 2, 7 per epoch, so interruptions fall inside epochs): SIGTERM at a random
iteration (ddsr saves that iteration's state, exit 75), ``--auto_resume``, SIGKILL at a random iteration after the
checkpoint at 20 (resumed from 20), ``--auto_resume`` to the end; weights (params and EMA), optimizer and scheduler
states equal the uninterrupted run's exactly. Without the ``.rng`` files (BasicSR's resume: the epoch restarts) the
same schedule differs, so the comparison can see a wrong resume.
"""
import random
import signal

import cv2
import numpy as np
import pytest

from ddsr.preempt import EXIT_PREEMPTED
from ddsr.resume import SUFFIX
from tests.conftest import write_options
from tests.test_preempt import _equal, _finish, _states, _train, _wait_for_iter

TOTAL = 40
CHECKPOINT = 20


def _data(root) -> tuple[str, str]:
    rng = np.random.default_rng(1)
    for i in range(5):
        hr = cv2.GaussianBlur(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8), (5, 5), 1.5)
        for folder, img in (('HR', hr), ('LR', cv2.resize(hr, (10, 12), interpolation=cv2.INTER_AREA))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / f'{i}.png'), img)
    return str(root / 'HR'), str(root / 'LR')


def _opt(root, name: str, workers: int) -> dict:
    gt, lq = _data(root / 'data')
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 10,
        'datasets': {
            'train': {'name': 'five', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
                      'io_backend': {'type': 'disk'}, 'gt_size': 16, 'use_hflip': True, 'use_rot': True,
                      'num_worker_per_gpu': workers, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 3,
                      'prefetch_mode': None},
            'val': {'name': 'val', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
                    'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 2e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [15, 30], 'gamma': 0.5},
                  'total_iter': TOTAL, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': CHECKPOINT, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': CHECKPOINT, 'use_tb_logger': False},
    }


def _final(exp) -> tuple[dict, dict]:
    import torch

    from ddsr import checkpoint
    state = checkpoint.load_training_state(str(exp / 'training_states' / f'{TOTAL}.state'), 'cpu')
    net = torch.load(exp / 'models' / f'net_g_{TOTAL}.pth', map_location='cpu', weights_only=True)
    return state, net


def _interrupted(root, workers: int, seed: int, drop_rng: bool = False):
    """SIGTERM at a random iteration, resume, SIGKILL after the checkpoint at 20, resume to the end."""
    rng = random.Random(seed)
    yml = write_options(root / 'run.yml', _opt(root, 'run', workers))
    exp = root / 'experiments' / 'run'
    proc = _train(yml, root)
    _wait_for_iter(proc, exp, rng.randint(3, CHECKPOINT - 4))
    proc.send_signal(signal.SIGTERM)
    err = _finish(proc)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    stopped = _states(exp)
    assert len(stopped) == 1, stopped
    proc = _train(yml, root, '--auto_resume')
    _wait_for_iter(proc, exp, rng.randint(CHECKPOINT + 2, TOTAL - 5))
    proc.send_signal(signal.SIGKILL)
    _finish(proc)
    assert proc.returncode == -signal.SIGKILL and CHECKPOINT in _states(exp)
    assert (exp / 'training_states' / f'{CHECKPOINT}.state{SUFFIX}').is_file()
    if drop_rng:
        for path in (exp / 'training_states').glob(f'*{SUFFIX}'):
            path.unlink()
    proc = _train(yml, root, '--auto_resume')
    err = _finish(proc)
    assert proc.returncode == 0, err[-3000:]
    return _final(exp), stopped[0]


@pytest.mark.parametrize('workers', [0, 2])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, workers):
    ref_root, root = tmp_path / 'ref', tmp_path / 'run'
    ref_root.mkdir()
    root.mkdir()
    ref = _train(write_options(ref_root / 'ref.yml', _opt(ref_root, 'ref', workers)), ref_root)
    (state, net), stopped = _interrupted(root, workers, seed=27 + workers)
    assert ref.wait(timeout=600) == 0, _finish(ref)[-3000:]
    ref_state, ref_net = _final(ref_root / 'experiments' / 'ref')
    _equal(ref_net, net, 'net_g')  # params and params_ema
    _equal(ref_state['optimizers'], state['optimizers'], 'optimizers')  # Adam step, moments, lr
    _equal(ref_state['schedulers'], state['schedulers'], 'schedulers')
    assert state['iter'] == ref_state['iter'] == TOTAL
    print(f'\n{workers} workers: SIGTERM -> state {stopped}, SIGKILL after {CHECKPOINT}: equal bit for bit')


def test_without_the_rng_files_the_resume_differs(tmp_path):
    """BasicSR's own resume (no .rng files) on the same schedule: the weights differ, so the test above can fail."""
    ref_root, root = tmp_path / 'ref', tmp_path / 'run'
    ref_root.mkdir()
    root.mkdir()
    ref = _train(write_options(ref_root / 'ref.yml', _opt(ref_root, 'ref', 0)), ref_root)
    (state, net), _ = _interrupted(root, 0, seed=27, drop_rng=True)
    assert ref.wait(timeout=600) == 0, _finish(ref)[-3000:]
    _, ref_net = _final(ref_root / 'experiments' / 'ref')
    with pytest.raises(AssertionError):
        _equal(ref_net, net, 'net_g')


def test_an_uninterrupted_run_equals_plain_basicsr(tmp_path):
    """What ddsr adds for exact resume changes nothing in a run that is not resumed: ``basicsr train`` and plain
    ``python -m basicsr.train`` (ddsr not importable) end with identical weights and optimizer states, 0 and 2
    workers."""
    import subprocess
    import sys
    from pathlib import Path

    import basicsr

    from tests.test_dropin_hook import _plain_env
    pkgs = tmp_path / 'pkgs'  # python -m basicsr.train writes under <basicsr>/..: a linked copy keeps it in tmp
    pkgs.mkdir()
    (pkgs / 'basicsr').symlink_to(Path(basicsr.__file__).parent, target_is_directory=True)
    runs = {}
    for workers in (0, 2):
        root = tmp_path / f'w{workers}'
        root.mkdir()
        ddsr_yml = write_options(root / 'ddsr.yml', _opt(root, f'ddsr{workers}', workers))
        plain_yml = write_options(root / 'plain.yml', _opt(root, f'plain{workers}', workers))
        runs[workers] = (_train(ddsr_yml, root), root,
                         subprocess.Popen([sys.executable, '-m', 'basicsr.train', '-opt', str(plain_yml)], cwd=root,
                                          env=_plain_env(tmp_path, pkgs), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    for workers, (ours, root, plain) in runs.items():
        assert ours.wait(timeout=600) == 0, _finish(ours)[-3000:]
        err = plain.communicate(timeout=600)[1]
        assert plain.returncode == 0, err[-3000:]
        ref_state, ref_net = _final(pkgs / 'experiments' / f'plain{workers}')
        state, net = _final(root / 'experiments' / f'ddsr{workers}')
        _equal(ref_net, net, f'net_g ({workers} workers)')
        _equal(ref_state['optimizers'], state['optimizers'], f'optimizers ({workers} workers)')


def test_two_ranks_interrupted_and_resumed_equal_the_uninterrupted_run(tmp_path):
    """2 DDP ranks (gloo, CPU), 0 workers: SIGTERM to rank 1 at a random iteration (both stop there), resume,
    SIGKILL to both after the checkpoint at 20, resume to the end: equal to the uninterrupted 2-rank run."""
    from tests.test_preempt import _ranks
    rng = random.Random(5)
    ref_root, root = tmp_path / 'ref', tmp_path / 'run'
    ref_root.mkdir()
    root.mkdir()
    refs = _ranks(write_options(ref_root / 'ref.yml', _opt(ref_root, 'ref', 0)), ref_root)
    yml = write_options(root / 'run.yml', _opt(root, 'run', 0))
    exp = root / 'experiments' / 'run'
    ranks = _ranks(yml, root)
    _wait_for_iter(ranks[0], exp, rng.randint(3, CHECKPOINT - 4))
    ranks[1].send_signal(signal.SIGTERM)
    outs = [_finish(p) for p in ranks]
    assert [p.returncode for p in ranks] == [EXIT_PREEMPTED] * 2, [err[-2000:] for err in outs]
    stopped = _states(exp)
    assert len(stopped) == 1 and (exp / 'training_states' / f'{stopped[0]}.state{SUFFIX}').is_file()
    ranks = _ranks(yml, root, '--auto_resume')
    _wait_for_iter(ranks[0], exp, rng.randint(CHECKPOINT + 2, TOTAL - 5))
    for proc in ranks:
        proc.send_signal(signal.SIGKILL)
    for proc in ranks:
        _finish(proc)
    assert CHECKPOINT in _states(exp)
    ranks = _ranks(yml, root, '--auto_resume')
    outs = [_finish(p, timeout=600) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], [err[-2000:] for err in outs]
    assert [p.wait(timeout=600) for p in refs] == [0, 0], [_finish(p)[-2000:] for p in refs]
    ref_state, ref_net = _final(ref_root / 'experiments' / 'ref')
    state, net = _final(exp)
    _equal(ref_net, net, 'net_g')
    _equal(ref_state['optimizers'], state['optimizers'], 'optimizers')
    _equal(ref_state['schedulers'], state['schedulers'], 'schedulers')
    print(f'\n2 ranks: SIGTERM -> state {stopped[0]}, SIGKILL after {CHECKPOINT}: equal bit for bit')
