"""ProximalPruneSRModel: the pruning stage of "Compressing Deep Image Super-resolution Models" (Jiang et al.,
Sec. 3): sparsity-regularised training, then the compact network carved out of the sparse one.

Training minimises ``pixel_opt`` + lambda * ||theta||_1; the L1 part is a proximal step after every optimizer step
on the conv / linear kernels: w <- sign(w) * max(|w| - lr * lambda, 0). The weight density per block / layer is
logged at print_freq (``density_<group>``) and, at the end of training (``save`` with current_iter == -1),
written as a report (``sparsity_report.json`` + ``sparsity_report.png`` under experiments/<name>/); with
``prune.target`` or ``prune.ratio`` the compact network is carved out (:mod:`ddsr.compress.compact`) and saved
self-describing as ``models/net_g_compact.pth``.

Option section ``prune``: ``mode: proximal`` (the above) or ``compress`` (no regulariser; with total_iter 0 it
turns the loaded dense checkpoint into the compact checkpoint from ``basicsr train``: stage 2); ``lambda`` (L1
weight, default 1e-4); ``target`` (preset 'EDSRmini-default' / 'SwinIRmini-default' or an arch dict) or
``ratio`` (params ratio of the compact network). ``PruneSRModel`` with these modes builds this class.
"""
import json
import os.path as osp

from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ddsr.checkpoint import save_self_describing
from ddsr.compress.compact import compress_state
from ddsr.compress.importance import density_by_group, prunable_weights, soft_threshold_
from ddsr.errors import DDSRError

MODES = ('proximal', 'compress')


@MODEL_REGISTRY.register()
class ProximalPruneSRModel(SRModel):
    """SRModel + proximal L1 sparsity, sparsity report and compact network."""

    def __init__(self, opt: dict):
        self.prune_opt = {'mode': 'proximal', 'lambda': 1e-4, **(opt.get('prune') or {})}
        if self.prune_opt['mode'] not in MODES:
            raise DDSRError(f"prune.mode: '{self.prune_opt['mode']}' is not one of {', '.join(MODES)}")
        super().__init__(opt)

    def optimize_parameters(self, current_iter: int) -> None:
        super().optimize_parameters(current_iter)
        if self.prune_opt['mode'] == 'proximal':
            threshold = self.optimizer_g.param_groups[0]['lr'] * float(self.prune_opt['lambda'])
            soft_threshold_(list(prunable_weights(self.get_bare_model(self.net_g)).values()), threshold)
        if current_iter % self.opt['logger']['print_freq'] == 0:
            self.log_dict.update({f'density_{k}': v for k, v in self.density().items()})

    def density(self) -> dict[str, float]:
        return density_by_group(self.get_bare_model(self.net_g))

    def save(self, epoch: int, current_iter: int) -> None:
        super().save(epoch, current_iter)
        if current_iter == -1:
            self.write_report()
            if self.prune_opt.get('target') is not None or self.prune_opt.get('ratio') is not None:
                self.save_compact()

    def write_report(self) -> str:
        """sparsity_report.json / .png (density per block or layer) under experiments/<name>/; the JSON path."""
        import matplotlib
        matplotlib.use('Agg')  # a plot file only; imported here so that importing ddsr leaves matplotlib alone
        import matplotlib.pyplot as plt
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
        save_self_describing(path, params, arch)
        get_root_logger().info(f'Compact network {arch} saved to {path}')
        return path
