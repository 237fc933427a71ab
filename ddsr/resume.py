"""Exact resume of a BasicSR training run: the resumed run continues inside its epoch with the generators it had.

BasicSR 1.4.2 resumes at the start of the saved epoch: the epoch's samples are drawn again from the first, with new
random crops and flips, so a resumed run departs from the uninterrupted one. While a ``basicsr train`` run goes,
this module records next to every ``training_states/<iter>.state`` a small file ``<iter>.state.rng`` (ddsr's
own; BasicSR's own resume ignores it) with

- where the run is inside its epoch: the number of batches of the epoch consumed, batch size, worker count;
- the generators of the main process: Python ``random``, NumPy, torch (CPU) and CUDA, taken where the next batch is
  fetched (written at the save, rewritten at the next fetch, so that a validation after the save is included);
- per DataLoader worker, its generators after the last batch it produced for a consumed step, and the epoch's
  DataLoader base seed (from which torch seeds the workers before BasicSR's ``worker_init_fn`` reseeds ``random``
  and NumPy by seed, rank and worker id).

On ``--auto_resume`` (or ``path.resume_state``) the epoch's iterator skips the consumed sampler indices without
loading them; as the DataLoader hands batches to workers in turn from worker 0, the worker that produces the
resumed epoch's batch ``j`` is set up as the one that produced batch ``k + j`` of the interrupted epoch (same
seeding, then its recorded generators); the main-process generators are restored before the first batch. The
result equals the uninterrupted run bit for bit (tests/test_exact_resume.py: random crops and flips, 0 and 2
workers, SIGTERM and SIGKILL).

Nothing changes for a run that is not resumed: the same batches, seeds and generator draws as plain BasicSR (a
worker adds its generator states to a batch dict under a private key, removed before the model sees the batch).
Not covered (BasicSR's resume then, with a warning): ``prefetch_mode: cuda`` (the batch after the saved step is
already loaded), ``prefetch_mode: cpu`` with 0 workers (a thread draws augmentations concurrently with the main
process), and a state without its ``.rng`` file. With several ranks each rank's record is gathered and rank 0
writes them together; each rank resumes from its own.

:class:`ExactResume` is the run hook that does this; :mod:`ddsr.run_seam` plugs it into the run (the train loader
from ``basicsr.train.create_train_val_dataloader``, the model instance's ``save_training_state``) and takes it out.
"""
from __future__ import annotations

import os
import pickle
import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ddsr.run_state import RunHook, RunState

SUFFIX = '.rng'  # <iter>.state.rng: BasicSR's auto-resume reads float(name.split('.state')[0]), i.e. <iter>
KEY = '_ddsr_rng'  # private batch key a worker's generator states travel under
FORMAT = 1


def _states(cuda: bool = False) -> dict[str, Any]:
    """The generator states of this process (CUDA's on request, when CUDA is in use), as tensors, numbers and
    strings only (a training folder's files are read weights-only, ``ddsr.checkpoint.load_file``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    states = {'python': [version, torch.tensor(mt, dtype=torch.int64), gauss],
              'numpy': [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
              'torch': torch.get_rng_state()}
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def _set_states(states: dict[str, Any]) -> None:
    version, mt, gauss = states['python']
    random.setstate((version, tuple(mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = states['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


class _CollateWithStates:
    """The DataLoader's collate function; in a worker it adds the worker's generator states to a dict batch."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, samples: list) -> Any:
        batch = self.collate(samples)
        info = torch.utils.data.get_worker_info()
        if info is not None and isinstance(batch, dict):
            batch[KEY] = pickle.dumps((info.id, _states()))
        return batch


class _ResumedWorkerInit:
    """``worker_init_fn`` of the resumed epoch's workers: worker ``i`` becomes the interrupted epoch's worker
    ``(consumed + i) % num_workers``: torch's seeding from the recorded base seed, BasicSR's ``worker_init_fn``
    with that id, then the generators it had after its last consumed batch."""

    def __init__(self, original: Any, consumed: int, num_workers: int, base_seed: int, workers: dict) -> None:
        self.original, self.consumed, self.num_workers = original, consumed, num_workers
        self.base_seed, self.workers = base_seed, workers

    def __call__(self, worker_id: int) -> None:
        from torch.utils.data._utils.worker import _generate_state
        old = (self.consumed + worker_id) % self.num_workers
        seed = self.base_seed + old  # as torch.utils.data._utils.worker._worker_loop seeds worker `old`
        random.seed(seed)
        torch.manual_seed(seed)
        np.random.seed(_generate_state(self.base_seed, old))
        if self.original is not None:
            self.original(old)
        if old in self.workers:
            _set_states(self.workers[old])


class _SkippingSampler:
    """The train sampler, skipping its first ``skip`` indices once (set for the resumed epoch's iterator)."""

    def __init__(self, sampler: Any) -> None:
        self.sampler, self.skip = sampler, 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        it = iter(self.sampler)
        for _ in range(skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return len(self.sampler)


class _EpochIterator:
    """One DataLoader iterator: counts the batches handed out, keeps each worker's latest states."""

    def __init__(self, loader: ResumableLoader, it: Any, consumed: int = 0, base_seed: int | None = None,
                 workers: dict | None = None, restore: dict | None = None) -> None:
        self.loader, self.it, self.consumed, self.restore = loader, it, consumed, restore
        inner = getattr(it, 'generator', it)  # PrefetchDataLoader wraps the DataLoader's iterator in a thread
        self.base_seed = getattr(inner, '_base_seed', None) if base_seed is None else base_seed
        self.workers = dict(workers or {})

    def __iter__(self) -> _EpochIterator:
        return self

    def __next__(self) -> Any:
        if self.restore is not None:
            _set_states(self.restore)
            self.restore = None
        self.loader.before_fetch(self)
        batch = next(self.it)
        if isinstance(batch, dict) and KEY in batch:
            worker, states = pickle.loads(batch.pop(KEY))  # from this run's own worker process
            self.workers[worker] = states
        self.consumed += 1
        self.loader.handed += 1
        return batch


class ResumableLoader:
    """Stands in for BasicSR's train DataLoader (same length, attributes and batches) and records/restores where
    the run is inside its epoch. BasicSR's train_pipeline creates one iterator before the epoch loop (its
    prefetcher) and then one per epoch: the resumed state applies to the second."""

    def __init__(self, loader: Any, opt: dict, resume: dict | None) -> None:
        self.loader, self.opt, self.resume = loader, opt, resume
        self.created = 0
        self.current: _EpochIterator | None = None
        self.pending: tuple[str, list] | None = None  # (rng file, records per rank): rewritten at the next fetch
        self.handed = resume['iter'] if resume else 0  # batches handed to the train loop = its iteration
        self.before: dict | None = None  # the record as it was before the latest fetch
        self.sampler = _SkippingSampler(loader.batch_sampler.sampler)
        loader.batch_sampler.sampler = self.sampler
        if loader.num_workers > 0:
            loader.collate_fn = _CollateWithStates(loader.collate_fn)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> _EpochIterator:
        self.created += 1
        resume = self.resume if self.created == 2 else None
        if resume is None:
            self.current = _EpochIterator(self, iter(self.loader))
            return self.current
        self.resume = None
        loader, consumed = self.loader, resume['consumed']
        self.sampler.skip = consumed * loader.batch_size
        original = loader.worker_init_fn
        if loader.num_workers > 0:
            loader.worker_init_fn = _ResumedWorkerInit(original, consumed, loader.num_workers, resume['base_seed'],
                                                       resume['workers'])
        try:
            it = iter(loader)
        finally:
            loader.worker_init_fn = original
        self.current = _EpochIterator(self, it, consumed, resume['base_seed'], resume['workers'], resume['main'])
        return self.current

    def _record(self, cur: _EpochIterator | None) -> dict:
        return {'format': FORMAT, 'consumed': cur.consumed if cur else 0, 'batch_size': self.loader.batch_size,
                'num_workers': self.loader.num_workers, 'base_seed': cur.base_seed if cur else None,
                'workers': dict(cur.workers) if cur else {}, 'main': _states(cuda=True)}

    def saved(self, path: str, current_iter: int) -> None:
        """A training state of iteration ``current_iter`` was written to ``path``: write its ``.rng`` file. A
        checkpoint is saved after step ``current_iter`` (record: now, rewritten at the next fetch, after a
        validation); a preemption stop (ddsr.preempt) after the next batch was fetched (record: before that fetch).
        Every rank calls this (BasicSR's loop saves on all ranks; rank 0 writes): the ranks' records are gathered
        and rank 0 writes them all."""
        if self.handed == current_iter:
            record: dict | None = {**self._record(self.current), 'iter': current_iter}
        elif self.handed == current_iter + 1 and self.before is not None:
            record = {**self.before, 'iter': current_iter}
        else:
            warnings.warn(f'exact resume: no record for iteration {current_iter} (the loop is at {self.handed})',
                          stacklevel=2)
            record = None
        records = _gather(record)
        if self.handed == current_iter:
            self.pending = (path + SUFFIX, records)
        _write(path + SUFFIX, records, require=path)

    def before_fetch(self, cur: _EpochIterator) -> None:
        """Called before every batch fetch: keep the record as it is now; rewrite a pending ``.rng`` file with the
        main-process generators as they are where this batch loads."""
        self.before = self._record(cur)
        if self.pending is None:
            return
        path, records = self.pending
        self.pending = None
        main = _gather(self.before['main'])
        _write(path, [None if r is None else {**r, 'main': m} for r, m in zip(records, main, strict=True)],
               require=path)


def _rank_and_size() -> tuple[int, int]:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(obj: Any) -> list:
    """``obj`` of every rank, in rank order (all ranks call this together)."""
    import torch.distributed as dist
    _, size = _rank_and_size()
    if size == 1:
        return [obj]
    out: list = [None] * size
    dist.all_gather_object(out, obj)
    return out


def _write(path: str, records: list, require: str) -> None:
    """Rank 0 writes the ranks' records to ``path`` when the state file ``require`` exists; none if any is missing."""
    from ddsr.checkpoint import atomic_save
    if _rank_and_size()[0] == 0 and os.path.isfile(require) and all(r is not None for r in records):
        atomic_save({'format': FORMAT, 'iter': records[0]['iter'], 'ranks': records}, path)


def _supported(opt: dict, dataset_opt: dict, num_workers: int) -> str | None:
    """Why exact resume does not cover this run (None: it does)."""
    mode = dataset_opt.get('prefetch_mode')
    if mode == 'cuda':
        return 'prefetch_mode cuda loads the batch after the saved step before the save'
    if mode == 'cpu' and num_workers == 0:
        return 'prefetch_mode cpu with 0 workers draws augmentations in a thread, concurrently with the main process'
    return None


def _load_record(opt: dict, loader: Any) -> dict | None:
    """The ``.rng`` record of the state being resumed, when it fits this run (else None, with a warning)."""
    state = (opt.get('path') or {}).get('resume_state')
    if not state:
        return None
    path = state + SUFFIX
    if not os.path.isfile(path):
        warnings.warn(f'{path} not found: resuming at the start of the saved epoch (BasicSR resume)', stacklevel=2)
        return None
    from ddsr.checkpoint import load_file
    from ddsr.errors import DDSRError
    try:
        record = load_file(path, 'exact resume')
    except DDSRError as err:
        warnings.warn(f'{err}: resuming at the start of the saved epoch (BasicSR resume)', stacklevel=2)
        return None
    stem = os.path.basename(state)[:-len('.state')] if state.endswith('.state') else ''
    rank, size = _rank_and_size()
    ranks = record.get('ranks') or []
    mine = ranks[rank] if record.get('format') == FORMAT and len(ranks) == size else None
    fits = (mine is not None and str(record.get('iter')) == stem and mine['batch_size'] == loader.batch_size
            and mine['num_workers'] == loader.num_workers)
    if not fits:
        warnings.warn(f'{path} does not fit this run (iteration, ranks, batch size or workers changed): resuming at '
                      'the start of the saved epoch (BasicSR resume)', stacklevel=2)
        return None
    return mine


class ExactResume(RunHook):
    """The run hook of exact resume (one per ``basicsr train`` run; :mod:`ddsr.run_seam` calls it): wraps the train
    loader BasicSR's ``create_train_val_dataloader`` made in a :class:`ResumableLoader`, and writes the ``.rng``
    record after each training state the model saves."""

    def __init__(self) -> None:
        self.loader: ResumableLoader | None = None

    def on_dataloaders(self, state: RunState, opt: dict, result: tuple) -> tuple:
        train_loader = result[0]
        if train_loader is None:
            return result
        why = _supported(opt, opt['datasets']['train'], train_loader.num_workers)
        if why is not None:
            if (opt.get('path') or {}).get('resume_state'):
                warnings.warn(f'exact resume not available ({why}): resuming at the start of the saved epoch '
                              '(BasicSR resume)', stacklevel=2)
            return result
        self.loader = ResumableLoader(train_loader, opt, _load_record(opt, train_loader))
        return (self.loader, *result[1:])

    def after_save_state(self, state: RunState, model: Any, epoch: int, current_iter: int) -> None:
        # on every rank (a collective): not on whether rank 0's state file is there yet
        if current_iter != -1 and self.loader is not None:
            path = os.path.join(model.opt['path']['training_states'], f'{current_iter}.state')
            self.loader.saved(path, current_iter)
