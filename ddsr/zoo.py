"""Pretrained networks by name: the published weights of the original works, downloaded once into a cache.

``ddsr models`` lists them; ``--model NAME`` (``ddsr upscale``, ``export``, ``bench``, ``make-enhanced-hr``), the
option-file spelling ``path.pretrain_network_g: ddsr://NAME`` and ``ddsr.ImageUpscaler.from_pretrained(NAME)``
use them. Only files whose sha256 is known are listed: every download is verified against it.

Where files go: ``$DDSR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/ddsr`` (``~/.cache/ddsr``), in ``models/``
under the file name of the source URL. ``DDSR_MODEL_MIRROR=URL`` fetches every model from ``URL/<file name>``
instead (an ``http(s)://`` or ``file://`` URL, or a plain folder), for mirrors and offline copies.

A download streams into a temporary file in the cache folder with a progress bar, checks the sha256, then renames
it into place (atomic): an interrupted or failed download leaves nothing under the final name, and a file with the
wrong hash is deleted with an error naming both hashes. A cached file is re-hashed on every use (milliseconds for
these sizes); a corrupt one is replaced by a fresh download. Without network access the error is one line naming
the URL and the path where the file can be put by hand.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from ddsr.archs.units import PretrainedModel, pretrained_models
from ddsr.errors import DDSRError

SCHEME = 'ddsr://'
TIMEOUT_S = 30.0  # per socket operation (connect / read)
CHUNK = 1 << 16


# The released models are declared by their arch units (ddsr/archs/<unit>/__init__.py, ``ArchUnit.models``).
MODELS: dict[str, PretrainedModel] = pretrained_models()


def lookup(name: str) -> PretrainedModel:
    """The model called ``name`` (or one of its aliases, case-insensitive); DDSRError listing the known names."""
    if name.startswith(SCHEME):
        name = name[len(SCHEME):]
    by_name = {key.lower(): m for m in MODELS.values() for key in (m.name, *m.aliases)}
    model = by_name.get(name.lower())
    if model is None:
        close = difflib.get_close_matches(name, list(MODELS), n=3, cutoff=0.4)
        hint = f' (did you mean {", ".join(close)}?)' if close else ''
        raise DDSRError(f'unknown pretrained model {name!r}{hint}; known: {", ".join(MODELS)} (`ddsr models`)')
    return model


def cache_dir() -> Path:
    """Root of ddsr's cache: ``$DDSR_CACHE_DIR``, else ``$XDG_CACHE_HOME/ddsr``, else ``~/.cache/ddsr``."""
    if os.environ.get('DDSR_CACHE_DIR'):
        return Path(os.environ['DDSR_CACHE_DIR']).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME') or str(Path('~/.cache').expanduser())
    return Path(xdg) / 'ddsr'


def cached_path(model: PretrainedModel) -> Path:
    """Where ``model``'s file lives once downloaded."""
    return cache_dir() / 'models' / model.file_name


def source_url(model: PretrainedModel) -> str:
    """The URL a download reads: ``$DDSR_MODEL_MIRROR/<file name>`` when the mirror is set, else the model's URL."""
    mirror = os.environ.get('DDSR_MODEL_MIRROR', '').strip()
    if not mirror:
        return model.url
    if '://' not in mirror:  # a plain folder
        return Path(mirror).expanduser().resolve().as_uri() + '/' + model.file_name
    return f'{mirror.rstrip("/")}/{model.file_name}'


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def is_cached(model: PretrainedModel) -> bool:
    path = cached_path(model)
    return path.is_file() and sha256_of(path) == model.sha256


def _offline_error(model: PretrainedModel, url: str, reason: str) -> DDSRError:
    dest = cached_path(model)
    return DDSRError(f'cannot download {model.name} from {url} ({reason}); without network access, download that '
                     f'URL elsewhere and put the file at {dest} (sha256 {model.sha256}), or set DDSR_MODEL_MIRROR '
                     f'to a folder or URL holding {model.file_name}')


def download(url: str, dest: Path, sha256: str, desc: str = '', quiet: bool = False,
             error: type[Exception] = DDSRError) -> Path:
    """Stream ``url`` into ``dest`` through a temporary file; verified by ``sha256`` before the atomic rename."""
    from ddsr.progress import progress
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{dest.name}.', suffix='.part', dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get('Content-Length') if hasattr(response, 'headers') else None
            total = int(length) if length and length.isdigit() else None
            digest = hashlib.sha256()
            with progress(total, desc or dest.name, unit='B', unit_scale=True, every=5.0, disable=quiet) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b''):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            received = out.tell()
            if total is not None and received != total:
                raise ConnectionError(f'connection closed after {received} of {total} bytes')
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise error(f'{url}: sha256 mismatch (expected {sha256}, got {got}); the downloaded file was deleted')
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fetch(name: str | PretrainedModel, quiet: bool = False) -> Path:
    """Local path of a pretrained model's file, downloaded (and verified) on first use."""
    model = name if isinstance(name, PretrainedModel) else lookup(name)
    path = cached_path(model)
    if path.is_file():
        if sha256_of(path) == model.sha256:
            return path
        print(f'warning: cached {path} does not match its sha256 (corrupt or replaced); downloading it again',
              file=sys.stderr, flush=True)
        path.unlink()
    url = source_url(model)
    if not quiet:
        print(f'downloading {model.name} ({model.license}) from {url} into {path}', file=sys.stderr, flush=True)
    try:
        return download(url, path, model.sha256, model.name, quiet)
    except DDSRError:
        raise
    except urllib.error.HTTPError as err:
        raise _offline_error(model, url, f'HTTP {err.code} {err.reason}') from None
    except urllib.error.URLError as err:
        raise _offline_error(model, url, str(getattr(err, 'reason', err))) from None
    except (TimeoutError, ConnectionError, OSError) as err:
        if isinstance(err, OSError) and err.filename and str(err.filename).startswith(str(path.parent)):
            raise DDSRError(f'cannot write into the model cache {path.parent}: {err.strerror} (set DDSR_CACHE_DIR '
                            'to a writable folder)') from None
        raise _offline_error(model, url, f'{type(err).__name__}: {err}') from None


def is_model_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def resolve(value: str, quiet: bool = False) -> str:
    """``ddsr://NAME`` -> the local path of that model's file (downloaded on first use); anything else unchanged."""
    if not is_model_ref(value):
        return value
    return str(fetch(value[len(SCHEME):], quiet))


def resolve_option_paths(opt: dict, quiet: bool = False) -> dict:
    """Replace every ``path.pretrain_network_*: ddsr://NAME`` of an option dict by the local file (in place)."""
    paths = opt.get('path')
    if isinstance(paths, dict):
        for key, value in list(paths.items()):
            if str(key).startswith('pretrain_network') and is_model_ref(value):
                paths[key] = resolve(value, quiet)
    return opt


@contextlib.contextmanager
def resolving_option_paths() -> Iterator[None]:
    """For one ``basicsr train|test`` run: BasicSR's ``parse_options`` followed by :func:`resolve_option_paths`, so
    the pipeline loads the cached file of every ``ddsr://NAME`` (BasicSR's own function is put back after it)."""
    import basicsr.test
    import basicsr.train
    saved = [(module, module.parse_options) for module in (basicsr.train, basicsr.test)]

    def wrap(parse_options: Callable) -> Callable:
        @functools.wraps(parse_options)
        def parse(*args: object, **kwargs: object) -> tuple:
            opt, parsed = parse_options(*args, **kwargs)
            return resolve_option_paths(opt, quiet=True), parsed
        return parse

    for module, parse_options in saved:
        module.parse_options = wrap(parse_options)
    try:
        yield
    finally:
        for module, parse_options in saved:
            module.parse_options = parse_options


def copy_into_cache(name: str, src: str | os.PathLike) -> Path:
    """Install a file obtained by hand (verified like a download)."""
    model = lookup(name)
    src = Path(src)
    if not src.is_file():
        raise DDSRError(f'{src}: no such file')
    got = sha256_of(src)
    if got != model.sha256:
        raise DDSRError(f'{src}: sha256 {got} is not the one of {model.name} ({model.sha256})')
    dest = cached_path(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{dest.name}.', suffix='.part', dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
