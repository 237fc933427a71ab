"""DIPNet efficiency: train form vs deploy form vs a middle-width-pruned deploy form.

Params; MACs and activations (NTIRE ESR counting: conv MACs and conv output elements, forward hooks, at a
1x3x256x256 LR input); latency (median of ``--runs`` interleaved timed forwards under ``torch.inference_mode`` after
warm-up).

    python benchmarks/bench_dipnet.py [--scale 4] [--size 128] [--runs 10] [--prune-to 32] [--threads 1] [--device cpu]
"""
import argparse
import copy
import statistics
import time

import torch
from torch import nn

import ddsr  # noqa: F401  (compat + registration)
from ddsr.archs.dipnet.dipnet_arch import DIPNet
from ddsr.compress.dipnet_prune import prune_dipnet


def conv_counts(model: nn.Module, size: int = 256) -> dict[str, float]:
    """Conv MACs (``out.numel() * in/groups * kh * kw``), conv output elements and conv count for one forward."""
    totals = {'macs': 0, 'acts': 0, 'convs': 0}

    def hook(conv: nn.Conv2d, _, out: torch.Tensor) -> None:
        totals['macs'] += out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        totals['acts'] += out.numel()
        totals['convs'] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model(torch.rand(1, 3, size, size, device=next(model.parameters()).device))
    for handle in handles:
        handle.remove()
    return totals


def latencies_ms(models: list[nn.Module], size: int, runs: int, device: str) -> list[float]:
    """Median forward time (ms) of each model at a 1x3xSxS input; runs interleaved so load drift hits all alike."""
    x = torch.rand(1, 3, size, size, device=device)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for i in range(runs + 2):  # two warm-up rounds
            for model, model_times in zip(models, times, strict=False):
                if device.startswith('cuda'):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if device.startswith('cuda'):
                    torch.cuda.synchronize()
                if i >= 2:
                    model_times.append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--size', type=int, default=128, help='LR side for the latency runs')
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--prune-to', type=int, default=32, help='middle width of the pruned model')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads; 1 is stable on a shared machine, 0 keeps the torch default')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    train = DIPNet(upscale=args.scale, deploy=False).eval()
    deploy = copy.deepcopy(train)
    deploy.switch_to_deploy()
    pruned = prune_dipnet(deploy, args.prune_to)
    models = {'train form': train, 'deploy': deploy, f'pruned deploy (mid {args.prune_to})': pruned}

    for model in models.values():
        model.to(args.device)
    times = latencies_ms(list(models.values()), args.size, args.runs, args.device)
    rows = []
    for (name, model), ms in zip(models.items(), times, strict=False):
        counts = conv_counts(model)
        rows.append((name, sum(p.numel() for p in model.parameters()), counts['macs'] / 1e9, counts['acts'] / 1e6,
                     counts['convs'], ms))
    base = rows[1]
    print(f'DIPNet x{args.scale}; MACs/activations at 1x3x256x256, latency: median of {args.runs} on {args.device} '
          f'({torch.get_num_threads()} threads) at 1x3x{args.size}x{args.size}; ratios relative to deploy')
    print('| model | params | GMACs | activations (M) | convs | latency (ms) | params ratio | MACs ratio | '
          'latency ratio |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
    for name, params, macs, acts, convs, ms in rows:
        print(f'| {name} | {params:,} | {macs:.2f} | {acts:.2f} | {convs} | {ms:.1f} | {params / base[1]:.3f} | '
              f'{macs / base[2]:.3f} | {ms / base[5]:.3f} |')


if __name__ == '__main__':
    main()
