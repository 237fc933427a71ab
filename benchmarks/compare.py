"""Side-by-side efficiency (and quality where weights exist) of the lightweight x4 networks on this machine.

    python benchmarks/compare.py [--size 128 128] [--runs 3] [--out benchmarks/results]

Runs ``ddsr bench efficiency --models benchmarks/compare_lightweight.yml`` (params, GMACs and activations at
256x256 LR; runtime and memory at ``--size``), scores the models with (official) weights on the demo val set x4,
and writes efficiency.{csv,json,md}, the PSNR-vs-cost plot and compare_lightweight.md (machine + table).
"""
import argparse
import os
import platform
import sys
import time
from os import path as osp

import torch

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(HERE))

import basicsr  # noqa: E402

import ddsr  # noqa: E402,F401  (compat before basicsr)
from ddsr.bench.models import is_registered, specs_from_model_list  # noqa: E402
from ddsr.cli import main  # noqa: E402
from ddsr.data.demo import build_demo_data  # noqa: E402

MODELS = osp.join(HERE, 'compare_lightweight.yml')


def cpu_model() -> str:
    with open('/proc/cpuinfo') as f:
        names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    return names[0] if names else platform.processor()


def machine(size, runs: int, warmup: int) -> str:
    return '\n'.join([
        f'- date (UTC): {time.strftime("%Y-%m-%d %H:%M", time.gmtime())}',
        f'- CPU: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}',
        f'- load average at start (1/5/15 min): {" / ".join(f"{v:.1f}" for v in os.getloadavg())}',
        f'- python {platform.python_version()}, torch {torch.__version__}, basicsr {basicsr.__version__}',
        f'- runtime / memory input: 1x3x{size[0]}x{size[1]} LR (ECBSR: 1 channel), fp32, no grad, '
        f'median and IQR of {runs} runs after {warmup} warm-up; GMACs / activations / convs at 256x256 LR',
        '- memory on CPU: rise of the peak RSS (VmHWM, reset through /proc/self/clear_refs) during one forward',
    ])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, nargs=2, default=[128, 128], metavar=('H', 'W'))
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', default=osp.join(HERE, 'results'))
    parser.add_argument('--demo-root', default=osp.join('datasets', 'demo'))
    return parser.parse_args()


def main_compare() -> int:
    args = parse_args()
    header = machine(args.size, args.runs, args.warmup)
    demo = build_demo_data(args.demo_root)
    skipped = [s.name for s in specs_from_model_list(MODELS) if not is_registered(s.network['type'])]
    code = main(['bench', 'efficiency', '--models', MODELS, '--size', *map(str, args.size), '--runs', str(args.runs),
                 '--warmup', str(args.warmup), '--device', args.device, '--quiet', '--out', args.out,
                 '--dataset', osp.join(demo, 'val', 'HR.lmdb'), osp.join(demo, 'val', 'LR_bicubic_X4.lmdb')])
    if code:
        return code
    with open(osp.join(args.out, 'efficiency.md')) as f:
        table = f.read()
    notes = [
        'psnr_val / ssim_val: Y channel, border 4, on the 2 demo val photos (chelsea, coffee; MATLAB-bicubic x4), '
        'only for models with official weights (measured on their deploy form; the train form row repeats it).',
        'Models without weights have no quality numbers: their rows are efficiency only.',
        'ECBSR is BasicSR\'s Y-channel x4 config in its train form (BasicSR has no deploy conversion).',
        f'Skipped (arch not registered at run time): {", ".join(skipped) if skipped else "none"}.',
        f'Load average at the end: {" / ".join(f"{v:.1f}" for v in os.getloadavg())}. On a shared machine (load '
        'above the core count) runtimes and CPU peak-RSS rises are noisy; params, GMACs, activations and convs are '
        'exact. The CPU memory figure is 0 when the forward fits in memory the allocator already holds.',
    ]
    with open(osp.join(args.out, 'compare_lightweight.md'), 'w') as f:
        f.write('# Lightweight x4 SR networks (`python benchmarks/compare.py`)\n\n' + header + '\n\n' + table + '\n'
                + '\n'.join(f'- {n}' for n in notes) + '\n')
    print(f'wrote {osp.join(args.out, "compare_lightweight.md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main_compare())
