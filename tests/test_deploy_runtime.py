"""Issue 22 (one network source, one runtime), 26 and 28 (probe message, recognised network, tile progress, a probe
robust to contention): files read once, YAML parsed once, no basicsr on the inference path, each piece of the
runtime in one place."""
import builtins
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ddsr.archs.registry import arch_class
from ddsr.cli import ddsr_main
from ddsr.deploy import cache, runner
from ddsr.deploy.backends import min_ms
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / 'ddsr'
DIPNET = {'num_feat': 8, 'num_mid': 8, 'num_block': 1, 'esa_channels': 4, 'upscale': 2}


def plain_dipnet(path: Path) -> Path:
    """A small DIPNet x2 as a plain state dict (no arch entry: recognised from its keys and shapes)."""
    torch.manual_seed(0)
    torch.save(arch_class('DIPNet')(**DIPNET).state_dict(), path)
    return path


def images(folder: Path, *sizes: tuple[int, int]) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f'{i}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


@pytest.fixture(autouse=True)
def no_recheck(monkeypatch):
    """A cached choice is re-probed when it now runs much slower than its record, which a loaded test machine can
    cause at any time; tests that count probes turn that off (the re-probe test turns it back on)."""
    monkeypatch.setattr(runner, 'RECHECK_FACTOR', float('inf'))


class Reads:
    """Counts the opens (builtins.open / io.open, which Path.read_bytes and torch.load use) per file, and YAML
    parses."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opens: dict[str, int] = {}
        self.yaml = 0
        real_open, real_load = builtins.open, yaml.load

        def counting_open(file, *args, **kwargs):
            if isinstance(file, (str, Path)):
                key = str(Path(file).resolve())
                self.opens[key] = self.opens.get(key, 0) + 1
            return real_open(file, *args, **kwargs)

        def counting_load(*args, **kwargs):
            self.yaml += 1
            return real_load(*args, **kwargs)

        monkeypatch.setattr(builtins, 'open', counting_open)
        monkeypatch.setattr(io, 'open', counting_open)
        monkeypatch.setattr(yaml, 'load', counting_load)

    def of(self, path: Path) -> int:
        return self.opens.get(str(path.resolve()), 0)


def test_export_opt_reads_each_file_once_and_parses_the_yaml_once(tmp_path, capsys):
    torch.manual_seed(0)
    net = arch_class('EDSRmini')(upscale=2)
    torch.save({'params': net.state_dict()}, tmp_path / 'net.pth')
    opt = tmp_path / 'test.yml'
    opt.write_text(yaml.safe_dump({'name': 'x', 'scale': 2, 'network_g': {'type': 'EDSRmini', 'upscale': 2},
                                   'path': {'pretrain_network_g': str(tmp_path / 'net.pth')}}))
    with pytest.MonkeyPatch.context() as patch:
        reads = Reads(patch)
        assert ddsr_main(['export', '-opt', str(opt), '--out-pth', str(tmp_path / 'deploy.pth')]) == 0
    assert 'wrote' in capsys.readouterr().out
    assert (reads.of(opt), reads.of(tmp_path / 'net.pth'), reads.yaml) == (1, 1, 1)


def test_upscale_weights_reads_the_checkpoint_once_and_names_the_network(tmp_path, capsys):
    weights = plain_dipnet(tmp_path / 'net.pth')
    images(tmp_path / 'in', (20, 24))
    for run in ('probe', 'cache'):
        with pytest.MonkeyPatch.context() as patch:
            reads = Reads(patch)
            assert ddsr_main(['upscale', '--weights', str(weights), '-i', str(tmp_path / 'in'), '-o',
                              str(tmp_path / run)]) == 0
        assert (reads.of(weights), reads.yaml) == (1, 0), run
        err = capsys.readouterr().err
        params = sum(p.numel() for p in arch_class('DIPNet')(**DIPNET).parameters())
        assert f'network: DIPNet x2, deploy form, {params:,} parameters (recognised from the weights)' in err, run
        assert ('choosing a backend for --weights' in err) == (run == 'probe')


def test_no_basicsr_and_plain_lines_through_a_pipe(tmp_path):
    """``ImageUpscaler.from_file`` and ``ddsr upscale --weights`` (checkpoint recognition, backend probe, then the
    cached choice) in a fresh process with stdout and stderr as pipes: basicsr is never imported, the probe says what
    it does before doing it, the recognised network is named, and no carriage return is written."""
    weights = plain_dipnet(tmp_path / 'net.pth')
    images(tmp_path / 'in', (20, 24), (18, 22))
    code = (
        'import json, sys\nimport numpy as np\nimport ddsr\nfrom ddsr.cli import ddsr_main\n'
        'from ddsr.deploy import runner\nrunner.RECHECK_FACTOR = float("inf")  # see no_recheck\n'
        f'up = ddsr.ImageUpscaler.from_file({str(weights)!r})\n'
        'out = up(np.zeros((16, 20, 3), np.uint8))\n'
        'seen = ["basicsr" in sys.modules]\n'
        'for run in ("a", "b"):\n'
        f'    assert ddsr_main(["upscale", "--weights", {str(weights)!r}, "-i", {str(tmp_path / "in")!r}, "-o", '
        f'{str(tmp_path)!r} + "/out_" + run]) == 0\n'
        '    seen.append("basicsr" in sys.modules)\n'
        'print(json.dumps([list(out.shape), seen]))\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
                          env={**os.environ, 'DDSR_CACHE_DIR': str(tmp_path / 'cache')})
    assert proc.returncode == 0, proc.stderr[-3000:]
    shape, seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shape == [32, 40, 3] and seen == [False, False, False]
    assert '\r' not in proc.stdout + proc.stderr
    assert proc.stderr.count('choosing a backend for --weights') == 1  # the first run only: then cached
    assert proc.stderr.count('network: DIPNet x2, deploy form') == 2  # probe run and cached run alike


def test_tiled_image_shows_tile_progress(tmp_path, capsys):
    torch.manual_seed(0)
    net = arch_class('EDSRmini')(upscale=2)
    torch.save({'params': net.state_dict(), 'arch': {'type': 'EDSRmini', 'upscale': 2}}, tmp_path / 'net.pth')
    images(tmp_path / 'in', (50, 70))
    assert ddsr_main(['upscale', '--weights', str(tmp_path / 'net.pth'), '-i', str(tmp_path / 'in'), '-o',
                      str(tmp_path / 'out'), '--tile', '24', '--tile-overlap', '8', '--backend', 'torch']) == 0
    err = capsys.readouterr().err
    assert '\r' not in err
    assert re.search(r'tiles of a 70x50 image: 9/9 \(100%\)', err), err  # 3 x 3 tiles, the last line always shows


def test_a_cached_choice_much_slower_than_its_record_is_probed_again(tmp_path, monkeypatch, capsys):
    weights = plain_dipnet(tmp_path / 'net.pth')
    images(tmp_path / 'in', (20, 24))

    def upscale(out: str) -> str:
        assert ddsr_main(['upscale', '--weights', str(weights), '-i', str(tmp_path / 'in'), '-o',
                          str(tmp_path / out)]) == 0
        return capsys.readouterr().err

    counts = dict(runner.COUNTERS)
    upscale('o1')
    upscale('o2')  # its record holds (the check is off, see no_recheck): no second probe
    assert runner.COUNTERS['probes'] == counts['probes'] + 1 and runner.COUNTERS['rechecked'] == counts['rechecked']
    path = next(cache.deploy_dir().glob('*/choice.json'))
    entry = json.loads(path.read_text())
    entry['timings_ms'] = {k: 1e-6 for k in entry['timings_ms']}  # a record the machine cannot meet now
    path.write_text(json.dumps(entry))
    monkeypatch.setattr(runner, 'RECHECK_MIN_MS', 0.0)
    monkeypatch.setattr(runner, 'RECHECK_FACTOR', 3.0)
    err = upscale('o3')
    assert 'probing again' in err and 'choosing a backend' in err
    assert runner.COUNTERS['probes'] == counts['probes'] + 2
    assert runner.COUNTERS['rechecked'] == counts['rechecked'] + 1
    assert min(json.loads(path.read_text())['timings_ms'].values()) > 1e-6  # the new record replaced it


def test_probe_timing_is_the_fastest_run():
    """Load only adds time: the probe keeps the fastest of its runs, not a median a busy neighbour can move."""
    delays = iter([0.0, 0.2, 0.0, 0.2])  # warm-up, then slow, fast, slow

    assert min_ms(lambda: time.sleep(next(delays)), runs=3) < 100


def _sources(names: tuple[str, ...]) -> dict[str, str]:
    return {str(p.relative_to(REPO_ROOT)): p.read_text() for name in names for p in sorted(PACKAGE.glob(name))}


@pytest.mark.parametrize('needle,home,where', [
    ('InferenceSession(', 'ddsr/deploy/onnx_runtime.py', ('**/*.py',)),  # onnxruntime session construction
    ('custom_metadata_map', 'ddsr/deploy/onnx_runtime.py', ('**/*.py',)),  # ONNX metadata reading
    ('max(min_size - ', 'ddsr/deploy/padding.py', ('**/*.py',)),  # input padding
    ('def choose(', 'ddsr/deploy/runner.py', ('**/*.py',)),  # backend choice
    ('PROBE_SIZE = ', 'ddsr/deploy/runner.py', ('deploy/*.py', 'api.py', 'commands/*.py')),
    ('resolve_arch(', 'ddsr/deploy/source.py', ('deploy/*.py', 'api.py', 'commands/*.py', 'bench/*.py')),
    ("f'pretrain_network_", 'ddsr/deploy/source.py', ('deploy/*.py', 'api.py', 'commands/*.py', 'bench/*.py')),
    ('zoo.fetch(', 'ddsr/deploy/source.py', ('deploy/*.py', 'api.py', 'commands/upscale.py', 'commands/export.py',
                                            'commands/bench.py', 'commands/make_enhanced_hr.py', 'bench/*.py')),
])
def test_each_runtime_piece_exists_once(needle, home, where):
    found = [path for path, text in _sources(where).items() if needle in text]
    assert found == [home]


def test_unused_inference_path_is_gone():
    assert not (PACKAGE / 'deploy' / 'inference.py').exists()
    assert not any('yaml.safe_load(' in text or 'argparse' in text
                   for text in _sources(('deploy/*.py', 'bench/models.py')).values())


def test_onnx_reader_default_minimum_is_esa_minimum():
    from ddsr.archs.esa_upsample import ESA_MIN_INPUT
    from ddsr.deploy.onnx_runtime import UNKNOWN_MIN_SIZE
    assert UNKNOWN_MIN_SIZE == ESA_MIN_INPUT


def test_onnx_model_without_metadata_runs_with_measured_scale(tmp_path):
    """A model not written by ddsr (no metadata): the one reader measures its scale; both the tensor path and the
    NumPy path of ``ddsr upscale --onnx`` use it."""
    import onnx

    from ddsr.deploy import onnx_runtime
    from ddsr.deploy.backends import onnx_upscaler
    from ddsr.deploy.export import export_onnx
    torch.manual_seed(0)
    net = arch_class('EDSRmini')(upscale=3).eval()
    export_onnx(net, tmp_path / 'm.onnx', size=16)
    model = onnx.load(str(tmp_path / 'm.onnx'))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / 'bare.onnx'))
    meta = onnx_runtime.read_meta(onnx_runtime.session(str(tmp_path / 'bare.onnx')))
    assert (meta.scale, meta.min_size, meta.multiple) == (3, 15, 1)
    x = torch.rand(1, 3, 17, 19)  # above the default minimum of 15: no padding, so equal to the unpadded net
    with torch.no_grad():
        ref = net(x)
    up = onnx_upscaler(str(tmp_path / 'bare.onnx'))
    assert up.scale == 3 and (up(x) - ref).abs().max() <= 1e-4
    fwd = onnx_runtime.numpy_forward(onnx_runtime.session(str(tmp_path / 'bare.onnx')), meta)
    assert np.abs(fwd(x.numpy()) - ref.numpy()).max() <= 1e-4
