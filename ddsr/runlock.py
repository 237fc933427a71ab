"""One run per run folder: an exclusive lock held by the ``basicsr train|test`` process that uses it.

The lock is ``fcntl.flock`` on ``experiments/.<name>.lock`` (``results/.<name>.lock`` for tests), beside the run
folder rather than in it, because BasicSR renames an existing run folder (``*_archived_*``) when it starts a new
run. The kernel releases a flock when its process ends in any way (including SIGKILL), so a killed run never
leaves a stale lock; a clean end also removes the file. A second run on the same name stops at once with a
:class:`ddsr.errors.DDSRError` naming the process that holds the folder. In distributed runs only rank 0 locks.

A flock belongs to the open file, which ``fork`` shares: BasicSR's DataLoader workers (forked) would keep a SIGKILLed
run's folder locked until they notice their parent is gone (5 s polls, longer under load), and the resume started
at once would be refused. So every forked child closes its copy at once (``os.register_at_fork``); the lock is the
run process's alone.
"""
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from os import path as osp

from ddsr.errors import DDSRError

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None  # type: ignore[assignment]


def lock_path(folder: str) -> str:
    parent, name = osp.split(osp.normpath(folder))
    return osp.join(parent, f'.{name}.lock')


_held: set[int] = set()  # lock descriptors of this process: a forked child closes them


def _close_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_close_in_child)


def _acquire(path: str, folder: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 300).decode('utf-8', 'replace').strip() or 'another process'
            os.close(fd)
            raise DDSRError(f'{folder} is in use by another run ({holder}); wait for it to end, or use another '
                            'name') from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder removed between our open and flock
            os.ftruncate(fd, 0)
            os.write(fd, f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%H:%M:%S")}'.encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(folder: str) -> Iterator[None]:
    """Hold the lock of run folder ``folder`` (``<root>/experiments/<name>`` or ``<root>/results/<name>``)."""
    if fcntl is None:
        yield
        return
    parent = osp.dirname(osp.normpath(folder))
    made_parent = not osp.isdir(parent)
    os.makedirs(parent, exist_ok=True)
    path = lock_path(folder)
    fd = _acquire(path, folder)
    _held.add(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # while still holding it (see _acquire for the race this handles)
        _held.discard(fd)
        os.close(fd)
        if made_parent:
            with contextlib.suppress(OSError):
                os.rmdir(parent)  # only if empty


def is_rank_zero(args: list[str]) -> bool:
    """Whether this process is rank 0 of the run BasicSR's ``--launcher`` flag in ``args`` starts."""
    launcher = 'none'
    for i, arg in enumerate(args):
        if arg == '--launcher' and i + 1 < len(args):
            launcher = args[i + 1]
        elif arg.startswith('--launcher='):
            launcher = arg.split('=', 1)[1]
    if launcher == 'pytorch':
        return int(os.environ.get('RANK', '0')) == 0
    if launcher == 'slurm':
        return int(os.environ.get('SLURM_PROCID', '0')) == 0
    return True
