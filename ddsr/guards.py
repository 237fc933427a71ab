"""Guards of a ``basicsr train|test`` run started by ddsr's command line, installed for that run only.

1. NaN/Inf guard: every model built by the run's ``basicsr train`` stops at the first non-finite loss or
   gradient, after saving the last good training state (see :func:`install_nonfinite_guard`).
2. Dataset samples that cannot be loaded are named by :mod:`ddsr.sample_errors` (no dataset class is changed).

The state of a run (its stage: set-up or training, and the epoch BasicSR's loop is in) is a :class:`RunState`
owned by the command line; :func:`installed` wires it into BasicSR's pipeline for the duration of the run and
puts BasicSR's functions back afterwards.
"""
import contextlib
import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from os import path as osp

import torch

from ddsr.compat import find_resume_state
from ddsr.errors import NonFiniteLossError


@dataclass
class RunState:
    """Where a ``basicsr train|test`` run is: ``stage`` is 'setup' while BasicSR builds datasets and models from the
    options, 'training' from the first ``optimize_parameters`` on (the CLI reports set-up failures as bad options);
    ``epoch`` is the epoch BasicSR's train loop is in (recorded by ``EnlargedSampler.set_epoch``)."""
    stage: str | None = None
    epoch: int = 0


class _NonFiniteStep(Exception):
    """Raised inside ``optimizer.step`` (before it changes anything) when a gradient is NaN/Inf."""


def _grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads, float('inf')))).all())


def _is_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    try:
        return bool(abs(float(value)) < float('inf'))  # False for nan and inf
    except (TypeError, ValueError):
        return True


def install_nonfinite_guard(model, state: RunState) -> None:
    """Stop training at the first NaN/Inf loss or gradient of ``model`` (any BasicSR model), saving a state first.

    How it works (nothing here changes a finite run):

    - every ``optimizer.step`` of ``model.optimizers`` first checks that all gradients are finite; if not it
      raises before touching the weights, the optimizer moments or the EMA (which updates after the step);
    - ``update_learning_rate`` snapshots the schedulers (and the optimizers' lr) before stepping them, so they
      can be put back to where iteration N-1 left them;
    - after ``optimize_parameters`` the logged losses (``log_dict``) are checked too.

    Which state is saved: when the gradients of iteration N are non-finite, the step is refused, the schedulers
    are restored, and ``model.save(epoch, N - 1)`` writes ``models/net_*_{N-1}.pth`` and
    ``training_states/{N-1}.state``: exactly the state a periodic save at iteration N-1 would have written (the
    last good one). When only a logged loss is non-finite (the weights were stepped with finite gradients and are
    still finite), the state of iteration N is saved; if the weights are no longer finite, nothing is saved and
    the previous periodic state is the last good one. Then :class:`ddsr.errors.NonFiniteLossError` names the
    iteration and the saved state; the command line prints it and exits with code 2.

    How to resume: ``basicsr train -opt X.yml --auto_resume`` picks the newest state, i.e. the last good one.
    Without a change the run will most likely diverge again at the same point: lower ``train.optim_g.lr``
    (or add warm-up / gradient clipping in the model), check the data, then resume. A model with several
    optimizers (GANs) that fails at its second optimizer has already stepped the first network at iteration N.
    """
    if getattr(model, '_ddsr_nonfinite_guard', False):
        return
    model._ddsr_nonfinite_guard = True
    snapshot = {}

    original_update_lr = model.update_learning_rate
    original_optimize = model.optimize_parameters

    def update_learning_rate(*args, **kwargs):
        snapshot['schedulers'] = [copy.deepcopy(s.state_dict()) for s in model.schedulers]
        snapshot['lrs'] = [[group['lr'] for group in o.param_groups] for o in model.optimizers]
        return original_update_lr(*args, **kwargs)

    def optimize_parameters(current_iter, *args, **kwargs):
        state.stage = 'training'
        for optimizer in getattr(model, 'optimizers', []):  # every call: models may rebuild their optimizers
            _guard_step(optimizer)
        try:
            original_optimize(current_iter, *args, **kwargs)
        except _NonFiniteStep:
            _stop_nonfinite(model, current_iter, snapshot, state, stepped=False)
        bad = {k: v for k, v in (getattr(model, 'log_dict', None) or {}).items() if not _is_finite(v)}
        if bad:
            _stop_nonfinite(model, current_iter, snapshot, state, stepped=True, losses=bad)

    model.update_learning_rate = update_learning_rate
    model.optimize_parameters = optimize_parameters


def _guard_step(optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer.step`` refuse to run on NaN/Inf gradients (raises :class:`_NonFiniteStep`); idempotent."""
    original_step = optimizer.step
    if getattr(original_step, '_ddsr_finite_guard', False):
        return

    @functools.wraps(original_step)  # keeps the LR scheduler's ``_wrapped_by_lr_sched`` mark
    def step(*args, **kwargs):
        if not _grads_finite(optimizer):
            raise _NonFiniteStep()
        return original_step(*args, **kwargs)

    step._ddsr_finite_guard = True  # type: ignore[attr-defined]
    optimizer.step = step  # type: ignore[method-assign]


def _stop_nonfinite(model, current_iter: int, snapshot: dict, state: RunState, stepped: bool,
                    losses: dict | None = None) -> None:
    from basicsr.utils import get_root_logger
    output = getattr(model, 'output', None)
    if losses:
        what = 'loss ' + ', '.join(f'{k}={float(v)}' for k, v in losses.items())
    else:
        bad_output = isinstance(output, torch.Tensor) and not bool(torch.isfinite(output).all())
        what = 'loss/gradient' + (' (the network output has NaN/Inf)' if bad_output else '')
    good = current_iter
    if not stepped:
        good = current_iter - 1
        for sched, saved in zip(model.schedulers, snapshot.get('schedulers', []), strict=False):
            sched.load_state_dict(saved)
        for optimizer, lrs in zip(model.optimizers, snapshot.get('lrs', []), strict=False):
            for group, lr in zip(optimizer.param_groups, lrs, strict=False):
                group['lr'] = lr
    else:
        nets = [net for net in vars(model).values() if isinstance(net, torch.nn.Module)]
        if not all(bool(torch.isfinite(p).all()) for net in nets for p in net.parameters()):
            good = 0
    states = model.opt['path'].get('training_states', 'training_states')
    if good >= 1:
        get_root_logger().info(f'Non-finite {what} at iteration {current_iter}: saving the state of iteration {good}.')
        model.save(state.epoch, good)
        saved = (f'saved the last good state, iteration {good}: {osp.join(states, f"{good}.state")} (+ models/net_*_'
                 f'{good}.pth); resume from it with --auto_resume after lowering the learning rate or checking the '
                 f'data')
    else:
        found = find_resume_state(states) if osp.isdir(states) else None
        saved = (f'no good state to save (the weights are not finite or nothing was trained yet); the last good one is '
                 f'{found} (--auto_resume uses it)' if found else 'no good state to save and no earlier state exists')
    raise NonFiniteLossError(f'non-finite {what} at iteration {current_iter}: training stopped; {saved}')


@contextlib.contextmanager
def installed(state: RunState) -> Iterator[RunState]:
    """Wire ``state`` and the guards into BasicSR's train/test pipelines for one run; restore BasicSR after it."""
    import basicsr.train
    from basicsr.data.data_sampler import EnlargedSampler
    saved = [(basicsr.train, 'build_model', basicsr.train.build_model),
             (EnlargedSampler, 'set_epoch', EnlargedSampler.set_epoch)]
    build_model, set_epoch = basicsr.train.build_model, EnlargedSampler.set_epoch

    def build_guarded_model(opt):
        model = build_model(opt)
        if opt.get('is_train'):
            install_nonfinite_guard(model, state)
        return model

    def record_epoch(sampler, epoch):
        state.epoch = epoch
        return set_epoch(sampler, epoch)

    basicsr.train.build_model = build_guarded_model
    EnlargedSampler.set_epoch = record_epoch
    try:
        yield state
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
