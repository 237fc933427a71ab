"""File utilities, one home each: atomic writes that honour the umask, sha256, ddsr's cache root.

Atomic write: the data goes to a temporary file in the target's folder (``mkstemp``), is flushed and fsynced, gets
the mode a plain ``open(path, 'w')`` would give it (0666 minus the umask; ``mkstemp`` creates 0600), and is renamed
over the target with ``os.replace`` (atomic on POSIX and Windows): a kill at any moment leaves the old or the new
file, never a truncated one, and a failure leaves the old file and no temporary one. Folders built in a temporary
place are moved into place by :func:`replace_dir` (the old folder is removed first, so that step is not atomic).

The other file concerns have one home each too: LMDB reading with the rest of the LMDB code
(:mod:`ddsr.data.lmdb_tools`), YAML files in :mod:`ddsr.option_file`, progress display in :mod:`ddsr.progress`.
``tests/test_layout.py`` checks that nothing else calls ``os.replace``, ``os.umask``, ``hashlib.sha256``,
``lmdb.open``, ``yaml.load`` or ``tqdm``. No ddsr import here: this is the lowest layer.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

CACHE_ENV = 'DDSR_CACHE_DIR'  # root of all of ddsr's caches (models/, deploy/)
_BLOCK = 1 << 20


def umask() -> int:
    """The process's current umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_root() -> Path:
    """Root of ddsr's caches: ``$DDSR_CACHE_DIR``, else ``$XDG_CACHE_HOME/ddsr``, else ``~/.cache/ddsr``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(xdg).expanduser() / 'ddsr'


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_BLOCK), b''):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Iterator[IO[bytes]]:
    """Open a temporary binary file next to ``path``; on a normal exit it is fsynced, given the umask's mode, passed
    to ``check`` (which may raise to refuse it) and renamed over ``path``. On any exception (or a refusal) the
    temporary file is removed and ``path`` is left as it was. The parent folder is created if needed."""
    path = Path(path)
    folder = path.absolute().parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, 'wb') as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike, check: Callable[[Path], None] | None = None) -> None:
    """Copy ``src`` to ``dest`` atomically (:func:`atomic_write`, ``check`` as there)."""
    with open(src, 'rb') as source, atomic_write(dest, check) as f:
        shutil.copyfileobj(source, f, _BLOCK)


@contextlib.contextmanager
def temp_dir(parent: str | os.PathLike, prefix: str) -> Iterator[str]:
    """A temporary folder inside ``parent`` (created if needed), removed with whatever is left in it on exit; build
    in a subfolder of it and move that into place with :func:`replace_dir` (``mkdtemp`` itself is 0700)."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(built: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the folder ``built`` to ``target`` (same file system), replacing an existing ``target``."""
    if os.path.lexists(target):
        shutil.rmtree(target)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    os.replace(built, target)

