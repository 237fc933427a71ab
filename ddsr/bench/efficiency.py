"""Efficiency of an SR network: params, MACs, activations, convs, runtime, peak memory (NTIRE ESR protocol).

- params: number of parameter elements (buffers such as BN running stats excluded).
- MACs ("FLOPs" in the SR literature): multiply-accumulates of conv / transposed conv (bias excluded), linear
  (addmm), mm, bmm, matmul, baddbmm and scaled-dot-product attention, counted by ``torch.utils.flop_counter``
  (its FLOPs / 2). Element-wise ops, norms, activations, pooling and interpolation are not counted.
  This equals the NTIRE conv-hook count for CNNs and adds the attention matmuls for transformers.
- activations: sum of the output elements of every 2-D convolution (conv or transposed conv, as a module or
  functional call, seen at the aten level) in one forward (NTIRE ESR utilities count Conv2d outputs).
- convs: number of those 2-D convolution calls in one forward.
- runtime: median and inter-quartile range of ``runs`` timed forwards after ``warmup`` untimed ones
  (CUDA events on GPU, ``time.perf_counter`` on CPU), fp32, no grad.
- memory: CUDA ``max_memory_allocated`` during one forward (weights + input included, NTIRE protocol);
  on CPU the rise of the process' peak resident set size (``VmHWM`` after resetting it via
  ``/proc/self/clear_refs``) over the resident size before the forward, Linux only (None elsewhere).
MACs, activations and convs are counted on the ``meta`` device (shapes only, no arithmetic) when the network
allows it, else by a real forward.

:func:`benchmark` says on stderr what it measures before each step (a large network on a loaded CPU takes minutes)
and shows the timed runs through :mod:`ddsr.progress` (plain lines off a terminal); ``log=None`` silences it.
"""
import copy
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ddsr.archs.capabilities import capabilities_of
from ddsr.archs.reparam import switch_to_deploy
from ddsr.progress import progress

CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


@dataclass
class Efficiency:
    """One row of the efficiency table (one network in one form)."""
    name: str
    form: str
    params: int
    macs: int
    activations: int
    convs: int
    input_size: tuple[int, int]
    device: str
    runtime_ms: float | None = None
    runtime_iqr_ms: float | None = None
    runs: int = 0
    memory_mb: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        row = asdict(self)
        extra = row.pop('extra')
        row['input_size'] = 'x'.join(map(str, self.input_size))
        return {**row, **extra}


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


class _ConvOutputs(TorchDispatchMode):
    """Counts 2-D convolution calls and their output elements at the aten level (module or functional convs)."""

    def __init__(self) -> None:
        super().__init__()
        self.activations = 0
        self.convs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._overloadpacket in (torch.ops.aten.convolution, torch.ops.aten._convolution) and out.dim() == 4:
            self.activations += out.numel()
            self.convs += 1
        return out


def _count(net: nn.Module, x: torch.Tensor) -> tuple[int, int, int]:
    with torch.no_grad(), FlopCounterMode(display=False) as flops, _ConvOutputs() as convs:
        net(x)
    return flops.get_total_flops() // 2, convs.activations, convs.convs


def count_macs_activations(net: nn.Module, input_size: tuple[int, int], in_ch: int = 3) -> tuple[int, int, int]:
    """(MACs, activations, convs) of one forward on a ``1 x in_ch x H x W`` input (see module docstring)."""
    net = net.eval()
    try:
        meta_net = copy.deepcopy(net).to('meta')
        return _count(meta_net, torch.empty(1, in_ch, *input_size, device='meta'))
    except Exception:  # noqa: B902  (ops without meta support: a real forward raises the real error, if any)
        device = next(net.parameters()).device
        return _count(net, torch.rand(1, in_ch, *input_size, device=device))


def _sync_timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    if device.type == 'cuda':
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)
    else:
        def timed(fn):
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
    return timed


def measure_runtime(net: nn.Module, x: torch.Tensor, runs: int = 10, warmup: int = 2,
                    desc: str | None = None) -> tuple[float, float]:
    """(median, inter-quartile range) in ms of ``runs`` forwards after ``warmup`` untimed ones; with ``desc``, a
    progress display counts the forwards (updated between them, outside the timed region)."""
    timed = _sync_timer(x.device)
    times = []
    with torch.no_grad(), progress(warmup + runs, desc or '', unit='forward', every=15.0,
                                   disable=desc is None) as bar:
        for _ in range(warmup):
            net(x)
            bar.update(1)
        for _ in range(runs):
            times.append(timed(lambda: net(x)))
            bar.update(1)
    times.sort()
    if len(times) < 2:
        return times[0], 0.0
    quartiles = statistics.quantiles(times, n=4, method='inclusive')
    return statistics.median(times), quartiles[2] - quartiles[0]


def _proc_status_kb(field_name: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field_name + ':'):
                return int(line.split()[1])
    raise OSError(f'{field_name} not in /proc/self/status')


def measure_memory(net: nn.Module, x: torch.Tensor) -> float | None:
    """Peak memory in MB of one forward: CUDA max allocated, or the CPU peak-RSS rise (module docstring)."""
    with torch.no_grad():
        if x.device.type == 'cuda':
            torch.cuda.synchronize(x.device)
            torch.cuda.reset_peak_memory_stats(x.device)
            net(x)
            torch.cuda.synchronize(x.device)
            return torch.cuda.max_memory_allocated(x.device) / 2**20
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset VmHWM (peak RSS) to the current RSS
            before = _proc_status_kb('VmRSS')
            net(x)
            return (_proc_status_kb('VmHWM') - before) / 1024
        except OSError:
            return None


def forms(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """[('train', net), ('deploy', fused copy)] for a network with ``switch_to_deploy`` not yet deployed;
    [('deploy', net)] when it is already deployed; [('-', net)] for a network with a single form."""
    if not hasattr(net, 'switch_to_deploy'):
        return [('-', net)]
    if capabilities_of(net).is_deployed:
        return [('deploy', net)]
    deployed = copy.deepcopy(net).eval()
    switch_to_deploy(deployed)
    return [('train', net), ('deploy', deployed)]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def benchmark(net: nn.Module, name: str, form: str = '-', input_size: tuple[int, int] = (256, 256),
              count_size: tuple[int, int] = (256, 256), device: str = 'cpu', runs: int = 10, warmup: int = 2,
              memory: bool = True, log: Callable[[str], None] | None = _stderr) -> Efficiency:
    """Measure one network. MACs/activations at ``count_size`` (NTIRE: 256x256 LR), runtime/memory at
    ``input_size``; ``runs=0`` skips runtime, ``memory=False`` skips memory. ``log`` gets one line before each
    step saying what it measures (None: silent, no progress display)."""
    dev = torch.device(device)
    net = net.eval().to(dev)
    in_ch = next(m for m in net.modules() if isinstance(m, CONV_TYPES)).in_channels
    count_hw, input_hw = (int(count_size[0]), int(count_size[1])), (int(input_size[0]), int(input_size[1]))
    label = name if form == '-' else f'{name} ({form})'
    say = log or (lambda text: None)
    say(f'{label}: counting MACs, activations and convs of one forward at {count_hw[0]}x{count_hw[1]}')
    macs, acts, convs = count_macs_activations(net, count_hw, in_ch)
    row = Efficiency(name=name, form=form, params=count_params(net), macs=macs, activations=acts, convs=convs,
                     input_size=input_hw, device=str(dev))
    x = torch.rand(1, in_ch, *input_size, device=dev)
    if memory:
        say(f'{label}: peak memory of one forward at {input_hw[0]}x{input_hw[1]} on {dev}')
        row.memory_mb = measure_memory(net, x)
    if runs > 0:
        say(f'{label}: runtime, {warmup} warm-up + {runs} timed forwards at {input_hw[0]}x{input_hw[1]} on {dev}')
        row.runtime_ms, row.runtime_iqr_ms = measure_runtime(net, x, runs, warmup,
                                                             desc=f'{label} runtime' if log else None)
        row.runs = runs
    return row


def benchmark_forms(net: nn.Module, name: str, **kwargs) -> list[Efficiency]:
    """:func:`benchmark` for every form of ``net`` (train and deploy when it has both)."""
    return [benchmark(form_net, name, form, **kwargs) for form, form_net in forms(net)]
