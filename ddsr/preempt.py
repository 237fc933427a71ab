"""Preemption-safe training: SIGTERM / SIGUSR1 stop ``basicsr train`` at an iteration boundary with a saved state.

Cluster schedulers send SIGTERM (SLURM: also SIGUSR1 with ``--signal``) some time before they kill a job. While the
command line runs BasicSR's training pipeline (:func:`handling`), those signals only set a flag. The model's
``update_learning_rate`` (called by BasicSR's loop at the start of every iteration) checks it first: when set, the
previous iteration N is complete (its periodic save, logging and validation included), and nothing of iteration
N+1 has changed the model yet. Then ``model.save(epoch, N)`` writes ``models/net_*_N.pth`` and
``training_states/N.state`` (atomically, like every BasicSR save under ddsr), the log says where, and
:class:`Preempted` ends the run; the command line exits with :data:`EXIT_PREEMPTED`. ``--auto_resume`` then picks
that state: iteration, epoch, LR schedulers, optimizer moments, network and EMA weights exactly as they were.

Distributed runs: every rank all-reduces (max) its flag at every iteration, so all ranks stop at the same
iteration even when only some got the signal; rank 0 writes (BasicSR's saves are ``master_only``) and all ranks
wait for it before exiting. A signal before the first iteration of the run stops it there, with nothing new to
save; one after the last iteration is ignored (the run is finishing anyway).
"""
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from os import path as osp

from ddsr.guards import RunState

EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): "temporary failure, the user is invited to retry"
SIGNALS = ('SIGTERM', 'SIGUSR1')
_REQUEST: dict[str, str | None] = {'signal': None}


class Preempted(BaseException):  # noqa: N818  (like KeyboardInterrupt: not an Exception that code may swallow)
    """Training stopped on a preemption signal after saving the state of ``iteration`` (``state``, or None when
    this run had not completed an iteration)."""

    def __init__(self, signame: str, iteration: int, state: str | None, rank: int = 0) -> None:
        self.signame, self.iteration, self.state, self.rank = signame, iteration, state, rank
        super().__init__(self.message())

    def message(self) -> str:
        if self.state:
            return (f'preempted ({self.signame}) after iteration {self.iteration}: training state saved to '
                    f'{self.state} (+ models/net_*_{self.iteration}.pth); continue with --auto_resume')
        if self.rank != 0:
            return f'preempted ({self.signame}) after iteration {self.iteration} (rank {self.rank}; rank 0 saved)'
        return (f'preempted ({self.signame}) before this run completed an iteration (at iteration '
                f'{self.iteration}): nothing new to save; continue with --auto_resume')


def _on_signal(signum, frame) -> None:
    name = signal.Signals(signum).name
    if _REQUEST['signal'] is None:
        os.write(2, f'{name} received: training stops after the current iteration and saves its state\n'.encode())
    _REQUEST['signal'] = name


@contextlib.contextmanager
def handling(enabled: bool = True) -> Iterator[None]:
    """While inside: SIGTERM/SIGUSR1 request a stop (previous handlers restored on exit)."""
    _REQUEST['signal'] = None
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _REQUEST['signal'] = None


def _stop_requested(model) -> str | None:
    """The signal name when this process (or, distributed, any rank) was asked to stop."""
    name = _REQUEST['signal']
    if not model.opt.get('dist'):
        return name
    import torch
    import torch.distributed as dist
    flag = torch.tensor([0 if name is None else 1 + SIGNALS.index(name)], device=model.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return SIGNALS[int(flag.item()) - 1] if int(flag.item()) else None


def install(model, run: RunState) -> None:
    """Make BasicSR's training loop stop ``model`` at the next iteration boundary after a requested stop
    (``run.epoch``: the epoch BasicSR's loop is in, recorded by :func:`ddsr.guards.installed`)."""
    if getattr(model, '_ddsr_preempt', False):
        return
    model._ddsr_preempt = True
    original = model.update_learning_rate
    first: dict[str, int] = {}

    def update_learning_rate(current_iter, *args, **kwargs):
        first.setdefault('iter', current_iter)
        signame = _stop_requested(model)
        if signame is not None:
            _stop(model, signame, current_iter - 1, trained=current_iter > first['iter'], epoch=run.epoch)
        return original(current_iter, *args, **kwargs)

    model.update_learning_rate = update_learning_rate


def _stop(model, signame: str, done: int, trained: bool, epoch: int) -> None:
    from basicsr.utils import get_root_logger
    rank = model.opt.get('rank', 0)
    state = None
    if trained:
        model.save(epoch, done)  # rank 0 writes (master_only); atomic (ddsr.compat)
        state = osp.join(model.opt['path']['training_states'], f'{done}.state')
    if model.opt.get('dist'):
        import torch.distributed as dist
        dist.barrier()  # no rank exits (and gets the others killed by the launcher) before rank 0 has written
    stop = Preempted(signame, done, state if rank == 0 else None, rank)
    get_root_logger().info(stop.message())
    raise stop


@contextlib.contextmanager
def stopping_models(run: RunState) -> Iterator[None]:
    """For one training run: models built by BasicSR's train pipeline get :func:`install` (BasicSR's
    ``build_model`` is restored afterwards)."""
    import basicsr.train
    build = basicsr.train.build_model

    def build_model(opt):
        model = build(opt)
        install(model, run)
        return model

    basicsr.train.build_model = build_model
    try:
        yield
    finally:
        basicsr.train.build_model = build
