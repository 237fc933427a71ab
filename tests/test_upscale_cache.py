"""Issue 15: `ddsr upscale` decides its backend once (user cache), reuses it, rebuilds damaged entries, and
survives concurrent first runs; the start-up-aware choice; the cached onnxruntime path runs without torch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ddsr.archs.registry import arch_class
from ddsr.deploy import cache, runner
from tests.conftest import REPO_ROOT, upscale

ARCH = {'type': 'DIPNet', 'num_feat': 8, 'num_mid': 8, 'num_block': 1, 'esa_channels': 4, 'upscale': 2}


@pytest.fixture(autouse=True)
def no_recheck(monkeypatch):
    """Cache hits here must not re-probe because a loaded test machine ran the check slowly (tests/
    test_deploy_runtime.py tests the re-probe)."""
    monkeypatch.setattr(runner, 'RECHECK_FACTOR', float('inf'))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = arch_class('DIPNet')(**{k: v for k, v in ARCH.items() if k != 'type'})
    torch.save({'params': net.state_dict(), 'arch': ARCH}, tmp_path / 'net.pth')
    rng = np.random.default_rng(0)
    (tmp_path / 'in').mkdir()
    for name in ('a', 'b'):
        cv2.imwrite(str(tmp_path / 'in' / f'{name}.png'), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return tmp_path


def outputs(folder: Path, out: str) -> np.ndarray:
    return np.stack([cv2.imread(str(folder / out / f'{n}.png')).astype(int) for n in ('a', 'b')])


def entries() -> list[Path]:
    return sorted(cache.deploy_dir().glob('*/choice.json'))


def test_cache_hit_skips_the_probe_and_a_corrupt_entry_is_rebuilt(folder, capsys):
    counts = dict(runner.COUNTERS)
    code, out, _ = upscale(folder, 'o1', capsys)
    assert code == 0 and 'on a probe; cached in' in out
    assert runner.COUNTERS['probes'] == counts['probes'] + 1
    assert len(entries()) == 1 and str(cache.deploy_dir()).startswith(os.environ['DDSR_CACHE_DIR'])
    entry = json.loads(entries()[0].read_text())
    assert entry['onnx_max_diff'] <= runner.ONNX_TOL and set(entry['timings_ms']) == {'torch', 'onnxruntime'}

    code, out, _ = upscale(folder, 'o2', capsys)
    assert code == 0 and 'cached choice' in out
    assert runner.COUNTERS['probes'] == counts['probes'] + 1  # no second probe
    assert runner.COUNTERS['cache_hits'] == counts['cache_hits'] + 1
    assert np.abs(outputs(folder, 'o1') - outputs(folder, 'o2')).max() <= 1

    entries()[0].write_text('{"backend": "onnxr')  # truncated by a crash or a full disk
    code, out, err = upscale(folder, 'o3', capsys)
    assert code == 0 and 'corrupt' in err and 'on a probe' in out
    assert runner.COUNTERS['probes'] == counts['probes'] + 2 and runner.COUNTERS['rebuilt'] == counts['rebuilt'] + 1
    onnx = next(cache.deploy_dir().glob('*/model-*.onnx'))
    onnx.write_bytes(onnx.read_bytes()[:100])  # a damaged export: its hash no longer matches
    code, out, err = upscale(folder, 'o4', capsys, '--backend', 'onnxruntime')
    assert code == 0 and 'corrupt' in err and 'with onnxruntime' in out
    assert runner.COUNTERS['probes'] == counts['probes'] + 3
    assert np.abs(outputs(folder, 'o1') - outputs(folder, 'o4')).max() <= 1
    code, out, _ = upscale(folder, 'o5', capsys)
    assert code == 0 and 'cached choice' in out and runner.COUNTERS['probes'] == counts['probes'] + 3


def test_another_key_gets_its_own_entry(folder, capsys):
    assert upscale(folder, 'o1', capsys)[0] == 0
    assert upscale(folder, 'o2', capsys, '--threads', '1')[0] == 0  # threads are part of the key
    assert len(entries()) == 2


def test_two_concurrent_first_runs_both_succeed(folder):
    cmd = [sys.executable, '-m', 'ddsr.cli', 'upscale', '--weights', str(folder / 'net.pth'), '-i',
           str(folder / 'in')]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([*cmd, '-o', str(folder / f'c{i}')], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [(proc.wait(timeout=600), proc.stdout.read(), proc.stderr.read()) for proc in procs]
    for code, out, err in results:
        assert code == 0, err[-2000:]
        assert 'upscaled 2/2 images x2' in out
    assert len(entries()) == 1 and cache.read_entry(json.loads(entries()[0].read_text())['key']) is not None
    assert np.abs(outputs(folder, 'c0') - outputs(folder, 'c1')).max() <= 1
    assert not list(cache.deploy_dir().glob('*/.*.tmp'))  # no temporary file left behind


def test_cached_onnxruntime_run_does_not_import_torch(folder, capsys):
    assert upscale(folder, 'o1', capsys)[0] == 0  # fills the cache
    code = ('import sys, json\nfrom ddsr.cli import ddsr_main\n'
            f'rc = ddsr_main(["upscale", "--weights", {str(folder / "net.pth")!r}, "-i", {str(folder / "in")!r}, '
            f'"-o", {str(folder / "o2")!r}, "--backend", "onnxruntime"])\n'
            'print(json.dumps([rc, "torch" in sys.modules, "basicsr" in sys.modules]))')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, False, False]
    assert np.abs(outputs(folder, 'o1') - outputs(folder, 'o2')).max() <= 1


@pytest.mark.parametrize('timings, import_s, n, torch_loaded, tiled, expected', [
    ({'torch': 100, 'onnxruntime': 120}, 2.0, 6, False, False, 'onnxruntime'),  # 0.6 + 2 s > 0.72 s
    ({'torch': 100, 'onnxruntime': 120}, 2.0, 6000, False, False, 'torch'),  # 600 + 2 s < 720 s
    ({'torch': 100, 'onnxruntime': 120}, 2.0, 6, True, False, 'torch'),  # torch already imported: per image only
    ({'torch': 100, 'onnxruntime': 120}, 2.0, 6, False, True, 'torch'),  # tiling imports torch anyway
    ({'torch': 100, 'onnxruntime': 90}, 2.0, 6, True, False, 'onnxruntime'),
])
def test_auto_choice_counts_the_torch_import(timings, import_s, n, torch_loaded, tiled, expected, monkeypatch):
    entry = {'timings_ms': timings, 'torch_import_s': import_s, 'probe': 96, 'onnx_path': 'x.onnx'}
    if not torch_loaded:
        monkeypatch.delitem(sys.modules, 'torch')
    try:
        assert runner.choose(entry, n, 96 * 96, tiled) == expected
    finally:
        sys.modules['torch'] = torch


def test_two_images_in_flight_give_the_same_outputs(folder, capsys):
    """A folder runs two images at a time on onnxruntime (half the threads each); the outputs equal a run with one
    image at a time (``--threads 1``) to float rounding, and the summary line says how it ran."""
    code, out, err = upscale(folder, 'pair', capsys, '--backend', 'onnxruntime', '--threads', '2')
    assert code == 0, err
    assert '2 images at a time' in out
    code, out, err = upscale(folder, 'single', capsys, '--backend', 'onnxruntime', '--threads', '1')
    assert code == 0 and 'images at a time' not in out, err
    assert np.abs(outputs(folder, 'pair') - outputs(folder, 'single')).max() <= 1


def test_run_folder_workers_collect_errors_and_raise_crashes(tmp_path):
    """With 3 forwards in flight every image is written once, a per-image DDSRError is collected for its file, and
    any other exception in a helper thread is raised in the caller (not lost with the thread)."""
    from ddsr.deploy.pipeline import run_folder
    from ddsr.errors import DDSRError
    files = []
    for i in range(7):
        files.append(tmp_path / f'{i}.png')
        cv2.imwrite(str(files[-1]), np.full((4, 5, 3), 10 * i, np.uint8))
    targets = [tmp_path / 'out' / f'{i}.png' for i in range(7)]
    targets[0].parent.mkdir()

    def forward(x: np.ndarray) -> np.ndarray:
        if x[0, 0, 0, 0] == np.float32(30 / 255):  # image 3
            raise DDSRError('image 3 refused')
        return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)

    done = []
    failed = run_folder(forward, files, targets, on_done=done.append, workers=3)
    assert list(failed) == [files[3]] and str(failed[files[3]]) == 'image 3 refused'
    assert sorted(done) == sorted(files) and len(done) == 7
    written = sorted(p.name for p in targets[0].parent.iterdir())
    assert written == sorted(f'{i}.png' for i in range(7) if i != 3)
    assert cv2.imread(str(targets[5])).shape == (8, 10, 3) and int(cv2.imread(str(targets[5]))[0, 0, 0]) == 50

    def crash(x: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError('bug in a forward')

    with pytest.raises(ZeroDivisionError, match='bug in a forward'):
        run_folder(crash, files, [tmp_path / 'out2' / f'{i}.png' for i in range(7)], workers=2)
