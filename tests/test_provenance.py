"""Every recipe value in options/train/** says where it comes from.

Each numeric leaf under ``train:`` and ``network_*:`` must sit on a line with a comment naming its source:
``# paper ...`` (a paper's section / table), ``# authors' config <file>`` (the authors' released option file or
code), or ``# chosen here: <reason>``. Lines are found with PyYAML's composer (node start marks), so flow-style
mappings / lists on one line share that line's comment.
"""
import re
from pathlib import Path

import pytest
import yaml

TRAIN_OPTIONS = sorted((Path(__file__).resolve().parents[1] / 'options' / 'train').rglob('*.yml'))
SOURCE = re.compile(r"#.*?\b(paper\b\S*\s+\S+|authors' config \S+|chosen here: \S+)")
NUMERIC = ('tag:yaml.org,2002:int', 'tag:yaml.org,2002:float')


def numeric_leaves(node, path=()):
    """(dotted path, 0-based line) of every int / float scalar below ``node``."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from numeric_leaves(value, path + (key.value, ))
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            yield from numeric_leaves(value, path + (str(i), ))
    elif isinstance(node, yaml.ScalarNode) and node.tag in NUMERIC:
        yield '.'.join(path), node.start_mark.line


def unsourced(path: Path) -> list[str]:
    text = path.read_text()
    lines = text.splitlines()
    root = yaml.compose(text)
    missing = []
    for key, value in root.value:
        if key.value == 'train' or key.value.startswith('network_'):
            for leaf, line in numeric_leaves(value, (key.value, )):
                if not SOURCE.search(lines[line]):
                    missing.append(f'{path.name}:{line + 1} {leaf}')
    return missing


def test_there_are_train_options():
    assert len(TRAIN_OPTIONS) >= 24


@pytest.mark.parametrize('path', TRAIN_OPTIONS, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_every_numeric_value_has_a_source(path):
    assert unsourced(path) == []


def test_the_checker_finds_a_missing_source(tmp_path):
    bad = tmp_path / 'x.yml'
    bad.write_text("train:\n  total_iter: 10  # chosen here: short\n  optim_g: {type: Adam, lr: 0.1}\n"
                   "network_g:\n  num_feat: 8  # a comment without a source\n"
                   "val:\n  val_freq: 5\n")
    assert unsourced(bad) == ['x.yml:3 train.optim_g.lr', 'x.yml:5 network_g.num_feat']
