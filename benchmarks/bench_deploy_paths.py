"""CPU latency of the inference paths of each deploy network, as ratios to plain eager (``torch.no_grad``).

Paths: ``eager`` (no_grad, NCHW), ``inference_mode``, ``inference_mode + channels_last``, ``onnxruntime``
(exported by ``ddsr.deploy.export``), optionally ``torch.compile`` (``--compile``; slow to build on CPU).
Networks: DDistillSR (deploy; also with the dynamic BNs folded), DIPNet (deploy), EDSRmini, SwinIRmini, at x4,
official weights when present (timings do not depend on the values), a natural LR image (scikit-image photo).
Each cell: median of ``--runs`` timed forwards after one warm-up, paths interleaved per run (the machine is shared
and noisy), with ``--threads`` torch/onnxruntime intra-op threads.

    python benchmarks/bench_deploy_paths.py [--sizes 256x256 320x180] [--runs 5] [--threads 1 2] [--compile]
"""
import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from pretrained import pretrained_dir
from torch import nn

import ddsr  # noqa: F401  (compat + registration: before anything imports basicsr)
from ddsr.checkpoint import load_state
from ddsr.deploy.backends import onnx_upscaler, to_deploy
from ddsr.deploy.export import export_onnx, natural_image
from ddsr.errors import DDSRError

from basicsr.utils.registry import ARCH_REGISTRY  # isort: skip  (needs the compat patches of ddsr)

PRETRAINED = pretrained_dir()


def networks() -> dict[str, nn.Module]:
    nets = {}
    ddistill = ARCH_REGISTRY.get('DDistillSR')(deploy=True)
    if (PRETRAINED / 'DDistill-SRx4_inference.pth').is_file():
        ddistill.load_state_dict(load_state(PRETRAINED / 'DDistill-SRx4_inference.pth'))
    nets['DDistillSR'] = to_deploy(ddistill)
    folded = ARCH_REGISTRY.get('DDistillSR')(deploy=True)
    folded.load_state_dict(ddistill.state_dict())
    to_deploy(folded).fold_dynamic_bn()
    nets['DDistillSR fold_bn'] = folded
    dipnet = ARCH_REGISTRY.get('DIPNet')()
    if (PRETRAINED / 'DIPNet_x4.pth').is_file():
        dipnet.load_state_dict(load_state(PRETRAINED / 'DIPNet_x4.pth'))
    nets['DIPNet'] = to_deploy(dipnet)
    nets['EDSRmini'] = ARCH_REGISTRY.get('EDSRmini')(upscale=4).eval()
    nets['SwinIRmini'] = ARCH_REGISTRY.get('SwinIRmini')(upscale=4).eval()
    return nets


def paths(net: nn.Module, x: torch.Tensor, tmp: Path, threads: int, compile_: bool) -> dict[str, Callable | None]:
    """Callables running one forward of ``x`` per path (None: the path does not apply / failed)."""

    def eager():
        with torch.no_grad():
            return net(x)

    def inference():
        with torch.inference_mode():
            return net(x)

    x_cl = x.contiguous(memory_format=torch.channels_last)

    def channels_last():
        net.to(memory_format=torch.channels_last)
        try:
            with torch.inference_mode():
                return net(x_cl)
        finally:
            net.to(memory_format=torch.contiguous_format)

    out = {'eager': eager, 'inference_mode': inference, 'inference_mode+channels_last': channels_last}
    try:
        onnx_path = tmp / f'{id(net)}.onnx'
        if not onnx_path.is_file():
            export_onnx(net, onnx_path, size=32)
        session = onnx_upscaler(str(onnx_path), threads)
        out['onnxruntime'] = lambda: session(x)  # pads to the model's constraints (Swin: window multiples)
    except DDSRError:
        out['onnxruntime'] = None
    if compile_:
        try:
            compiled = torch.compile(net)
            with torch.inference_mode():
                compiled(x)

            def run_compiled():
                with torch.inference_mode():
                    return compiled(x)

            out['torch.compile'] = run_compiled
        except Exception:  # noqa: BLE001  (report the path as unavailable, whatever the backend raised)
            out['torch.compile'] = None
    return out


def bench(fns: dict[str, Callable | None], runs: int) -> dict[str, float | None]:
    """Median ms per path; paths interleaved within each run."""
    live = {k: f for k, f in fns.items() if f is not None}
    for fn in live.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in live}
    for _ in range(runs):
        for key, fn in live.items():
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(times[k]) if k in times else None for k in fns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['256x256'], help='LR sizes WxH')
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--models', nargs='+', default=None, help='subset of the network names')
    parser.add_argument('--compile', action='store_true', help='also time torch.compile (inductor)')
    args = parser.parse_args()
    nets = networks()
    nets = {k: v for k, v in nets.items() if args.models is None or k in args.models}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            w, h = map(int, size.split('x'))
            x = F.interpolate(natural_image(256), size=(h, w), mode='bicubic', align_corners=False).clamp(0, 1)
            for threads in args.threads:
                torch.set_num_threads(threads)
                print(f'\nLR {w}x{h}, {threads} thread(s), median of {args.runs} (ms; ratio to eager)')
                header = None
                for name, net in nets.items():
                    res = bench(paths(net, x, Path(tmp), threads, args.compile), args.runs)
                    if header is None:
                        header = list(res)
                        print(f"| network | {' | '.join(header)} |")
                        print('|---' * (len(header) + 1) + '|')
                    base = res['eager']
                    cells = [f'{res[k]:.0f} ({res[k] / base:.2f}x)' if res[k] else 'n/a' for k in header]
                    print(f"| {name} | {' | '.join(cells)} |", flush=True)


if __name__ == '__main__':
    main()
