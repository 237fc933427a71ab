"""ddsr.fileio, the one home of the file utilities: atomic writes (umask, failure, refusal), sha256, cache root,
temporary folders moved into place."""
import hashlib
import os
import stat
from pathlib import Path

import pytest

from ddsr import fileio
from ddsr.deploy import cache


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith('.'))


def test_atomic_write_honours_the_umask_everywhere(tmp_path):
    old = os.umask(0o027)
    try:
        fileio.atomic_write_bytes(tmp_path / 'a.bin', b'abc')
        cache.atomic_write_bytes(tmp_path / 'choice.json', b'{}')  # deploy cache: the same function
        assert fileio.umask() == 0o027 and os.umask(0o027) == 0o027  # reading it leaves it unchanged
    finally:
        os.umask(old)
    for name in ('a.bin', 'choice.json'):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640
    assert (tmp_path / 'a.bin').read_bytes() == b'abc' and _leftovers(tmp_path) == []


def test_failed_or_refused_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'model.pth'
    path.write_bytes(b'old')
    with pytest.raises(RuntimeError), fileio.atomic_write(path) as f:
        f.write(b'half')
        raise RuntimeError('killed')

    def refuse(tmp: Path) -> None:
        assert tmp.read_bytes() == b'new' and tmp.parent == tmp_path
        raise ValueError('wrong hash')

    with pytest.raises(ValueError, match='wrong hash'), fileio.atomic_write(path, refuse) as f:
        f.write(b'new')
    assert path.read_bytes() == b'old' and _leftovers(tmp_path) == []
    fileio.atomic_copy(path, tmp_path / 'sub' / 'copy.pth')  # the parent folder is created
    assert (tmp_path / 'sub' / 'copy.pth').read_bytes() == b'old'


def test_sha256_and_cache_root(tmp_path, monkeypatch):
    data = os.urandom(3 << 20)  # more than one read block
    (tmp_path / 'f').write_bytes(data)
    assert fileio.sha256_file(tmp_path / 'f') == fileio.sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    monkeypatch.setenv('DDSR_CACHE_DIR', str(tmp_path / 'c'))
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'x'))
    assert fileio.cache_root() == tmp_path / 'c' and cache.deploy_dir() == tmp_path / 'c' / 'deploy'
    monkeypatch.delenv('DDSR_CACHE_DIR')
    assert fileio.cache_root() == tmp_path / 'x' / 'ddsr'
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert fileio.cache_root() == tmp_path / 'home' / '.cache' / 'ddsr'


def test_temp_dir_and_replace_dir(tmp_path):
    target = tmp_path / 'out' / 'set'
    target.mkdir(parents=True)
    (target / 'stale.png').write_bytes(b'x')
    old = os.umask(0o022)
    try:
        with fileio.temp_dir(tmp_path / 'out', '.build-') as tmp:
            built = Path(tmp) / 'set'
            built.mkdir()
            (built / 'new.png').write_bytes(b'y')
            fileio.replace_dir(built, target)
    finally:
        os.umask(old)
    assert [p.name for p in target.iterdir()] == ['new.png']
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['set']  # the temporary folder is gone
