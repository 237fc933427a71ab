"""Forward latency per network against a physical-limit estimate: PyTorch eager vs ddsr's fast path, CPU.

For DIPNet, DDistill-SR (deploy form), EDSRmini and SwinIRmini at x4 and each LR size:

- ``eager``: ``torch.no_grad``, NCHW, the deploy form as released (what the authors' test scripts run);
- ``ddsr``: the faster of ddsr's two CPU paths on its inference form (DDistill-SR: dynamic branches folded, each
  RDU one per-sample conv; the others: the deploy form), PyTorch ``inference_mode`` + ``channels_last`` and
  onnxruntime (the ONNX export of :mod:`ddsr.deploy.export`; Swin nets get the input padded to a window multiple,
  as ``ddsr upscale`` pads it), as ``ddsr upscale --backend auto`` chooses per network;
- ``2 images in flight``: per-image time of two onnxruntime runs at once on half the threads each, what
  ``ddsr upscale`` does for a folder (:mod:`ddsr.deploy.runner`);
- ``limit``: the network's FLOPs (2 x MACs, :func:`ddsr.bench.efficiency.count_macs_activations`) divided by the
  peak conv throughput measured here: a dense 3x3 conv, 64 -> 64 channels, on a 64 x 270 x 480 map (best of
  PyTorch NCHW / channels_last and onnxruntime, measured before and after the networks, the higher kept);
- ``fraction``: limit / ddsr, the share of the machine's conv peak the fast path reaches.

Each time: median of ``--runs`` after a warm-up, paths interleaved per run; ``--threads`` intra-op threads for both
libraries (default: their own default). Input: a natural photo resized to the LR size. Official weights when given.

    python benchmarks/bench_forward_limits.py --dipnet DIPNet_x4.pth --ddistill DDistill-SRx4_inference.pth \\
        [--sizes 320x180 480x270] [--runs 3] [--out benchmarks/results/forward_limits.md]
"""
import argparse
import copy
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from report import load_average, publish  # noqa: E402  (benchmarks/report.py)

from ddsr.archs.registry import arch_class  # noqa: E402
from ddsr.bench.efficiency import count_macs_activations  # noqa: E402
from ddsr.deploy.backends import to_deploy, to_inference_form  # noqa: E402
from ddsr.deploy.export import export_onnx, natural_image  # noqa: E402


def median_s(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ort_session(net: nn.Module, path: Path, threads: int | None):
    import onnxruntime as ort
    export_onnx(net, path, size=64)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])


def conv_peak(runs: int, threads: int | None, tmp: Path) -> tuple[float, str]:
    """Best GFLOP/s of a dense 3x3 conv 64 -> 64 on 64 x 270 x 480 (PyTorch NCHW / channels_last, onnxruntime)."""
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    x = torch.rand(1, 64, 270, 480)
    flops = 2 * 64 * 64 * 9 * 270 * 480
    best = {}
    with torch.inference_mode():
        best['torch NCHW'] = median_s(lambda: conv(x), runs)
        conv_cl, x_cl = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        best['torch channels_last'] = median_s(lambda: conv_cl(x_cl), runs)
    import onnxruntime as ort
    torch.onnx.export(conv.to(memory_format=torch.contiguous_format), (x, ), str(tmp / 'conv.onnx'),
                      input_names=['x'], output_names=['y'], opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(tmp / 'conv.onnx'), opts, providers=['CPUExecutionProvider'])
    xn = x.numpy()
    best['onnxruntime'] = median_s(lambda: session.run(None, {'x': xn}), runs)
    name = min(best, key=best.get)
    return flops / best[name] / 1e9, name


def networks(dipnet: str | None, ddistill: str | None) -> dict[str, tuple[nn.Module, nn.Module]]:
    """``{name: (eager net, ddsr's inference form)}``: the deploy form as released, and what ``ddsr upscale`` runs
    (:func:`ddsr.deploy.backends.to_inference_form`: DDistill-SR's folded form, one per-sample conv per RDU)."""
    nets = {}
    dip = arch_class('DIPNet')()
    if dipnet:
        dip.load_state_dict(torch.load(dipnet, map_location='cpu', weights_only=True))
    nets['DIPNet'] = dip
    dd = arch_class('DDistillSR')(upscale=4, deploy=True)
    if ddistill:
        dd.load_state_dict(torch.load(ddistill, map_location='cpu', weights_only=True))
    nets['DDistill-SR'] = dd
    nets['EDSRmini'] = arch_class('EDSRmini')(upscale=4)
    nets['SwinIRmini'] = arch_class('SwinIRmini')(upscale=4)
    return {name: (to_deploy(net), to_inference_form(copy.deepcopy(to_deploy(net)))) for name, net in nets.items()}


def photo(h: int, w: int) -> torch.Tensor:
    """A natural LR input (scikit-image's astronaut, area-resized): DDistill-SR's dynamic branches are tuned to
    natural images (uniform noise drives the released weights to overflow)."""
    return torch.nn.functional.interpolate(natural_image(512, (0, 0)), size=(h, w), mode='area')


def in_flight(fn: Callable[[], object], runs: int) -> float:
    """Per-image wall time of two calls of ``fn`` running at once (threads), median of ``runs``."""
    def pair() -> None:
        threads = [threading.Thread(target=fn) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return median_s(pair, runs) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dipnet', help='DIPNet x4 weights (xiumu00/DIPNet release)')
    parser.add_argument('--ddistill', help='DDistill-SR x4 inference weights (icandle/DDistill-SR release)')
    parser.add_argument('--sizes', nargs='+', default=['320x180', '480x270'], help='LR sizes WxH')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--out', help='also write the report (Markdown) here')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = [f'threads: {torch.get_num_threads()} (PyTorch); {load_average()} at start']
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        peak, peak_path = conv_peak(args.runs, args.threads, tmp)
        for name, (net, fast_net) in networks(args.dipnet, args.ddistill).items():
            session = ort_session(fast_net, tmp / f'{name}.onnx', args.threads)
            pair_session = ort_session(fast_net, tmp / f'{name}_1.onnx', max(1, (args.threads or os.cpu_count()
                                                                                     or 2) // 2))
            net_cl = copy.deepcopy(fast_net).to(memory_format=torch.channels_last)  # eager keeps NCHW weights
            for size in args.sizes:
                w, h = map(int, size.split('x'))
                x = photo(h, w)
                x_cl = x.contiguous(memory_format=torch.channels_last)
                multiple = int(getattr(net, 'window_size', 1) or 1)  # ONNX Swin graphs take window multiples
                pad = (0, (-w) % multiple, 0, (-h) % multiple)
                xn = torch.nn.functional.pad(x, pad, mode='reflect').numpy() if any(pad) else x.numpy()
                gflop = 2 * count_macs_activations(net, (h, w))[0] / 1e9

                def eager(x=x, net=net):
                    with torch.no_grad():
                        return net(x)

                def channels_last(x_cl=x_cl, net_cl=net_cl):
                    with torch.inference_mode():
                        return net_cl(x_cl)

                paths = {'eager': eager, 'torch channels_last': channels_last,
                         'onnxruntime': lambda xn=xn, s=session: s.run(None, {s.get_inputs()[0].name: xn})}
                for fn in paths.values():
                    fn()  # warm-up
                times = {key: [] for key in paths}
                for _ in range(args.runs):
                    for key, fn in paths.items():
                        start = time.perf_counter()
                        fn()
                        times[key].append(time.perf_counter() - start)
                med = {key: statistics.median(t) for key, t in times.items()}
                fast = min(('torch channels_last', 'onnxruntime'), key=med.get)
                name_in = pair_session.get_inputs()[0].name
                pair_s = in_flight(lambda xn=xn, s=pair_session, n=name_in: s.run(None, {n: xn}), args.runs)
                rows.append((name, size, gflop, med['eager'], med[fast], fast, pair_s))
                print(f'{name} {size}: ' + ', '.join(f'{k} {v * 1e3:.0f} ms' for k, v in med.items())
                      + f' ({load_average()})', flush=True)
        peak2, peak2_path = conv_peak(args.runs, args.threads, tmp)
        if peak2 > peak:
            peak, peak_path = peak2, peak2_path
    lines.append(f'{load_average()} at end; conv peak {peak:.1f} GFLOP/s ({peak_path}, dense 3x3 conv 64->64 on '
                 '270x480)')
    table = ['| network | LR size | GFLOP | PyTorch eager | ddsr fast path | ddsr path | ddsr / eager | limit '
             '(GFLOP / peak) | fraction of limit | onnxruntime, 2 images in flight (per image) | fraction of limit |',
             '|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|']
    for name, size, gflop, eager_s, fast_s, fast, pair_s in rows:
        limit = gflop / peak
        table.append(f'| {name} | {size} | {gflop:.1f} | {eager_s * 1e3:.0f} ms | {fast_s * 1e3:.0f} ms | {fast} | '
                     f'{fast_s / eager_s:.2f}x | {limit * 1e3:.0f} ms | {limit / fast_s:.0%} | {pair_s * 1e3:.0f} ms | '
                     f'{limit / pair_s:.0%} |')
    report = '\n'.join(lines + [''] + table)
    publish(report, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
