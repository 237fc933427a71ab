"""What one ``basicsr train|test`` run started by ddsr knows about itself, and the hooks that act on it.

A :class:`RunState` is created by the command line for one run; :mod:`ddsr.run_seam` is the one place that plugs
its :attr:`RunState.hooks` into BasicSR's pipeline (and takes them out again). A hook is a :class:`RunHook`
subclass that overrides only the events it needs; it never replaces an attribute of a basicsr module itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RunHook:
    """One run-scoped behaviour (NaN/Inf guard, preemption, short console, ...). Every event is a no-op here;
    :mod:`ddsr.run_seam` calls each event on every hook of the run, in the order of :attr:`RunState.hooks`.

    ``on_model`` and the model events below it concern the model of a training run only (``basicsr train``)."""

    def enter(self, state: RunState) -> None:
        """The run starts (before BasicSR parses its options): take process-wide resources (signal handlers)."""

    def exit(self, state: RunState, success: bool) -> None:
        """The run ended (``success``: without an exception): give back what :meth:`enter` took, print results."""

    def on_options(self, state: RunState, opt: dict) -> dict:
        """BasicSR parsed the options (``--debug``, ``--force_yml`` applied): return them, possibly changed."""
        return opt

    def on_logger(self, state: RunState, logger: Any, log_file: str | None) -> None:
        """BasicSR set its root logger up (its first ``get_root_logger`` call of a training run)."""

    def on_dataset(self, state: RunState, dataset: Any) -> None:
        """BasicSR built a dataset of the run."""

    def on_dataloaders(self, state: RunState, opt: dict, result: tuple) -> tuple:
        """BasicSR's ``create_train_val_dataloader(opt, logger)`` returned ``result`` (train loader, train sampler,
        val loaders, total epochs, total iterations): return it, possibly with the train loader replaced."""
        return result

    def on_model(self, state: RunState, model: Any) -> None:
        """BasicSR built the model of a training run (before it resumes a state into it)."""

    def before_iteration(self, state: RunState, model: Any, current_iter: int) -> None:
        """Iteration ``current_iter`` starts (BasicSR's loop calls ``update_learning_rate`` first): iteration
        ``current_iter - 1`` is complete, with its saves, logging and validation."""

    def before_optimize(self, state: RunState, model: Any, current_iter: int) -> None:
        """``model.optimize_parameters(current_iter)`` is about to run."""

    def on_optimize_error(self, state: RunState, model: Any, current_iter: int, err: BaseException) -> None:
        """``optimize_parameters`` raised ``err``; a hook may raise another exception instead (else it propagates)."""

    def after_optimize(self, state: RunState, model: Any, current_iter: int) -> None:
        """``optimize_parameters(current_iter)`` returned."""

    def after_save_state(self, state: RunState, model: Any, epoch: int, current_iter: int) -> None:
        """``model.save_training_state(epoch, current_iter)`` returned (on every rank: BasicSR's loop and ddsr's
        preemption and NaN/Inf stops call ``model.save`` on all of them; rank 0 writes). ``current_iter`` -1:
        BasicSR's final ``latest`` save, which writes no state."""

    def after_validation(self, state: RunState, model: Any, dataloader: Any, current_iter: int) -> None:
        """``model.validation`` on ``dataloader`` returned (``model.metric_results`` holds its metrics)."""


@dataclass
class RunState:
    """Where a ``basicsr train|test`` run is. ``phase``: 'train' or 'test'; ``stage``: 'setup' while BasicSR builds
    datasets and models from the options, 'training' from the first ``optimize_parameters`` on (the command line
    reports set-up failures as bad options); ``epoch``: the epoch BasicSR's train loop is in (recorded by
    ``EnlargedSampler.set_epoch``); ``opt``: the options BasicSR parsed (None before); ``rank``: this process's
    rank (only rank 0 prints the console); ``hooks``: the run's behaviours, called in this order."""
    phase: str = 'train'
    stage: str | None = 'setup'
    epoch: int = 0
    opt: dict | None = None
    rank: int = 0
    hooks: list[RunHook] = field(default_factory=list)
