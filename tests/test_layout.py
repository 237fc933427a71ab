"""Import-graph facts of the package (read from the source with ``ast``, nothing imported): no import cycle, layers
import only downward, one module reads checkpoints with ``torch.load``, matplotlib is never imported at module
level (importing ddsr must not change the process's plotting backend), and each file utility has one home (atomic
rename, umask, sha256, cache root, LMDB opening, YAML parsing, tqdm)."""
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / 'ddsr'

# Layers, lowest first: a unit may import units of a lower rank (and itself), never a higher or an equal other one.
RANK = {
    'errors': 0, 'registry_import': 0, 'progress': 0, 'fileio': 0, 'run_state': 0, 'cpu_threads': 0,
    'archs': 1,  # the arch units: checkpoint builds networks through ddsr.archs.registry, the zoo reads the units
    'checkpoint': 2, 'option_file': 2, 'zoo': 2,
    'compat': 3,
    'losses': 4, 'data': 4,
    'guards': 5, 'amp': 5, 'sample_errors': 5, 'runlock': 5, 'console': 5, 'detect': 5, 'registration': 5,
    'compress': 6, 'deploy': 6, 'preempt': 6, 'resume': 6,
    'bench': 7, 'api': 7, 'run_seam': 7,
    'models': 8,
    'checks': 9,
    'commands': 10,
    'cli': 11,
    'train': 12, 'test': 12,
}
FORBIDDEN = {('checks', 'models')}  # option checks ask the model registry, never import model code


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path) -> set[str]:
    """Every ``ddsr.*`` module that ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    package = _module_name(path) if path.name == '__init__.py' else _module_name(path).rsplit('.', 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith('ddsr'))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(parent + ([base] if base else []))
            if base.startswith('ddsr'):
                found.add(base)
                found.update(f'{base}.{alias.name}' for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph = {}
    for name, path in files.items():
        targets = set()
        for imported in _imports(path):
            while imported not in files and '.' in imported:  # `from ddsr.x import func` -> module ddsr.x
                imported = imported.rsplit('.', 1)[0]
            if imported in files and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _unit(module: str) -> str:
    return module.split('.')[1] if '.' in module else module


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _graph() if m != 'ddsr'}
    assert units <= set(RANK), f'units without a layer: {sorted(units - set(RANK))}'


def test_no_import_cycle():
    graph = {m: {t for t in ts if t != 'ddsr'} for m, ts in _graph().items() if m != 'ddsr'}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail(f'import cycle: {" -> ".join(cycle)}')
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_layers_import_only_downward():
    wrong = []
    for module, targets in _graph().items():
        if module == 'ddsr':  # the package's __init__ registers everything: it sits on top
            continue
        src = _unit(module)
        for target in targets - {'ddsr'}:
            dst = _unit(target)
            if src == dst:
                continue
            if RANK[dst] >= RANK[src] or (src, dst) in FORBIDDEN:
                wrong.append(f'{module} -> {target}')
    assert not wrong, 'imports that point up or sideways:\n' + '\n'.join(sorted(wrong))


def test_one_module_reads_checkpoints():
    readers = sorted(_module_name(p) for p in PACKAGE.rglob('*.py') if 'torch.load(' in p.read_text())
    assert readers == ['ddsr.checkpoint']


def test_matplotlib_is_imported_lazily():
    eager = []
    for path in PACKAGE.rglob('*.py'):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split('.')[0] == 'matplotlib' for name in names):
                eager.append(_module_name(path))
    assert not eager, f'matplotlib imported at module level in {eager}'


def _calls(path: Path) -> set[str]:
    """Dotted names called in ``path`` (``os.replace(...)`` -> ``os.replace``), plus ``import:<module>`` for every
    imported module and ``env:<NAME>`` for every string constant that names an environment variable read."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                found.add('.'.join([func.id, *reversed(parts)]))
        elif isinstance(node, ast.Import):
            found.update(f'import:{alias.name}' for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(f'import:{node.module}')
        elif isinstance(node, ast.Constant) and node.value == 'XDG_CACHE_HOME':
            found.add('env:XDG_CACHE_HOME')
    return found


# Each file utility has one home (issue 22): the module that may use the primitive directly. Everything else calls
# that home (ddsr.fileio.atomic_write / replace_dir / umask / sha256_* / cache_root, ddsr.data.lmdb_tools.LmdbReader,
# ddsr.option_file.load_options, ddsr.progress.progress / track).
ONE_HOME = {
    'os.replace': {'ddsr.fileio'},
    'os.umask': {'ddsr.fileio'},
    'hashlib.sha256': {'ddsr.fileio'},
    'env:XDG_CACHE_HOME': {'ddsr.fileio'},
    'lmdb.open': {'ddsr.data.lmdb_tools'},
    'yaml.load': {'ddsr.option_file'},
    'yaml.safe_load': {'ddsr.commands'},  # a command-line KEY=VALUE string, not a file
    'import:tqdm': {'ddsr.progress'},
}


@pytest.mark.parametrize('primitive', sorted(ONE_HOME))
def test_each_file_utility_has_one_home(primitive):
    users = {_module_name(p) for p in PACKAGE.rglob('*.py') if primitive in _calls(p)}
    assert users <= ONE_HOME[primitive], f'{primitive} used outside its home: {sorted(users - ONE_HOME[primitive])}'
    assert users, f'{primitive}: its home no longer uses it (update ONE_HOME)'


def _readme_layout_rows() -> list[set[str]]:
    """The units named in each row of README's Layout table (``ddsr/x.py`` / ``ddsr/x/``; a bare ``x.py`` in a row
    that named ``ddsr/`` before is a module of ddsr too)."""
    text = (PACKAGE.parent / 'README.md').read_text()
    table = text.split('## Layout', 1)[1].split('\n## ', 1)[0]
    rows = []
    for line in table.splitlines():
        cells = line.split('|')
        if len(cells) < 3 or 'ddsr/' not in cells[1]:
            continue
        names = re.findall(r'`(?:ddsr/)?([a-z_]+)(?:\.py|/)`', cells[1])
        rows.append(set(names))
    return rows


def test_readme_layout_table_is_the_layering():
    """README's layout table names every unit once, and its rows run from the highest layer down (one statement of
    the layering: RANK here; the table is checked against it)."""
    rows = _readme_layout_rows()
    named = [unit for row in rows for unit in row]
    assert sorted(named) == sorted(set(named)), 'a unit is named in two rows'
    missing, unknown = sorted(set(RANK) - set(named)), sorted(set(named) - set(RANK))
    assert not missing and not unknown, f'missing: {missing}, unknown: {unknown}'
    for upper, lower in zip(rows, rows[1:], strict=False):
        assert min(RANK[u] for u in upper) >= max(RANK[u] for u in lower), (upper, lower)
