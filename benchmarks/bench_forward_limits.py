"""Forward latency per network against a physical-limit estimate: PyTorch eager vs ddsr's fast path, CPU, per
precision (fp32, bf16, int8).

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
- ``fraction``: limit / ddsr, the share of the machine's conv peak the fast path reaches;
- ``bf16``: ddsr's bf16 runner (:func:`ddsr.deploy.precision.upscaler` ``'bf16'``: PyTorch bf16 weights and
  activations, channels_last, what ``ImageUpscaler(..., precision='bf16')`` runs) against the bf16 peak: the same
  conv in PyTorch channels_last with bf16 weights and input;
- ``int8``: ddsr's int8 runner (:func:`ddsr.deploy.precision.int8_upscaler`: onnxruntime, static QDQ, per-channel)
  against the int8 peak: the same conv exported to ONNX and quantized by
  :func:`ddsr.deploy.precision.quantize_int8` (calibrated on random inputs), run by onnxruntime with the same
  threads (GOP/s; its time includes quantizing the float input and dequantizing the output, as the networks' do).

Each time: median of ``--runs`` after a warm-up (the peaks: of at least :data:`PEAK_RUNS`), paths interleaved per
run; ``--threads`` intra-op threads for both libraries (default: their own default). Input: a natural photo resized to
the LR size. Official weights when given. ``--nets`` / ``--precisions`` pick what to measure (issue 23 needs ``--nets
DIPNet,DDistill-SR``); ``--quick``: one run at 96x54 and peaks on a 64 x 68 x 120 map (checks the script, not the
machine).

    python benchmarks/bench_forward_limits.py --dipnet DIPNet_x4.pth --ddistill DDistill-SRx4_inference.pth \\
        [--sizes 320x180 480x270] [--runs 3] [--nets DIPNet,DDistill-SR] [--precisions fp32,bf16,int8] [--quick] \\
        [--out benchmarks/results/forward_limits.md]
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


def _ort(path: Path, threads: int | None):
    """onnxruntime CPU session of the model at ``path`` on ``threads`` intra-op threads (None: its default)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])


def ort_session(net: nn.Module, path: Path, threads: int | None):
    """Session of ``net``'s ONNX export (:func:`ddsr.deploy.export.export_onnx`, written to ``path``)."""
    export_onnx(net, path, size=64)
    return _ort(path, threads)


PEAK_MAP = (64, 270, 480)  # channels, height, width of the peak conv's input
# Timed runs per peak (median), at least: one peak conv takes 10-50 ms, so 25 runs cost a few seconds. With 3 runs
# the bf16 peak came out at 2032, 1260 and 2766 GFLOP/s in three runs of 2026-12-05/06 on the same machine.
PEAK_RUNS = 25
QUICK_MAP = (64, 68, 120)


def conv_peaks(runs: int, threads: int | None, tmp: Path, precisions: list[str],
               shape: tuple[int, int, int] = PEAK_MAP) -> dict[str, tuple[float, str]]:
    """``{precision: (G(FL)OP/s, path)}`` of a dense 3x3 conv 64 -> 64 on a ``shape`` map: fp32 the best of PyTorch
    NCHW / channels_last and onnxruntime, bf16 PyTorch channels_last with bf16 weights and input, int8 onnxruntime
    on the static-QDQ int8 quantization of the conv's export."""
    from ddsr.deploy.precision import quantize_int8
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    x = torch.rand(1, *shape)
    flops = 2 * 64 * 64 * 9 * shape[1] * shape[2]
    peaks = {}
    runs = max(runs, PEAK_RUNS)
    conv_cl, x_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last), x.contiguous(
        memory_format=torch.channels_last)
    torch.onnx.export(conv, (x, ), str(tmp / 'conv.onnx'), input_names=['x'], output_names=['y'], opset_version=17,
                      dynamo=False)
    xn = x.numpy()
    if 'fp32' in precisions:
        best = {}
        with torch.inference_mode():
            best['torch NCHW'] = median_s(lambda: conv(x), runs)
            best['torch channels_last'] = median_s(lambda: conv_cl(x_cl), runs)
        session = _ort(tmp / 'conv.onnx', threads)
        best['onnxruntime'] = median_s(lambda: session.run(None, {'x': xn}), runs)
        name = min(best, key=best.get)
        peaks['fp32'] = flops / best[name] / 1e9, name
    if 'bf16' in precisions:
        conv_bf, x_bf = copy.deepcopy(conv_cl).to(torch.bfloat16), x_cl.to(torch.bfloat16)
        with torch.inference_mode():
            peaks['bf16'] = flops / median_s(lambda: conv_bf(x_bf), runs) / 1e9, 'torch channels_last bf16'
    if 'int8' in precisions:
        calib = [torch.rand(1, *shape).numpy() for _ in range(4)]
        session = _ort(quantize_int8(tmp / 'conv.onnx', tmp / 'conv-int8.onnx', calib), threads)
        peaks['int8'] = flops / median_s(lambda: session.run(None, {'x': xn}), runs) / 1e9, 'onnxruntime QDQ int8'
    return peaks


ALL_NETS = ('DIPNet', 'DDistill-SR', 'EDSRmini', 'SwinIRmini')


def networks(dipnet: str | None, ddistill: str | None,
             names: tuple[str, ...] | list[str] = ALL_NETS) -> dict[str, tuple[nn.Module, nn.Module]]:
    """``{name: (eager net, ddsr's inference form)}`` of the networks ``names``: the deploy form as released, and
    what ``ddsr upscale`` runs (:func:`ddsr.deploy.backends.to_inference_form`: DDistill-SR's folded form, one
    per-sample conv per RDU)."""
    build = {'DIPNet': lambda: arch_class('DIPNet')(), 'DDistill-SR': lambda: arch_class('DDistillSR')(
        upscale=4, deploy=True), 'EDSRmini': lambda: arch_class('EDSRmini')(upscale=4),
        'SwinIRmini': lambda: arch_class('SwinIRmini')(upscale=4)}
    weights = {'DIPNet': dipnet, 'DDistill-SR': ddistill}
    nets = {}
    for name in names:
        net = build[name]()
        if weights.get(name):
            net.load_state_dict(torch.load(weights[name], map_location='cpu', weights_only=True))
        nets[name] = to_deploy(net)
    return {name: (net, to_inference_form(copy.deepcopy(net))) for name, net in nets.items()}


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


def some_of(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """The comma-separated ``value`` of ``option``; exits 2 with one ``error:`` line when empty or not ``allowed``."""
    items = [v for v in value.split(',') if v]
    bad = sorted(set(items) - set(allowed))
    if bad or not items:
        print(f'error: {option}: {", ".join(bad) or "empty"}: expected some of {", ".join(allowed)}', file=sys.stderr)
        raise SystemExit(2)
    return items


def upscalers(fast_net: nn.Module, precisions: list[str], threads: int | None) -> tuple[dict, dict[str, str]]:
    """ddsr's runners of the reduced ``precisions`` (bf16, int8) of ``fast_net``, as ``ImageUpscaler`` builds them,
    and ``{precision: error}`` of those that could not be built (printed; the table says n/a)."""
    from ddsr.deploy.precision import int8_upscaler, upscaler
    build = {'bf16': lambda: upscaler(copy.deepcopy(fast_net), 'cpu', 'bf16'),
             'int8': lambda: int8_upscaler(copy.deepcopy(fast_net), threads)}
    ups: dict[str, Callable] = {}
    errors: dict[str, str] = {}
    for p in ('bf16', 'int8'):
        if p in precisions:
            try:
                ups[p] = build[p]()
            except Exception as exc:  # noqa: BLE001  # reported in the table, the other precisions still measured
                errors[p] = type(exc).__name__
                print(f'{type(fast_net).__name__} {p}: {type(exc).__name__}: {str(exc)[:300]}', file=sys.stderr)
    return ups, errors


def table_of(rows: list[dict], peaks: dict[str, tuple[float, str]], precisions: list[str]) -> list[str]:
    """Markdown table: per network and size the fp32 columns (as before issue 23), then bf16 / int8 ddsr times with
    their fractions of the same precision's conv peak."""
    head = ['network', 'LR size', 'GFLOP']
    if 'fp32' in precisions:
        head += ['PyTorch eager', 'ddsr fast path', 'ddsr path', 'ddsr / eager', 'limit (GFLOP / peak)',
                 'fraction of limit', 'onnxruntime, 2 images in flight (per image)', 'fraction of limit']
    for p in ('bf16', 'int8'):
        if p in precisions:
            head += [f'ddsr {p}', f'{p} limit (GFLOP / {p} peak)', f'fraction of {p} limit']
    table = ['| ' + ' | '.join(head) + ' |',
             '|' + ''.join('---|' if h in ('network', 'LR size', 'ddsr path') else '---:|' for h in head)]
    for r in rows:
        cells = [r['name'], r['size'], f'{r["gflop"]:.1f}']
        if 'fp32' in precisions:
            limit = r['gflop'] / peaks['fp32'][0]
            cells += [f'{r["eager"] * 1e3:.0f} ms', f'{r["fast"] * 1e3:.0f} ms', r['fast_path'],
                      f'{r["fast"] / r["eager"]:.2f}x', f'{limit * 1e3:.0f} ms', f'{limit / r["fast"]:.0%}',
                      f'{r["pair"] * 1e3:.0f} ms', f'{limit / r["pair"]:.0%}']
        for p in ('bf16', 'int8'):
            if p in precisions:
                limit = r['gflop'] / peaks[p][0]
                cells += ([f'{r[p] * 1e3:.0f} ms', f'{limit * 1e3:.0f} ms', f'{limit / r[p]:.0%}'] if p in r
                          else [f'n/a ({r.get(p + "_error", "?")})', f'{limit * 1e3:.0f} ms', ''])
        table.append('| ' + ' | '.join(cells) + ' |')
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dipnet', help='DIPNet x4 weights (xiumu00/DIPNet release)')
    parser.add_argument('--ddistill', help='DDistill-SR x4 inference weights (icandle/DDistill-SR release)')
    parser.add_argument('--sizes', nargs='+', default=['320x180', '480x270'], help='LR sizes WxH')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--nets', default=','.join(ALL_NETS), help=f'comma-separated, of {", ".join(ALL_NETS)}')
    parser.add_argument('--precisions', default='fp32,bf16,int8', help='comma-separated, of fp32, bf16, int8')
    parser.add_argument('--quick', action='store_true', help='one run at 96x54, small peak map: checks the script')
    parser.add_argument('--out', help='also write the report (Markdown) here')
    args = parser.parse_args()
    names = some_of(args.nets, ALL_NETS, '--nets')
    precisions = some_of(args.precisions, ('fp32', 'bf16', 'int8'), '--precisions')
    runs, sizes = (1, ['96x54']) if args.quick else (args.runs, args.sizes)
    peak_map = QUICK_MAP if args.quick else PEAK_MAP
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = [f'threads: {torch.get_num_threads()} (PyTorch); {load_average()} at start'
             + ('; --quick' if args.quick else '')]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        peaks = conv_peaks(runs, args.threads, tmp, precisions, peak_map)
        for name, (net, fast_net) in networks(args.dipnet, args.ddistill, names).items():
            if 'fp32' in precisions:
                session = ort_session(fast_net, tmp / f'{name}.onnx', args.threads)
                pair_session = ort_session(fast_net, tmp / f'{name}_1.onnx', max(1, (args.threads or os.cpu_count()
                                                                                         or 2) // 2))
            net_cl = copy.deepcopy(fast_net).to(memory_format=torch.channels_last)  # eager keeps NCHW weights
            ups, errors = upscalers(fast_net, precisions, args.threads)
            for size in sizes:
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

                paths: dict[str, Callable] = {}
                if 'fp32' in precisions:
                    paths.update({'eager': eager, 'torch channels_last': channels_last,
                                  'onnxruntime': lambda xn=xn, s=session: s.run(None, {s.get_inputs()[0].name: xn})})
                paths.update({p: lambda x=x, up=up: up(x) for p, up in ups.items()})
                for fn in paths.values():
                    fn()  # warm-up
                times = {key: [] for key in paths}
                for _ in range(runs):
                    for key, fn in paths.items():
                        start = time.perf_counter()
                        fn()
                        times[key].append(time.perf_counter() - start)
                med = {key: statistics.median(t) for key, t in times.items()}
                row = {'name': name, 'size': size, 'gflop': gflop, **{p: med[p] for p in ups},
                       **{f'{p}_error': e for p, e in errors.items()}}
                if 'fp32' in precisions:
                    fast = min(('torch channels_last', 'onnxruntime'), key=med.get)
                    name_in = pair_session.get_inputs()[0].name
                    row.update(eager=med['eager'], fast=med[fast], fast_path=fast, pair=in_flight(
                        lambda xn=xn, s=pair_session, n=name_in: s.run(None, {n: xn}), runs))
                rows.append(row)
                print(f'{name} {size}: ' + ', '.join(f'{k} {v * 1e3:.0f} ms' for k, v in med.items())
                      + f' ({load_average()})', flush=True)
        for p, again in conv_peaks(runs, args.threads, tmp, precisions, peak_map).items():
            peaks[p] = max(peaks[p], again)
    unit = {'fp32': 'GFLOP/s', 'bf16': 'GFLOP/s', 'int8': 'GOP/s'}
    lines.append(f'{load_average()} at end; conv peaks (dense 3x3 conv 64->64 on {peak_map[1]}x{peak_map[2]}): '
                 + ', '.join(f'{p} {v:.1f} {unit[p]} ({path})' for p, (v, path) in peaks.items()))
    report = '\n'.join(lines + [''] + table_of(rows, peaks, precisions))
    publish(report, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
