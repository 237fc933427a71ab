"""Iterative filter pruning + fine-tuning inside one BasicSR run (DIPNet pipeline, step 5), for IterativePruneSRModel.

Timeline with ``S = prune.step_iters`` (iterations are BasicSR's, 1-based):

- first iteration, before its optimizer step: measure the validation PSNR of the loaded (unpruned) network,
  write ``models/net_g_prune_step0.pth`` and prune step 1;
- iteration ``k * S``, after its optimizer step (step k has been fine-tuned for S iterations): measure the
  validation PSNR of step k and write ``models/net_g_prune_step{k}.pth``. If the drop against step 0 is at most
  ``prune.max_psnr_drop``, step k is the last good one (``models/net_g_pruned_best.pth``) and step k+1 is pruned
  now; otherwise pruning stops and the last good network is restored (its weights as they were when it was
  measured). Pruning also stops after ``prune.steps`` steps or at width 1;
- the remaining iterations fine-tune the final network.

A pruning step keeps the ``floor(m * (1 - ratio))`` middle channels of highest L2 filter norm in every block
(:func:`ddsr.compress.dipnet_prune.prune_dipnet`), swaps ``net_g`` (and resets ``net_g_ema`` to a copy of it),
and rebuilds the optimizers and schedulers for the new parameters, keeping the schedulers' position and the
current learning rates. Every checkpoint is self-describing: ``{'params'[, 'params_ema'], 'arch', 'step',
'psnr', 'iter'}``; ``arch`` is ``DIPNet.config()`` (``mid_channels`` included). The state of this class
(primitives only) goes into the training state, so a resumed run continues the same schedule.
"""
import copy
import json
import os.path as osp
from typing import Any

import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img

from ddsr.archs.capabilities import capabilities_of
from ddsr.checkpoint import atomic_save, build_network, load_file, network_arch, select_params
from ddsr.compress.dipnet_prune import prune_dipnet
from ddsr.errors import DDSRError

DEFAULTS = {'ratio': 0.1, 'step_iters': 1000, 'steps': None, 'max_psnr_drop': None}


class IterativePruner:
    """The iterative-pruning schedule of one IterativePruneSRModel (``prune.mode: iterative``).

    Args:
        model (IterativePruneSRModel): The model whose ``net_g`` (a deploy-form DIPNet) is pruned.
        prune_opt (dict): The ``prune`` option section (ratio, step_iters, steps, max_psnr_drop).
        train_opt (dict): A copy of the ``train`` section taken before BasicSR consumed it (optim_g, scheduler).
    """

    def __init__(self, model, prune_opt: dict, train_opt: dict) -> None:
        self.model = model
        self.train_opt = train_opt
        self.opt = {**DEFAULTS, **prune_opt}
        self.ratio, self.step_iters = float(self.opt['ratio']), int(self.opt['step_iters'])
        if not 0 < self.ratio < 1 or self.step_iters < 1:
            raise DDSRError(f'prune: iterative needs 0 < ratio < 1 and step_iters >= 1, got ratio {self.ratio}, '
                            f'step_iters {self.step_iters}')
        net_opt = model.opt['network_g']
        if net_opt.get('type') != 'DIPNet' or not capabilities_of(model.get_bare_model(model.net_g)).is_deployed:
            raise DDSRError('prune.mode: iterative prunes the deploy form of DIPNet (network_g type DIPNet, '
                            f'deploy: true; convert a train-form checkpoint with ddsr reparam), got {net_opt}')
        vals = [v for k, v in model.opt['datasets'].items() if k.startswith('val')]
        if not vals:
            raise DDSRError('prune.mode: iterative measures the PSNR of every step: add datasets.val')
        self.val_opt = vals[0]
        metrics = (model.opt.get('val') or {}).get('metrics') or {}
        self.metric_opt = dict(metrics.get('psnr') or
                               {'type': 'calculate_psnr', 'crop_border': model.opt['scale'], 'test_y_channel': True})
        self.val_loader: Any = None  # built on first use (a torch DataLoader)
        # step: last pruned step (None: not started); good: last step within max_psnr_drop; history: per step.
        self.state: dict[str, Any] = {'step': None, 'good': 0, 'stopped': False, 'history': []}
        steps = self.opt['steps']
        total = model.opt['train']['total_iter']
        if steps is not None and total < int(steps) * self.step_iters:
            get_root_logger().warning(f'prune: total_iter {total} < steps * step_iters = {int(steps) * self.step_iters}'
                                      ': the last steps are not reached or not measured')

    # ---------------------------------------------------------------- schedule
    def before_step(self, current_iter: int) -> None:
        """First iteration of a fresh run: measure and save step 0, prune step 1 (unless ``steps`` is 0)."""
        if self.state['step'] is None:
            self._record(0, current_iter - 1)
            self.state['step'] = 0
            if self.opt['steps'] is not None and int(self.opt['steps']) <= 0:
                self.state['stopped'] = True
                self._write_history()
            else:
                self._prune_next()

    def after_step(self, current_iter: int) -> None:
        """At ``k * step_iters``: measure step k, then prune step k+1 or stop and restore the last good one."""
        if self.state['stopped'] or current_iter % self.step_iters or current_iter // self.step_iters != \
                self.state['step']:
            return
        step = self.state['step']
        entry = self._record(step, current_iter)
        limit = self.opt['max_psnr_drop']
        logger = get_root_logger()
        if limit is not None and entry['drop'] > float(limit):
            good = self.state['good']
            logger.info(f'Prune step {step}: PSNR drop {entry["drop"]:.4f} dB > max_psnr_drop {limit}: stop, '
                        f'restore step {good} (mid_channels {self.state["history"][good]["mid_channels"]})')
            self.state['stopped'] = True
            self._restore(good)
            return
        self.state['good'] = step
        self._save(step, 'net_g_pruned_best.pth', entry)
        if self.opt['steps'] is not None and step >= int(self.opt['steps']):
            self.state['stopped'] = True
            logger.info(f'Prune: {step} steps done (prune.steps); fine-tuning the final network')
        elif max(self.net.mid_channels) <= 1:
            self.state['stopped'] = True
            logger.info('Prune: middle width 1 reached; fine-tuning the final network')
        else:
            self._prune_next()
        self._write_history()

    # ---------------------------------------------------------------- helpers
    @property
    def net(self):
        return self.model.get_bare_model(self.model.net_g)

    def _prune_next(self) -> None:
        pruned = prune_dipnet(self.net, ratio=self.ratio)
        self.state['step'] += 1
        get_root_logger().info(f'Prune step {self.state["step"]}: mid_channels {self.net.mid_channels} -> '
                               f'{pruned.mid_channels} (ratio {self.ratio}, L2 filter norm)')
        self._swap(pruned)

    def _record(self, step: int, current_iter: int) -> dict:
        """Measure the PSNR of the current network, log it, append it to the history, write the step checkpoint."""
        psnr = self.validate()
        base = psnr if step == 0 else self.state['history'][0]['psnr']
        entry = {'step': step, 'iter': int(current_iter), 'mid_channels': list(self.net.mid_channels),
                 'params': sum(p.numel() for p in self.net.parameters()), 'psnr': psnr, 'drop': base - psnr}
        self.state['history'].append(entry)
        get_root_logger().info(f'Prune step {step} at iter {current_iter}: mid_channels {entry["mid_channels"]}, '
                               f'params {entry["params"]:,}, val PSNR {psnr:.4f} dB (drop {entry["drop"]:.4f} dB)')
        self._save(step, f'net_g_prune_step{step}.pth', entry)
        self._write_history()
        return entry

    def validate(self) -> float:
        """Mean PSNR (``val.metrics.psnr`` settings, else Y channel, crop = scale) over the first val set."""
        if self.val_loader is None:
            opt = self.model.opt
            self.val_loader = build_dataloader(build_dataset(self.val_opt), self.val_opt, num_gpu=opt['num_gpu'],
                                               dist=opt['dist'], sampler=None, seed=opt['manual_seed'])
        batch = {k: getattr(self.model, k) for k in ('lq', 'gt') if hasattr(self.model, k)}  # the training batch
        values = []
        for data in self.val_loader:
            self.model.feed_data(data)
            self.model.test()
            visuals = self.model.get_current_visuals()
            values.append(calculate_metric({'img': tensor2img([visuals['result']]),
                                            'img2': tensor2img([visuals['gt']])}, self.metric_opt))
        for key, value in batch.items():
            setattr(self.model, key, value)
        return float(sum(values) / len(values))

    def _save(self, step: int, filename: str, entry: dict) -> None:
        if self.model.opt['rank'] != 0:
            return
        ckpt = self.model.checkpoint_dict()
        ckpt.update({'step': step, 'iter': entry['iter'], 'psnr': entry['psnr']})
        atomic_save(ckpt, osp.join(self.model.opt['path']['models'], filename))

    def _write_history(self) -> None:
        if self.model.opt['rank'] == 0:
            path = osp.join(self.model.opt['path']['experiments_root'], 'prune_history.json')
            with open(path, 'w') as f:
                json.dump({'ratio': self.ratio, 'step_iters': self.step_iters, **self.state}, f, indent=2)

    def _restore(self, step: int) -> None:
        path = osp.join(self.model.opt['path']['models'], f'net_g_prune_step{step}.pth')
        ckpt = load_file(path, f'pruning step {step}')
        net = build_network(ckpt['arch'])
        net.load_state_dict(select_params(ckpt, 'params', path), strict=True)
        self._swap(net.to(self.model.device), ckpt.get('params_ema'))
        self._write_history()

    def _swap(self, net: torch.nn.Module, ema_params: dict | None = None) -> None:
        """Make ``net`` the trained network; rebuild EMA, optimizers and schedulers (position and lr kept)."""
        model = self.model
        model.opt['network_g'] = network_arch(net)
        model.net_g = model.model_to_device(net)
        model.net_g.train()
        if hasattr(model, 'net_g_ema'):
            model.net_g_ema = copy.deepcopy(net).to(model.device).eval()
            if ema_params is not None:
                model.net_g_ema.load_state_dict(ema_params, strict=True)
        lrs: list[list[float]] = [[g['lr'] for g in o.param_groups] for o in model.optimizers]
        sched_states = [s.state_dict() for s in model.schedulers]
        model.optimizers, model.schedulers = [], []
        for key in ('optim_g', 'scheduler'):
            model.opt['train'][key] = copy.deepcopy(self.train_opt[key])
        model.setup_optimizers()
        model.setup_schedulers()
        for sched, state in zip(model.schedulers, sched_states, strict=False):
            sched.load_state_dict(state)
        for optim, group_lrs in zip(model.optimizers, lrs, strict=False):
            for group, lr in zip(optim.param_groups, group_lrs, strict=False):
                group['lr'] = lr
