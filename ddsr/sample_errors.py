"""Name the file behind a data-loading error of a ``basicsr train|test`` run, without changing BasicSR's classes.

While the command line runs BasicSR's pipeline (:class:`ReportingDatasets`, a hook of :mod:`ddsr.run_seam`), each
dataset that BasicSR's train/test pipeline builds gets an *instance* attribute ``__getitems__`` (the batched-fetch
hook of torch's DataLoader). It loads the samples with the dataset's own ``__getitem__``; when one fails it finds
which of the sample's files BasicSR's loader cannot read (decoding each file of that sample, only after a failure)
and adds a note naming it to the exception, then re-raises the same exception object. Nothing else changes: the
dataset's class, its ``__getitem__``, exception types and messages (notes are separate) are BasicSR's, before,
during and after the run, and the hook is removed from the datasets when the run ends.

:func:`describe` turns such an exception (raised in this process, or re-raised from a DataLoader worker, where the
note travels in the formatted traceback) into one line for the command line.
"""
import copy
import weakref
from typing import Any

from ddsr.run_state import RunHook, RunState

MARK = 'ddsr: while loading '  # prefix of the note added to the exception


class _ReportingFetch:
    """``dataset.__getitems__``: the dataset's own items, with a note naming the failing file on errors."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __call__(self, indices) -> list:
        _quiet_worker_teardown()
        samples = []
        for index in indices:
            try:
                samples.append(self.dataset[index])
            except Exception as err:
                note = _note(self.dataset, index, err)
                if note is not None:
                    _add_note(err, note)
                raise
        return samples


def quiet_feeder(original: Any) -> Any:
    """``Queue._on_queue_feeder_error`` that drops ``OSError`` (EBADF / EPIPE): when a run stops, PyTorch closes the
    DataLoader's queues (index queues in this process, result queues in the workers) while their feeder threads may
    still be sending, and ``multiprocessing`` would print that thread's error as a traceback after ddsr's one-line
    error. Other errors still go to ``original``."""
    if getattr(original, '_ddsr_quiet', False):
        return original

    def on_feeder_error(err: BaseException, obj: object) -> None:
        if not isinstance(err, OSError):
            original(err, obj)

    on_feeder_error._ddsr_quiet = True  # type: ignore[attr-defined]
    return staticmethod(on_feeder_error)


def _quiet_worker_teardown() -> None:
    """In a DataLoader worker process (once): :func:`quiet_feeder` for its result queue."""
    import multiprocessing.queues as mpq

    from torch.utils.data import get_worker_info
    queue_cls: Any = mpq.Queue  # the hook is private API meant for overriding (typeshed does not list it)
    if get_worker_info() is not None:
        queue_cls._on_queue_feeder_error = quiet_feeder(queue_cls._on_queue_feeder_error)


def _add_note(err: BaseException, note: str) -> None:
    if hasattr(err, 'add_note'):  # Python >= 3.11
        err.add_note(note)
    else:  # 3.10: kept for describe() in this process (not shown in tracebacks)
        err.__notes__ = [*getattr(err, '__notes__', []), note]  # type: ignore[attr-defined]


def _note(dataset, index, err: Exception) -> str | None:
    try:
        if isinstance(err, IndexError) and not 0 <= index < len(dataset):
            return None  # the end of the sequence protocol, not a data error
    except TypeError:
        pass
    opt = getattr(dataset, 'opt', None) or {}
    where = f"datasets.{opt.get('phase', '?')} ({opt.get('name', type(dataset).__name__)})"
    files = _sample_files(dataset, index)
    if not files:
        return f'{MARK}{where}: sample {index}'
    bad = [(key, path, why) for key, path in files if (why := _unreadable(dataset, key, path))]
    if bad:
        key, path, why = bad[0]
        return f'{MARK}{where}: cannot load {path} ({why})'
    listed = ', '.join(f'{key} {path}' for key, path in files)
    return f'{MARK}{where}: cannot load sample {index} ({listed})'


def _sample_files(dataset, index) -> list[tuple[str, str]]:
    """[(key, path)] of sample ``index`` (BasicSR datasets keep them in ``paths``: dicts or plain paths)."""
    paths = getattr(dataset, 'paths', None)
    if paths is None:
        return []
    try:
        entry = paths[index % len(paths)]
    except (TypeError, IndexError, KeyError, ZeroDivisionError):
        return []
    if isinstance(entry, dict):
        return [(str(k), str(v)) for k, v in entry.items() if str(k).endswith('_path')]
    return [('lq_path' if 'dataroot_lq' in (getattr(dataset, 'opt', None) or {}) else 'path', str(entry))]


def _unreadable(dataset, key: str, path: str) -> str | None:
    """Why BasicSR's loader cannot read ``path`` (None when it can)."""
    from basicsr.utils import FileClient, imfrombytes
    try:
        client = getattr(dataset, 'file_client', None)
        if client is None:
            backend = copy.deepcopy(getattr(dataset, 'io_backend_opt', None) or {'type': 'disk'})
            client = FileClient(backend.pop('type'), **backend)
        content = client.get(path, key[:-len('_path')])
        if content is None:
            return 'not found'
        if imfrombytes(content, float32=True) is None:
            return 'cannot be decoded'
    except AttributeError:  # cv2.imdecode gave None: truncated or not an image
        return 'unreadable or truncated image'
    except Exception as err:  # noqa: B902  (missing file, LMDB key absent: all mean this file is the problem)
        return f'{type(err).__name__}: {" ".join(str(err).split())[:200]}'
    return None


class ReportingDatasets(RunHook):
    """For one pipeline run: datasets built by BasicSR's train/test pipelines report which file failed (see the
    module docstring); the hook leaves the datasets when the run ends."""

    def __init__(self) -> None:
        self.built: list[weakref.ref] = []

    def on_dataset(self, state: RunState, dataset: Any) -> None:
        dataset.__getitems__ = _ReportingFetch(dataset)
        self.built.append(weakref.ref(dataset))

    def exit(self, state: RunState, success: bool) -> None:
        for ref in self.built:  # drop the hook (and its reference cycle: datasets are freed, LMDBs closed, as before)
            dataset = ref()
            if dataset is not None:
                vars(dataset).pop('__getitems__', None)
        self.built.clear()


def describe(err: BaseException) -> str | None:
    """One line for a data-loading error noted by this module (None for any other error)."""
    notes = [note for note in getattr(err, '__notes__', None) or [] if str(note).startswith(MARK)]
    text = str(err)
    if notes:
        where, cause = notes[-1][len(MARK):], f'{type(err).__name__}: {text}'
    elif MARK in text:  # re-raised from a DataLoader worker: the note is inside the formatted traceback
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = max(i for i, line in enumerate(lines) if line.startswith(MARK))
        where, cause = lines[last][len(MARK):], lines[last - 1] if last else type(err).__name__
    else:
        return None
    return f'{where}: {" ".join(cause.split())[:300]}'
