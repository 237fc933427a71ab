"""Mixed-precision training on the main demo (issue 23, training): iterations/s and final validation quality of
``basicsr train -opt options/demo/train_DDistillSR_demo_x4.yml`` (DDistill-SR x4, train form, 600 iterations) per
mode and seed.

Modes (``--modes``, default ``fp32,bf16``): ``fp32`` (the demo as released), ``bf16`` (``train.amp: bf16``),
``fp32+cl`` / ``bf16+cl`` (the same with ``train.channels_last: true``). For each seed 0..``--seeds``-1 every mode
runs once, modes interleaved per seed, each as a whole process (``python -m ddsr.cli basicsr train``) on a copy of
the demo option file with its own ``name``, ``manual_seed``, ``train.amp`` and ``train.channels_last``, all in one
work directory that holds one built copy of the demo data (``datasets/demo``). From each run's log:

- it/s: 1 / BasicSR's ``time (data)`` at the last iteration (its average over the last <= 200 iterations: BasicSR's
  ``AvgTimer`` window);
- final val PSNR / SSIM (Y, ``crop_border`` 4): the ``# psnr`` / ``# ssim`` lines of the last validation;
- wall: the whole process, start-up and validation included.

The CPU flags that matter (amx_bf16, avx512_bf16, ...), the load average at start and end and the commit are
printed with the table: run it on an idle machine for publishable figures.

    python benchmarks/bench_amp.py [--seeds 3] [--modes fp32,bf16,bf16+cl] [--iters N] [--quick] \\
        [--workdir DIR] [--out benchmarks/results/amp.md]

``--iters N``: N iterations instead of 600 (scheduler milestone scaled alike, validation and checkpoint at N);
``--quick``: 20 iterations, one seed (checks the script, not the machine).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from report import load_average, publish  # benchmarks/report.py

from ddsr.data.demo import build_demo_data
from ddsr.deploy.precision import NATIVE_FLAGS, cpu_flags

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / 'options' / 'demo' / 'train_DDistillSR_demo_x4.yml'
MODES = {'fp32': (None, False), 'bf16': ('bf16', False), 'fp32+cl': (None, True), 'bf16+cl': ('bf16', True)}
TIME_RE = re.compile(r'iter:\s*([\d,]+).*time \(data\): ([\d.]+)')
METRIC_RE = re.compile(r'# (psnr|ssim): ([\d.]+)')


def options(mode: str, seed: int, iters: int | None) -> dict:
    """The demo's options for one run: its own name, seed, ``train.amp`` and ``train.channels_last``."""
    opt = yaml.safe_load(DEMO.read_text())
    precision, channels_last = MODES[mode]
    opt['name'] = f'amp_{mode.replace("+", "_")}_seed{seed}'
    opt['manual_seed'] = seed
    opt['train'].pop('amp', None)
    if precision:
        opt['train']['amp'] = precision
    opt['train']['channels_last'] = channels_last
    if iters is not None:
        total = opt['train']['total_iter']
        sched = opt['train']['scheduler']
        sched['milestones'] = [max(1, round(m * iters / total)) for m in sched['milestones']]
        opt['train']['total_iter'] = opt['val']['val_freq'] = opt['logger']['save_checkpoint_freq'] = iters
        if iters % opt['logger']['print_freq']:
            opt['logger']['print_freq'] = iters
    return opt


def parse_log(log: str) -> dict:
    """it/s at the last logged iteration and the last validation's PSNR / SSIM of one run's log."""
    times = TIME_RE.findall(log)
    metrics = dict(METRIC_RE.findall(log))  # the last value of each metric wins
    if not times or 'psnr' not in metrics:
        raise SystemExit('error: the run logged no iteration time or no validation PSNR')
    return {'iter': int(times[-1][0].replace(',', '')), 'it_s': 1 / float(times[-1][1]),
            'psnr': float(metrics['psnr']), 'ssim': float(metrics.get('ssim', 'nan'))}


def run(work: Path, mode: str, seed: int, iters: int | None) -> dict:
    """One whole ``basicsr train`` process in ``work``; its figures."""
    opt = options(mode, seed, iters)
    yml = work / f'{opt["name"]}.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, '-m', 'ddsr.cli', 'basicsr', 'train', '-opt', str(yml)], cwd=work,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f'error: {mode} seed {seed} failed (exit {proc.returncode}): {proc.stderr[-2000:]}')
    logs = sorted((work / 'experiments' / opt['name']).glob('train_*.log'), key=lambda p: p.stat().st_mtime)
    return {**parse_log(logs[-1].read_text()), 'wall': wall}


def mean_std(values: list[float], fmt: str) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):{fmt}} +- {std:{fmt}}'


def commit() -> str:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return (head.stdout.strip() or 'unknown') + (' (uncommitted changes)' if dirty else '')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--modes', default='fp32,bf16', help=f'comma-separated, of {", ".join(MODES)}')
    parser.add_argument('--iters', type=int, default=None, help='iterations per run (default: the demo\'s 600)')
    parser.add_argument('--quick', action='store_true', help='20 iterations, one seed: checks that the script works')
    parser.add_argument('--workdir', help='keep the runs here (default: a temporary directory, removed)')
    parser.add_argument('--out', help='also write the report (Markdown) here')
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        parser.error(f'--modes: unknown {bad or modes} (choose from {", ".join(MODES)})')
    if 'fp32' not in modes:
        modes.insert(0, 'fp32')  # the reference of the ratio
    seeds, iters = (1, 20) if args.quick else (args.seeds, args.iters)
    flags = sorted(cpu_flags() & {f for names in NATIVE_FLAGS.values() for f in names})
    lines = [f'# Mixed-precision training: `{DEMO.relative_to(REPO)}`, {iters or 600} iterations, seeds 0..{seeds - 1}',
             '', f'CPU flags: {", ".join(flags) or "none of " + str(NATIVE_FLAGS)} ({os.cpu_count()} CPUs); '
             f'torch {__import__("torch").__version__}; commit {commit()}; {load_average()} at start'
             + ('; --quick' if args.quick else '')]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix='bench_amp_') as tmp:
        work = Path(args.workdir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        build_demo_data(str(work / 'datasets' / 'demo'))  # once; every run reads it (relative paths)
        for seed in range(seeds):
            for mode in modes:
                results[mode].append(run(work, mode, seed, iters))
                r = results[mode][-1]
                print(f'{mode} seed {seed}: {r["it_s"]:.3f} it/s, PSNR {r["psnr"]:.4f}, wall {r["wall"]:.1f} s '
                      f'({load_average()})', flush=True)
    lines.append(f'{load_average()} at end')
    ref = statistics.mean(r['it_s'] for r in results['fp32'])
    rows = []
    for mode, runs in results.items():
        per_seed = ', '.join(f'{r["psnr"]:.4f}' for r in runs)
        rows.append(f'| {mode} | {mean_std([r["it_s"] for r in runs], ".3f")} | '
                    f'{statistics.mean(r["it_s"] for r in runs) / ref:.2f}x | '
                    f'{mean_std([r["psnr"] for r in runs], ".4f")} ({per_seed}) | '
                    f'{mean_std([r["ssim"] for r in runs], ".4f")} | {mean_std([r["wall"] for r in runs], ".1f")} |')
    table = ['| mode | it/s (mean +- std) | it/s vs fp32 | final val PSNR dB (per seed) | final val SSIM | wall s |',
             '|---|---:|---:|---|---:|---:|', *rows]
    publish('\n'.join(lines + [''] + table), args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
