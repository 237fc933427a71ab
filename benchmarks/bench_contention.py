"""Speed next to other processes (issue 28): demo training it/s and ``ddsr upscale`` of a folder, idle and loaded,
under three CPU threading policies (ddsr.cpu_threads, docs/threads.md).

Loads: ``idle`` (nothing started here: run it on an otherwise idle machine), ``torch`` (two PyTorch jobs of 2
threads each, a small convolution net training in a loop; fair share 1/3 of the CPUs), ``yes`` (two ``yes``
processes; fair share 1/2). Policies: ``default`` (``DDSR_THREADS=off``: the runtimes' defaults, ddsr before the
policy), ``policy`` (ddsr's), ``1-thread`` (``DDSR_THREADS=off OMP_NUM_THREADS=1``; upscale also ``--threads 1``).

Training: ``basicsr train`` of options/demo/train_DDistillSR_demo_x4.yml with ``--iters`` iterations, logging
every iteration, no validation; it/s from the log's time stamps after the first ``--skip`` iterations (start-up
excluded). Upscale: whole ``ddsr upscale`` processes on ``--images`` 320x180 images (backend cache filled once
before any timing, so every run uses the same backend), images per second. Each cell: ``--runs`` runs, min and
median, and the 1-minute load average when the cell ended. Ratios: a loaded cell's minimum over the idle median of
the same policy, and the idle median over the default's.

    python benchmarks/bench_contention.py [--runs 3] [--out benchmarks/results/contention.md]
    python benchmarks/bench_contention.py --quick     # a tiny check that everything runs (figures meaningless)
"""
import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from pretrained import pretrained_dir  # benchmarks/pretrained.py
from report import load_average, publish  # benchmarks/report.py

REPO = Path(__file__).resolve().parents[1]
OPTION = 'options/demo/train_DDistillSR_demo_x4.yml'
POLICIES = {'default': {'DDSR_THREADS': 'off'}, 'policy': {},
            '1-thread': {'DDSR_THREADS': 'off', 'OMP_NUM_THREADS': '1'}}
POLICY_VARS = ('DDSR_THREADS', 'OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME',
               'MKL_NUM_THREADS')
TORCH_JOB = '''
import torch
torch.set_num_threads(2)
net = torch.nn.Sequential(*[torch.nn.Conv2d(32, 32, 3, padding=1) for _ in range(6)])
opt = torch.optim.Adam(net.parameters())
x = torch.rand(8, 32, 48, 48)
while True:
    opt.zero_grad(); net(x).abs().mean().backward(); opt.step()
'''
LOG_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO: \[.*?iter:\s*([\d,]+)')


def _env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    return dict(env, PYTHONUNBUFFERED='1', **POLICIES[policy])


def start_load(load: str) -> list[subprocess.Popen]:
    """The load's processes, started and given a few seconds to get going."""
    if load == 'idle':
        return []
    cmd = [sys.executable, '-c', TORCH_JOB] if load == 'torch' else ['yes']
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env) for _ in range(2)]
    time.sleep(8 if load == 'torch' else 1)
    return procs


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        sys.exit(f'error: {what} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}')


def train_rate(root: Path, policy: str, iters: int, skip: int) -> float:
    """Iterations per second of a demo training run (from the log's time stamps after ``skip`` iterations)."""
    name = f'contention_{policy}_{time.monotonic_ns()}'
    proc = subprocess.run([sys.executable, '-m', 'ddsr.cli', 'basicsr', 'train', '-opt', OPTION, '--force_yml',
                           f'name={name}', f'train:total_iter={iters}', 'logger:print_freq=1', 'val=~',
                           f'logger:save_checkpoint_freq={10 * iters}'],
                          cwd=root, env=_env(policy), capture_output=True, text=True)
    _check(proc, 'training')
    stamps = {}
    for log in (root / 'experiments' / name).glob('train_*.log'):
        for line in log.read_text().splitlines():
            match = LOG_LINE.match(line)
            if match:
                stamp = datetime.datetime.strptime(match.group(1), '%Y-%m-%d %H:%M:%S,%f')
                stamps[int(match.group(2).replace(',', ''))] = stamp
    shutil.rmtree(root / 'experiments' / name, ignore_errors=True)  # this benchmark's own scratch run
    first, last = min(k for k in stamps if k >= skip), max(stamps)
    return (last - first) / (stamps[last] - stamps[first]).total_seconds()


def upscale_rate(root: Path, policy: str, weights: str, images: int) -> float:
    """Images per second of a whole ``ddsr upscale`` process on the folder ``root/in``."""
    threads = ['--threads', '1'] if policy == '1-thread' else []
    out = root / f'out_{policy}'
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, '-m', 'ddsr.cli', 'upscale', '--weights', weights, '-i', str(root / 'in'),
                           '-o', str(out), *threads], cwd=root, env=_env(policy), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    _check(proc, 'ddsr upscale')
    shutil.rmtree(out, ignore_errors=True)
    return images / elapsed


def _cell(rates: list[float]) -> str:
    return f'{min(rates):.2f} / {statistics.median(rates):.2f}'


def report(results: dict, loads: list[str], args: argparse.Namespace) -> str:
    lines = [f'# Speed next to other processes ({args.runs} runs per cell; min / median)', '',
             f'torch {_version("torch")}, onnxruntime {_version("onnxruntime")}, {os.cpu_count()} CPUs; '
             f'training: demo DDistill-SR x4, {args.iters} iterations (it/s after {args.skip}); upscale: '
             f'{args.images} images 320x180 x4 ({Path(args.weights).name}, images/s)', '']
    lines += ['| task | policy | ' + ' | '.join(f'{load} (load avg)' for load in loads) + ' | ' +
              ' | '.join(f'{load} min / idle median' for load in loads if load != 'idle') + ' | idle vs default |',
              '|---|---|' + '---:|' * (2 * len(loads) + ('idle' not in loads))]
    for task in ('train', 'upscale'):
        for policy in args.policy_list:
            cells = [f'{_cell(results[task, policy, load][0])} ({results[task, policy, load][1]})' for load in loads]
            idle = statistics.median(results[task, policy, 'idle'][0]) if 'idle' in loads else None
            ratios = [f'{min(results[task, policy, load][0]) / idle:.2f}' if idle else '-'
                      for load in loads if load != 'idle']
            base = statistics.median(results[task, 'default', 'idle'][0]) \
                if 'idle' in loads and 'default' in args.policy_list else None
            vs = f'{idle / base:.2f}' if idle and base else '-'
            lines.append(f'| {task} | {policy} | ' + ' | '.join(cells + ratios) + f' | {vs} |')
    return '\n'.join(lines + ['', load_average()])


def _version(name: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return 'n/a'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=3, help='runs per cell (default 3)')
    parser.add_argument('--iters', type=int, default=40, help='training iterations per run (default 40)')
    parser.add_argument('--skip', type=int, default=5, help='first iterations not timed (default 5)')
    parser.add_argument('--images', type=int, default=6, help='images in the upscaled folder (default 6)')
    parser.add_argument('--weights', default=str(pretrained_dir() / 'DIPNet_x4.pth'),
                        help='checkpoint for ddsr upscale (default: DIPNet_x4.pth of benchmarks/pretrained.py)')
    parser.add_argument('--policies', default=','.join(POLICIES),
                        help=f'comma-separated subset of {",".join(POLICIES)} (default all; "default" is needed for '
                             'the idle-vs-default column)')
    parser.add_argument('--loads', default='idle,torch,yes', help='comma-separated subset of idle,torch,yes')
    parser.add_argument('--quick', action='store_true', help='1 run, 4 iterations, 2 images: checks that it runs')
    parser.add_argument('--out', help='also write the report here (Markdown)')
    args = parser.parse_args()
    if args.quick:
        args.runs, args.iters, args.skip, args.images = 1, 4, 1, 2
    loads = [load.strip() for load in args.loads.split(',')]
    policies = [policy.strip() for policy in args.policies.split(',')]
    if not set(policies) <= set(POLICIES):
        parser.error(f'--policies {args.policies}: choose from {", ".join(POLICIES)}')
    args.policy_list = policies
    if not set(loads) <= {'idle', 'torch', 'yes'}:
        parser.error(f'--loads {args.loads}: choose from idle, torch, yes')
    if not Path(args.weights).is_file():
        parser.error(f'--weights {args.weights}: no such file')
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / 'options').symlink_to(REPO / 'options')
        (root / 'in').mkdir()
        rng = np.random.default_rng(0)
        base = cv2.resize(rng.integers(0, 255, (18, 32, 3), dtype=np.uint8), (320, 180), interpolation=cv2.INTER_CUBIC)
        for i in range(args.images):
            noisy = np.clip(base.astype(int) + rng.integers(-12, 12, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / 'in' / f'{i}.png'), noisy)
        os.environ['DDSR_CACHE_DIR'] = str(root / 'cache')  # private backend cache, filled before any timing
        upscale_rate(root, 'policy', args.weights, args.images)
        train_rate(root, 'policy', 2, 0)  # builds the demo data set once (datasets/demo under the root)
        for load in loads:
            procs = start_load(load)
            try:
                for task in ('train', 'upscale'):
                    for policy in policies:  # interleaved runs: the policies see the same load over time
                        results.setdefault((task, policy, load), ([], ''))
                    for _ in range(args.runs):
                        for policy in policies:
                            rate = train_rate(root, policy, args.iters, args.skip) if task == 'train' else \
                                upscale_rate(root, policy, args.weights, args.images)
                            results[task, policy, load][0].append(rate)
                            print(f'{load:5} {task:7} {policy:8} {rate:.3f}/s  {load_average()}', flush=True)
                    for policy in policies:
                        results[task, policy, load] = (results[task, policy, load][0],
                                                       open('/proc/loadavg').read().split()[0])
            finally:
                stop_load(procs)
    publish(report(results, loads, args), args.out)


if __name__ == '__main__':
    main()
