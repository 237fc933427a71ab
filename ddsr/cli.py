"""Command line: ``basicsr train|test`` (BasicSR's pipelines with ddsr registered) and ``ddsr <command>``.

``ddsr`` sub-commands are discovered from :mod:`ddsr.commands`: each module defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. A :class:`ddsr.errors.DDSRError` (bad input) is printed
as one line and exits with code 2.
"""
import argparse
import importlib
import os
import pkgutil
import sys
from typing import List, Optional

import ddsr  # noqa: F401  (compat + registration before basicsr's pipelines are imported)
from ddsr import commands
from ddsr.errors import DDSRError

PHASES = ('train', 'test')
USAGE = 'usage: basicsr {train,test} -opt OPTION.yml [--launcher {none,pytorch,slurm}] [--auto_resume] ' \
        '[--debug] [--force_yml KEY=VALUE ...] [--archive]'


def _fail(err: Exception) -> int:
    print(f'error: {err}', file=sys.stderr, flush=True)
    return 2


def run_pipeline(phase: str, args: List[str]) -> int:
    """Run BasicSR's train or test pipeline on ``args`` (BasicSR's own flags) with the cwd as root."""
    from ddsr.preflight import ARCHIVE_FLAG, check_options
    args = [arg.replace('--local-rank', '--local_rank') for arg in args]  # torch.distributed.launch spelling
    root = os.getcwd()
    try:
        check_options(phase, args, root)
        sys.argv = [f'basicsr {phase}'] + [arg for arg in args if arg != ARCHIVE_FLAG]
        if phase == 'train':
            from basicsr.train import train_pipeline
            train_pipeline(root)
        else:
            from basicsr.test import test_pipeline
            test_pipeline(root)
    except DDSRError as err:
        return _fail(err)
    return 0


def basicsr_main(argv: Optional[List[str]] = None) -> int:
    """Entry of the ``basicsr`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in PHASES:
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ('-h', '--help') else 2
    return run_pipeline(argv[0], argv[1:])


def _command_modules():
    names = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    return [importlib.import_module(f'{commands.__name__}.{name}') for name in names]


def ddsr_main(argv: Optional[List[str]] = None) -> int:
    """Entry of the ``ddsr`` console script."""
    parser = argparse.ArgumentParser(prog='ddsr', description='Efficient super-resolution tools for BasicSR.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for module in _command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except DDSRError as err:
        return _fail(err)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m ddsr.cli basicsr ...`` or ``python -m ddsr.cli <ddsr command> ...``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == 'basicsr':
        return basicsr_main(argv[1:])
    return ddsr_main(argv)


if __name__ == '__main__':
    sys.exit(main())
