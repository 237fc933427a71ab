"""Issue 22: one unit per architecture family. A new arch is one folder plus one registry line (the example unit of
docs/architectures.md gets detection, size requirements and ``ddsr upscale --weights`` with no other edit); every
arch table is read from the unit registry and exists once; networks are built in one place."""
import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ddsr import zoo
from ddsr.archs import units
from ddsr.archs.capabilities import size_requirements
from ddsr.archs.sizes import ESA_REQUIREMENTS, SizeRequirements
from ddsr.checkpoint import build_network
from ddsr.cli import ddsr_main
from ddsr.compress import compact
from ddsr.detect import KNOWN, detect, detect_file
from ddsr.errors import DDSRError
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / 'ddsr'
DOC = REPO_ROOT / 'docs' / 'architectures.md'


def example_files() -> dict[str, str]:
    """The files of the example unit: docs/architectures.md's Python blocks whose first line is ``# tinysr/...``."""
    blocks = re.findall(r'```python\n(# (tinysr/\S+)\n.*?)```', DOC.read_text(), re.S)
    return {name: code for code, name in blocks}


@pytest.fixture
def tiny_unit(tmp_path, monkeypatch):
    """The example unit written into a package on sys.path and added to UNITS: the one registry line."""
    files = example_files()
    assert set(files) == {'tinysr/__init__.py', 'tinysr/tinysr_arch.py'}
    for name, code in files.items():
        (tmp_path / 'pkgs' / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'pkgs' / name).write_text(code)
    monkeypatch.setattr(sys, 'path', [str(tmp_path / 'pkgs'), *sys.path])  # (syspath_prepend trips on a finder)
    monkeypatch.delitem(sys.modules, 'tinysr', raising=False)
    monkeypatch.delitem(sys.modules, 'tinysr.tinysr_arch', raising=False)
    monkeypatch.setattr(units, 'UNITS', (*units.UNITS, 'tinysr'))
    return tmp_path


def test_example_unit_is_detected_sized_and_upscaled(tiny_unit, capsys):
    arch = {'type': 'TinySR', 'num_feat': 6, 'upscale': 3}
    torch.manual_seed(0)
    net = build_network(arch).eval()
    weights = tiny_unit / 'tiny.pth'
    torch.save(net.state_dict(), weights)  # a plain state dict: no arch entry

    found = detect_file(str(weights))
    assert found.arch == arch
    assert size_requirements(arch) == size_requirements(net) == SizeRequirements(min_size=4, multiple=2, grid=1)

    rng = np.random.default_rng(0)
    (tiny_unit / 'in').mkdir()
    even = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    cv2.imwrite(str(tiny_unit / 'in' / 'even.png'), even)
    cv2.imwrite(str(tiny_unit / 'in' / 'odd.png'), rng.integers(0, 256, (7, 9, 3), dtype=np.uint8))
    code = ddsr_main(['upscale', '--weights', str(weights), '-i', str(tiny_unit / 'in'), '-o',
                      str(tiny_unit / 'out'), '--backend', 'torch'])
    assert code == 0, capsys.readouterr()
    got = cv2.imread(str(tiny_unit / 'out' / 'even.png'))
    with torch.inference_mode():
        rgb = torch.from_numpy(np.ascontiguousarray(even[..., ::-1]) / 255.).float().permute(2, 0, 1)[None]
        want = (net(rgb).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(int)[..., ::-1]
    assert got.shape == (24, 30, 3)
    assert np.abs(got.astype(int) - want).max() <= 1  # the network's output (rounding aside)
    assert cv2.imread(str(tiny_unit / 'out' / 'odd.png')).shape == (21, 27, 3)  # padded to even sides, cropped


def test_a_state_dict_of_no_unit_names_the_known_archs(tiny_unit):
    with pytest.raises(DDSRError, match='known arch \\(.*TinySR') as err:
        detect({'x.weight': torch.zeros(3, 3)})
    assert 'DIPNet' in str(err.value)


def test_tables_are_read_from_the_units():
    assert KNOWN == 'DDistillSR, DIPNet, EDSRmini, SwinIRmini, EDSR, SwinIR, MSRResNet'
    assert zoo.MODELS == units.pretrained_models() and set(zoo.MODELS) == {'DDistill-SR-x4', 'DIPNet-x4'}
    assert units.network_modules() == {'DDistillSR': 'ddsr.archs.ddistill.ddistill_arch',
                                       'DIPNet': 'ddsr.archs.dipnet.dipnet_arch',
                                       'EDSRmini': 'ddsr.archs.edsr.edsrmini_arch',
                                       'SwinIRmini': 'ddsr.archs.swinir.swinirmini_arch'}
    class RLFN(torch.nn.Module):  # another package's ESA net: its size requirements come from the DIPNet unit
        pass

    assert size_requirements(RLFN()) == ESA_REQUIREMENTS == units.known_requirements()['RFDN']
    for name, module in (('EDSR', 'edsr_compress'), ('SwinIRmini', 'swinir_compress')):
        assert compact.family({'type': name}) is importlib.import_module(f'ddsr.compress.{module}')
    assert compact.resolve_target({'type': 'EDSR', 'upscale': 3}, 'EDSRmini-default') == {'type': 'EDSRmini',
                                                                                         'upscale': 3}
    with pytest.raises(ValueError, match='cannot be compressed'):
        compact.family({'type': 'DIPNet'})


def test_recognising_ddsr_archs_imports_no_basicsr(tmp_path):
    """detect.resolve_arch on plain state dicts of DIPNet and DDistillSR (each detector runs, the candidates are
    built on the meta device) in a process that never imports basicsr: inference's promise."""
    code = ('import json, sys, torch\nimport ddsr\nfrom ddsr.archs.registry import build_network\n'
            'from ddsr.detect import resolve_arch\nfound = []\n'
            'for arch in ({"type": "DIPNet", "num_feat": 8, "num_mid": 6, "num_block": 1, "esa_channels": 4, '
            '"upscale": 2}, {"type": "DDistillSR", "num_feat": 8, "dyn_dim": 4, "upscale": 3}):\n'
            '    found.append(resolve_arch(build_network(arch).state_dict())["type"])\n'
            'print(json.dumps([found, "basicsr" in sys.modules]))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [['DIPNet', 'DDistillSR'], False]


def test_a_name_claimed_by_two_units_is_an_error(monkeypatch):
    monkeypatch.setattr(units, 'UNITS', (*units.UNITS, 'ddsr.archs.dipnet'))
    with pytest.raises(ValueError, match="'DIPNet' is already declared"):
        units.network_modules()


def _arch_names() -> set[str]:
    names = set(units.network_modules()) | set(units.known_types()) | set(units.known_requirements())
    return names | set(units.compaction_modules())


def _unit_folders() -> set[Path]:
    return {PACKAGE / 'archs' / name.rsplit('.', 1)[1] for name in units.UNITS}


def test_each_arch_table_exists_once():
    """Outside the unit folders no module spells a table of arch names: no dict keyed by two or more of them, no
    tuple/list/set literal of two or more (as MODULES, DETECTORS/KNOWN, KNOWN_REQUIREMENTS, FAMILIES and the zoo
    list were)."""
    names = _arch_names()
    one = '(?:' + '|'.join(sorted(names)) + r')\b'
    comma_list = re.compile(rf'\b{one}(?:\s*,\s*{one}){{2,}}')  # 'A, B, C': a one-line list of archs (KNOWN was one)
    folders = _unit_folders()
    found = []
    for path in PACKAGE.rglob('*.py'):
        if any(folder in path.parents for folder in folders):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            items = node.keys if isinstance(node, ast.Dict) else (
                node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [])
            items = [part for item in items  # keys that are tuples ({('DIPNet', 'int8'): ...}: MISSES_CONTRACT was one)
                     for part in (item.elts if isinstance(item, ast.Tuple) else [item])]
            spelled = {item.value for item in items if isinstance(item, ast.Constant) and item.value in names}
            if len(spelled) >= 2:
                found.append(f'{path.relative_to(REPO_ROOT)}:{node.lineno} {sorted(spelled)}')
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and '\n' not in node.value \
                    and comma_list.search(node.value):
                found.append(f'{path.relative_to(REPO_ROOT)}:{node.lineno} {node.value[:60]!r}')
    assert not found, 'arch tables outside the arch units:\n' + '\n'.join(found)
    entries = sorted(str(p.relative_to(REPO_ROOT)) for p in PACKAGE.rglob('*.py')
                     if not any(f in p.parents for f in folders) and re.search(r'\b(released|PretrainedModel)\(',
                                                                                p.read_text()))
    assert entries == ['ddsr/archs/units.py']  # published checkpoints are declared by their unit only


def test_networks_are_built_in_one_place():
    """Only ddsr.archs.registry builds on the meta device: option checks, detection and capabilities call its
    build_network (each had its own meta-then-CPU builder)."""
    builders = sorted(str(p.relative_to(REPO_ROOT)) for p in PACKAGE.rglob('*.py')
                      if "torch.device('meta')" in p.read_text())
    assert builders == ['ddsr/archs/registry.py']


def test_model_helpers_do_not_register_and_prune_model_is_a_factory():
    from basicsr.utils.registry import MODEL_REGISTRY

    from ddsr.models import prune_model
    parts = PACKAGE / 'models' / 'parts'
    assert sorted(p.stem for p in parts.glob('*.py')) == ['__init__', 'enhanced', 'hooks', 'iterative_prune',
                                                          'progressive', 'self_describing']
    assert not [p for p in parts.glob('*.py') if '.register(' in p.read_text()]
    assert not [p for p in (PACKAGE / 'models').rglob('*.py') if 'def __new__' in p.read_text()]
    factory = MODEL_REGISTRY.get('PruneSRModel')
    assert factory is prune_model.PruneSRModel and not isinstance(factory, type)
    for mode, name in (('proximal', 'ProximalPruneSRModel'), ('compress', 'ProximalPruneSRModel'),
                       ('iterative', 'IterativePruneSRModel'), ('finetune', 'PrunedFinetuneSRModel')):
        assert factory.procedure({'prune': {'mode': mode}}) is MODEL_REGISTRY.get(name)
    with pytest.raises(DDSRError, match='prune.mode'):
        factory.procedure({'prune': {'mode': 'nope'}})
