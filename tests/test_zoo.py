"""Pretrained models by name (ddsr.zoo, `ddsr models`, --model, ddsr://NAME), served by a local HTTP server."""
import functools
import hashlib
import http.server
import re
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ddsr import zoo
from ddsr.errors import DDSRError
from ddsr.fileio import sha256_file
from tests.conftest import PRETRAINED, run_cli, run_cli_inprocess, write_options

TINY = {'type': 'DIPNet', 'num_feat': 8, 'num_mid': 6, 'num_block': 1, 'esa_channels': 4, 'upscale': 2,
        'deploy': True}


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []
    truncate: set[str] = set()

    def log_message(self, *args) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        type(self).requests.append(self.path)
        name = self.path.lstrip('/')
        if name in self.truncate:  # promise the whole file, send half of it, hang up
            data = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (base URL, folder, handler class)."""
    root = tmp_path / 'www'
    root.mkdir()
    handler = type('Handler', (_Handler,), {'requests': [], 'truncate': set()})
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}', root, handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tiny_model(tmp_path, monkeypatch, server):
    """A small generated checkpoint registered as 'Tiny-x2' (its own sha256), mirrored by the local server."""
    from basicsr.utils.registry import ARCH_REGISTRY
    base, root, handler = server
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('DIPNet')(**{k: v for k, v in TINY.items() if k != 'type'})
    path = root / 'tiny_x2.pth'
    torch.save(net.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = zoo.PretrainedModel('Tiny-x2', TINY, 'https://example.invalid/files/tiny_x2.pth', digest, 'MIT', 'deploy',
                                'a test')
    monkeypatch.setitem(zoo.MODELS, 'Tiny-x2', model)
    monkeypatch.setenv('DDSR_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('DDSR_MODEL_MIRROR', base)
    return model, path, handler


def test_download_verifies_caches_and_second_use_does_not_download(tiny_model, tmp_path):
    model, src, handler = tiny_model
    path = zoo.fetch('Tiny-x2', quiet=True)
    assert path == tmp_path / 'cache' / 'models' / 'tiny_x2.pth'
    assert path.read_bytes() == src.read_bytes()
    assert handler.requests == ['/tiny_x2.pth']  # mirror: URL/<file name of the source URL>
    assert zoo.fetch('ddsr://tiny-X2', quiet=True) == path  # case-insensitive, scheme accepted
    assert zoo.resolve('ddsr://Tiny-x2', quiet=True) == str(path)
    assert handler.requests == ['/tiny_x2.pth']  # cached: no second request
    assert sorted(p.name for p in path.parent.iterdir()) == ['tiny_x2.pth']


def test_wrong_hash_is_deleted_with_a_clear_error(tiny_model, tmp_path, monkeypatch):
    model, src, handler = tiny_model
    bad = zoo.PretrainedModel(**{**model.__dict__, 'sha256': '0' * 64})
    monkeypatch.setitem(zoo.MODELS, 'Tiny-x2', bad)
    with pytest.raises(DDSRError, match=r'sha256 mismatch \(expected 0{64}, got ' + model.sha256) as err:
        zoo.fetch('Tiny-x2', quiet=True)
    assert 'deleted' in str(err.value) and '\n' not in str(err.value)
    assert list((tmp_path / 'cache' / 'models').iterdir()) == []  # nothing half-written, nothing under the name


def test_truncated_download_leaves_nothing(tiny_model, tmp_path):
    model, src, handler = tiny_model
    handler.truncate.add('tiny_x2.pth')
    with pytest.raises(DDSRError, match='cannot download Tiny-x2'):
        zoo.fetch('Tiny-x2', quiet=True)
    assert list((tmp_path / 'cache' / 'models').iterdir()) == []


def test_corrupt_cached_file_is_downloaded_again(tiny_model, tmp_path, capsys):
    model, src, handler = tiny_model
    path = zoo.cached_path(model)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'not a checkpoint')
    assert zoo.fetch('Tiny-x2', quiet=True).read_bytes() == src.read_bytes()
    assert len(handler.requests) == 1
    assert 'does not match its sha256' in capsys.readouterr().err


def test_offline_error_is_one_line_naming_url_and_place(tiny_model, tmp_path, monkeypatch):
    model, _, _ = tiny_model
    import socket
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv('DDSR_MODEL_MIRROR', f'http://127.0.0.1:{port}/m')
    with pytest.raises(DDSRError) as err:
        zoo.fetch('Tiny-x2', quiet=True)
    text = str(err.value)
    assert '\n' not in text
    assert f'http://127.0.0.1:{port}/m/tiny_x2.pth' in text
    assert str(tmp_path / 'cache' / 'models' / 'tiny_x2.pth') in text and model.sha256 in text
    monkeypatch.delenv('DDSR_MODEL_MIRROR')
    assert zoo.source_url(model) == 'https://example.invalid/files/tiny_x2.pth'


def test_missing_file_on_server_and_unknown_name(tiny_model, monkeypatch, server):
    base, root, _ = server
    (root / 'tiny_x2.pth').unlink()
    with pytest.raises(DDSRError, match='HTTP 404'):
        zoo.fetch('Tiny-x2', quiet=True)
    with pytest.raises(DDSRError, match="unknown pretrained model 'DIPNet-x3'.*did you mean DIPNet-x4"):
        zoo.lookup('DIPNet-x3')


def test_folder_mirror_and_add_by_hand(tiny_model, tmp_path, monkeypatch):
    model, src, handler = tiny_model
    monkeypatch.setenv('DDSR_MODEL_MIRROR', str(src.parent))  # a plain folder (offline copies)
    assert zoo.fetch('Tiny-x2', quiet=True).read_bytes() == src.read_bytes()
    assert handler.requests == []
    zoo.cached_path(model).unlink()
    assert zoo.copy_into_cache('Tiny-x2', src) == zoo.cached_path(model)
    wrong = tmp_path / 'wrong.pth'
    wrong.write_bytes(b'x')
    with pytest.raises(DDSRError, match='is not the one of Tiny-x2'):
        zoo.copy_into_cache('Tiny-x2', wrong)


def test_offline_error_names_the_add_command(tiny_model, monkeypatch):
    model, _, _ = tiny_model
    monkeypatch.delenv('DDSR_MODEL_MIRROR')
    monkeypatch.setattr(zoo.urllib.request, 'urlopen', _no_network)
    with pytest.raises(DDSRError) as err:
        zoo.fetch('Tiny-x2', quiet=True)
    text = str(err.value)
    assert '\n' not in text and 'cannot download Tiny-x2 from https://example.invalid/files/tiny_x2.pth' in text
    assert 'without network access, `ddsr models --add Tiny-x2 FILE`' in text
    assert 'DDSR_MODEL_MIRROR to a folder or URL holding tiny_x2.pth or Tiny-x2.pth' in text


def _no_network(*args, **kwargs):
    raise zoo.urllib.error.URLError('[Errno -3] Temporary failure in name resolution')


@pytest.mark.parametrize('served_as', ['tiny_x2.pth', 'Tiny-x2.pth'])
def test_http_mirror_serves_upstream_name_or_model_name(tiny_model, tmp_path, served_as):
    model, src, handler = tiny_model
    src.rename(src.parent / served_as)
    path = zoo.fetch('Tiny-x2', quiet=True)
    assert path == zoo.cached_path(model) and sha256_file(path) == model.sha256
    tried = ['/tiny_x2.pth', '/Tiny-x2.pth']
    assert handler.requests == tried[:tried.index('/' + served_as) + 1]  # upstream name first


def test_http_mirror_without_the_file_says_it_lacks_it(tiny_model, monkeypatch, server):
    model, src, handler = tiny_model
    base, _, _ = server
    src.unlink()
    with pytest.raises(DDSRError) as err:
        zoo.fetch('Tiny-x2', quiet=True)
    text = str(err.value)
    assert '\n' not in text and f'the mirror {base} lacks Tiny-x2' in text and 'HTTP 404' in text
    assert 'without network access' not in text
    assert 'put tiny_x2.pth or Tiny-x2.pth there' in text and '`ddsr models --add Tiny-x2 FILE`' in text
    assert handler.requests == ['/tiny_x2.pth', '/Tiny-x2.pth']


@pytest.mark.parametrize('stored_as', ['tiny_x2.pth', 'Tiny-x2.pth', 'my copy of the tiny model.bin'])
@pytest.mark.parametrize('spelling', ['folder', 'file-url'])
def test_folder_mirror_accepts_either_name_or_any_file_with_the_hash(tiny_model, tmp_path, monkeypatch, stored_as,
                                                                     spelling):
    model, src, handler = tiny_model
    folder = tmp_path / 'offline copies'
    folder.mkdir()
    (folder / 'unrelated.pth').write_bytes(b'another file')
    shutil.copy(src, folder / stored_as)
    monkeypatch.setenv('DDSR_MODEL_MIRROR', str(folder) if spelling == 'folder' else folder.as_uri())
    assert zoo.fetch('Tiny-x2', quiet=True).read_bytes() == src.read_bytes()
    assert handler.requests == []


def test_folder_mirror_without_the_file_says_it_lacks_it(tiny_model, tmp_path, monkeypatch):
    model, _, _ = tiny_model
    folder = tmp_path / 'empty'
    folder.mkdir()
    (folder / 'tiny_x2.pth').write_bytes(b'right name, wrong content')
    monkeypatch.setenv('DDSR_MODEL_MIRROR', str(folder))
    with pytest.raises(DDSRError, match='sha256 mismatch'):  # the right name is trusted only after its hash
        zoo.fetch('Tiny-x2', quiet=True)
    (folder / 'tiny_x2.pth').unlink()
    with pytest.raises(DDSRError) as err:
        zoo.fetch('Tiny-x2', quiet=True)
    text = str(err.value)
    assert f'the mirror {folder} lacks Tiny-x2' in text and '`ddsr models --add Tiny-x2 FILE`' in text
    assert 'without network access' not in text and '\n' not in text
    assert not zoo.cached_path(model).exists()


def test_download_line_shows_byte_rates_once(capsys):
    import io

    from ddsr.progress import LineProgress
    stream = io.StringIO()
    bar = LineProgress(3 * 2**20, 'DIPNet-x4', unit='B', file=stream, every=0, unit_scale=True)
    for _ in range(3):
        bar.update(2**20)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith('DIPNet-x4: 3.0 MiB/3.0 MiB (100%), ')
    assert all(' B/s' not in line and 'B B' not in line for line in lines), lines
    assert all(re.search(r', \d+(\.\d)? (KiB|MiB|GiB|B)/s, ', line) for line in lines), lines


def test_models_listing_describes_dipnet_as_its_paper_does(tmp_path, monkeypatch):
    monkeypatch.setenv('DDSR_CACHE_DIR', str(tmp_path / 'cache'))
    code, out, err = run_cli_inprocess(['models'], tmp_path)
    assert code == 0, err
    assert 'winner' not in out.lower()
    assert 'from: Yu et al., DIPNet, fastest inference of all NTIRE 2023 efficient SR challenge entries' in out
    assert 'ddsr models --add NAME FILE' in out and '<model name>.pth' in out


def test_registry_entries_are_complete_and_match_the_official_files():
    assert set(zoo.MODELS) >= {'DDistill-SR-x4', 'DIPNet-x4'}
    for model in zoo.MODELS.values():
        assert len(model.sha256) == 64 and model.url.startswith('https://raw.githubusercontent.com/')
        assert model.license and model.form in ('deploy', 'train')
    files = {'DDistill-SR-x4': 'DDistill-SRx4_inference.pth', 'DIPNet-x4': 'DIPNet_x4.pth'}
    if not PRETRAINED.is_dir():
        pytest.skip(f'official weights not available at {PRETRAINED}')
    from ddsr.detect import detect_file
    for name, file in files.items():
        assert sha256_file(PRETRAINED / file) == zoo.MODELS[name].sha256
        assert detect_file(str(PRETRAINED / file)).arch == dict(zoo.MODELS[name].arch)


@pytest.fixture
def official_mirror(server, tmp_path):
    """The official files under their source file names on the local server (skipped where absent)."""
    if not (PRETRAINED / 'DIPNet_x4.pth').is_file():
        pytest.skip(f'official weights not available at {PRETRAINED}')
    base, root, handler = server
    shutil.copy(PRETRAINED / 'DIPNet_x4.pth', root / 'DIPNet.pth')
    env = {'DDSR_MODEL_MIRROR': base, 'DDSR_CACHE_DIR': str(tmp_path / 'cache'), 'OMP_NUM_THREADS': '1'}
    return env, handler


def test_cli_upscale_with_model_downloads_once(official_mirror, tmp_path):
    env, handler = official_mirror
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / 'photo.png'), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    for run in range(2):
        res = run_cli(['upscale', '-i', tmp_path / 'photo.png', '-o', tmp_path / 'out', '--model', 'DIPNet-x4',
                       '--backend', 'torch'], tmp_path, env=env)
        assert res.returncode == 0, res.stderr
        assert cv2.imread(str(tmp_path / 'out' / 'photo.png')).shape == (96, 128, 3)
        assert ('downloading DIPNet-x4' in res.stderr) == (run == 0)
    assert handler.requests == ['/DIPNet.pth']
    listing = run_cli(['models'], tmp_path, env=env)
    assert listing.returncode == 0
    assert 'DIPNet-x4  x4  DIPNet (deploy form)  MIT  cached' in listing.stdout
    assert zoo.MODELS['DDistill-SR-x4'].sha256 in listing.stdout and 'not downloaded' in listing.stdout


def test_option_file_spelling_ddsr_scheme(official_mirror, tmp_path):
    env, handler = official_mirror
    cv2.imwrite(str(tmp_path / 'photo.png'), np.full((20, 20, 3), 128, np.uint8))
    opt = write_options(tmp_path / 'up.yml', {
        'network_g': dict(zoo.MODELS['DIPNet-x4'].arch), 'path': {'pretrain_network_g': 'ddsr://DIPNet-x4'}})
    res = run_cli(['upscale', '-opt', opt, '-i', tmp_path / 'photo.png', '-o', tmp_path / 'out', '--backend', 'torch'],
                  tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert cv2.imread(str(tmp_path / 'out' / 'photo.png')).shape == (80, 80, 3)
    assert handler.requests == ['/DIPNet.pth']


def test_model_flag_in_bench_export_and_make_enhanced_hr(official_mirror, tmp_path):
    env, handler = official_mirror
    res = run_cli(['bench', 'efficiency', '--model', 'DIPNet-x4', '--runs', '0', '--no-memory', '--count-size', '32',
                   '32', '--device', 'cpu'], tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert '243,252' in res.stdout  # the official DIPNet x4's parameter count
    res = run_cli(['export', '--model', 'DIPNet-x4', '--out-pth', tmp_path / 'dipnet.pth'], tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = torch.load(tmp_path / 'dipnet.pth', map_location='cpu', weights_only=True)
    assert ckpt['arch']['type'] == 'DIPNet' and ckpt['arch']['upscale'] == 4
    lq = tmp_path / 'lq'
    lq.mkdir()
    cv2.imwrite(str(lq / 'a.png'), np.full((16, 20, 3), 100, np.uint8))
    res = run_cli(['make-enhanced-hr', '--model', 'DIPNet-x4', '--lq', lq, '-o', tmp_path / 'enh', '--device', 'cpu'],
                  tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert cv2.imread(str(tmp_path / 'enh' / 'a.png')).shape == (64, 80, 3)
    assert handler.requests == ['/DIPNet.pth']  # downloaded once, then read from the cache
