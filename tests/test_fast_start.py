"""Issue 15: start-up without torch for help, deploy networks without basicsr, BasicSR-side use unchanged."""
import ast
import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

COMMANDS = ('upscale', 'export', 'bench', 'compress', 'reparam', 'make-lmdb', 'make-demo-data', 'make-enhanced-hr')


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_imports_neither_torch_nor_basicsr():
    code = ('import contextlib, io, json, sys\nfrom ddsr.cli import ddsr_main\nseen = {}\n'
            f'for argv in [[]] + [[c] for c in {COMMANDS!r}]:\n'
            '    with contextlib.redirect_stdout(io.StringIO()) as out:\n'
            '        try:\n            ddsr_main(argv + ["--help"])\n        except SystemExit:\n            pass\n'
            '    seen[" ".join(argv) or "ddsr"] = [len(out.getvalue()), '
            '[m for m in ("torch", "basicsr", "torchvision") if m in sys.modules]]\n'
            'print(json.dumps(seen))')
    seen = _run(code)
    assert len(seen) == len(COMMANDS) + 1
    for name, (chars, heavy) in seen.items():
        assert heavy == [], name
        assert chars > 200, name  # the help text was printed


def test_deploy_networks_import_without_basicsr_and_register_on_use():
    """DIPNet and DDistillSR import with torch only; once BasicSR's registry is used, the same classes are in it."""
    code = ('import json, sys\nimport ddsr\nfrom ddsr.archs.registry import arch_class\n'
            'dip, dd = arch_class("DIPNet"), arch_class("DDistillSR")\n'
            'before = [m for m in ("basicsr", "torchvision") if m in sys.modules]\n'
            'params = sum(p.numel() for p in dip().parameters())\n'
            'from basicsr.archs import build_network\n'
            'from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY\n'
            'net = build_network({"type": "DIPNet", "upscale": 2})\n'
            'print(json.dumps([before, params, type(net) is dip, ARCH_REGISTRY.get("DDistillSR") is dd, '
            '"EDSRmini" in ARCH_REGISTRY, "LapPyramidLoss" in LOSS_REGISTRY, "DistillSRModel" in MODEL_REGISTRY]))')
    before, params, *same = _run(code)
    assert before == []
    assert params == 243252  # the official DIPNet x4 (xiumu00/DIPNet model_zoo/DIPNet.pth)
    assert same == [True, True, True, True, True]


def test_arch_table_names_every_registered_ddsr_arch():
    """The arch units' network table (type name -> module, for lookups without importing every arch) is complete:
    every ``@ARCH_REGISTRY.register()`` class of ddsr/archs/ is named by exactly one unit, with its module."""
    from ddsr.archs.units import network_modules
    found = {}
    for path in sorted((REPO_ROOT / 'ddsr' / 'archs').rglob('*_arch.py')):
        module = '.'.join(path.relative_to(REPO_ROOT).with_suffix('').parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    'ARCH_REGISTRY.register' in ast.unparse(deco) for deco in node.decorator_list):
                found[node.name] = module
    assert len(found) == 4 and found == network_modules()
