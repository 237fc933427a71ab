"""PruneSRModel: pruning while training: the pruning stage of "Compressing Deep Image Super-resolution Models"
(Jiang et al., Sec. 3) and DIPNet's iterative filter pruning + fine-tuning (step 5 of its pipeline).

Training minimises ``pixel_opt`` (the paper: Charbonnier, eps 1e-12) + lambda * ||theta||_1; the L1 part is a
proximal step after every optimizer step on the conv / linear kernels: w <- sign(w) * max(|w| - lr * lambda, 0),
which drives whole channels to exact zeros. The weight density per block / layer is logged at print_freq
(``density_<group>``) and, at the end of training (``save`` with current_iter == -1), written as a report
(``sparsity_report.json`` + ``sparsity_report.png`` under experiments/<name>/); with ``prune.target`` or
``prune.ratio`` the compact network is carved out (ddsr.compress.compact) and saved self-describing as
``models/net_g_compact.pth``.

Option section ``prune``:
    mode: proximal | compress | iterative | finetune
        proximal: the sparsity-regularised training above (stage 1);
        compress: no regulariser; use with total_iter 0 to turn the loaded dense checkpoint into the compact
                  checkpoint from ``basicsr train`` (stage 2);
        iterative: DIPNet's iterative L2 filter pruning of the block middle width + fine-tuning between steps
                   (ddsr.models.iterative_prune): ratio, step_iters, steps, max_psnr_drop;
        finetune: plain training of a pruned network (no regulariser, no pruning).
    lambda: L1 weight (default 1e-4).
    target (proximal, compress): preset name ('EDSRmini-default', 'SwinIRmini-default') or an arch dict; or
    ratio (proximal, compress): params ratio of the compact network.
    ratio (iterative): fraction of the middle width removed per step (default 0.1).
    step_iters (iterative): fine-tuning iterations between two steps (default 1000).
    steps (iterative): maximum number of steps (default: until max_psnr_drop or width 1).
    max_psnr_drop (iterative): stop when the val PSNR is more than this (dB) below the unpruned network's
        and keep the last good step (default: never stop on PSNR).

In the modes iterative and finetune the network width changes between runs (or during the run), so the
checkpoints are self-describing: ``net_g_<iter>.pth`` also holds ``arch`` (``DIPNet.config()``), and when
``path.pretrain_network_g`` holds an ``arch`` of the network_g type, network_g is rebuilt from it. That is how
a run starts from a pruned checkpoint without writing its widths into the YAML, and how a resumed run
(BasicSR points pretrain_network_g at ``net_g_<iter>.pth``) gets the pruned arch back. The network is then
always loaded strictly (ddsr's preflight checks the checkpoint against that same arch).
"""
import copy
import json
import os.path as osp

import matplotlib
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from ddsr.compat import atomic_save
from ddsr.compress.compact import checkpoint_arch, compress_state, save_compact
from ddsr.compress.importance import density_by_group, prunable_weights, soft_threshold_
from ddsr.errors import DDSRError
from ddsr.models.iterative_prune import IterativePruner

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

MODES = ('proximal', 'compress', 'iterative', 'finetune')
SELF_DESCRIBING = ('iterative', 'finetune')  # modes whose net_g checkpoints carry (and are rebuilt from) 'arch'


@MODEL_REGISTRY.register()
class PruneSRModel(SRModel):
    """SRModel + proximal L1 sparsity / iterative filter pruning, sparsity report, self-describing checkpoints."""

    def __init__(self, opt: dict):
        self.prune_opt = {'mode': 'proximal', 'lambda': 1e-4, **(opt.get('prune') or {})}
        self.mode = self.prune_opt['mode']
        if self.mode not in MODES:
            raise DDSRError(f"prune.mode: '{self.mode}' is not one of {', '.join(MODES)}")
        if self.mode in SELF_DESCRIBING:
            arch = checkpoint_arch(opt['path'].get('pretrain_network_g'))
            if arch is not None and arch.get('type') == opt['network_g'].get('type'):
                if arch != opt['network_g']:
                    get_root_logger().info(f'network_g rebuilt from the arch of pretrain_network_g: {arch}')
                opt['network_g'] = arch
                opt['path']['strict_load_g'] = True  # built from the checkpoint's own arch: every key must fit
        self.pruner = None
        train_opt = copy.deepcopy(opt.get('train'))  # BasicSR pops optim_g/scheduler 'type' while setting up
        super().__init__(opt)
        if self.is_train and self.mode == 'iterative':
            self.pruner = IterativePruner(self, self.prune_opt, train_opt)

    def optimize_parameters(self, current_iter: int) -> None:
        if self.pruner is not None:
            self.pruner.before_step(current_iter)
        super().optimize_parameters(current_iter)
        if self.mode == 'proximal':
            threshold = self.optimizer_g.param_groups[0]['lr'] * float(self.prune_opt['lambda'])
            soft_threshold_(list(prunable_weights(self.get_bare_model(self.net_g)).values()), threshold)
        if self.mode in ('proximal', 'compress') and current_iter % self.opt['logger']['print_freq'] == 0:
            self.log_dict.update({f'density_{k}': v for k, v in self.density().items()})
        if self.pruner is not None:
            self.pruner.after_step(current_iter)

    def density(self) -> dict[str, float]:
        return density_by_group(self.get_bare_model(self.net_g))

    def checkpoint_dict(self) -> dict:
        """``{'params'[, 'params_ema'], 'arch'}`` of the current network (CPU tensors)."""
        nets = {'params': self.net_g}
        if hasattr(self, 'net_g_ema'):
            nets['params_ema'] = self.net_g_ema
        ckpt = {key: {k: v.detach().cpu() for k, v in self.get_bare_model(net).state_dict().items()}
                for key, net in nets.items()}
        net = self.get_bare_model(self.net_g)
        ckpt['arch'] = net.config() if hasattr(net, 'config') else dict(self.opt['network_g'])
        return ckpt

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        if self.mode not in SELF_DESCRIBING or net_label != 'net_g':
            return super().save_network(net, net_label, current_iter, param_key)
        name = f"{net_label}_{'latest' if current_iter == -1 else current_iter}.pth"
        atomic_save(self.checkpoint_dict(), osp.join(self.opt['path']['models'], name))

    @master_only
    def save_training_state(self, epoch, current_iter):
        if self.pruner is None or current_iter == -1:
            return super().save_training_state(epoch, current_iter)
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], 'prune': self.pruner.state}
        atomic_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.pruner is not None:
            if 'prune' not in resume_state:
                raise DDSRError('resume: the training state has no pruning state (not saved by prune.mode: iterative)')
            self.pruner.state = resume_state['prune']
            get_root_logger().info(f"Resumed iterative pruning at step {self.pruner.state['step']} "
                                   f"(mid_channels {self.get_bare_model(self.net_g).mid_channels})")

    def save(self, epoch: int, current_iter: int) -> None:
        super().save(epoch, current_iter)
        if current_iter == -1 and self.mode in ('proximal', 'compress'):
            self.write_report()
            if self.prune_opt.get('target') is not None or self.prune_opt.get('ratio') is not None:
                self.save_compact()

    def write_report(self) -> str:
        """sparsity_report.json / .png (density per block or layer) under experiments/<name>/; the JSON path."""
        root = self.opt['path']['experiments_root']
        density = self.density()
        path = osp.join(root, 'sparsity_report.json')
        with open(path, 'w') as f:
            json.dump({'mode': self.prune_opt['mode'], 'lambda': float(self.prune_opt['lambda']),
                       'arch': self.opt['network_g'], 'density': density}, f, indent=2)
        names = [k for k in density if k != 'total']
        fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(names)), 3))
        ax.bar(range(len(names)), [density[k] for k in names])
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_ylabel('weight density')
        ax.set_title(f"{self.opt['name']} (total {density['total']:.3f})")
        fig.tight_layout()
        fig.savefig(osp.join(root, 'sparsity_report.png'), dpi=100)
        plt.close(fig)
        get_root_logger().info(f'Sparsity report: {path}')
        return path

    def save_compact(self) -> str:
        """Compress the (EMA if present) network to prune.target / prune.ratio; models/net_g_compact.pth."""
        net = self.get_bare_model(self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        try:
            params, arch = compress_state(state, dict(self.opt['network_g']), self.prune_opt.get('target'),
                                          self.prune_opt.get('ratio'))
        except ValueError as err:
            raise DDSRError(f'prune: {err}') from err
        path = osp.join(self.opt['path']['models'], 'net_g_compact.pth')
        save_compact(path, params, arch)
        get_root_logger().info(f'Compact network {arch} saved to {path}')
        return path
