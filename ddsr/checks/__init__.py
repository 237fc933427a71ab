"""Checks of an option file before BasicSR runs it, so bad input is one clear line (exit 2), not a traceback.

The checks are declarative: :data:`RULES` lists, in order, what is checked for which phase; each rule reads the
options (and a few files: checkpoints, LMDB metadata, image headers; nothing is decoded or run) and raises a
:class:`ddsr.errors.DDSRError` naming the key or file; each is one BasicSR itself would fail on (or the archive
guard). Nothing here writes files (one ``note:`` line on stdout for val/test HR that BasicSR crops; the CLI
builds the demo data set before the checks when an option file points into it). Modules:

- :mod:`ddsr.checks.structure`: required keys and mappings, registered types, train section, archive guard;
- :mod:`ddsr.checks.networks`: networks build, ``upscale`` = ``scale``, checkpoints fit their networks;
- :mod:`ddsr.checks.data`: paths exist, LMDBs complete, pairs, HR = LR x scale, patch and minimum sizes, on the
  files each dataset class reads (:mod:`ddsr.checks.dataset_files`).

Problems only visible when data is decoded (a truncated PNG) surface at the point of use and are reported by
the CLI as one line naming the file.
"""
from collections.abc import Callable
from dataclasses import dataclass

from ddsr.checks import data, networks, structure
from ddsr.option_file import apply_force_yml, load_options, option_path
from ddsr.zoo import resolve_option_paths


@dataclass(frozen=True)
class Context:
    """What a rule sees: the option file's path (for messages), its options, the command line and the root."""
    path: str
    opt: dict
    args: list[str]
    root: str
    phase: str


@dataclass(frozen=True)
class Rule:
    """One check: ``check(ctx)`` raises a DDSRError on a problem; runs for the listed phases."""
    name: str
    check: Callable[[Context], None]
    phases: tuple[str, ...] = ('train', 'test')


RULES: tuple[Rule, ...] = (
    Rule('structure', lambda c: structure.check_structure(c.path, c.opt, c.phase)),
    Rule('model type', lambda c: structure.check_model_type(c.path, c.opt)),
    Rule('train section', lambda c: structure.check_train_section(c.path, c.opt), ('train', )),
    Rule('registered types', lambda c: structure.check_types(c.path, c.opt)),
    Rule('paths exist', lambda c: data.check_paths(c.path, c.opt, c.root)),
    Rule('networks and checkpoints', lambda c: networks.check_networks(c.path, c.opt, c.root)),
    Rule('data sizes', lambda c: data.check_data(c.path, c.opt, c.root, c.phase)),
    Rule('no silent archive', lambda c: structure.check_no_silent_archive(c.path, c.opt, c.args, c.root), ('train', )),
)


def read_options(args: list[str]) -> tuple[str, dict]:
    """(path, options with ``--force_yml`` applied) of the option file named by ``-opt`` in ``args``."""
    path = option_path(args)
    opt = load_options(path)
    apply_force_yml(opt, args, path)
    resolve_option_paths(opt)  # path.pretrain_network_*: ddsr://NAME -> the cached file (downloaded on first use)
    return path, opt


def check_options(phase: str, args: list[str], root: str, opt: dict | None = None) -> dict:
    """Run every rule of ``phase`` ('train' or 'test') on the option file named by ``-opt`` in ``args`` (or on
    ``opt`` when given, already read by :func:`read_options`). Returns the options."""
    path = option_path(args)
    if opt is None:
        path, opt = read_options(args)
    ctx = Context(path, opt, list(args), root, phase)
    for rule in RULES:
        if phase in rule.phases:
            rule.check(ctx)
    return opt
