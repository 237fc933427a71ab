"""Pretrained networks by name: the published weights of the original works, downloaded once into a cache.

``ddsr models`` lists them; ``--model NAME`` (``ddsr upscale``, ``export``, ``bench``, ``make-enhanced-hr``), the
option-file spelling ``path.pretrain_network_g: ddsr://NAME`` and ``ddsr.ImageUpscaler.from_pretrained(NAME)``
use them. Only files whose sha256 is known are listed: every download is verified against it.

Where files go: ``$DDSR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/ddsr`` (``~/.cache/ddsr``), in ``models/``
under the file name of the source URL. ``DDSR_MODEL_MIRROR`` (an ``http(s)://`` URL, a ``file://`` URL or a plain
folder), for mirrors and offline copies, serves every model instead as ``<mirror>/<upstream file name>`` or
``<mirror>/<model name>.pth`` (tried in this order); a folder may also hold it under any name (found by its sha256).

A download streams into a temporary file in the cache folder with a progress bar, checks the sha256, then renames
it into place (atomic): an interrupted or failed download leaves nothing under the final name, and a file with the
wrong hash is deleted with an error naming both hashes. A cached file is re-hashed on every use (milliseconds for
these sizes); a corrupt one is replaced by a fresh download. Without network access the error is one line naming
the URL and ``ddsr models --add NAME FILE`` (a file obtained elsewhere, verified the same way); a mirror that answers
404 for both names, or a folder without the file, is reported as lacking it.
"""
from __future__ import annotations

import difflib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from ddsr.archs.units import PretrainedModel, pretrained_models
from ddsr.errors import DDSRError
from ddsr.fileio import atomic_copy, atomic_write, cache_root, sha256_file

SCHEME = 'ddsr://'
MIRROR_ENV = 'DDSR_MODEL_MIRROR'
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


def cached_path(model: PretrainedModel) -> Path:
    """Where ``model``'s file lives once downloaded: ``<cache root>/models/<file name of the source URL>``."""
    return cache_root() / 'models' / model.file_name


def mirror_names(model: PretrainedModel) -> list[str]:
    """The file names a mirror may hold for ``model``, tried in this order: the upstream one, ``<model name>.pth``."""
    return list(dict.fromkeys((model.file_name, f'{model.name}.pth')))


def _mirror() -> str:
    return os.environ.get(MIRROR_ENV, '').strip()


def _mirror_folder(mirror: str) -> Path | None:
    """The local folder a mirror setting names (a plain path or a ``file://`` URL); None for a remote URL."""
    if '://' not in mirror:
        return Path(mirror).expanduser().resolve()
    if mirror.startswith('file://'):
        return Path(url2pathname(urlparse(mirror).path))
    return None


def source_urls(model: PretrainedModel) -> list[str]:
    """The URLs a download tries: the model's URL, or ``$DDSR_MODEL_MIRROR/<name>`` for each of :func:`mirror_names`."""
    mirror = _mirror()
    if not mirror:
        return [model.url]
    folder = _mirror_folder(mirror)
    base = folder.as_uri() if folder is not None else mirror.rstrip('/')
    return [f'{base}/{name}' for name in mirror_names(model)]


def source_url(model: PretrainedModel) -> str:
    """The first URL a download tries (:func:`source_urls`)."""
    return source_urls(model)[0]


def is_cached(model: PretrainedModel) -> bool:
    path = cached_path(model)
    return path.is_file() and sha256_file(path) == model.sha256


def _by_hand(model: PretrainedModel) -> str:
    return (f'`ddsr models --add {model.name} FILE` installs a copy obtained elsewhere (FILE: {model.url}, sha256 '
            f'{model.sha256}; it goes to {cached_path(model)})')


def _offline_error(model: PretrainedModel, url: str, reason: str) -> DDSRError:
    if _mirror():
        hint = f'check {MIRROR_ENV}={_mirror()}, or {_by_hand(model)}'
    else:
        hint = (f'without network access, {_by_hand(model)}, or set {MIRROR_ENV} to a folder or URL holding '
                f'{" or ".join(mirror_names(model))}')
    return DDSRError(f'cannot download {model.name} from {url} ({reason}); {hint}')


def _mirror_lacks(model: PretrainedModel, where: str, tried: str) -> DDSRError:
    return DDSRError(f'the mirror {where} lacks {model.name}: {tried}; put {" or ".join(mirror_names(model))} there '
                     f'(sha256 {model.sha256}), or {_by_hand(model)}')


def _verifier(sha256: str, url: str, error: type[Exception]) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        got = sha256_file(tmp)
        if got != sha256:
            raise error(f'{url}: sha256 mismatch (expected {sha256}, got {got}); the downloaded file was deleted')
    return check


def download(url: str, dest: Path, sha256: str, desc: str = '', quiet: bool = False,
             error: type[Exception] = DDSRError) -> Path:
    """Stream ``url`` into ``dest`` through a temporary file; verified by ``sha256`` before the atomic rename."""
    from ddsr.progress import progress
    with atomic_write(dest, _verifier(sha256, url, error)) as out, \
            urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get('Content-Length') if hasattr(response, 'headers') else None
        total = int(length) if length and length.isdigit() else None
        with progress(total, desc or dest.name, unit='B', unit_scale=True, every=5.0, disable=quiet) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b''):
                out.write(chunk)
                bar.update(len(chunk))
        received = out.tell()
        if total is not None and received != total:
            raise ConnectionError(f'connection closed after {received} of {total} bytes')
    return dest


def _in_folder(model: PretrainedModel, folder: Path) -> Path | None:
    """A file of ``folder`` holding ``model``: one of :func:`mirror_names`, else any file with its sha256."""
    for name in mirror_names(model):
        if (folder / name).is_file():
            return folder / name
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return next((p for p in files if sha256_file(p) == model.sha256), None)


def _fetch_from_folder(model: PretrainedModel, folder: Path, dest: Path, quiet: bool) -> Path:
    src = _in_folder(model, folder)
    if src is None:
        what = 'is not a folder' if not folder.is_dir() else 'holds no file of those names or with its sha256'
        raise _mirror_lacks(model, str(folder), f'{folder} {what}')
    if not quiet:
        print(f'copying {model.name} ({model.license}) from {src} into {dest}', file=sys.stderr, flush=True)
    atomic_copy(src, dest, _verifier(model.sha256, str(src), DDSRError))
    return dest


def _fetch_from_urls(model: PretrainedModel, dest: Path, quiet: bool) -> Path:
    urls = source_urls(model)
    for url in urls:
        if not quiet:
            print(f'downloading {model.name} ({model.license}) from {url} into {dest}', file=sys.stderr, flush=True)
        try:
            return download(url, dest, model.sha256, model.name, quiet)
        except urllib.error.HTTPError as err:
            if err.code != 404 or not _mirror():
                raise
            if not quiet:
                print(f'{url}: HTTP 404 {err.reason}', file=sys.stderr, flush=True)
    raise _mirror_lacks(model, _mirror(), f'{" and ".join(urls)} answer HTTP 404')


def fetch(name: str | PretrainedModel, quiet: bool = False) -> Path:
    """Local path of a pretrained model's file, downloaded (and verified) on first use."""
    model = name if isinstance(name, PretrainedModel) else lookup(name)
    path = cached_path(model)
    if path.is_file():
        if sha256_file(path) == model.sha256:
            return path
        print(f'warning: cached {path} does not match its sha256 (corrupt or replaced); downloading it again',
              file=sys.stderr, flush=True)
        path.unlink()
    folder = _mirror_folder(_mirror()) if _mirror() else None
    url = source_url(model)
    try:
        if folder is not None:
            return _fetch_from_folder(model, folder, path, quiet)
        return _fetch_from_urls(model, path, quiet)
    except DDSRError:
        raise
    except urllib.error.HTTPError as err:
        raise _offline_error(model, err.geturl() or url, f'HTTP {err.code} {err.reason}') from None
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


def copy_into_cache(name: str, src: str | os.PathLike) -> Path:
    """Install a file obtained by hand (verified like a download)."""
    model = lookup(name)
    src = Path(src)
    if not src.is_file():
        raise DDSRError(f'{src}: no such file')
    got = sha256_file(src)
    if got != model.sha256:
        raise DDSRError(f'{src}: sha256 {got} is not the one of {model.name} ({model.sha256})')
    dest = cached_path(model)
    atomic_copy(src, dest)
    return dest
