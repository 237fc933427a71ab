"""Where one forward of a network spends its time, per precision: ``torch.profiler`` on ddsr's PyTorch runner of the
network's inference form (:func:`ddsr.deploy.precision.upscaler`: fp32 channels_last, or bf16 weights and
activations channels_last, what ``ImageUpscaler(..., precision=...)`` runs) at one LR size, after a warm-up.

Prints per precision the wall time of the profiled forward and the top ops by self CPU time: name, calls, self ms and
share of the total self CPU time. The shares show which ops keep a network far from the conv peak of
``bench_forward_limits.py`` (e.g. ops without a bf16 oneDNN kernel, layout conversions between channels_last and
NCHW, per-sample or grouped convs). Shares depend little on the machine's load; the ms do.

    python benchmarks/profile_forward.py --net DDistill-SR --ddistill DDistill-SRx4_inference.pth \\
        [--size 480x270] [--precisions fp32,bf16] [--top 15] [--threads N] [--out profile.md]
"""
import argparse
import sys
import time

import torch
from bench_forward_limits import ALL_NETS, networks, photo, some_of  # benchmarks/bench_forward_limits.py
from report import load_average, publish  # benchmarks/report.py
from torch.profiler import ProfilerActivity, profile

from ddsr.deploy.precision import upscaler


def top_ops(prof: profile, top: int, by_shape: bool = False) -> list[str]:
    """Markdown rows of the ``top`` ops by self CPU time of ``prof``, with their share of the total (``by_shape``:
    one row per op and input shapes)."""
    events = [e for e in prof.key_averages(group_by_input_shape=by_shape) if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = ['| op | ' + ('input shapes | ' if by_shape else '') + 'calls | self CPU ms | share |',
            '|---|' + ('---|' if by_shape else '') + '---:|---:|---:|']
    rows += [f'| {e.key} | ' + (f'{e.input_shapes} | ' if by_shape else '') + f'{e.count} | '
             f'{e.self_cpu_time_total / 1e3:.1f} | {e.self_cpu_time_total / total:.1%} |' for e in events[:top]]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--net', default='DDistill-SR', choices=ALL_NETS)
    parser.add_argument('--dipnet', help='DIPNet x4 weights (xiumu00/DIPNet release)')
    parser.add_argument('--ddistill', help='DDistill-SR x4 inference weights (icandle/DDistill-SR release)')
    parser.add_argument('--size', default='480x270', help='LR size WxH')
    parser.add_argument('--precisions', default='fp32,bf16', help='comma-separated, of fp32, bf16')
    parser.add_argument('--top', type=int, default=15)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--by-shape', action='store_true', help='one row per op and input shapes')
    parser.add_argument('--out', help='also write the report (Markdown) here')
    args = parser.parse_args()
    precisions = some_of(args.precisions, ('fp32', 'bf16'), '--precisions')
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = map(int, args.size.split('x'))
    x = photo(h, w)
    _, fast_net = networks(args.dipnet, args.ddistill, [args.net])[args.net]
    lines = [f'{args.net} x4, {args.size} LR, threads: {torch.get_num_threads()} (PyTorch); {load_average()} at start']
    for precision in precisions:
        up = upscaler(fast_net, 'cpu', precision)
        up(x)  # warm-up (oneDNN primitive creation)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.by_shape) as prof:
            start = time.perf_counter()
            up(x)
            wall = time.perf_counter() - start
        lines += ['', f'## {precision}: {wall * 1e3:.0f} ms wall (profiled)', '',
                  *top_ops(prof, args.top, args.by_shape)]
    lines.append(f'\n{load_average()} at end')
    publish('\n'.join(lines), args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
