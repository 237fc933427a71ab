"""Issue 14 (1): plain BasicSR works in the environment ddsr installs, without importing ddsr.

The start-up hook (``ddsr_torchvision_shim.pth`` + ``ddsr_torchvision_shim.py`` at the root of site-packages) makes
``torchvision.transforms.functional_tensor`` importable, lazily. These tests run plain BasicSR in subprocesses in
which ``import ddsr`` would fail (a poisoned ``ddsr`` package comes first on the path), so whatever works there
works without ddsr's code.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import REPO_ROOT, write_options

HOOK = 'ddsr_torchvision_shim'


def _plain_env(tmp_path: Path, *paths: Path) -> dict:
    """Environment for a plain-BasicSR subprocess: ``import ddsr`` raises, one torch thread."""
    poison = tmp_path / 'poison' / 'ddsr'
    poison.mkdir(parents=True, exist_ok=True)
    (poison / '__init__.py').write_text('raise ImportError("ddsr must not be imported here")\n')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join(str(p) for p in (*paths, poison.parent)))
    return env


def _hook_missing() -> str:
    """Hint for a failure in an environment whose ddsr install predates the hook."""
    import site
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    if any((Path(d) / f'{HOOK}.pth').is_file() for d in dirs):
        return ''
    return f' ({HOOK}.pth is in none of {dirs}: reinstall with `pip install --no-deps -e .`)'


def _pairs(root: Path, n: int, lr: int = 12, scale: int = 4) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        hr = rng.integers(0, 256, (lr * scale, lr * scale, 3), dtype=np.uint8)
        (root / 'HR').mkdir(parents=True, exist_ok=True)
        (root / 'LR').mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / 'HR' / f'{i:03d}.png'), hr)
        cv2.imwrite(str(root / 'LR' / f'{i:03d}.png'), cv2.resize(hr, (lr, lr), interpolation=cv2.INTER_AREA))


def test_startup_hook_imports_nothing_but_makes_the_old_module_importable(tmp_path):
    code = ('import sys; loaded = sorted(m for m in ("torch", "torchvision", "basicsr", "ddsr") if m in sys.modules); '
            f'hooked = [f for f in sys.meta_path if getattr(f, "__module__", "") == "{HOOK}"]; '
            'import torchvision.transforms.functional_tensor as old, torchvision.transforms._functional_tensor as new; '
            'print(loaded, len(hooked), old is new, old.__name__)')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                         env=_plain_env(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:] + _hook_missing()
    assert res.stdout.split() == ['[]', '1', 'True', 'torchvision.transforms._functional_tensor']


def test_startup_hook_loads_no_module_but_its_own():
    """Issue 27 (4): running the .pth line adds exactly one module to ``sys.modules``, even in an interpreter
    started with ``-I -S`` (23 modules: no site, os, importlib, typing); it used to pull in ~28 (importlib.abc)."""
    line = (REPO_ROOT / f'{HOOK}.pth').read_text()
    code = (f'import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); before = set(sys.modules); exec({line!r}); '
            'print(sorted(set(sys.modules) - before), sys.meta_path[-1].__name__)')
    res = subprocess.run([sys.executable, '-I', '-S', '-c', code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [f"['{HOOK}']", 'FunctionalTensorFinder']


def test_startup_hook_adds_nothing_to_a_full_start(tmp_path):
    """``python -c pass`` with the environment's .pth: the modules loaded are the same with the hook as with an empty
    module of the same name in its place (the .pth disabled), i.e. the hook imports nothing the interpreter and the
    environment's other start-up files did not already load."""
    import site
    if not any((Path(d) / f'{HOOK}.pth').is_file() for d in site.getsitepackages()):
        raise AssertionError(f'{HOOK}.pth is not installed' + _hook_missing())
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / f'{HOOK}.py').write_text('')
    code = 'import sys; print(" ".join(sorted(sys.modules)))'
    loaded = {}
    for name, first in (('hook', REPO_ROOT), ('no hook', empty)):
        env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
        env['PYTHONPATH'] = str(first)  # the .pth line imports whichever module comes first on the path
        res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        loaded[name] = set(res.stdout.split())
    assert HOOK in loaded['hook'] and loaded['hook'] == loaded['no hook']


def test_import_basicsr_train_and_create_lmdb_without_ddsr(tmp_path):
    """``import basicsr``, ``python -m basicsr.train -opt X.yml`` (3 iterations) and create_lmdb.py's calls."""
    pkgs = tmp_path / 'pkgs'  # python -m basicsr.train writes under <basicsr>/..: a linked copy keeps it in tmp
    pkgs.mkdir()
    import basicsr
    (pkgs / 'basicsr').symlink_to(Path(basicsr.__file__).parent, target_is_directory=True)
    env = _plain_env(tmp_path, pkgs)
    res = subprocess.run([sys.executable, '-c', 'import basicsr, sys; print("ddsr" in sys.modules)'],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and res.stdout.strip() == 'False', res.stderr[-2000:] + _hook_missing()

    _pairs(tmp_path / 'data', 4)
    # BasicSR's scripts/data_preparation/create_lmdb.py: scandir + make_lmdb_from_imgs
    lmdb_code = ('from basicsr.utils import scandir; from basicsr.utils.lmdb_util import make_lmdb_from_imgs; '
                 f'folder = r"{tmp_path / "data" / "HR"}"; names = sorted(scandir(folder, suffix="png")); '
                 'make_lmdb_from_imgs(folder, r"' + str(tmp_path / 'HR.lmdb') + '", names, '
                 '[n.split(".png")[0] for n in names], n_thread=1)')
    res = subprocess.run([sys.executable, '-c', lmdb_code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    meta = (tmp_path / 'HR.lmdb' / 'meta_info.txt').read_text().splitlines()
    assert meta == [f'{i:03d}.png (48,48,3) 1' for i in range(4)]

    opt = {
        'name': 'plain', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {
            'name': 'plain', 'type': 'PairedImageDataset', 'dataroot_gt': str(tmp_path / 'data' / 'HR'),
            'dataroot_lq': str(tmp_path / 'data' / 'LR'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
            'gt_size': 32, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
            'dataset_enlarge_ratio': 1, 'prefetch_mode': None}},
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [2], 'gamma': 0.5}, 'total_iter': 3,
                  'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 3, 'use_tb_logger': False},
    }
    yml = write_options(tmp_path / 'plain.yml', opt)
    res = subprocess.run([sys.executable, '-m', 'basicsr.train', '-opt', str(yml)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    exp = pkgs / 'experiments' / 'plain'
    log = ''.join(p.read_text() for p in exp.glob('train_plain_*.log'))
    assert 'End of training' in log and log.count('l_pix: ') == 3
    assert (exp / 'models' / 'net_g_3.pth').is_file() and (exp / 'training_states' / '3.state').is_file()


def _built_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of a copy of the sources (the checkout stays clean); ~4 s, nothing downloaded."""
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('setup.py', 'pyproject.toml', 'README.md', f'{HOOK}.py', f'{HOOK}.pth'):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / 'ddsr', src / 'ddsr', ignore=shutil.ignore_patterns('__pycache__'))
    res = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index',
                          '-w', str(tmp_path / 'dist'), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    wheels = list((tmp_path / 'dist').glob('ddsr-*.whl'))
    assert len(wheels) == 1
    return wheels[0]


def test_regular_install_carries_the_hook(tmp_path):
    """The wheel has the .pth and its module at the purelib root; installed from it alone (this environment's own
    .pth files not read), plain ``import basicsr`` works, and without it it does not."""
    wheel = _built_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        root_files = sorted(n for n in zf.namelist() if '/' not in n)
        assert root_files == [f'{HOOK}.pth', f'{HOOK}.py']
        assert zf.read(f'{HOOK}.pth').decode() == f'import {HOOK}\n'
        assert zf.read(f'{HOOK}.py') == (REPO_ROOT / f'{HOOK}.py').read_bytes()
        record = zf.read(next(n for n in zf.namelist() if n.endswith('.dist-info/RECORD'))).decode()
        assert f'{HOOK}.pth,' in record  # pip uninstall removes it
        site = tmp_path / 'site'
        zf.extractall(site)  # what pip does with a purelib wheel
    system = [p for p in sys.path if p.rstrip('/').endswith(('site-packages', 'dist-packages'))]
    assert sysconfig.get_paths()['purelib'] in system
    check = 'import sys; sys.path += {system!r}; import basicsr; print("ok", "ddsr" in sys.modules)'
    with_hook = f'import site; site.addsitedir(r"{site}"); ' + check.format(system=system)
    env = _plain_env(tmp_path)
    env.pop('PYTHONPATH')
    res = subprocess.run([sys.executable, '-S', '-c', with_hook], capture_output=True, text=True, timeout=120,
                         env=env)
    assert res.returncode == 0 and res.stdout.split() == ['ok', 'False'], res.stderr[-2000:]
    res = subprocess.run([sys.executable, '-S', '-c', check.format(system=system)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode != 0 and 'functional_tensor' in res.stderr  # the hook is what makes it work
