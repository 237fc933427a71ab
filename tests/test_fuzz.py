"""Issue 9: fuzzing the command line with corrupted option files, images and checkpoints.

Every case runs in-process (``tests.conftest.run_cli_inprocess``) and must: print no Python traceback, exit with a
documented code (0 ok, 1 some items failed / unexpected error, 2 bad input), never end in an "unexpected" error
(every corruption must be recognised as bad input), and change no file outside its output folder (the tree is
hashed before and after). Fixed seed, bounded counts; ``FUZZ`` keeps the tallies (printed at the end, ``-s``).
"""
import collections
import copy
import hashlib
import os
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.srresnet_arch import MSRResNet

from tests.conftest import REPO_ROOT, load_yaml, run_cli_inprocess, write_options

SEED = 20261123
YAML_CASES = {'train': 100, 'test': 40, 'upscale': 25, 'bench': 25, 'compress': 15}
OUTPUTS = ('experiments', 'results', 'tb_logger', 'out')
JUNK = [None, -1, 0, 2, 7, 3.5, True, '', 'x', 'nan', '../escape', '~/nowhere', [], {}, [1, 'a'], {'a': 1}]
SKIP_PER_CASE = OUTPUTS + ('datasets', 'options')  # shared, read-only: hashed once per test (``_shared_unchanged``)
FUZZ = collections.Counter()
NET = dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(autouse=True)
def _shared_unchanged(workdir):
    shared = [workdir / 'datasets', workdir / 'options']
    before = [tree_hash(path) for path in shared]
    yield
    assert [tree_hash(path) for path in shared] == before, 'the demo data or the option files changed'


@pytest.fixture(scope='module', autouse=True)
def _report():
    yield
    print(f'\nfuzz cases: {dict(FUZZ)}')


def tree_hash(root: Path, skip=OUTPUTS) -> dict:
    """sha1 of every file under ``root`` (symlinked folders followed), except the folders ``skip``."""
    digests = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        rel = Path(folder).relative_to(root)
        if rel.parts and rel.parts[0] in skip:
            dirs[:] = []
            continue
        for name in files:
            path = Path(folder) / name
            digests[str(rel / name)] = hashlib.sha1(path.read_bytes()).hexdigest()
    return digests


def run_case(kind: str, args, root: Path) -> int:
    """One fuzz case: the contract of the module docstring. Returns the exit code."""
    before = tree_hash(root, SKIP_PER_CASE)
    code, out, err = run_cli_inprocess(args, root)
    context = f'{kind} {args}: exit {code}\n{err[-2500:]}'
    assert 'Traceback (most recent call last)' not in err + out, context
    assert code in (0, 1, 2), context
    assert 'error: unexpected' not in err, context
    if code == 2:
        assert [line for line in err.splitlines() if line.startswith(('error:', 'usage:'))], context
    assert tree_hash(root, SKIP_PER_CASE) == before, f'files changed outside the outputs: {context}'
    for name in OUTPUTS:
        shutil.rmtree(root / name, ignore_errors=True)
    FUZZ[f'{kind} exit {code}'] += 1
    return code


# ---- corruptions ----


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key, )
            yield from _paths(value, prefix + (key, ))


def corrupt_yaml(opt: dict, rng: random.Random) -> str:
    """YAML text of ``opt`` with one random corruption: a key dropped, a value replaced by junk, or the text
    truncated / overwritten with random characters or bytes / mis-indented."""
    how = rng.choice(['drop', 'junk', 'junk', 'truncate', 'chars', 'indent'])
    opt = copy.deepcopy(opt)
    paths = list(_paths(opt))
    if how in ('drop', 'junk'):
        path = rng.choice(paths)
        node = opt
        for key in path[:-1]:
            node = node[key]
        if how == 'drop':
            del node[path[-1]]
        else:
            node[path[-1]] = copy.deepcopy(rng.choice(JUNK))
        return yaml.safe_dump(opt, sort_keys=False)
    text = yaml.safe_dump(opt, sort_keys=False)
    if how == 'truncate':
        return text[:rng.randrange(len(text))]
    if how == 'chars':
        chars = list(text)
        for _ in range(rng.randint(1, 8)):
            chars[rng.randrange(len(chars))] = rng.choice(':{}[]-#&*!|>\'"%@` \t\nab0')
        return ''.join(chars)
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    lines[i] = ' ' * rng.choice([1, 3, 5]) + lines[i]
    return '\n'.join(lines) + '\n'


def corrupt_image(path: Path, how: str, rng: random.Random) -> Path:
    """Corrupt the image file ``path`` in place (``how``: truncated, random, empty, text, wrong-ext); returns the
    (possibly renamed) path."""
    data = path.read_bytes()
    if how == 'truncated':
        path.write_bytes(data[:rng.randrange(60, len(data) // 2)])
    elif how == 'random':
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(10, 3000))))
    elif how == 'empty':
        path.write_bytes(b'')
    elif how == 'text':
        path.write_text('not an image\n')
    elif how == 'wrong-ext':  # a JPEG under a .png name: readable by content
        ok, buf = cv2.imencode('.jpg', cv2.imread(str(path)))
        path.write_bytes(buf.tobytes())
    return path


IMAGE_CORRUPTIONS = ('truncated', 'random', 'empty', 'text', 'wrong-ext')


# ---- fixtures: a root with option files, a small folder set, a checkpoint ----


@pytest.fixture
def root(workdir, demo_root) -> Path:
    torch.manual_seed(0)
    torch.save({'params': MSRResNet(**{k: v for k, v in NET.items() if k != 'type'}).state_dict()},
               workdir / 'net.pth')
    for sub in ('HR', 'LR'):
        src = demo_root / 'val' / ('HR' if sub == 'HR' else 'LR_bicubic/X4')
        shutil.copytree(src, workdir / 'set' / sub)
    return workdir


def train_opt() -> dict:
    opt = load_yaml(REPO_ROOT / 'options' / 'demo' / 'train_MSRResNet_demo_x4.yml')
    opt.update(name='fuzz', network_g=dict(NET))
    opt['datasets']['train'].update(gt_size=48, batch_size_per_gpu=2)
    opt['train'].update(total_iter=1)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=1)
    opt.pop('val')
    return opt


def paired_test_opt(root: Path) -> dict:
    return {'name': 'fuzz_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
            'datasets': {'test_1': {'name': 'set', 'type': 'PairedImageDataset', 'dataroot_gt': 'set/HR',
                                    'dataroot_lq': 'set/LR', 'io_backend': {'type': 'disk'}}},
            'network_g': dict(NET), 'path': {'pretrain_network_g': 'net.pth', 'strict_load_g': True},
            'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}}


# ---- the fuzz cases ----


def test_fuzz_corrupted_option_files(root):
    rng = random.Random(SEED)
    bases = {kind: paired_test_opt(root) for kind in YAML_CASES}
    bases['train'] = train_opt()
    write_png = root / 'in' / 'a.png'
    write_png.parent.mkdir()
    cv2.imwrite(str(write_png), np.full((20, 20, 3), 128, np.uint8))
    for kind, count in YAML_CASES.items():
        for i in range(count):
            yml = root / f'{kind}_{i}.yml'
            yml.write_bytes(corrupt_yaml(bases[kind], rng).encode('utf-8', 'surrogateescape')
                            if rng.random() > 0.1 else bytes(rng.randrange(256) for _ in range(200)))
            if kind in ('train', 'test'):
                args = ['basicsr', kind, '-opt', yml]
            elif kind == 'upscale':
                args = ['upscale', '-opt', yml, '-i', 'in', '-o', 'out', '--backend', 'torch']
            elif kind == 'compress':
                args = ['compress', '-opt', yml, '--ratio', '0.5', '-o', 'out/c.pth']
            else:
                args = ['bench', 'efficiency', '-opt', yml, '--runs', '0', '--no-memory', '--count-size', '16', '16',
                        '--out', 'out']
            run_case(f'yaml-{kind}', args, root)
    assert sum(FUZZ[k] for k in FUZZ if k.startswith('yaml-')) == sum(YAML_CASES.values())


def _commands(root: Path, folder: str, opt_train: Path, opt_test: Path) -> dict:
    return {
        'upscale': ['upscale', '--weights', 'net.pth', '--arch', 'MSRResNet', '--arch-kwargs',
                    '{"num_feat": 8, "num_block": 1, "upscale": 4}', '-i', f'{folder}/LR', '-o', 'out',
                    '--backend', 'torch'],
        'make-lmdb': ['make-lmdb', '--hr', f'{folder}/HR', '-o', 'out', '--scales', '4', '--quiet'],
        'bench-quality': ['bench', 'quality', '--arch', 'MSRResNet', '--arch-kwargs',
                          '{"num_feat": 8, "num_block": 1, "upscale": 4}', '--weights', 'net.pth', '--dataset',
                          f'{folder}/HR', f'{folder}/LR', '--quiet', '--out', 'out'],
        'make-enhanced-hr': ['make-enhanced-hr', '--arch', 'MSRResNet', '--arch-args', 'num_feat=8', 'num_block=1',
                             '--weights', 'net.pth', '--lq', f'{folder}/LR', '-o', 'out/enh'],
        'basicsr-test': ['basicsr', 'test', '-opt', opt_test],
        'basicsr-train': ['basicsr', 'train', '-opt', opt_train],
    }


def test_fuzz_corrupted_images(root):
    """Each corruption in the LR (or HR) folder of a paired set, fed to every command that reads images."""
    rng = random.Random(SEED + 1)
    codes = collections.defaultdict(set)
    for i, how in enumerate(IMAGE_CORRUPTIONS * 2):
        folder = f'set{i}'
        shutil.copytree(root / 'set', root / folder)
        side = 'LR' if i < len(IMAGE_CORRUPTIONS) else 'HR'
        corrupt_image(root / folder / side / rng.choice(['chelsea.png', 'coffee.png']), how, rng)
        opt = paired_test_opt(root)
        opt['name'] = f'fuzz_{i}'
        opt['datasets']['test_1'].update(dataroot_gt=f'{folder}/HR', dataroot_lq=f'{folder}/LR')
        opt_test = write_options(root / f'test_{i}.yml', opt)
        opt = train_opt()
        opt['datasets']['train'].update(dataroot_gt=f'{folder}/HR', dataroot_lq=f'{folder}/LR',
                                        io_backend={'type': 'disk'})
        opt_train = write_options(root / f'train_{i}.yml', opt)
        for name, args in _commands(root, folder, opt_train, opt_test).items():
            if side == 'HR' and name in ('upscale', 'make-enhanced-hr'):
                continue  # they read LR only
            code = run_case(f'image-{how}-{name}', args, root)
            codes[how].add(code)
            reads_it = not (name == 'make-lmdb' and side == 'LR')  # make-lmdb generates LR from HR
            if how == 'wrong-ext' or not reads_it:
                assert code == 0, (how, side, name)
            elif name == 'upscale':
                assert code == 1, (how, side, name)  # the other image is written, the bad one listed
            else:
                assert code == 2, (how, side, name)
    assert codes['truncated'] >= {1, 2}  # upscale: 1 (the other image is written), the rest: 2


def test_fuzz_make_demo_data_never_replaces_user_files(root):
    (root / 'mine').mkdir()
    (root / 'mine' / 'photo.png').write_bytes(b'precious')
    assert run_case('demo-data-folder', ['make-demo-data', '-o', 'mine', '--force'], root) == 2
    assert run_case('demo-data-file', ['make-demo-data', '-o', 'net.pth', '--force'], root) == 2


def test_fuzz_corrupted_checkpoints(root):
    rng = random.Random(SEED + 2)
    data = (root / 'net.pth').read_bytes()
    for i, how in enumerate(('truncated', 'random', 'empty', 'zip-of-junk')):
        ckpt = root / f'bad_{i}.pth'
        if how == 'truncated':
            ckpt.write_bytes(data[:rng.randrange(10, len(data) - 10)])
        elif how == 'random':
            ckpt.write_bytes(bytes(rng.randrange(256) for _ in range(4000)))
        elif how == 'empty':
            ckpt.write_bytes(b'')
        else:
            torch.save([1, 2, 3], ckpt)
        opt = paired_test_opt(root)
        opt['path']['pretrain_network_g'] = ckpt.name
        opt_test = write_options(root / f'ckpt_test_{i}.yml', opt)
        kwargs = '{"num_feat": 8, "num_block": 1, "upscale": 4}'
        for name, args in {
                'upscale': ['upscale', '--weights', ckpt.name, '--arch', 'MSRResNet', '--arch-kwargs', kwargs, '-i',
                            'set/LR', '-o', 'out', '--backend', 'torch'],
                'upscale-selfdescribing': ['upscale', '--weights', ckpt.name, '-i', 'set/LR', '-o', 'out'],
                'reparam': ['reparam', '--arch', 'DIPNet', '--ckpt', ckpt.name, '-o', 'out/x.pth'],
                'export': ['export', '--weights', ckpt.name, '--arch', 'MSRResNet', '--arch-kwargs', kwargs,
                           '--out-pth', 'out/x.pth'],
                'bench': ['bench', 'efficiency', '--arch', 'MSRResNet', '--arch-kwargs', kwargs, '--weights', ckpt.name,
                          '--runs', '0', '--no-memory', '--count-size', '16', '16'],
                'compress': ['compress', '--ckpt', ckpt.name, '--arch-opt', opt_test, '--ratio', '0.5', '-o',
                             'out/c.pth'],
                'basicsr-test': ['basicsr', 'test', '-opt', opt_test]}.items():
            assert run_case(f'ckpt-{how}-{name}', args, root) == 2
