"""User cache of deploy decisions: which backend runs a network fastest here, and its checked ONNX export.

``ddsr upscale --backend auto`` probes once per (weights content, arch config, threads, device, library versions,
ddsr arch sources) and stores the outcome; later runs read it and start on the chosen path at once (no export, no
check, no timing; with onnxruntime chosen, not even torch is imported).

Location: ``$DDSR_CACHE_DIR/deploy`` if set, else ``$XDG_CACHE_HOME/ddsr/deploy``, else ``~/.cache/ddsr/deploy``
(``DDSR_CACHE_DIR`` is the root of all of ddsr's caches). One folder per key (its SHA-256) holding ``choice.json``
(backend, probe timings, the export's check) and ``model-<sha>.onnx`` (with ``--precision int8|auto`` also the
int8 quantization of that export, under its own content hash). Deleting the folder clears the cache.

Concurrency and damage: every file is written to a temporary name in its folder and renamed into place
(:func:`ddsr.fileio.atomic_write_bytes`: ``os.replace``, atomic on POSIX and Windows), the ONNX file under its
content hash, ``choice.json`` last. Two runs on an empty cache both probe and both write complete, equivalent entries
(the last rename wins); a reader sees the old or the new file, never half of one. An entry that does not parse, lacks
a field, was written for another key, or whose ONNX file is missing or differs from its recorded hash is reported as
corrupt and rebuilt.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddsr.fileio import atomic_write_bytes, cache_root, sha256_bytes, sha256_file

FORMAT = 2  # bump when choice.json's meaning changes (2: the network's description is stored)
REQUIRED = ('key', 'backend', 'scale', 'min_size', 'multiple', 'network')
ONNX_FIELDS = ('onnx', 'onnx_int8')  # the float32 export and its int8 quantization (``--precision``), each with _sha256


class CorruptEntry(Exception):
    """A cache entry that cannot be used as is (the caller rebuilds it)."""


def deploy_dir() -> Path:
    return cache_root() / 'deploy'


def key_of(material: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of what the decision depends on."""
    text = json.dumps({'format': FORMAT, **material}, sort_keys=True, default=str)
    return sha256_bytes(text.encode())


def entry_dir(key: str) -> Path:
    return deploy_dir() / key[:32]


def read_entry(key: str) -> dict | None:
    """The stored choice for ``key`` (with ``onnx_path`` resolved); None when absent; CorruptEntry when damaged."""
    folder = entry_dir(key)
    path = folder / 'choice.json'
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptEntry(f'{path}: unreadable ({type(err).__name__})') from None
    if not isinstance(entry, dict) or any(k not in entry for k in REQUIRED):
        raise CorruptEntry(f'{path}: missing fields')
    if entry['key'] != key:
        raise CorruptEntry(f'{path}: written for another key')
    for field in ONNX_FIELDS:
        if entry.get(field):
            onnx = folder / str(entry[field])
            if not onnx.is_file() or sha256_file(onnx) != entry.get(f'{field}_sha256'):
                raise CorruptEntry(f'{onnx}: missing or not the recorded file')
            entry[f'{field}_path'] = str(onnx)
    return entry


def store_onnx(key: str, data: bytes) -> tuple[str, str]:
    """Store an ONNX model under its content hash in ``key``'s folder; ``(file name, sha256)``."""
    sha = sha256_bytes(data)
    name = f'model-{sha[:16]}.onnx'
    target = entry_dir(key) / name
    if not (target.is_file() and sha256_file(target) == sha):
        atomic_write_bytes(target, data)
    return name, sha


def write_entry(key: str, entry: Mapping[str, Any]) -> Path:
    """Write ``choice.json`` for ``key`` (after its ONNX file, see :func:`store_onnx`)."""
    record = {k: v for k, v in entry.items() if k not in {f'{field}_path' for field in ONNX_FIELDS}}
    record['key'] = key
    path = entry_dir(key) / 'choice.json'
    atomic_write_bytes(path, json.dumps(record, indent=1, sort_keys=True, default=str).encode())
    return path


def remove_entry(key: str) -> None:
    """Forget the choice for ``key`` (its ``choice.json``; the ONNX file is kept and reused by the next probe)."""
    (entry_dir(key) / 'choice.json').unlink(missing_ok=True)
