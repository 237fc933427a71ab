"""Issue 9 (part): atomic checkpoints, SIGKILL during training then resume, no silent archiving."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from ddsr import checkpoint
from tests.conftest import REPO_ROOT, load_yaml, run_cli, run_cli_inprocess, write_options

KILLS = 6  # SIGKILLs of the training process, each at a random moment while it writes checkpoints every iteration
ONE_THREAD = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}  # tiny nets: ~100x faster on a shared 2-core box


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / 'net.pth'
    checkpoint.atomic_save({'params': {'w': torch.ones(3)}}, str(path))
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b'partial bytes')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError):
        checkpoint.atomic_save({'params': {'w': torch.zeros(3)}}, str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['net.pth']


def test_basicsr_model_saves_go_through_atomic_save():
    import basicsr.models.base_model as base_model
    assert base_model.torch.save is checkpoint.atomic_save
    assert base_model.torch.load is torch.load


def _opt(name: str, total_iter: int) -> dict:
    opt = load_yaml(REPO_ROOT / 'options' / 'demo' / 'train_MSRResNet_demo_x4.yml')
    opt['name'] = name
    opt['network_g'].update(num_feat=8, num_block=1)
    opt['datasets']['train'].update(gt_size=48, batch_size_per_gpu=2)
    opt['train']['total_iter'] = total_iter
    opt['train']['scheduler']['milestones'] = [total_iter // 2]
    opt['logger'].update(print_freq=50, save_checkpoint_freq=1)
    opt.pop('val')
    return opt


def test_sigkill_during_checkpoint_writing_then_auto_resume(workdir):
    """Kill the trainer (which saves every iteration) at random moments, repeatedly; each restart resumes."""
    yml = write_options(workdir / 'kill.yml', _opt('killed', 100000))  # never finishes before it is killed
    cmd = [sys.executable, '-m', 'ddsr.cli', 'basicsr', 'train', '-opt', str(yml), '--auto_resume']
    rng = random.Random(1234)
    states_dir = workdir / 'experiments' / 'killed' / 'training_states'
    kills = 0

    def newest():
        return max((int(p.stem) for p in states_dir.glob('*.state')), default=0) if states_dir.is_dir() else 0

    env = dict(os.environ, PYTHONUNBUFFERED='1', **ONE_THREAD)
    for _ in range(KILLS):
        start = newest()
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and newest() <= start:  # until it writes states
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills == KILLS
    finish = newest() + 3
    done = run_cli(['basicsr', 'train', '-opt', yml, '--auto_resume', '--force_yml', f'train:total_iter={finish}'],
                   workdir, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    exp = workdir / 'experiments' / 'killed'
    logs = '\n'.join(p.read_text() for p in exp.glob('train_*.log'))
    assert logs.count('Resuming training from epoch') >= 4
    assert (exp / 'models' / 'net_g_latest.pth').is_file() and (states_dir / f'{finish}.state').is_file()
    for state in states_dir.glob('*.state'):  # every state on disk is complete
        assert checkpoint.load_training_state(str(state), 'cpu')['iter'] == int(state.stem)
    assert not list((workdir / 'experiments').glob('killed_archived_*'))
    print(f'\nkill points: {kills} tried, {logs.count("Resuming training from epoch")} resumed '
          f'({kills} passed); {len(list(states_dir.glob("*.state")))} complete states on disk')


def test_existing_run_is_not_archived_without_a_flag(workdir, one_thread):
    yml = write_options(workdir / 'again.yml', _opt('again', 2))
    assert run_cli_inprocess(['basicsr', 'train', '-opt', yml], workdir)[0] == 0
    code, _, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml], workdir)
    assert code == 2 and '--auto_resume' in err and 'Traceback' not in err
    assert not list((workdir / 'experiments').glob('again_archived_*'))
    code, _, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml, '--archive'], workdir)
    assert code == 0, err[-2000:]
    assert len(list((workdir / 'experiments').glob('again_archived_*'))) == 1
