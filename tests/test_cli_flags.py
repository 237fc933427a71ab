"""Shared command-line flags (ddsr.commands): new spellings, hidden old aliases parsing to the same values, help."""
import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import torch

import ddsr.commands as flags
from ddsr.cli import _command_modules, ddsr_main
from ddsr.errors import DDSRError

REPO_ROOT = Path(__file__).resolve().parents[1]
OLD_SPELLINGS = ('--ckpt', '--arch-args', '--upscale', '--out', '--tile-pad')
NET = ['--arch', 'EDSR']
# (command argv with the new spellings, the same with the old ones, expected namespace values)
CASES = {
    'upscale': (['upscale', '--weights', 'w.pth', *NET, '--arch-kwargs', '{"num_feat": 8, "upscale": 4}', '-i', 'in',
                 '--output', 'res', '--tile', '64', '--tile-overlap', '8'],
                ['upscale', '--ckpt', 'w.pth', *NET, '--arch-args', 'num_feat=8', 'upscale=4', '-i', 'in',
                 '--out', 'res', '--tile', '64', '--tile-pad', '8'],
                dict(weights='w.pth', arch_kwargs={'num_feat': 8, 'upscale': 4}, output='res', tile=64,
                     tile_overlap=8)),
    'export': (['export', '--weights', 'w.pth', *NET, '--arch-kwargs', '{"upscale": 2}', '--out-pth', 'd.pth'],
               ['export', '--ckpt', 'w.pth', *NET, '--arch-args', 'upscale=2', '--out-pth', 'd.pth'],
               dict(weights='w.pth', arch_kwargs={'upscale': 2}, out_pth='d.pth')),
    'bench-quality': (['bench', 'quality', *NET, '--weights', 'w.pth', '--arch-kwargs', '{"num_block": 2}',
                       '-o', 'res', '--tile', '32', '--tile-overlap', '4'],
                      ['bench', 'quality', *NET, '--ckpt', 'w.pth', '--arch-args', 'num_block=2', '--out', 'res',
                       '--tile', '32', '--tile-pad', '4'],
                      dict(weights='w.pth', arch_kwargs={'num_block': 2}, output='res', tile=32, tile_overlap=4)),
    'bench-efficiency': (['bench', 'efficiency', *NET, '--arch-kwargs', '{"upscale": 4}', '--output', 'res'],
                         ['bench', 'efficiency', *NET, '--arch-args', 'upscale=4', '--out', 'res'],
                         dict(arch_kwargs={'upscale': 4}, output='res')),
    'make-enhanced-hr': (['make-enhanced-hr', *NET, '--arch-kwargs', '{"num_feat": 64, "rgb_mean": [0.5, 0.5, 0.5]}',
                          '--weights', 't.pth', '--lq', 'lr', '--output', 'enh'],
                         ['make-enhanced-hr', *NET, '--arch-args', 'num_feat=64', 'rgb_mean=[0.5,0.5,0.5]',
                          '--weights', 't.pth', '--lq', 'lr', '--out', 'enh'],
                         dict(arch_kwargs={'num_feat': 64, 'rgb_mean': [0.5, 0.5, 0.5]}, weights='t.pth',
                              output='enh')),
    'reparam': (['reparam', '--arch', 'DDistillSR', '--arch-kwargs', '{"upscale": 3}', '--weights', 'a.pth',
                 '-o', 'b.pth'],
                ['reparam', '--arch', 'DDistillSR', '--upscale', '3', '--ckpt', 'a.pth', '--out', 'b.pth'],
                dict(arch_kwargs={'upscale': 3}, weights='a.pth', output='b.pth')),
    'compress': (['compress', '--weights', 'd.pth', '--arch-opt', 't.yml', '--ratio', '0.1', '--output', 'c.pth'],
                 ['compress', '--ckpt', 'd.pth', '--arch-opt', 't.yml', '--ratio', '0.1', '--out', 'c.pth'],
                 dict(weights='d.pth', output='c.pth', ratio=0.1)),
    'make-lmdb': (['make-lmdb', '--hr', 'hr', '-o', 'db'], ['make-lmdb', '--hr', 'hr', '--out', 'db'],
                  dict(output='db')),
    'make-demo-data': (['make-demo-data', '--output', 'demo'], ['make-demo-data', '--out', 'demo'],
                       dict(output='demo')),
    'models': (['models', '--fetch', 'DIPNet-x4'], ['models', '--fetch', 'DIPNet-x4'],  # no output or network flags
               dict(fetch=['DIPNet-x4'])),
}
DEVICE_COMMANDS = (['upscale', '--weights', 'w.pth', '-i', 'in', '-o', 'res'],
                   ['bench', 'efficiency', *NET], ['bench', 'quality', *NET],
                   ['make-enhanced-hr', *NET, '--lq', 'lr', '-o', 'enh'])


def ddsr_parser() -> argparse.ArgumentParser:
    """The ``ddsr`` parser, built as :func:`ddsr.cli.ddsr_main` builds it."""
    parser = argparse.ArgumentParser(prog='ddsr')
    sub = parser.add_subparsers(dest='command')
    for module in _command_modules():
        module.add_arguments(sub.add_parser(module.NAME))
    return parser


def parse(argv: list[str]) -> dict:
    return vars(ddsr_parser().parse_args(argv))


def parse_error(argv: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        ddsr_parser().parse_args(argv)
    assert exc.value.code == 2
    return err.getvalue()


@pytest.mark.parametrize('name', sorted(CASES))
def test_old_spellings_parse_to_the_same_namespace(name):
    new, old, expected = CASES[name]
    got = parse(new)
    assert got == parse(old)
    assert {k: got[k] for k in expected} == expected


def test_every_command_with_an_output_uses_the_shared_flag():
    commands = {module.NAME for module in _command_modules()}
    assert commands == {'upscale', 'export', 'bench', 'make-enhanced-hr', 'reparam', 'compress', 'make-lmdb',
                        'make-demo-data', 'models'}  # a new command: add its flags to CASES
    covered = {name.split('-efficiency')[0].split('-quality')[0] for name in CASES}
    assert covered == commands


def test_arch_kwargs_merge_in_order_and_reject_bad_values():
    argv = ['reparam', '--arch', 'DIPNet', '--weights', 'a', '-o', 'b']
    assert parse(argv + ['--arch-kwargs', '{"upscale": 2, "num_feat": 8}', '--upscale', '3'])['arch_kwargs'] == \
        {'upscale': 3, 'num_feat': 8}
    assert parse(argv + ['--upscale', '3', '--arch-kwargs', '{"upscale": 2}'])['arch_kwargs'] == {'upscale': 2}
    assert parse(argv)['arch_kwargs'] == {} and parse(argv)['arch_kwargs'] is not parse(argv)['arch_kwargs']
    assert 'not valid JSON' in parse_error(argv + ['--arch-kwargs', '{upscale: 2}'])
    assert 'must be a JSON object' in parse_error(argv + ['--arch-kwargs', '[2]'])
    assert 'expected KEY=VALUE, got upscale' in parse_error(argv + ['--arch-args', 'upscale'])
    assert 'arguments --weights is required' in parse_error(['reparam', '--arch', 'DIPNet', '-o', 'b'])
    assert '--ckpt' not in parse_error(['reparam', '--arch', 'DIPNet', '-o', 'b'])


def test_arch_from_args():
    ns = argparse.Namespace
    assert flags.arch_from_args(ns(arch='EDSR', arch_kwargs={'upscale': 2})) == {'type': 'EDSR', 'upscale': 2}
    assert flags.arch_from_args(ns(arch=None, arch_kwargs={})) is None
    assert flags.arch_from_args(ns(arch='EDSR', arch_kwargs='{"upscale": 4}')) == {'type': 'EDSR', 'upscale': 4}
    with pytest.raises(DDSRError, match='goes with --arch'):
        flags.arch_from_args(ns(arch=None, arch_kwargs={'upscale': 2}))
    with pytest.raises(DDSRError, match='--arch-kwargs not valid JSON'):
        flags.arch_from_args(ns(arch='EDSR', arch_kwargs='{'))


@pytest.mark.parametrize('argv', DEVICE_COMMANDS, ids=lambda a: ' '.join(a[:2]))
def test_one_device_default(argv, monkeypatch):
    assert parse(argv)['device'] == ('cuda' if torch.cuda.is_available() else 'cpu')
    assert parse(argv + ['--device', 'CPU'])['device'] == 'cpu'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert parse(argv)['device'] == 'cpu'
    assert 'CUDA is not available' in parse_error(argv + ['--device', 'cuda'])
    assert 'expected auto, cpu, cuda or cuda:N' in parse_error(argv + ['--device', 'gpu'])
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert parse(argv)['device'] == 'cuda' and parse(argv + ['--device', 'cuda:1'])['device'] == 'cuda:1'
    assert 'only 2 CUDA device(s)' in parse_error(argv + ['--device', 'cuda:2'])


@pytest.mark.parametrize('argv', [['upscale'], ['export'], ['bench', 'efficiency'], ['bench', 'quality'],
                                  ['make-enhanced-hr'], ['reparam'], ['compress'], ['make-lmdb'],
                                  ['make-demo-data']], ids=' '.join)
def test_help_shows_only_the_new_spellings(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        ddsr_main(argv + ['--help'])
    assert exc.value.code == 0
    text = out.getvalue()
    shown = set(re.findall(r'(?<![\w-])--[a-z][\w-]*', text))
    assert not shown & set(OLD_SPELLINGS), shown & set(OLD_SPELLINGS)
    new = {'--weights', '--arch', '--arch-kwargs', '--output', '--tile', '--tile-overlap', '--device'}
    expected = {'upscale': new, 'export': {'--weights', '--arch', '--arch-kwargs'}, 'bench efficiency':
                new - {'--tile', '--tile-overlap'}, 'bench quality': new,
                'make-enhanced-hr': new - {'--tile', '--tile-overlap'}, 'reparam': {'--weights', '--arch',
                '--arch-kwargs', '--output'}, 'compress': {'--weights', '--output'}, 'make-lmdb': {'--output'},
                'make-demo-data': {'--output'}}[' '.join(argv)]
    assert shown & new == expected


def documented_commands() -> list[str]:
    """``ddsr ...`` lines of the fenced code blocks of README.md and docs/*.md (backslash continuations joined;
    lines with placeholders such as ``...``, ``[--tile 256]`` or ``<out>`` left out)."""
    lines = []
    for doc in [REPO_ROOT / 'README.md', *sorted((REPO_ROOT / 'docs').glob('*.md'))]:
        blocks = re.findall(r'^```[^\n]*\n(.*?)^```', doc.read_text(), flags=re.M | re.S)
        for block in blocks:
            for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
                line = line.split('  #')[0].strip()
                if line.startswith('ddsr ') and not re.search(r'\.\.\.|\[|<|\|', line):
                    lines.append(line)
    return lines


def test_documented_command_lines_parse():
    lines = documented_commands()
    assert len(lines) >= 8  # README documents upscale, export, bench, compress, make-enhanced-hr, reparam lines
    for line in lines:
        argv = shlex.split(line)[1:]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                ddsr_parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f'{line}: {err.getvalue()}')
