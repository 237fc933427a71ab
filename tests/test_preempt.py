"""Issue 14 (5): SIGTERM / SIGUSR1 stop ``basicsr train`` after the current iteration with a saved state (exit 75),
``--auto_resume`` continues exactly; one run per run folder; the same with 2 ranks (gloo, CPU).

The single-process test trains on one image without augmentation, so every iteration sees the same batch whatever
the sampler does: a run stopped at random iterations (SIGTERM, SIGKILL, SIGUSR1) and resumed each time must end
bit for bit where an uninterrupted run ends (weights, EMA, Adam moments, LR schedule).
"""
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ddsr import checkpoint
from ddsr.preempt import EXIT_PREEMPTED
from tests.conftest import REPO_ROOT, run_cli_inprocess, write_options

TOTAL = 400  # iterations; the LR halves at 100 and 250; one epoch = 7 iterations (dataset_enlarge_ratio)
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1',
           PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')])))  # this checkout
ITER_RE = re.compile(r'\biter:\s*([\d,]+)')


def _data(root: Path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    hr = cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (5, 5), 1.5)
    for folder, img in (('HR', hr), ('LR', cv2.resize(hr, (8, 8), interpolation=cv2.INTER_AREA))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / folder / 'only.png'), img)
    return str(root / 'HR'), str(root / 'LR')


def _opt(root: Path, name: str) -> dict:
    gt, lq = _data(root / 'data')
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {
            'name': 'one', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
            'io_backend': {'type': 'disk'}, 'gt_size': 32, 'use_hflip': False, 'use_rot': False,
            'num_worker_per_gpu': 0, 'batch_size_per_gpu': 1, 'dataset_enlarge_ratio': 7, 'prefetch_mode': None}},
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100, 250], 'gamma': 0.5},
                  'total_iter': TOTAL, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': TOTAL, 'use_tb_logger': False},
    }


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftover_runs():
    yield
    while STARTED:  # a failed test must not leave a trainer running
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _popen(cmd: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    """Start ``cmd`` with stderr to a file (a full pipe would block the run); ``proc.stderr_path`` names it."""
    path = Path(cwd) / f'stderr_{time.monotonic_ns()}.txt'
    with open(path, 'w') as err:
        # SIGINT back to its default in the child: a test session started in the background (``cmd &``, nohup)
        # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so Ctrl-C would be lost
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stderr_path = path
    STARTED.append(proc)
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``proc``; its stderr."""
    proc.wait(timeout=timeout)
    return proc.stderr_path.read_text()


def _train(yml: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    return _popen([sys.executable, '-m', 'ddsr.cli', 'basicsr', 'train', '-opt', str(yml), *extra], cwd, ENV)


def _logged_iter(exp: Path) -> int:
    """Highest iteration the newest log of ``exp`` reports."""
    logs = sorted(exp.glob('train_*.log'), key=lambda p: p.stat().st_mtime)
    if not logs:
        return 0
    found = ITER_RE.findall(logs[-1].read_text())
    return int(found[-1].replace(',', '')) if found else 0


def _wait_for_iter(proc: subprocess.Popen, exp: Path, target: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        seen = _logged_iter(exp)
        if seen >= target:
            return seen
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f'run ended or timed out before iteration {target}: {_finish(proc)[-2000:]}')


def _states(exp: Path) -> list[int]:
    return sorted(int(p.stem) for p in (exp / 'training_states').glob('*.state'))


def _final(exp: Path) -> tuple[dict, dict]:
    state = checkpoint.load_training_state(str(exp / 'training_states' / f'{TOTAL}.state'), 'cpu')
    net = torch.load(exp / 'models' / f'net_g_{TOTAL}.pth', map_location='cpu', weights_only=True)
    return state, net


def _equal(a, b, where: str = '') -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _equal(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal(x, y, f'{where}[{i}]')
    else:
        assert a == b, (where, a, b)


def test_sigterm_sigusr1_at_random_iterations_then_auto_resume_is_exact(tmp_path):
    rng = random.Random(14)
    ref_root, root = tmp_path / 'ref', tmp_path / 'run'
    ref_root.mkdir()
    root.mkdir()
    ref = _train(write_options(ref_root / 'ref.yml', _opt(ref_root, 'ref')), ref_root)
    yml = write_options(root / 'pre.yml', _opt(root, 'pre'))
    exp = root / 'experiments' / 'pre'
    stops = []
    for sig, target in ((signal.SIGTERM, rng.randint(5, 60)), (signal.SIGKILL, rng.randint(100, 160)),
                        (signal.SIGUSR1, rng.randint(200, 280))):
        proc = _train(yml, root, '--auto_resume')
        _wait_for_iter(proc, exp, target)
        before = _states(exp)
        proc.send_signal(sig)
        err = _finish(proc)
        if sig == signal.SIGKILL:  # no state written; the kernel dropped the run lock with the process
            assert proc.returncode == -signal.SIGKILL and _states(exp) == before
            continue
        assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
        new = [n for n in _states(exp) if n not in before]
        assert len(new) == 1, (before, _states(exp))
        n = new[0]
        stops.append((sig.name, n))
        saved = checkpoint.load_training_state(str(exp / 'training_states' / f'{n}.state'), 'cpu')
        assert n < TOTAL and saved['iter'] == n
        assert saved['optimizers'][0]['param_groups'][0]['lr'] == 1e-3 * 0.5 ** sum(n >= m for m in (100, 250))
        assert (exp / 'models' / f'net_g_{n}.pth').is_file()
        assert f'{sig.name} received: training stops after the current iteration' in err
        state_path = exp / 'training_states' / f'{n}.state'
        assert f'preempted ({sig.name}) after iteration {n}: training state saved to {state_path}' in err, err
        assert 'run folder kept: experiments/pre' in err
        log = sorted(exp.glob('train_*.log'), key=lambda p: p.stat().st_mtime)[-1].read_text()
        assert f'preempted ({sig.name}) after iteration {n}' in log and _logged_iter(exp) == n
    assert [s for s, _ in stops] == ['SIGTERM', 'SIGUSR1'] and stops[0][1] < stops[1][1] < TOTAL
    last = _train(yml, root, '--auto_resume')
    err = _finish(last)
    assert last.returncode == 0, err[-3000:]
    assert ref.wait(timeout=300) == 0, _finish(ref)[-3000:]
    logs = ''.join(p.read_text() for p in exp.glob('train_*.log'))
    assert logs.count('Resuming training from epoch') == 3 and f'iter: {stops[1][1]}.' in logs
    assert not list(root.glob('experiments/.*.lock')) and not list(root.glob('experiments/pre_archived_*'))
    ref_state, ref_net = _final(ref_root / 'experiments' / 'ref')
    state, net = _final(exp)
    _equal(ref_net, net, 'net_g')  # params and params_ema (EMA)
    _equal(ref_state['optimizers'], state['optimizers'], 'optimizers')  # Adam step, exp_avg, exp_avg_sq, lr
    _equal(ref_state['schedulers'], state['schedulers'], 'schedulers')
    assert state['iter'] == ref_state['iter'] == TOTAL
    assert state['optimizers'][0]['param_groups'][0]['lr'] == 1e-3 * 0.25
    print(f'\nstops: {stops} (+ SIGKILL); resumed run equals the uninterrupted one bit for bit')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _ranks(yml: Path, cwd: Path, *extra: str) -> list[subprocess.Popen]:
    """Two ranks of ``basicsr train --launcher pytorch`` started as torchrun would (env rendezvous, gloo)."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = dict(ENV, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE='2')
        procs.append(_popen([sys.executable, '-m', 'ddsr.cli', 'basicsr', 'train', '-opt', str(yml), '--launcher',
                             'pytorch', *extra], cwd, env))
    return procs


def test_two_rank_sigterm_to_one_rank_stops_both_at_one_iteration(tmp_path):
    opt = _opt(tmp_path, 'ddp')
    yml = write_options(tmp_path / 'ddp.yml', opt)
    exp = tmp_path / 'experiments' / 'ddp'
    ranks = _ranks(yml, tmp_path)
    _wait_for_iter(ranks[0], exp, random.Random(7).randint(5, 30))
    ranks[1].send_signal(signal.SIGTERM)  # only rank 1 is told: the all-reduced flag stops rank 0 too
    outs = [_finish(p) for p in ranks]
    assert [p.returncode for p in ranks] == [EXIT_PREEMPTED] * 2, [err[-2000:] for err in outs]
    stopped = [int(re.search(r'after iteration (\d+)', err).group(1)) for err in outs]
    assert stopped[0] == stopped[1], stopped
    n = stopped[0]
    assert _states(exp) == [n]
    assert f'training state saved to {exp / "training_states" / f"{n}.state"}' in outs[0]
    assert '(rank 1; rank 0 saved)' in outs[1] and 'SIGTERM received' in outs[1]
    assert checkpoint.load_training_state(str(exp / 'training_states' / f'{n}.state'), 'cpu')['iter'] == n
    assert sorted(p.name for p in (exp / 'models').iterdir()) == [f'net_g_{n}.pth']  # with params_ema
    # requeued: both ranks resume from n and finish a few iterations later
    ranks = _ranks(yml, tmp_path, '--auto_resume', '--force_yml', f'train:total_iter={n + 3}')
    outs = [_finish(p) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], [err[-2000:] for err in outs]
    log = sorted(exp.glob('train_*.log'), key=lambda p: p.stat().st_mtime)[-1].read_text()
    assert 'Resuming training from epoch' in log and f'iter: {n}.' in log and 'World size (gpu number): 2' in log
    assert _logged_iter(exp) == n + 3 and (exp / 'models' / 'net_g_latest.pth').is_file()


def test_a_second_run_on_a_run_folder_in_use_is_refused(tmp_path):
    """A requeued job racing a manual start: the second stops at once (exit 2) and the first is undisturbed."""
    opt = _opt(tmp_path, 'busy')
    opt['train']['total_iter'] = 100000
    opt['logger']['save_checkpoint_freq'] = 100000  # no states: a start without --auto_resume meets the lock too
    yml = write_options(tmp_path / 'busy.yml', opt)
    exp = tmp_path / 'experiments' / 'busy'
    first = _train(yml, tmp_path)
    _wait_for_iter(first, exp, 3)
    for extra in (['--auto_resume'], []):
        second = subprocess.run([sys.executable, '-m', 'ddsr.cli', 'basicsr', 'train', '-opt', str(yml), *extra],
                                cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert lines == [f'error: {exp} is in use by another run (pid {first.pid} on {socket.gethostname()} since '
                         f'{lines[0].split(" since ")[-1]}'], second.stderr
    assert first.poll() is None and not list(tmp_path.glob('experiments/busy_archived_*'))
    first.send_signal(signal.SIGTERM)
    err = _finish(first)
    assert first.returncode == EXIT_PREEMPTED, err[-2000:]
    assert len(_states(exp)) == 1 and not (tmp_path / 'experiments' / '.busy.lock').exists()


def test_ctrl_c_saves_the_state_exits_130_and_auto_resume_continues_from_it(tmp_path):
    """Issue 26 (2): Ctrl-C (SIGINT) during training behaves like SIGTERM: the current iteration ends, its state and
    checkpoint are saved, exit 130; ``--auto_resume`` continues from that iteration."""
    opt = _opt(tmp_path, 'ctrlc')
    opt['train']['total_iter'] = 100000
    opt['logger'].update(save_checkpoint_freq=5000, use_tb_logger=True)  # BasicSR's default checkpoint period
    yml = write_options(tmp_path / 'ctrlc.yml', opt)
    exp = tmp_path / 'experiments' / 'ctrlc'
    proc = _train(yml, tmp_path)
    _wait_for_iter(proc, exp, random.Random(26).randint(3, 20))
    proc.send_signal(signal.SIGINT)
    err = _finish(proc)
    assert proc.returncode == 130, err[-2000:]
    assert _states(exp) and len(_states(exp)) == 1, err[-2000:]
    n = _states(exp)[0]
    state_path = exp / 'training_states' / f'{n}.state'
    assert 'SIGINT received: training stops after the current iteration and saves its state; Ctrl-C again aborts ' \
           'at once without saving' in err
    assert f'interrupted (SIGINT) after iteration {n}: training state saved to {state_path} (+ models/net_*_{n}.pth);' \
           ' continue with --auto_resume' in err, err[-2000:]
    assert err.rstrip().splitlines()[-1] == 'run folder kept: experiments/ctrlc, tb_logger/ctrlc'
    assert checkpoint.load_training_state(str(state_path), 'cpu')['iter'] == n
    assert (exp / 'models' / f'net_g_{n}.pth').is_file() and _logged_iter(exp) == n
    resumed = _train(yml, tmp_path, '--auto_resume', '--force_yml', f'train:total_iter={n + 3}')
    err = _finish(resumed)
    assert resumed.returncode == 0, err[-2000:]
    log = sorted(exp.glob('train_*.log'), key=lambda p: p.stat().st_mtime)[-1].read_text()
    assert 'Resuming training from epoch' in log and f'iter: {n}.' in log and _logged_iter(exp) == n + 3


def test_a_second_ctrl_c_aborts_at_once_and_keeps_the_run_folder(tmp_path):
    """The second Ctrl-C does not wait for the iteration: exit 130 at once, nothing saved, the run folder kept."""
    opt = _opt(tmp_path, 'twice')
    opt['network_g'].update(num_feat=64, num_block=16)  # iterations of about a second: time for a second Ctrl-C
    opt['train']['total_iter'] = 100000
    opt['logger'].update(save_checkpoint_freq=5000, use_tb_logger=True)
    yml = write_options(tmp_path / 'twice.yml', opt)
    exp = tmp_path / 'experiments' / 'twice'
    proc = _train(yml, tmp_path)
    _wait_for_iter(proc, exp, 2)
    time.sleep(0.1)  # into iteration 3 (about a second): at an iteration boundary the stop check would save at once
    proc.send_signal(signal.SIGINT)
    deadline = time.time() + 60
    while 'SIGINT received' not in proc.stderr_path.read_text() and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    err = _finish(proc)
    assert proc.returncode == 130, err[-2000:]
    assert err.rstrip().splitlines()[-2:] == ['interrupted', 'run folder kept: experiments/twice, tb_logger/twice']
    assert len(list(exp.glob('train_twice_*.log'))) == 1 and (exp / 'twice.yml').read_text().count('name: twice') == 1
    assert list((tmp_path / 'tb_logger' / 'twice').glob('events.out.tfevents.*'))
    assert not list(exp.rglob('*.state')) and not list(exp.rglob('*.pth'))


def test_auto_resume_with_nothing_to_resume_says_so(tmp_path, one_thread):
    """``--auto_resume`` without a state: one console line says that training starts at 0 and what happened to the
    run folder (BasicSR renames an existing one)."""
    opt = _opt(tmp_path, 'fresh')
    opt['train']['total_iter'] = 2
    opt['logger'].update(save_checkpoint_freq=2, console='progress')
    yml = write_options(tmp_path / 'fresh.yml', opt)
    code, out, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml, '--auto_resume'], tmp_path)
    assert code == 0, err[-2000:]
    said = [line for line in (out + err).splitlines() if '--auto_resume' in line]
    assert said == ['warning: --auto_resume: nothing to resume in experiments/fresh/training_states; training starts '
                    'at iteration 0; no earlier run folder existed'], out + err
    # a folder left by a run stopped before any save (its log only): renamed, and said so
    for path in (tmp_path / 'experiments' / 'fresh').rglob('*'):
        if path.suffix in ('.state', '.pth'):
            path.unlink()
    code, out, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml, '--auto_resume'], tmp_path)
    assert code == 0, err[-2000:]
    archived = [p.name for p in (tmp_path / 'experiments').glob('fresh_archived_*')]
    assert len(archived) == 1
    said = [line for line in (out + err).splitlines() if '--auto_resume' in line]
    assert said == ['warning: --auto_resume: nothing to resume in experiments/fresh/training_states; training starts '
                    f'at iteration 0; the existing run folder (no training state in it) was renamed to '
                    f'experiments/{archived[0]}'], out + err


def test_second_sigint_raises_keyboard_interrupt_in_the_main_process_only():
    """The handler itself: the first SIGINT requests a stop, the second raises; a forked worker ignores both."""
    from ddsr import preempt
    from ddsr.run_state import RunState
    hook = preempt.Preemption()
    before = signal.getsignal(signal.SIGINT)
    hook.enter(RunState(phase='train'))
    try:
        assert preempt._REQUEST['signal'] is None
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert preempt._REQUEST['signal'] == 'SIGINT'
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        preempt._OWNER['pid'] = -1  # as in a DataLoader worker: not the process that runs the training
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
    finally:
        hook.exit(RunState(phase='train'), False)
    assert signal.getsignal(signal.SIGINT) is before and preempt._REQUEST['signal'] is None


def test_sigterm_to_torchrun_stops_both_workers_at_one_iteration(tmp_path):
    """SLURM signals the launcher: torchrun passes SIGTERM on to its workers, which stop together and save once."""
    yml = write_options(tmp_path / 'trun.yml', _opt(tmp_path, 'trun'))
    exp = tmp_path / 'experiments' / 'trun'
    proc = _popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--nproc_per_node=2',
                   f'--master_port={_free_port()}', '-m', 'ddsr.train', '-opt', str(yml), '--launcher', 'pytorch'],
                  tmp_path, ENV)
    _wait_for_iter(proc, exp, random.Random(11).randint(5, 30))
    proc.send_signal(signal.SIGTERM)
    err = _finish(proc)
    assert proc.returncode != 0  # torchrun reports its workers' non-zero exit (75) as a failure
    printed = '\n'.join(line for line in err.splitlines() if ' INFO: ' not in line)  # the ranks' exit lines
    stopped = [int(n) for n in re.findall(r'preempted \(SIGTERM\) after iteration (\d+)', printed)]
    assert len(stopped) == 2 and stopped[0] == stopped[1], err[-3000:]  # rank 0 and rank 1, one iteration
    n = stopped[0]
    assert _states(exp) == [n] and printed.count('training state saved to') == 1 and '(rank 1; rank 0 saved)' in printed
    assert checkpoint.load_training_state(str(exp / 'training_states' / f'{n}.state'), 'cpu')['iter'] == n


def _lock_holder(path: str, holder_pid: str, seconds: float) -> subprocess.Popen:
    """A process that takes the flock of ``path``, records ``holder_pid`` as the holder (``pid N on HOST``), says
    "locked" and keeps the lock for ``seconds``."""
    code = f'''
import fcntl, os, socket, time
fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"pid {holder_pid} on {{socket.gethostname()}} since 00:00:00".encode())
print("locked", flush=True)
time.sleep({seconds})
'''
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'locked'
    return proc


def test_forked_children_do_not_hold_the_run_lock(tmp_path):
    """A run's forked children (DataLoader workers) close their copy of its lock: when the run is SIGKILLed while a
    forked child lives on, the folder is free at once; a live holder still refuses."""
    from ddsr import runlock
    from ddsr.errors import DDSRError
    folder = str(tmp_path / 'experiments' / 'run')
    path = runlock.lock_path(folder)
    code = f'''
import multiprocessing, time
from ddsr import runlock
with runlock.run_lock({folder!r}):
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    print(child.pid, flush=True)
    time.sleep(60)
'''
    run = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    child = int(run.stdout.readline())
    try:
        with pytest.raises(DDSRError, match='in use by another run'), runlock.run_lock(folder):
            pass  # the run holds it
        run.kill()
        run.wait()
        os.kill(child, 0)  # the forked child is still alive ...
        with runlock.run_lock(folder):  # ... and the folder is free at once
            pass
    finally:
        run.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    live = _lock_holder(path, '{os.getpid()}', 30)  # a live holder: its own pid
    try:
        with pytest.raises(DDSRError, match='in use by another run'), runlock.run_lock(folder):
            pass
    finally:
        live.kill()
        live.wait()
