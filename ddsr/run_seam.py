"""The one point where a ``basicsr train|test`` run started by ddsr replaces attributes of basicsr, and puts them back.

BasicSR's ``train_pipeline(root_path)`` / ``test_pipeline(root_path)`` take no hooks: they read ``sys.argv`` and call
module-level names of ``basicsr.train`` / ``basicsr.test``. ddsr's run-scoped behaviours (the hooks of a
:class:`ddsr.run_state.RunState`: ``ddsr://`` option paths, sample errors, preemption, the NaN/Inf guard, the short
console) need to see the parsed options, the datasets, the logger set-up, the model and the loop's iterations.
Calling BasicSR's pipeline with those pieces passed in is impossible without a copy of its 100-line loop (a fork
that would drift from BasicSR's behaviour), so :func:`running` replaces, for one run, exactly the attributes in
:func:`declared`, each once, and restores every one of them (and ``sys.argv``) when the run ends, also on an
exception, ``KeyboardInterrupt`` or preemption:

========================================================  ============================================================
attribute                                                 what the replacement adds around BasicSR's own function
========================================================  ============================================================
``basicsr.train.parse_options`` (test: ``basicsr.test``)  ``on_options`` of each hook; the result becomes ``state.opt``
``basicsr.train.build_dataset`` (test: ``basicsr.test``)  ``on_dataset`` of each hook with the built dataset
``basicsr.train.get_root_logger`` (train)                 ``on_logger`` of each hook, once, when it set the logger up
``basicsr.train.create_train_val_dataloader`` (train)     ``on_dataloaders`` of each hook; a hook may replace the
                                                          train loader (exact resume, :mod:`ddsr.resume`)
``basicsr.train.build_model`` (train)                     ``on_model`` of each hook, then the model *instance*'s
                                                          methods get one wrapper each (below)
``EnlargedSampler.set_epoch`` (train)                     records the epoch in ``state.epoch``
``multiprocessing.queues.Queue._on_queue_feeder_error``   :func:`ddsr.sample_errors.quiet_feeder` (no traceback from a
                                                          queue closed while a stopped run's loader still sends)
``sys.argv``                                              ``['basicsr train|test', *args]`` (BasicSR parses it)
========================================================  ============================================================

The model of a training run (an instance: no basicsr class changes) gets, once each: ``update_learning_rate``
(``before_iteration`` of each hook, then BasicSR's), ``optimize_parameters`` (``state.stage = 'training'``,
``before_optimize``, BasicSR's, then ``after_optimize``; ``on_optimize_error`` if it raised), ``validation``
(BasicSR's, then ``after_validation``) and ``save_training_state`` (BasicSR's, then ``after_save_state``: BasicSR's
``model.save`` calls it through the instance, also for the saves of preemption and the NaN/Inf guard, which run
inside ``update_learning_rate``).

Hooks are called in the order of ``state.hooks``; :func:`default_hooks` fixes it: option paths, sample errors,
exact resume (its loader is in place before the model is built; it acts only on its own events, the train loader
and the saved states), preemption (its stop check comes before anything of the next iteration), NaN/Inf guard (its
loss check comes before the console shows the iteration), channels_last (``train.channels_last``: networks and
inputs in that memory format) and mixed precision (``train.amp``: bf16 autocast around ``optimize_parameters``,
both :mod:`ddsr.amp`), console. ``exit`` runs in the reverse order.

Outside :func:`running` nothing of this is installed: ``python -m basicsr.train`` in a process that imported ddsr
runs BasicSR's pipeline with only ddsr's permanent patches (:mod:`ddsr.compat`, listed in docs/compatibility.md).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ddsr import amp, console, guards, preempt, resume, sample_errors, zoo
from ddsr.run_state import RunHook, RunState

_MISSING = object()


class OptionPaths(RunHook):
    """``ddsr://NAME`` in ``path.pretrain_network_*``: the cached file of the model (:mod:`ddsr.zoo`)."""

    def on_options(self, state: RunState, opt: dict) -> dict:
        return zoo.resolve_option_paths(opt, quiet=True)


def default_hooks(phase: str, opt: dict, rank_zero: bool = True) -> list[RunHook]:
    """The hooks of a ``basicsr <phase>`` run of ``opt`` (the option file as read), in their fixed order. In a
    distributed run only rank 0 (``rank_zero``) shows the short console and its result line (the other ranks have
    no validation metrics: BasicSR validates on rank 0)."""
    hooks: list[RunHook] = [OptionPaths(), sample_errors.ReportingDatasets()]
    if phase == 'train':
        hooks += [resume.ExactResume(), preempt.Preemption(), guards.NonFiniteGuard()]
        if amp.channels_last_of(opt):
            hooks.append(amp.ChannelsLast())  # train.channels_last (checked by ddsr.checks)
        if amp.amp_of(opt):
            hooks.append(amp.MixedPrecision())  # train.amp (checked by ddsr.checks)
        if console.wanted(opt) and rank_zero:
            hooks.append(console.ConsoleRun(opt))
    return hooks


def declared(phase: str) -> list[tuple[Any, str]]:
    """(owner, attribute name) of every attribute :func:`running` replaces during a ``basicsr <phase>`` run."""
    import multiprocessing.queues as mpq

    import basicsr.test
    import basicsr.train
    from basicsr.data.data_sampler import EnlargedSampler
    if phase == 'train':
        pipeline: list[tuple[Any, str]] = [(basicsr.train, 'parse_options'), (basicsr.train, 'build_dataset'),
                                           (basicsr.train, 'get_root_logger'),
                                           (basicsr.train, 'create_train_val_dataloader'),
                                           (basicsr.train, 'build_model'), (EnlargedSampler, 'set_epoch')]
    else:
        pipeline = [(basicsr.test, 'parse_options'), (basicsr.test, 'build_dataset')]
    return [*pipeline, (mpq.Queue, '_on_queue_feeder_error'), (sys, 'argv')]


def _each(state: RunState, event: str, *args: Any) -> None:
    for hook in state.hooks:
        getattr(hook, event)(state, *args)


def _parse_options(state: RunState, original: Callable) -> Callable:
    def parse_options(*args: Any, **kwargs: Any) -> tuple:
        opt, parsed = original(*args, **kwargs)
        for hook in state.hooks:
            opt = hook.on_options(state, opt)
        state.opt, state.rank = opt, int(opt.get('rank', 0) or 0)
        return opt, parsed
    return parse_options


def _then(original: Callable, after: Callable) -> Callable:
    """``original(*args)``, then ``after(result, *args)``; returns the result."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        after(result, *args, **kwargs)
        return result
    return wrapper


def _get_root_logger(state: RunState, original: Callable) -> Callable:
    def get_root_logger(*args: Any, **kwargs: Any) -> Any:
        from basicsr.utils.logger import initialized_logger
        name = kwargs.get('logger_name', args[0] if args else 'basicsr')
        first = name not in initialized_logger
        logger = original(*args, **kwargs)
        if first:
            _each(state, 'on_logger', logger, kwargs.get('log_file', args[2] if len(args) > 2 else None))
        return logger
    return get_root_logger


def _dataloaders(state: RunState, original: Callable) -> Callable:
    def create_train_val_dataloader(opt: dict, *args: Any, **kwargs: Any) -> tuple:
        result = original(opt, *args, **kwargs)
        for hook in state.hooks:
            result = hook.on_dataloaders(state, opt, result)
        return result
    return create_train_val_dataloader


def _model_built(state: RunState, model: Any, opt: dict) -> None:
    if opt.get('is_train'):
        _each(state, 'on_model', model)
        _follow(state, model)


def _follow(state: RunState, model: Any) -> None:
    """One wrapper each for the model instance's ``update_learning_rate``, ``optimize_parameters``, ``validation``,
    ``save_training_state``."""
    update_lr, optimize, validation = model.update_learning_rate, model.optimize_parameters, model.validation
    save_state = model.save_training_state

    def update_learning_rate(current_iter: int, *args: Any, **kwargs: Any) -> Any:
        _each(state, 'before_iteration', model, current_iter)
        return update_lr(current_iter, *args, **kwargs)

    def optimize_parameters(current_iter: int, *args: Any, **kwargs: Any) -> Any:
        state.stage = 'training'
        _each(state, 'before_optimize', model, current_iter)
        try:
            result = optimize(current_iter, *args, **kwargs)
        except Exception as err:
            _each(state, 'on_optimize_error', model, current_iter, err)
            raise
        _each(state, 'after_optimize', model, current_iter)
        return result

    def validate(dataloader: Any, current_iter: Any, *args: Any, **kwargs: Any) -> Any:
        result = validation(dataloader, current_iter, *args, **kwargs)
        _each(state, 'after_validation', model, dataloader, current_iter)
        return result

    def save_training_state(epoch: int, current_iter: int, *args: Any, **kwargs: Any) -> Any:
        result = save_state(epoch, current_iter, *args, **kwargs)
        _each(state, 'after_save_state', model, epoch, current_iter)
        return result

    model.update_learning_rate, model.optimize_parameters, model.validation, model.save_training_state = (
        update_learning_rate, optimize_parameters, validate, save_training_state)


def _set_epoch(state: RunState, original: Callable) -> Callable:
    def set_epoch(sampler: Any, epoch: int) -> Any:
        state.epoch = epoch
        return original(sampler, epoch)
    return set_epoch


def _replacements(state: RunState, argv: list[str]) -> dict[str, Callable[[Any], Any]]:
    """attribute name -> (original -> replacement), for :func:`declared`'s attributes."""
    return {'parse_options': lambda orig: _parse_options(state, orig),
            'build_dataset': lambda orig: _then(orig, lambda dataset, opt: _each(state, 'on_dataset', dataset)),
            'get_root_logger': lambda orig: _get_root_logger(state, orig),
            'create_train_val_dataloader': lambda orig: _dataloaders(state, orig),
            'build_model': lambda orig: _then(orig, lambda model, opt: _model_built(state, model, opt)),
            'set_epoch': lambda orig: _set_epoch(state, orig),
            '_on_queue_feeder_error': sample_errors.quiet_feeder,
            'argv': lambda orig: list(argv)}


def reset_basicsr_logger() -> None:
    """Forget BasicSR's root logger set-up (its handlers, closed), so that the next pipeline run in this process
    logs to its own file (BasicSR initialises the logger once per process) and nothing of a run's logging stays."""
    from basicsr.utils import logger as basicsr_logger
    basicsr_logger.initialized_logger.pop('basicsr', None)
    log = logging.getLogger('basicsr')
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def running(state: RunState, argv: list[str]) -> Iterator[RunState]:
    """Inside: BasicSR's ``state.phase`` pipeline sees ``argv`` as ``sys.argv`` and calls ``state.hooks`` (see the
    module docstring). On leaving, in any way: each hook's ``exit`` (reverse order), then every replaced attribute
    and ``sys.argv`` are put back and BasicSR's logger set-up is forgotten."""
    make = _replacements(state, argv)
    saved = []
    entered: list[RunHook] = []
    success = False
    try:
        for owner, name in declared(state.phase):
            saved.append((owner, name, vars(owner).get(name, _MISSING)))
            setattr(owner, name, make[name](getattr(owner, name)))
        reset_basicsr_logger()  # a new log file per run, also for several runs in one process
        for hook in state.hooks:
            hook.enter(state)
            entered.append(hook)
        yield state
        success = True
    finally:
        failures = []
        for hook in reversed(entered):  # every hook gets its exit, whatever another one raised
            try:
                hook.exit(state, success)
            except BaseException as err:  # noqa: B902  (re-raised below, after the restore)
                failures.append(err)
        for owner, name, original in reversed(saved):
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        reset_basicsr_logger()
        if failures and success:  # else the run's own exception propagates
            raise failures[0]
