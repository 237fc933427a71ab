"""DDistill-SR x4 on CPU: params, MACs and latency of the train, deploy and BN-folded deploy forms.

    python benchmarks/bench_ddistill.py [--size 256] [--runs 10] [--threads N]

MACs: ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linear layers and the dynamic branch's matrix
products; FLOPs / 2), for one 1x3xSIZExSIZE input. Latency: median wall time of ``--runs`` forwards under
``torch.inference_mode`` after 2 warm-up runs. All three forms hold the same (random, eval-mode) function.
"""
import argparse
import copy
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import ddsr  # noqa: F401  (registration)
from ddsr.archs.ddistill.ddistill_arch import DDistillSR


def macs(net: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(x)
    return counter.get_total_flops() // 2


def latency_ms(net: torch.nn.Module, x: torch.Tensor, runs: int) -> float:
    times = []
    with torch.inference_mode():
        for i in range(runs + 2):
            start = time.perf_counter()
            net(x)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=256, help='LR input height = width (default 256)')
    parser.add_argument('--runs', type=int, default=10, help='timed runs per form (default 10)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = DDistillSR(upscale=4).eval()
    deploy = copy.deepcopy(train)
    deploy.switch_to_deploy()
    folded = copy.deepcopy(deploy)
    folded.fold_dynamic_bn()
    x = torch.rand(1, 3, args.size, args.size)
    with torch.inference_mode():
        ref = train(x)
        diffs = [(net(x) - ref).abs().max().item() for net in (deploy, folded)]
    rows = []
    for name, net in (('train', train), ('deploy', deploy), ('deploy+fold_bn', folded)):
        rows.append((name, sum(p.numel() for p in net.parameters()), macs(net, x), latency_ms(net, x, args.runs)))
    base_ms = rows[0][3]
    print(f'DDistill-SR x4, input 1x3x{args.size}x{args.size}, CPU threads {torch.get_num_threads()}, '
          f'median of {args.runs} runs; max |diff| to train form: deploy {diffs[0]:.2e}, folded {diffs[1]:.2e}')
    print(f"| {'form':<15} | {'params':>10} | {'GMACs':>7} | {'latency ms':>10} | {'speed-up vs train':>17} |")
    print(f"|{'-' * 17}|{'-' * 12}|{'-' * 9}|{'-' * 12}|{'-' * 19}|")
    for name, params, n_macs, ms in rows:
        print(f'| {name:<15} | {params:>10,} | {n_macs / 1e9:>7.2f} | {ms:>10.1f} | {base_ms / ms:>16.2f}x |')
    print(f'deploy+fold_bn vs deploy: {rows[1][3] / rows[2][3]:.3f}x faster')


if __name__ == '__main__':
    main()
