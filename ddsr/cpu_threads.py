"""CPU threading policy of ddsr's entry points: keep the idle speed and do not collapse when other processes run.

PyTorch's OpenMP runtime (libgomp in the PyPI wheels) lets a thread that waits at a barrier spin for
``GOMP_SPINCOUNT`` = 300,000 rounds (milliseconds) before it sleeps; onnxruntime's intra-op pool spins too. On a
busy machine the spinning thread burns the time slice that its descheduled sibling needs, and a 2-thread job fell
to 1-14% of its idle speed next to two other jobs (ddsr issue 28). Waiting passively (``OMP_WAIT_POLICY=PASSIVE``,
no spin) avoids the collapse but costs ~20% idle speed (every parallel region then wakes its threads through the
kernel). The policy, applied once by :func:`apply` before torch loads its OpenMP runtime:

- a short spin: ``GOMP_SPINCOUNT`` = :data:`GOMP_SPINCOUNT` (libgomp; read once, when the library loads, so it
  must be in the environment before ``import torch``), ``KMP_BLOCKTIME`` = :data:`KMP_BLOCKTIME` ms for Intel's
  or LLVM's OpenMP runtime (not measured here: no such build on the measuring machine);
- as many threads as CPUs this process may use (:func:`available_cpus`: its affinity mask and its cgroup CPU
  quota) where that is fewer than PyTorch's default (the physical cores in its affinity mask: it ignores quotas);
- onnxruntime sessions (:func:`configure_ort`): that thread count and no spinning
  (``session.intra_op.allow_spinning`` = 0).

What the user set wins: ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME`` in the
environment, a command's ``--threads``, a ``torch.set_num_threads`` call before :class:`ddsr.ImageUpscaler`.
``DDSR_THREADS=off`` turns the whole policy off (the runtimes' defaults, as before the policy). Torch-free at import.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

SWITCH = 'DDSR_THREADS'  # 'off' (or 0/false/no): the policy does nothing
# Chosen here from rough measurements (shared 2-core machine, DDistill-SR demo training step): 10,000 rounds kept
# the idle speed of the default 300,000 (3,000 and less lost speed like PASSIVE); the collapse next to other jobs is
# left to the thread count (Adapter): no spin count alone avoided it.
GOMP_SPINCOUNT = '10000'
KMP_BLOCKTIME = '1'  # ms; chosen by analogy with GOMP_SPINCOUNT (Intel's default is 200 ms), not measured here
SPIN_VARS = ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')
ORT_SPINNING = 'session.intra_op.allow_spinning'
INTERVAL_S = 1.0  # chosen here: contention is measured once a second (the monitor's own cost is ~0.1 ms a time)
CROWDED = 0.25  # chosen here: between near-idle (~0.1 of the runnable time waiting) and next to 2 jobs (~0.6)
ROOM = 0.75  # chosen here: at 1 thread, 0.75 idle CPU over an interval: another thread has room again
_state: dict[str, Any] = {}


def enabled() -> bool:
    """False when ``DDSR_THREADS`` is ``off`` (also ``0``, ``false``, ``no``)."""
    return os.environ.get(SWITCH, '').strip().lower() not in ('off', '0', 'false', 'no')


def cgroup_cpu_limit(root: str = '/sys/fs/cgroup') -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None if none."""
    try:
        quota, period = Path(root, 'cpu.max').read_text().split()[:2]
        return None if quota == 'max' else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path(root, 'cpu', 'cpu.cfs_quota_us').read_text())
        period_us = int(Path(root, 'cpu', 'cpu.cfs_period_us').read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, bounded by its cgroup quota (rounded up); at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def machine_cores() -> int:
    """Physical cores of the machine (PyTorch's default thread count is these, within the affinity mask)."""
    cores = set()
    for topo in Path('/sys/devices/system/cpu').glob('cpu[0-9]*/topology'):
        try:
            cores.add(((topo / 'physical_package_id').read_text().strip(), (topo / 'core_id').read_text().strip()))
        except OSError:
            continue
    return len(cores) or os.cpu_count() or 1


def openmp_runtime() -> str:
    """``gomp``, ``iomp`` or ``omp`` (LLVM): the OpenMP library shipped in torch's package (found without
    importing torch); ``gomp`` when none is (a distribution's torch links the system's libgomp)."""
    spec = importlib.util.find_spec('torch')
    for folder in (spec.submodule_search_locations or []) if spec else []:
        names = [p.name for p in Path(folder, 'lib').glob('lib*omp*')]
        for prefix, runtime in (('libgomp', 'gomp'), ('libiomp', 'iomp'), ('libomp', 'omp')):
            if any(name.startswith(prefix) for name in names):
                return runtime
    return 'gomp'


def apply(threads: int | None = None, adapt: bool = True) -> dict[str, Any]:
    """Apply the policy to this process (once; later calls return the first call's record). ``threads``: the
    command's ``--threads`` (then the thread count is the command's); ``adapt``: start an :class:`Adapter` when the
    policy chooses the count (more than 1 CPU, torch not yet imported). Returns what was done: ``env`` (the variables
    set), ``threads`` (the count set, or None), ``late`` (torch was already imported: the spin limit could not be
    applied in this process), ``off`` (the switch)."""
    if _state:
        return _state
    _state.update(off=not enabled(), env={}, threads=None, late='torch' in sys.modules)
    if _state['off']:
        return _state
    if not any(var in os.environ for var in SPIN_VARS) and not _state['late']:
        var, value = ('GOMP_SPINCOUNT', GOMP_SPINCOUNT) if openmp_runtime() == 'gomp' else \
            ('KMP_BLOCKTIME', KMP_BLOCKTIME)
        os.environ[var] = _state['env'][var] = value
    if threads or 'OMP_NUM_THREADS' in os.environ:
        return _state
    cpus = available_cpus()
    torch_default = min(machine_cores(), len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 1 << 16)
    if not _state['late']:
        if cpus < torch_default:  # PyTorch reads OMP_NUM_THREADS when it starts its thread pool
            os.environ['OMP_NUM_THREADS'] = _state['env']['OMP_NUM_THREADS'] = str(cpus)
            _state['threads'] = cpus
        if adapt and cpus > 1 and os.path.isfile('/proc/self/schedstat'):  # Linux: the monitor's measure
            _state['adapter'] = Adapter(cpus)
        return _state
    import torch  # already imported: lower its count only from its default (a user's own count wins)
    if torch.get_num_threads() == torch_default and cpus < torch_default:
        torch.set_num_threads(cpus)
        _state['threads'] = cpus
    return _state


def _runqueue_ns() -> tuple[int, int]:
    """Nanoseconds this process's threads ran and waited runnable for a CPU (``/proc/self/task/*/schedstat``)."""
    run = wait = 0
    for task in os.scandir('/proc/self/task'):
        try:
            fields = Path(task.path, 'schedstat').read_text().split()
        except OSError:  # the thread ended
            continue
        run, wait = run + int(fields[0]), wait + int(fields[1])
    return run, wait


def _idle_cpu_s() -> float:
    """Idle CPU-seconds of the whole machine since boot (``/proc/stat``: idle + iowait)."""
    fields = Path('/proc/stat').read_text().split('\n', 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf('SC_CLK_TCK')


class Adapter:
    """Adapts PyTorch's thread count to contention, measured once per :data:`INTERVAL_S` by a daemon thread.

    With ``full`` threads, a share of the threads' runnable time spent waiting for a CPU above :data:`CROWDED`
    means other processes take the CPUs: the threads then wait at every barrier for a descheduled sibling, and
    1 thread runs faster (issue 28: 45% of the idle speed next to other jobs, 2 spinning threads 1-27%). At 1
    thread, more than :data:`ROOM` idle CPUs on the machine bring ``full`` back. ``torch.set_num_threads`` acts on
    the calling thread, so a change is made by a global module forward pre-hook in the thread that runs the
    network next; the hook removes itself once it has made the change (no cost while the count stays)."""

    def __init__(self, full: int) -> None:
        self.full = self.desired = self.applied = full
        self.handle: Any = None  # the pending hook's handle
        self.changes = 0
        threading.Thread(target=self._watch, name='ddsr-threads', daemon=True).start()

    def _hook(self, module: Any, args: Any) -> None:
        import torch
        self.applied = self.desired
        torch.set_num_threads(self.applied)
        self.changes += 1
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.remove()

    def _watch(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):  # /proc unreadable: the count stays
            self._measure()

    def _measure(self) -> None:
        last = (*_runqueue_ns(), _idle_cpu_s(), time.monotonic())
        while True:
            time.sleep(INTERVAL_S)
            now = (*_runqueue_ns(), _idle_cpu_s(), time.monotonic())
            run, wait, idle, wall = (b - a for a, b in zip(last, now, strict=True))
            last = now
            self.desired = decide(self.desired, self.full, run, wait, idle, wall)
            torch: Any = sys.modules.get('torch')
            if self.desired != self.applied and self.handle is None and hasattr(torch, 'nn'):
                self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)


def decide(current: int, full: int, run_ns: float, wait_ns: float, idle_cpu_s: float, wall_s: float) -> int:
    """The thread count after an interval of ``wall_s`` in which this process's threads ran ``run_ns`` and waited
    for a CPU ``wait_ns`` while the machine had ``idle_cpu_s`` idle CPU-seconds (see :class:`Adapter`)."""
    busy = run_ns + wait_ns > 0.2 * wall_s * 1e9  # computing, not waiting for input
    if current > 1 and busy and wait_ns > CROWDED * (run_ns + wait_ns):
        return 1
    if current == 1 and idle_cpu_s > ROOM * wall_s:
        return full
    return current


def _env_threads() -> int | None:
    """The first count of ``OMP_NUM_THREADS`` (e.g. ``4`` of ``4,2``), None if unset or not a number."""
    head = os.environ.get('OMP_NUM_THREADS', '').split(',')[0].strip()
    return int(head) if head.isdigit() and int(head) > 0 else None


def configure_ort(options: Any, threads: int | None = None) -> None:
    """Set an onnxruntime ``SessionOptions``: ``threads`` intra-op threads if given; under the policy else the
    available CPUs (unless ``OMP_NUM_THREADS`` is set: then that) and no spinning."""
    if threads:
        options.intra_op_num_threads = threads
    if not enabled():
        return
    if not threads:
        options.intra_op_num_threads = _env_threads() or available_cpus()
    options.add_session_config_entry(ORT_SPINNING, '0')
