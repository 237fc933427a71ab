"""The short console of the demo (logger.console: progress): header, plain progress lines, one result line."""
import io
import logging
import re

import basicsr.train
import pytest

from ddsr import console, run_seam
from ddsr.progress import LineProgress, format_duration, progress
from ddsr.run_state import RunState
from tests.conftest import REPO_ROOT, run_cli

DEMO = 'options/demo/train_DDistillSR_demo_x4.yml'


def test_demo_console_is_short_and_ends_with_one_result_line(workdir):
    iters = 4
    res = run_cli(['basicsr', 'train', '-opt', DEMO, '--force_yml', f'train:total_iter={iters}', 'logger:print_freq=2',
                   f'val:val_freq={iters}', f'logger:save_checkpoint_freq={iters}'], workdir,
                  env={'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) < 60, out
    assert '\r' not in out  # not a terminal: plain lines, no carriage returns
    header = [line for line in lines if line.startswith('ddsr: training')]
    assert len(header) == 1 and re.fullmatch(r'ddsr: training demo_DDistillSR_x4: DDistillSR x4, 1,17\d,\d{3} '
                                             r'parameters, 4 iterations \(batch 8\), on cpu', header[0]), header
    iters = [line for line in lines if line.startswith('iter ')]  # every print_freq (2) iterations, or by time
    assert all(re.fullmatch(r'iter [1-4]/4 \((25|50|75|100)%\), [\d.]+ it/s, eta \d+:\d\d, l_pix [\d.e+-]+, '
                            r'lr 1\.0e-03', line) for line in iters), iters
    assert [line.split('/')[0] for line in iters if line.startswith(('iter 2/', 'iter 4/'))] == ['iter 2', 'iter 4']
    assert lines[-1].startswith('result: demo_DDistillSR_x4 after 4 iterations')
    assert sum(line.startswith('result:') for line in lines) == 1
    assert not any('with parameters' in line or 'Version Information' in line for line in lines)  # dumps: log only
    # the log file keeps everything, and the result line reports the run's last validation
    logs = list((workdir / 'experiments' / 'demo_DDistillSR_x4').glob('train_*.log'))
    assert len(logs) == 1
    log = logs[0].read_text()
    assert 'with parameters: 1,17' in log and 'total_iter: 4' in log
    last_psnr = float(re.findall(r'# psnr: ([\d.]+)', log)[-1])
    shown = re.search(r'val demo_val PSNR ([\d.]+) dB, SSIM ([\d.]+) \(bicubic: PSNR ([\d.]+) dB, SSIM ([\d.]+)\)',
                      lines[-1])
    assert shown, lines[-1]
    assert float(shown.group(1)) == pytest.approx(last_psnr, abs=6e-3)
    from ddsr.option_file import load_options
    opt = load_options(str(REPO_ROOT / DEMO))
    for ds in opt['datasets'].values():
        for key in ('dataroot_gt', 'dataroot_lq'):
            ds[key] = str(workdir / ds[key])
    bicubic = console.bicubic_metrics(opt, 'demo_val')
    assert float(shown.group(3)) == pytest.approx(bicubic['psnr'], abs=6e-3)
    assert float(shown.group(4)) == pytest.approx(bicubic['ssim'], abs=6e-4)


def test_logger_hook_only_acts_for_runs_that_ask(tmp_path):
    run_seam.reset_basicsr_logger()
    logger = basicsr.train.get_root_logger(log_file=str(tmp_path / 'a.log'))
    assert any(type(h) is logging.StreamHandler for h in logger.handlers)  # BasicSR's console, unchanged
    run_seam.reset_basicsr_logger()
    opt = {'name': 'x', 'train': {'total_iter': 10}, 'logger': {'print_freq': 5, 'console': 'progress'}}
    stream = io.StringIO()
    original = basicsr.train.get_root_logger
    run = console.ConsoleRun(opt, stream)
    try:
        with run_seam.running(RunState(phase='train', hooks=[run]), ['basicsr train']):
            logger = basicsr.train.get_root_logger(log_file=str(tmp_path / 'b.log'))
            assert not any(type(h) is logging.StreamHandler for h in logger.handlers)
            logger.info('a long dump')
            logger.warning('something\nto see')
            assert stream.getvalue() == 'warning: something to see\n'
            assert 'a long dump' in (tmp_path / 'b.log').read_text()
            assert run.log_file == str(tmp_path / 'b.log')
        last = stream.getvalue().splitlines()[-1]
        assert last == 'result: x: 10 iterations in 0:00; checkpoints in experiments/x/models'
    finally:
        run_seam.reset_basicsr_logger()
    assert basicsr.train.get_root_logger is original  # put back after the run
    hooks = run_seam.default_hooks('train', {'logger': {'print_freq': 5}})  # not asked for: no console hook
    assert not any(isinstance(hook, console.ConsoleRun) for hook in hooks)


def test_plain_progress_lines_and_eta_never_negative():
    stream = io.StringIO()
    bar = progress(3, 'work', unit='img', file=stream, every=0)
    assert isinstance(bar, LineProgress)  # a StringIO is not a terminal
    for _ in range(3):
        bar.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and '\r' not in stream.getvalue()
    assert lines[-1].startswith('work: 3/3 (100%)') and 'eta 0:00' in lines[-1]
    assert format_duration(-5) == '0:00' and format_duration(3725) == '1:02:05'


def test_debug_run_names_the_folder_basicsr_writes(tmp_path, one_thread):
    """``--debug``: BasicSR writes experiments/debug_<name>; the header and the result line name that folder."""
    from tests.conftest import run_cli_inprocess, write_options
    from tests.test_run_seam import tiny_options
    yml = write_options(tmp_path / 'dbg.yml', tiny_options(tmp_path, 'dbg'))
    code, out, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml, '--debug'], tmp_path)
    assert code == 0, err[-2000:]
    assert (tmp_path / 'experiments' / 'debug_dbg' / 'models' / 'net_g_latest.pth').is_file()
    assert not (tmp_path / 'experiments' / 'dbg').exists()
    lines = out.splitlines()
    writes = [line for line in lines if line.strip().startswith('writes ')]
    assert len(writes) == 1 and writes[0].strip().startswith('writes experiments/debug_dbg (models/'), writes
    assert [line for line in lines if line.startswith('ddsr: training')][0].startswith(
        'ddsr: training debug_dbg: MSRResNet x4')
    assert lines[-1].startswith('result: debug_dbg after 3 iterations') and \
        lines[-1].endswith('; checkpoints in experiments/debug_dbg/models'), lines[-1]


def test_progress_lines_come_by_time_or_by_iterations(monkeypatch):
    """Issue 26 (1): a plain line every ``print_freq`` iterations or every LINE_INTERVAL_S seconds, whichever first,
    so slow iterations show progress early; the last iteration always gets one."""
    clock = [0.0]
    monkeypatch.setattr(console.time, 'monotonic', lambda: clock[0])
    opt = {'name': 'x', 'train': {'total_iter': 40}, 'logger': {'print_freq': 25, 'console': 'progress'}}
    stream = io.StringIO()
    run = console.ConsoleRun(opt, stream)
    shown = []
    for it in range(1, 41):
        run.before_iteration(None, None, it)
        clock[0] += 3.0 if it <= 12 else 0.1  # 3 s per iteration, then fast
        before = stream.getvalue().count('\n')
        run.on_iteration(it)
        if stream.getvalue().count('\n') > before:
            shown.append(it)
    # by time: after 10 s (iteration 4: 12 s), then every >= 10 s; by count: 25; and the last
    assert shown == [4, 8, 12, 25, 40], shown
    assert stream.getvalue().splitlines()[0].startswith('iter 4/40 (10%), 0.33 it/s, eta ')


def test_basicsr_prints_go_to_the_log_and_a_resumed_run_reports_its_own_iterations(tmp_path, one_thread):
    """Issue 26 (5): ``Disable distributed.`` and (on resume) ``Set pretrain_network_g to ...`` reach the log file,
    not the short console; the result line of a resumed run names the iterations this run trained."""
    from tests.conftest import run_cli_inprocess, write_options
    from tests.test_run_seam import tiny_options
    opt = tiny_options(tmp_path, 'again', iters=3)
    opt['logger']['save_checkpoint_freq'] = 2
    yml = write_options(tmp_path / 'again.yml', opt)
    code, out, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml], tmp_path)
    assert code == 0, err[-2000:]
    assert 'Disable distributed.' not in out + err
    assert out.splitlines()[-1].startswith('result: again after 3 iterations (')
    code, out, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml, '--auto_resume', '--force_yml',
                                        'train:total_iter=5'], tmp_path)
    assert code == 0, err[-2000:]
    assert 'Disable distributed.' not in out + err and 'Set pretrain_network_g' not in out + err, out + err
    assert re.match(r'result: again after iterations 3-5 \(\d+:\d\d\): val val PSNR', out.splitlines()[-1]), out
    # the resumed run's log (BasicSR names logs by the second: two runs within one second share, and rewrite, one)
    logs = sorted((tmp_path / 'experiments' / 'again').glob('train_again_*.log'), key=lambda p: p.stat().st_mtime)
    resumed_log = logs[-1].read_text()
    assert 'Resuming training from epoch' in resumed_log
    assert 'Disable distributed.' in resumed_log and 'Set pretrain_network_g to ' in resumed_log


def test_two_process_run_prints_one_console_with_metrics_and_builds_the_demo_data_once(tmp_path):
    """Issue 27 (3): in a 2-process gloo run rank 0 alone prints the header, progress and the result line (with
    the metrics); rank 0 builds the demo data while rank 1 waits."""
    import os
    import socket
    import subprocess
    import sys
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')])))
    res = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--nproc_per_node=2', f'--master_port={port}',
         '-m', 'ddsr.train', '-opt', str(REPO_ROOT / 'options/demo/train_MSRResNet_demo_x4.yml'), '--launcher',
         'pytorch', '--force_yml', 'train:total_iter=2', 'val:val_freq=2', 'logger:print_freq=1',
         'logger:save_checkpoint_freq=2', 'datasets:train:batch_size_per_gpu=2', 'network_g:num_feat=8',
         'network_g:num_block=1'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert out.count('Building the demo data set') == 1, out[-3000:]
    lines = out.splitlines()
    assert sum(line.startswith('ddsr: training demo_MSRResNet_x4') for line in lines) == 1, out[-3000:]
    results = [line for line in lines if line.startswith('result:')]
    assert len(results) == 1 and re.match(r'result: demo_MSRResNet_x4 after 2 iterations \(\d+:\d\d\): val demo_val '
                                          r'PSNR [\d.]+ dB, SSIM [\d.]+ \(bicubic: PSNR', results[0]), results
    assert sum(line.startswith('iter 2/2') for line in lines) == 1
