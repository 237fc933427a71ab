"""Shared fixtures: the demo data set (built once per session), CLI runner, option-file writer."""
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ddsr  # noqa: F401  (compat + registration)
from ddsr.data.demo import build_demo_data

REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = REPO_ROOT.parent / 'shared' / 'pretrained'


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test its own ddsr cache (DDSR_CACHE_DIR): no test sees another's cached decisions or the user's."""
    monkeypatch.setenv('DDSR_CACHE_DIR', str(tmp_path_factory.mktemp('ddsr-cache')))


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory) -> Path:
    """A built demo data set (see ddsr.data.demo), shared by the whole test session."""
    return Path(build_demo_data(str(tmp_path_factory.mktemp('demo') / 'demo')))


@pytest.fixture
def workdir(tmp_path: Path, demo_root: Path) -> Path:
    """A fresh root for CLI runs with ``datasets/demo`` and ``options`` linked in, as in a checkout."""
    (tmp_path / 'datasets').mkdir()
    (tmp_path / 'datasets' / 'demo').symlink_to(demo_root)
    (tmp_path / 'options').symlink_to(REPO_ROOT / 'options')
    return tmp_path


def run_cli(args: list[str], cwd, timeout: float = 900, env: dict = None) -> subprocess.CompletedProcess:
    """Run ``python -m ddsr.cli <args>`` (``basicsr ...`` or a ``ddsr`` command) in ``cwd``; output captured."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    return subprocess.run([sys.executable, '-m', 'ddsr.cli', *map(str, args)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def write_options(path, opt: dict) -> Path:
    """Write an option dict as YAML (BasicSR reads plain YAML mappings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def load_yaml(path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def upscale(folder: Path, out: str, capsys, *extra: str) -> tuple[int, str, str]:
    """``ddsr upscale --weights folder/net.pth -i folder/in -o folder/<out> [extra]`` in this process: (exit code,
    stdout, stderr) as captured by pytest's ``capsys``."""
    from ddsr.cli import ddsr_main
    code = ddsr_main(['upscale', '--weights', str(folder / 'net.pth'), '-i', str(folder / 'in'), '-o',
                      str(folder / out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli_inprocess(args: list[str], cwd) -> tuple[int, str, str]:
    """``ddsr.cli.main(args)`` in this process with ``cwd`` as working directory: (exit code, stdout, stderr).

    Much faster than :func:`run_cli` (no new interpreter, no basicsr import) for the many short runs of the fault
    suite. ``SystemExit`` (argparse usage errors) becomes its code; any other exception propagates to the test.
    """
    from ddsr.cli import main
    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_argv = os.getcwd(), list(sys.argv)
    os.chdir(str(cwd))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test (tiny nets on a shared 2-core machine run ~100x faster)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
