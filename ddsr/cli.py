"""Command line: ``basicsr train|test`` (BasicSR's pipelines with ddsr registered) and ``ddsr <command>``.

``ddsr`` sub-commands are discovered from :mod:`ddsr.commands`: each module defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import torch, basicsr and ddsr's heavy modules
inside ``run`` (not at their top), so ``ddsr --help`` and ``ddsr <command> --help`` start without torch.

Exit codes of every command: 0 success; 1 some items failed (e.g. ``ddsr upscale``: listed on stderr) or an
unexpected internal error (one ``error: unexpected ...`` line; ``DDSR_TRACEBACK=1`` shows the traceback);
2 bad input: a :class:`ddsr.errors.DDSRError` (option file, key, data, checkpoint, NaN/Inf loss, run folder in use)
or an image that cannot be loaded, printed as one ``error: ...`` line, or a command-line usage error;
75 ``basicsr train`` preempted (SIGTERM/SIGUSR1, :mod:`ddsr.preempt`): state saved, continue with ``--auto_resume``;
130 interrupted (Ctrl-C; during ``basicsr train`` the first Ctrl-C saves the state like SIGTERM, a second aborts).
What a run wrote is never removed: after a failure or interruption only the run folders
it created and left without any file are removed; the others are kept and their place is printed.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import pkgutil
import shutil
import sys
import time
import traceback
from os import path as osp
from typing import TYPE_CHECKING

import ddsr  # noqa: F401  (light: arranges compat + registration for when basicsr is imported)
from ddsr import commands, cpu_threads, runlock, sample_errors
from ddsr.errors import DDSRError

if TYPE_CHECKING:
    from ddsr.run_state import RunState

PHASES = ('train', 'test')
USAGE = 'usage: basicsr {train,test} -opt OPTION.yml [--launcher {none,pytorch,slurm}] [--auto_resume] ' \
        '[--debug] [--force_yml KEY=VALUE ...] [--archive]'


def _message(err: BaseException) -> str:
    text = str(err)
    if 'Original Traceback' in text:  # re-raised from a DataLoader worker: keep the original message
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(': ', 1)[1] if last.split(': ', 1)[0].endswith('Error') else last
    return ' '.join(text.split()) or type(err).__name__


def _fail(err: Exception) -> int:
    print(f'error: {_message(err)}', file=sys.stderr, flush=True)
    return 2


def _unexpected(err: Exception) -> int:
    if os.environ.get('DDSR_TRACEBACK'):
        traceback.print_exc()
    print(f'error: unexpected {type(err).__name__}: {_message(err)[:500]} (set DDSR_TRACEBACK=1 to see the '
          'traceback)', file=sys.stderr, flush=True)
    return 1


# Raised while BasicSR sets a run up from the options (datasets, model, losses, metrics), these come from option
# values that the preflight does not know (a dataset's own keys, a loss kwarg): reported as bad options (exit 2).
SETUP_ERRORS = (KeyError, TypeError, ValueError, AttributeError, AssertionError, IndexError, NotImplementedError,
                ZeroDivisionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


class _NeverRaised(BaseException):
    """Stands in for ddsr.preempt.Preempted before a pipeline imported that module (it imports torch)."""


def _preempted() -> type[BaseException]:
    module = sys.modules.get('ddsr.preempt')
    return module.Preempted if module is not None else _NeverRaised


def _guarded(func, *args, setup_label: str | None = None, state: RunState | None = None) -> int:
    """``func(*args)`` with the exit-code contract of the module docstring (``state``: the run's stage decides
    whether an exception raised while BasicSR sets the run up is reported as a bad option)."""
    try:
        return func(*args)
    except DDSRError as err:
        return _fail(err)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr, flush=True)
        return 130
    except _preempted() as stop:
        print(stop.message(), file=sys.stderr, flush=True)  # type: ignore[attr-defined]
        return stop.exit_code  # type: ignore[attr-defined]
    except Exception as err:  # noqa: B902  (classified below; one line instead of a traceback)
        return _classify(err, setup_label, state.stage if state is not None else None)


def _classify(err: Exception, setup_label: str | None, stage: str | None) -> int:
    data_error = sample_errors.describe(err)
    if data_error is not None:  # an image that cannot be loaded: bad data, named (exit 2)
        if os.environ.get('DDSR_TRACEBACK'):
            traceback.print_exception(err)
        return _fail(DDSRError(data_error))
    if isinstance(err, SETUP_ERRORS):
        if setup_label is None or stage != 'setup':
            return _unexpected(err)
        if os.environ.get('DDSR_TRACEBACK'):
            traceback.print_exc()
        what = f'missing key {err}' if isinstance(err, KeyError) else f'{type(err).__name__}: {_message(err)[:300]}'
        return _fail(DDSRError(f'{setup_label}: the run could not be set up from the options ({what}); check '
                               'that key and its value'))
    return _unexpected(err)  # exit 1 = not a known bad input


def _outputs(phase: str, opt: dict, args: list[str], root: str) -> list[str]:
    """Folders a BasicSR run of ``opt`` creates (experiments/<name> [+ tb_logger/<name>] or results/<name>)."""
    name = str(opt['name'])
    if '--debug' in args and not name.startswith('debug'):
        name = f'debug_{name}'
    if phase == 'test':
        return [osp.join(root, 'results', name)]
    return [osp.join(root, 'experiments', name), osp.join(root, 'tb_logger', name)]


def _has_files(folder: str) -> bool:
    return any(files for _, _, files in os.walk(folder))


DEMO_WAIT_S = 600.0  # how long other ranks wait for rank 0's demo data (built in seconds; chosen here with margin)


def _ensure_demo_data(path: str, opt: dict, root: str, rank_zero: bool = True) -> None:
    """Build the embedded demo data set when the option file points into it and it is not there yet. In a
    distributed run rank 0 builds it (atomically: it appears complete or not at all) and the other ranks wait."""
    from ddsr.checks.data import is_demo_path, option_paths
    from ddsr.data.demo import DEMO_ROOT, build_demo_data

    def missing() -> list[str]:
        return [value for _, value in option_paths(path, opt) if is_demo_path(value, root)
                and not osp.exists(osp.join(root, osp.expanduser(value)))]

    if not missing():
        return
    if not rank_zero:
        deadline = time.monotonic() + DEMO_WAIT_S
        while missing() and time.monotonic() < deadline:
            time.sleep(0.5)
        return  # still missing after the wait: the option checks name the path
    print(f'Building the demo data set in {DEMO_ROOT} (first use, a few seconds)...', flush=True)
    with open(os.devnull, 'w') as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        build_demo_data(osp.join(root, DEMO_ROOT))  # BasicSR's LMDB writer prints a bar per file: not shown


def run_pipeline(phase: str, args: list[str]) -> int:
    """Run BasicSR's train or test pipeline on ``args`` (BasicSR's own flags) with the cwd as root."""
    cpu_threads.apply()  # before torch loads (ddsr.cpu_threads)
    from ddsr import run_seam
    from ddsr.checks import check_options, read_options
    from ddsr.checks.structure import ARCHIVE_FLAG
    from ddsr.option_file import option_path
    from ddsr.run_state import RunState
    args = [arg.replace('--local-rank', '--local_rank') for arg in args]  # torch.distributed.launch spelling
    root = os.getcwd()
    outputs: list[str] = []
    new_outputs: list[str] = []
    started: list[bool] = []
    state = RunState(phase=phase, stage='setup')

    def pipeline() -> int:
        path, opt = read_options(args)
        rank_zero = runlock.is_rank_zero(args)
        _ensure_demo_data(path, opt, root, rank_zero)
        check_options(phase, args, root, opt)
        outputs.extend(_outputs(phase, opt, args, root))
        lock = runlock.run_lock(outputs[0]) if rank_zero else contextlib.nullcontext()
        with lock:  # one run per run folder; what exists once we hold it is not ours
            new_outputs.extend(folder for folder in outputs if not osp.exists(folder))
            started.append(True)  # from here on, the run folders hold what BasicSR wrote
            state.hooks = run_seam.default_hooks(phase, opt, rank_zero)
            argv = [f'basicsr {phase}'] + [arg for arg in args if arg != ARCHIVE_FLAG]
            with run_seam.running(state, argv):  # the one place that plugs ddsr's run hooks into BasicSR
                if phase == 'train':
                    from basicsr.train import train_pipeline
                    train_pipeline(root)
                else:
                    from basicsr.test import test_pipeline
                    test_pipeline(root)
        return 0

    try:
        label = option_path(args)
    except SystemExit:  # no -opt: check_options reports it (argparse usage line)
        label = None
    code = _guarded(pipeline, setup_label=label, state=state)
    # BasicSR's run objects (datasets, models, a failed run's frames with its exception) sit in reference cycles and
    # keep the LMDB environments they opened; collect them now so a next run in this process can open those LMDBs.
    # The run's hooks hold some of them too (exact resume: the train loader), so they are let go first.
    state.hooks = []
    gc.collect()
    if code != 0:  # never remove what a run wrote: only folders it created and left without any file
        for folder in new_outputs:
            if osp.isdir(folder) and not _has_files(folder):
                shutil.rmtree(folder, ignore_errors=True)
        kept = [osp.relpath(f, root) for f in outputs if osp.isdir(f) and _has_files(f)]
        if kept and started and runlock.is_rank_zero(args):
            print(f'run folder kept: {", ".join(kept)}', file=sys.stderr, flush=True)
    return code


def basicsr_main(argv: list[str] | None = None) -> int:
    """Entry of the ``basicsr`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in PHASES:
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ('-h', '--help') else 2
    return run_pipeline(argv[0], argv[1:])


def _command_modules():
    names = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    return [importlib.import_module(f'{commands.__name__}.{name}') for name in names]


def ddsr_main(argv: list[str] | None = None) -> int:
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
    cpu_threads.apply(getattr(args, 'threads', None))  # before a command imports torch (ddsr.cpu_threads)
    return _guarded(args.run, args)


def main(argv: list[str] | None = None) -> int:
    """``python -m ddsr.cli basicsr ...`` or ``python -m ddsr.cli <ddsr command> ...``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == 'basicsr':
        return basicsr_main(argv[1:])
    return ddsr_main(argv)


if __name__ == '__main__':
    sys.exit(main())
