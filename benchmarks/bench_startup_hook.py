"""CPU cost of ddsr's start-up hook (``ddsr_torchvision_shim.pth``) for every Python process of the environment.

Runs ``python -c pass`` ``--runs`` times with the hook and as often without it, alternating, and reports the mean
and median child CPU time (user + system, from ``os.wait4``) of each and their difference. "Without" puts an empty
module named ``ddsr_torchvision_shim`` first on ``PYTHONPATH``, so the installed .pth line imports that instead
(the .pth disabled, nothing else changed); "with" puts this checkout first, so its hook is the one measured.
Needs the .pth installed (``pip install -e .``). Target of issue 27: the difference within 1 ms. Run it on an idle
machine; the load average is printed beside the figures.

    python benchmarks/bench_startup_hook.py [--runs 40] [--out benchmarks/results/startup_hook.md]
"""
import argparse
import os
import site
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import load_average, publish  # noqa: E402

HOOK = 'ddsr_torchvision_shim'
REPO = Path(__file__).resolve().parents[1]


def cpu_ms(env: dict[str, str]) -> float:
    """Child CPU milliseconds (user + system) of one ``python -c pass``."""
    proc = subprocess.Popen([sys.executable, '-c', 'pass'], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f'error: python -c pass failed with {env["PYTHONPATH"]} first on the path')
    return 1000 * (usage.ru_utime + usage.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=40, help='runs of each variant (alternating)')
    parser.add_argument('--out', help='also write the report here (Markdown)')
    args = parser.parse_args()
    if not any((Path(d) / f'{HOOK}.pth').is_file() for d in site.getsitepackages()):
        raise SystemExit(f'error: {HOOK}.pth is not in site-packages; install ddsr first (pip install -e .)')
    base = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    times: dict[str, list[float]] = {'with hook': [], 'without hook': []}
    with tempfile.TemporaryDirectory() as empty:
        Path(empty, f'{HOOK}.py').write_text('')
        envs = {'with hook': {**base, 'PYTHONPATH': str(REPO)}, 'without hook': {**base, 'PYTHONPATH': empty}}
        for name in envs:  # one warm-up each (page cache, .pyc files)
            cpu_ms(envs[name])
        for _ in range(args.runs):
            for name, env in envs.items():
                times[name].append(cpu_ms(env))
    lines = [f'# Start-up hook cost: `python -c pass`, {args.runs} alternating runs each', '',
             f'{load_average()}; {sys.executable} {sys.version.split()[0]}', '',
             '| variant | mean CPU ms | median CPU ms |', '|---|---|---|']
    for name, values in times.items():
        lines.append(f'| {name} | {statistics.mean(values):.2f} | {statistics.median(values):.2f} |')
    diff = statistics.mean(times['with hook']) - statistics.mean(times['without hook'])
    lines += ['', f'difference of the means: {diff:+.2f} ms CPU (target: within 1 ms)']
    publish('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
