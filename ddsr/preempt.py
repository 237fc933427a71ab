"""Preemption-safe training: SIGTERM / SIGUSR1 / Ctrl-C stop ``basicsr train`` at an iteration boundary, saved.

Cluster schedulers send SIGTERM (SLURM: also SIGUSR1 with ``--signal``) some time before they kill a job; a user
presses Ctrl-C (SIGINT). While the command line runs BasicSR's training pipeline (:class:`Preemption`, a hook of
:mod:`ddsr.run_seam`), those signals only set a flag. It is checked at the start of every iteration, before the
model's ``update_learning_rate`` (the first thing BasicSR's loop calls in an iteration): when set, the previous
iteration N is complete (its periodic save, logging and validation included), and nothing of iteration N+1 has
changed the model yet. Then ``model.save(epoch, N)`` writes ``models/net_*_N.pth`` and ``training_states/N.state``
(atomically, like every BasicSR save under ddsr), the log says where, and :class:`Preempted` ends the run; the
command line exits with :data:`EXIT_PREEMPTED` (SIGTERM, SIGUSR1) or :data:`EXIT_INTERRUPTED` (SIGINT).
``--auto_resume`` then picks that state: iteration, epoch, LR schedulers, optimizer moments, network and EMA
weights exactly as they were. A second Ctrl-C while the first is pending aborts at once (``KeyboardInterrupt``,
exit 130, nothing more saved). Only the process that installed the handlers acts: DataLoader workers forked from
it inherit the handler and ignore the signal (the main process stops them).

With ``--auto_resume`` and nothing to resume, BasicSR starts at iteration 0 and renames an existing run folder to
``<name>_archived_<time>``; :class:`Preemption` says so in one warning line (console and log).

Distributed runs: every rank all-reduces (max) its flag at every iteration, so all ranks stop at the same
iteration even when only some got the signal; rank 0 writes (BasicSR's saves are ``master_only``) and all ranks
wait for it before exiting. A signal before the first iteration of the run stops it there, with nothing new to
save; one after the last iteration is ignored (the run is finishing anyway).
"""
import glob
import os
import signal
import threading
from os import path as osp

from ddsr.run_state import RunHook, RunState

EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): "temporary failure, the user is invited to retry"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
SIGNALS = ('SIGTERM', 'SIGUSR1', 'SIGINT')
_REQUEST: dict[str, str | None] = {'signal': None}  # the first stop signal of the run
_OWNER = {'pid': 0}  # the process whose run handles the signals


class Preempted(BaseException):  # noqa: N818  (like KeyboardInterrupt: not an Exception that code may swallow)
    """Training stopped on a preemption signal after saving the state of ``iteration`` (``state``, or None when
    this run had not completed an iteration)."""

    def __init__(self, signame: str, iteration: int, state: str | None, rank: int = 0) -> None:
        self.signame, self.iteration, self.state, self.rank = signame, iteration, state, rank
        super().__init__(self.message())

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.signame == 'SIGINT' else EXIT_PREEMPTED

    def message(self) -> str:
        what = 'interrupted' if self.signame == 'SIGINT' else 'preempted'
        if self.state:
            return (f'{what} ({self.signame}) after iteration {self.iteration}: training state saved to '
                    f'{self.state} (+ models/net_*_{self.iteration}.pth); continue with --auto_resume')
        if self.rank != 0:
            return f'{what} ({self.signame}) after iteration {self.iteration} (rank {self.rank}; rank 0 saved)'
        return (f'{what} ({self.signame}) before this run completed an iteration (at iteration '
                f'{self.iteration}): nothing new to save; continue with --auto_resume')


def _on_signal(signum, frame) -> None:
    if os.getpid() != _OWNER['pid']:  # a DataLoader worker forked from the run: the main process stops it
        return
    name = signal.Signals(signum).name
    if name == 'SIGINT' and _REQUEST['signal'] is not None:
        raise KeyboardInterrupt  # a second Ctrl-C: abort at once
    if _REQUEST['signal'] is None:
        again = '; Ctrl-C again aborts at once without saving' if name == 'SIGINT' else ''
        os.write(2, f'{name} received: training stops after the current iteration and saves its state{again}\n'
                 .encode())
        _REQUEST['signal'] = name


class Preemption(RunHook):
    """The preemption behaviour of one training run: signal handlers while it runs, the stop check at the start of
    every iteration."""

    def __init__(self) -> None:
        self.previous: dict = {}
        self.first_iter: int | None = None
        self.folder_existed = False

    def on_options(self, state: RunState, opt: dict) -> dict:
        self.folder_existed = osp.isdir((opt.get('path') or {}).get('experiments_root') or '')
        return opt

    def on_model(self, state: RunState, model) -> None:
        """After BasicSR looked for a state to resume (``--auto_resume`` sets ``path.resume_state`` when it found
        one, :mod:`ddsr.compat`) and set the run folder up (renaming an existing one): one line when it found none."""
        opt = model.opt
        if not opt.get('auto_resume') or opt['path'].get('resume_state') or state.rank != 0:
            return
        from basicsr.utils import get_root_logger
        root, existed = opt['path']['experiments_root'], self.folder_existed
        shown = osp.relpath(root) if not osp.relpath(root).startswith('..') else root
        archived = sorted(glob.glob(f'{glob.escape(root)}_archived_*'), key=osp.getmtime) if existed else []
        done = (f'the existing run folder (no training state in it) was renamed to {shown}{archived[-1][len(root):]}'
                if archived else 'no earlier run folder existed')
        get_root_logger().warning(f'--auto_resume: nothing to resume in {shown}/training_states; training starts '
                                  f'at iteration 0; {done}')

    def enter(self, state: RunState) -> None:
        _REQUEST['signal'], _OWNER['pid'] = None, os.getpid()
        if state.phase != 'train' or threading.current_thread() is not threading.main_thread():
            return
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None or (sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN):
                continue  # a run started with Ctrl-C ignored (nohup, a background job) keeps ignoring it
            self.previous[sig] = signal.signal(sig, _on_signal)

    def exit(self, state: RunState, success: bool) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()
        _REQUEST['signal'] = None

    def before_iteration(self, state: RunState, model, current_iter: int) -> None:
        if self.first_iter is None:
            self.first_iter = current_iter
        signame = _stop_requested(model)
        if signame is not None:
            _stop(model, signame, current_iter - 1, trained=current_iter > self.first_iter, epoch=state.epoch)


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
