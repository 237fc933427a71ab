"""The NaN/Inf guard of a ``basicsr train`` run started by ddsr's command line (:class:`NonFiniteGuard`).

The run's model stops at the first non-finite loss or gradient, after saving the last good training state; a
validation whose network output is NaN/Inf on some images is reported (one warning naming them). The guard is a
:class:`ddsr.run_state.RunHook`: :mod:`ddsr.run_seam` plugs it into BasicSR's loop for one run only.
"""
import copy
import functools
from os import path as osp

import torch

from ddsr.compat import find_resume_state
from ddsr.errors import NonFiniteLossError
from ddsr.run_state import RunHook, RunState


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


class NonFiniteGuard(RunHook):
    """Stop training at the first NaN/Inf loss or gradient of the run's model (any BasicSR model), saving a state
    first.

    How it works (nothing here changes a finite run; :mod:`ddsr.run_seam` calls the events):

    - before every ``optimize_parameters``, each ``optimizer.step`` of ``model.optimizers`` gets a check that all
      gradients are finite (idempotent, every call: models may rebuild their optimizers); if not it raises before
      touching the weights, the optimizer moments or the EMA (which updates after the step);
    - at the start of every iteration (before ``update_learning_rate``) the schedulers (and the optimizers' lr)
      are snapshot, so they can be put back to where iteration N-1 left them;
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

    Validation: finite weights can still overflow on some inputs (a network whose activations grow with its input,
    e.g. DDistill-SR's dynamic branches early in training: the DDistill-SR demo once ended at 600 iterations with
    NaN on one of its two validation photos). BasicSR writes NaN pixels as 0 and scores the black image without a
    word; the guard checks ``model.output`` after each ``model.test()`` (an instance wrapper) and, after the
    validation, logs one warning naming the images (by their order in the val set; the short console shows it).
    Training goes on.
    """

    def __init__(self) -> None:
        self.snapshot: dict = {}
        self.tested = 0  # model.test() calls since the last optimize_parameters
        self.nonfinite: list[int] = []  # which of those calls gave a non-finite output (0-based)

    def on_model(self, state: RunState, model) -> None:
        test = getattr(model, 'test', None)
        if test is None:
            return

        @functools.wraps(test)
        def checked_test(*args, **kwargs):
            result = test(*args, **kwargs)
            output = getattr(model, 'output', None)
            if isinstance(output, torch.Tensor):
                if not bool(torch.isfinite(output).all()):
                    self.nonfinite.append(self.tested)
                self.tested += 1
            return result

        model.test = checked_test

    def after_validation(self, state: RunState, model, dataloader, current_iter: int) -> None:
        if self.nonfinite:
            from basicsr.utils import get_root_logger
            dataset = getattr(dataloader, 'dataset', None)
            name = getattr(dataset, 'opt', {}).get('name', 'validation')
            shown = ', '.join(_image_name(dataset, i, self.tested) for i in self.nonfinite[:5])
            shown += ', ...' if len(self.nonfinite) > 5 else ''
            why = ('The weights are finite, the activations overflow on these inputs' if _weights_finite(model) else
                   'The weights are not finite')
            get_root_logger().warning(
                f'validation at iteration {current_iter} on {name}: the network output has NaN/Inf on '
                f'{len(self.nonfinite)} of {self.tested} images ({shown}); BasicSR writes those pixels as 0, so the '
                f'metrics count them as black. {why}: an earlier checkpoint, more iterations or a lower learning '
                'rate may avoid it')
        self.tested, self.nonfinite = 0, []

    def before_iteration(self, state: RunState, model, current_iter: int) -> None:
        self.snapshot['schedulers'] = [copy.deepcopy(s.state_dict()) for s in model.schedulers]
        self.snapshot['lrs'] = [[group['lr'] for group in o.param_groups] for o in model.optimizers]

    def before_optimize(self, state: RunState, model, current_iter: int) -> None:
        for optimizer in getattr(model, 'optimizers', []):
            _guard_step(optimizer)

    def on_optimize_error(self, state: RunState, model, current_iter: int, err: BaseException) -> None:
        if isinstance(err, _NonFiniteStep):
            _stop_nonfinite(model, current_iter, self.snapshot, state, stepped=False)

    def after_optimize(self, state: RunState, model, current_iter: int) -> None:
        self.tested, self.nonfinite = 0, []  # what a validation tests comes after this
        bad = {k: v for k, v in (getattr(model, 'log_dict', None) or {}).items() if not _is_finite(v)}
        if bad:
            _stop_nonfinite(model, current_iter, self.snapshot, state, stepped=True, losses=bad)


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


def _weights_finite(model) -> bool:
    """Whether every parameter of every network of ``model`` (its ``nn.Module`` attributes) is finite."""
    nets = [net for net in vars(model).values() if isinstance(net, torch.nn.Module)]
    return all(bool(torch.isfinite(p).all()) for net in nets for p in net.parameters())


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
        if not _weights_finite(model):
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


def _image_name(dataset: object, index: int, tested: int) -> str:
    """Name of the ``index``-th image a validation tested: BasicSR validates its val sets in order, one image per
    batch, so with as many tests as the data set has paths, the index is the path's (``paths``: strings, or dicts
    with ``lq_path`` as in PairedImageDataset); else ``#index``."""
    paths = getattr(dataset, 'paths', None)
    if isinstance(paths, list) and len(paths) == tested:
        entry = paths[index]
        path = entry.get('lq_path', entry.get('gt_path')) if isinstance(entry, dict) else entry
        if isinstance(path, str):
            return osp.splitext(osp.basename(path))[0]
    return f'#{index}'
