"""Every "authors' config <file>.yml" citation in options/ names a value that the cited authors' file holds.

The authors' files are in tests/data/<release>/ (unchanged copies; each folder's README gives their source path).
A cited value is looked up by its key: the authors' leaves whose key path ends with the longest suffix of the
option's key path found in that file (``train.optim_g.lr`` -> ``train.optim_g.lr``; ddsr's ``network_t.num_feat``
-> any ``num_feat``) must include the value. A list is compared whole. Lines are found with PyYAML's composer, so
the citation comment of a line covers every leaf that starts on it.
"""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = sorted((ROOT / 'options').rglob('*.yml'))
AUTHORS = {p.name: p for p in (ROOT / 'tests' / 'data').rglob('*.yml')}
CITATION = re.compile(r"#.*?\bauthors' config ([\w.-]+\.yml)")


def _leaves(node, path=()):
    """(key path, value node) of every scalar, and of every list of scalars as one leaf."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _leaves(value, path + (key.value, ))
    elif isinstance(node, yaml.SequenceNode) and all(isinstance(v, yaml.ScalarNode) for v in node.value):
        yield path, node
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            yield from _leaves(value, path + (str(i), ))
    else:
        yield path, node


def _value(node):
    """The node's value as BasicSR reads it, numbers as float (so 255. == 255 and 5e-3 == !!float 5e-3)."""
    value = yaml.safe_load(yaml.serialize(node))
    number = lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v  # noqa: E731
    return [number(v) for v in value] if isinstance(value, list) else number(value)


def _authors_values(name: str) -> dict[tuple[str, ...], list]:
    values: dict[tuple[str, ...], list] = {}
    for path, node in _leaves(yaml.compose(AUTHORS[name].read_text())):
        values.setdefault(path, []).append(_value(node))
    return values


def check(path: Path) -> tuple[int, list[str]]:
    """(number of cited values, 'file:line key: value (cited file holds ...)' for every cited value that the cited
    authors' file does not hold)."""
    text = path.read_text()
    lines = text.splitlines()
    wrong, count = [], 0
    for key_path, node in _leaves(yaml.compose(text)):
        cited = CITATION.search(lines[node.start_mark.line])
        if not cited:
            continue
        count += 1
        name, dotted = cited.group(1), '.'.join(key_path)
        if name not in AUTHORS:
            wrong.append(f'{path.name}:{node.start_mark.line + 1} {dotted}: {name} is not in tests/data')
            continue
        authors = _authors_values(name)
        for n in range(len(key_path), 0, -1):  # longest key-path suffix present in the authors' file
            held = [v for p, vs in authors.items() if p[-n:] == key_path[-n:] for v in vs]
            if held:
                break
        if _value(node) not in held:
            wrong.append(f'{path.name}:{node.start_mark.line + 1} {dotted}: {_value(node)!r} ({name} holds {held!r})')
    return count, wrong


def test_authors_files_are_there_and_cited():
    assert {'prune_EDSR_Mx2.yml', 'prune_SwinIRlight_SRx2.yml', 'distill_EDSR_Minix2_KD.yml',
            'distill_SwinIRmini_SRx2_scratch_kd.yml'} <= set(AUTHORS)
    assert sum(check(p)[0] for p in OPTIONS) >= 490  # the checker reads the citations (not vacuous)


@pytest.mark.parametrize('path', OPTIONS, ids=lambda p: str(p.relative_to(ROOT / 'options')))
def test_every_authors_config_citation_holds(path):
    assert check(path)[1] == []


def test_the_checker_catches_a_planted_wrong_citation(tmp_path):
    """crop_border 4 cited to the authors' x2 file (which has 2), an unknown key and an uncited value."""
    bad = tmp_path / 'bad.yml'
    bad.write_text("train:\n  optim_g:\n    lr: !!float 5e-3  # authors' config prune_EDSR_Mx2.yml\n"
                   "    epochSize: 2560  # authors' config prune_EDSR_Mx2.yml\n"
                   "  milestones: [20000]  # authors' config prune_EDSR_Mx2.yml\n"
                   "val:\n  metrics:\n    psnr: {crop_border: 4, test_y_channel: true}  # authors' config "
                   "prune_EDSR_Mx2.yml\n"
                   "  window: 9  # authors' config prune_EDSR_Mx2.yml\n"
                   "  val_freq: 7  # chosen here: short\n")
    assert check(bad) == (6, ['bad.yml:8 val.metrics.psnr.crop_border: 4.0 (prune_EDSR_Mx2.yml holds [2.0])',
                                    "bad.yml:9 val.window: 9.0 (prune_EDSR_Mx2.yml holds [])"])
