"""A short console for ``basicsr train`` runs that ask for it (``logger.console: progress``, a ddsr option).

BasicSR's console shows everything it logs: the environment banner, every option, the whole network printout,
one line per ``print_freq`` iterations (with an ETA that goes negative at the end) and the final validation twice.
With ``logger:`` ``console: progress`` in the option file (or ``--force_yml logger:console=progress``) the log
file keeps all of that, and the console shows:

- a two-line header: what trains (arch, scale, parameters, iterations, batch, device) and where it writes;
- a live progress bar on a terminal (iterations/s, an ETA from the measured rate that never goes below zero,
  losses and learning rate updated every ``print_freq`` iterations); elsewhere (CI, ``| tee``, a captured test)
  one plain line every ``print_freq`` iterations or every ``LINE_INTERVAL_S`` seconds, whichever comes first
  (so the first line comes early even when iterations are slow), plus the last;
- one line per intermediate validation, warnings and errors;
- one final result line: the last validation's metrics, the same metrics for bicubic upsampling (BasicSR's
  MATLAB-style ``imresize``) of the same LR images, the iterations this run trained (``iterations 51-60`` after a
  resume), this run's wall time (set-up and validation included) and where the checkpoints are.

What BasicSR prints (``print``) before its logger is set up (``Disable distributed.``, ``Set pretrain_network_g
to ...`` on resume, ``Path already exists. Rename it to ...``) goes to the log file instead: the console hook holds
``sys.stdout`` from the start of the run until the logger exists, then logs what was held (on a failure before
that, it is printed after all).

Without the key nothing changes (BasicSR's own console). Like :mod:`ddsr.guards`, this is a feature of a run
started by ddsr's command line, not a patch: :class:`ConsoleRun` is a hook that :mod:`ddsr.run_seam` plugs into
BasicSR's logger set-up and training loop for that run only.
"""
from __future__ import annotations

import io
import logging
import sys
import time
from os import path as osp
from typing import IO, Any

from ddsr.progress import format_duration, is_terminal, progress
from ddsr.run_state import RunHook, RunState

OPTION = 'console'  # key under ``logger:``
MODE = 'progress'
LINE_INTERVAL_S = 10.0

def wanted(opt: dict) -> bool:
    return isinstance(opt.get('logger'), dict) and opt['logger'].get(OPTION) == MODE


class _WarningsOnly(logging.Handler):
    """Console handler of BasicSR's logger while a short console is active: warnings and errors, one line each."""

    def __init__(self, run: ConsoleRun) -> None:
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        text = ' '.join(record.getMessage().split())
        self.run.write(f'{record.levelname.lower()}: {text}')


class ConsoleRun(RunHook):
    """What the console shows for one training run of ``opt`` (a hook of :mod:`ddsr.run_seam`; add it only when
    :func:`wanted`): the first logger set-up hands its console over (:meth:`on_logger`), the built model's
    iterations and validations are followed, and the result line is printed when the run succeeded."""

    def __init__(self, opt: dict, stream: IO[str] | None = None) -> None:
        self.stream: IO[str] = stream if stream is not None else sys.stdout
        self._use(opt)
        self.tty = is_terminal(self.stream)
        self.bar: Any = None
        self.log_file: str | None = None
        self.start_iter: int | None = None
        self.run_started = self.started = self.last_line = time.monotonic()
        self.last_iter = 0
        self.held: io.StringIO | None = None  # BasicSR's prints before its logger exists
        self.real_stdout: Any = None
        self.validations: list[tuple[int, str, dict]] = []
        self.model: Any = None

    def _use(self, opt: dict) -> None:
        self.opt = opt
        self.total = int(opt['train']['total_iter'])
        self.print_freq = max(1, int(opt['logger'].get('print_freq', 100)))

    def experiments_root(self) -> str:
        """Where the run writes, as BasicSR names it (``experiments/debug_<name>`` for ``--debug``), relative to
        the working directory when it is under it."""
        root = (self.opt.get('path') or {}).get('experiments_root') or osp.join('experiments', self.opt['name'])
        if osp.isabs(root):
            rel = osp.relpath(root)
            root = root if rel.startswith('..') else rel
        return root

    # ---- output ----

    def write(self, text: str) -> None:
        if self.bar is not None and self.tty:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    # ---- events (called by ddsr.run_seam) ----

    def on_options(self, state: RunState, opt: dict) -> dict:
        """BasicSR's parsed options replace the file's: ``--debug`` renames the run (``debug_<name>``) and changes
        ``print_freq``, ``--force_yml`` any key."""
        self._use(opt)
        return opt

    def enter(self, state: RunState) -> None:
        self.run_started = time.monotonic()
        self.held, self.real_stdout = io.StringIO(), sys.stdout
        sys.stdout = self.held

    def _release_stdout(self) -> str:
        """Give ``sys.stdout`` back; what was printed while it was held."""
        if self.held is None:
            return ''
        if sys.stdout is self.held:
            sys.stdout = self.real_stdout
        text, self.held = self.held.getvalue(), None
        return text

    def on_logger(self, state: RunState, logger: Any, log_file: str | None) -> None:
        """BasicSR's logger was set up: its console handler is replaced by one that shows warnings only, and what
        BasicSR printed before goes to the log."""
        self.log_file = log_file
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # the console one; FileHandler is a subclass, kept
                logger.removeHandler(handler)
        logger.addHandler(_WarningsOnly(self))
        for line in self._release_stdout().splitlines():
            if line.strip():
                logger.info(line)

    def on_model(self, state: RunState, model: Any) -> None:
        """The model was built: print the header, follow its iterations and validations."""
        self.model = model
        net = getattr(model, 'net_g', None)
        net = getattr(net, 'module', net)
        params = sum(p.numel() for p in net.parameters()) if net is not None else 0
        opt = self.opt
        train_set = (opt.get('datasets') or {}).get('train') or {}
        net_type = (opt.get('network_g') or {}).get('type', '?')
        device = getattr(model, 'device', 'cpu')
        self.write(f"ddsr: training {opt['name']}: {net_type} x{opt.get('scale')}, {params:,} parameters, "
                   f"{self.total} iterations (batch {train_set.get('batch_size_per_gpu', '?')}), on {device}")
        root = self.experiments_root()
        self.write(f'      writes {root} (models/, training_states/); full log: {self.log_file}')

    def after_optimize(self, state: RunState, model: Any, current_iter: int) -> None:
        self.on_iteration(current_iter)

    def after_validation(self, state: RunState, model: Any, dataloader: Any, current_iter: int) -> None:
        name = getattr(dataloader.dataset, 'opt', {}).get('name', 'val')
        self.on_validation(current_iter, name, dict(getattr(model, 'metric_results', {}) or {}))

    def before_iteration(self, state: RunState, model: Any, current_iter: int) -> None:
        if self.start_iter is None:
            self.start_iter = current_iter - 1
            self.started = time.monotonic()

    def exit(self, state: RunState, success: bool) -> None:
        held = self._release_stdout()  # a run that failed before its logger existed: show what it printed
        if held:
            self.stream.write(held)
            self.stream.flush()
        self.finish(success)

    def _losses(self) -> str:
        log = {}
        try:
            log = self.model.get_current_log()
        except Exception:  # noqa: B902  (a model without log_dict: no losses shown)
            pass
        parts = [f'{k} {float(v):.3e}' for k, v in log.items()]
        try:
            parts.append(f'lr {self.model.get_current_learning_rate()[0]:.1e}')
        except Exception:  # noqa: B902
            pass
        return ', '.join(parts)

    def on_iteration(self, current_iter: int) -> None:
        if self.start_iter is None:  # (called without before_iteration: a model driven by hand)
            self.start_iter = current_iter - 1
        if self.last_iter <= self.start_iter and self.tty:
            self.bar = progress(self.total, 'train', unit='it', file=self.stream, initial=self.start_iter)
        self.last_iter = current_iter
        if self.bar is not None:
            self.bar.update(current_iter - self.bar.n)
            if current_iter % self.print_freq == 0:
                self.bar.set_postfix_str(self._losses())
            return
        now = time.monotonic()
        last = current_iter >= self.total
        if current_iter % self.print_freq == 0 or now - self.last_line >= LINE_INTERVAL_S or last:
            self.last_line = now
            done = current_iter - self.start_iter
            rate = done / max(now - self.started, 1e-9)
            eta = format_duration((self.total - current_iter) / rate) if rate > 0 else '?'
            self.write(f'iter {current_iter}/{self.total} ({100 * current_iter / self.total:.0f}%), '
                       f'{rate:.2f} it/s, eta {eta}, {self._losses()}')

    def on_validation(self, current_iter: int, dataset: str, metrics: dict) -> None:
        self.validations.append((current_iter, dataset, metrics))
        if current_iter < self.total:
            self.write(f'val {dataset} @ iter {current_iter}: {_format_metrics(metrics)}')

    # ---- the end ----

    def finish(self, success: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not success:
            return
        elapsed = format_duration(time.monotonic() - self.run_started)
        where = osp.join(self.experiments_root(), 'models')
        if not self.start_iter:  # a run from iteration 0 (or none trained)
            span = f'{self.total} iterations'
        else:  # resumed: what this run trained
            span = f'iterations {self.start_iter + 1}-{self.last_iter}'
        if not self.validations:
            self.write(f'result: {self.opt["name"]}: {span} in {elapsed}; checkpoints in {where}')
            return
        _, dataset, metrics = self.validations[-1]
        try:
            baseline = f' (bicubic: {_format_metrics(bicubic_metrics(self.opt, dataset))})'
        except Exception as err:  # noqa: B902  (the result line must come; the baseline is a courtesy)
            baseline = f' (bicubic baseline not computed: {type(err).__name__})'
        self.write(f'result: {self.opt["name"]} after {span} ({elapsed}): val {dataset} '
                   f'{_format_metrics(metrics)}{baseline}; checkpoints in {where}')


def _format_metrics(metrics: dict) -> str:
    units = {'psnr': ' dB'}
    return ', '.join(f'{name.upper() if name in ("psnr", "ssim") else name} {float(value):.4g}{units.get(name, "")}'
                     for name, value in metrics.items())


def bicubic_metrics(opt: dict, dataset_name: str) -> dict:
    """The validation metrics of ``opt`` for MATLAB-style bicubic upsampling of the LR images of ``dataset_name``."""
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_metric
    from basicsr.utils import tensor2img
    from basicsr.utils.matlab_functions import imresize
    scale = int(opt['scale'])
    for phase, ds_opt in (opt.get('datasets') or {}).items():
        if phase.split('_')[0] == 'val' and ds_opt.get('name') == dataset_name:
            break
    else:
        raise KeyError(dataset_name)
    dataset = build_dataset({**ds_opt, 'phase': 'val', 'scale': scale})
    totals = {name: 0.0 for name in opt['val']['metrics']}
    for idx in range(len(dataset)):
        item = dataset[idx]
        sr = tensor2img([imresize(item['lq'], scale).clamp(0, 1)])
        gt = tensor2img([item['gt']])
        sr = sr[:gt.shape[0], :gt.shape[1]]
        for name, metric_opt in opt['val']['metrics'].items():
            totals[name] += float(calculate_metric({'img': sr, 'img2': gt}, dict(metric_opt)))
    return {name: value / max(1, len(dataset)) for name, value in totals.items()}
