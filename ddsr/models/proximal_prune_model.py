"""ProximalPruneSRModel: the pruning stage of "Compressing Deep Image Super-resolution Models" (Jiang et al.)
as the authors ran it, then the compact network carved out of the sparse one.

Training minimises ``pixel_opt`` (the authors: Charbonnier) + lambda * ||w||_1 over every trainable parameter with
the authors' optimizer, ``train.optim_g: {type: OBProxSG, lr, lambda_, epochSize, Np, No, eps}``
(:mod:`ddsr.compress.obproxsg`; ``epochSize: auto`` / ``Np: auto``: computed from ``datasets.train`` as the authors'
prune script does, :func:`auto_schedule`): proximal SGD steps first, then orthant steps whose projection sets
weights exactly to zero. The L1 penalty is element-wise: it zeroes weights, and a whole channel / head / block
becomes dead only when the weights that produce or read it reach zero (with the paper's lambda 1e-4 that rarely
happens in a short run; the authors chose the compact model from the densities).

Report: the exact zeros of ``net_g`` (the trained weights, not the EMA, whose running average is never exactly
zero) are counted per block / layer (``density_<group>`` at print_freq) and, at the end of training (``save`` with
current_iter == -1), written to ``sparsity_report.json`` + ``sparsity_report.png`` under experiments/<name>/: the
element density per group (ddsr's: conv / linear kernels), ``density_authors`` (the authors' get_density, see
:mod:`ddsr.compress.importance`), the optimizer's phase counters and, for EDSR / SwinIR families, the structure
(live / dead channels, heads, MLP units, blocks; :func:`ddsr.compress.compact.structure`). With ``prune.target`` or
``prune.ratio`` the compact network is cut from the same ``net_g`` weights (:mod:`ddsr.compress.compact`: dead
groups removed first) and saved self-describing as ``models/net_g_compact.pth``.

Option section ``prune``: ``mode: proximal`` (the above; needs ``train.optim_g.type: OBProxSG``) or ``compress``
(no training regulariser; with total_iter 0 it turns the loaded dense checkpoint into the compact checkpoint from
``basicsr train``: stage 2); ``target`` (preset 'EDSRmini-default' / 'SwinIRmini-default' or an arch dict) or
``ratio`` (params ratio of the compact network). ``PruneSRModel`` with these modes builds this class.
"""
import json
import os.path as osp

from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ddsr.checkpoint import save_self_describing
from ddsr.compress.compact import compress_state, structure
from ddsr.compress.importance import authors_density, density_by_group
from ddsr.compress.obproxsg import AUTO, OBProxSG, authors_schedule
from ddsr.errors import DDSRError

MODES = ('proximal', 'compress')


def auto_schedule(opt: dict) -> None:
    """Replace ``epochSize: auto`` / ``Np: auto`` of ``train.optim_g`` by the values the authors' prune script
    computes from ``datasets.train`` (:func:`ddsr.compress.obproxsg.authors_schedule`), in place, and log them."""
    optim = opt['train']['optim_g']
    if AUTO not in (optim.get('epochSize'), optim.get('Np')):
        return
    from basicsr.data import build_dataset
    data = opt['datasets']['train']
    samples, batch, world = len(build_dataset(data)), int(data['batch_size_per_gpu']), int(opt.get('world_size', 1))
    epoch_size, n_prox = authors_schedule(samples, batch, world, int(opt['train']['total_iter']),
                                          data.get('dataset_enlarge_ratio', 1))
    if optim.get('epochSize') == AUTO:
        optim['epochSize'] = epoch_size
    if optim.get('Np') == AUTO:
        optim['Np'] = n_prox
    get_root_logger().info(f"OBProxSG schedule from the data set ({samples} samples, batch {batch} x world {world}): "
                           f"epochSize {optim['epochSize']}, Np {optim['Np']}: proximal steps up to iteration "
                           f"{optim['Np'] * optim['epochSize']}")


@MODEL_REGISTRY.register()
class ProximalPruneSRModel(SRModel):
    """SRModel + proximal L1 sparsity, sparsity report and compact network."""

    def __init__(self, opt: dict):
        self.prune_opt = {'mode': 'proximal', **(opt.get('prune') or {})}
        if self.prune_opt['mode'] not in MODES:
            raise DDSRError(f"prune.mode: '{self.prune_opt['mode']}' is not one of {', '.join(MODES)}")
        if 'lambda' in self.prune_opt:
            raise DDSRError('prune.lambda: the L1 weight is train.optim_g.lambda_ of the OBProxSG optimizer '
                            '(train.optim_g: {type: OBProxSG, lr, lambda_, epochSize, Np, eps})')
        optim_type = ((opt.get('train') or {}).get('optim_g') or {}).get('type')
        if opt.get('is_train') and self.prune_opt['mode'] == 'proximal' and optim_type != 'OBProxSG':
            raise DDSRError(f'prune.mode: proximal trains with train.optim_g.type: OBProxSG (the L1 term lives in '
                            f'the optimizer), got {optim_type!r}')
        if opt.get('is_train') and optim_type == 'OBProxSG':
            auto_schedule(opt)
        super().__init__(opt)

    def optimize_parameters(self, current_iter: int) -> None:
        phase = self.optimizer_g.phase if isinstance(self.optimizer_g, OBProxSG) else None
        super().optimize_parameters(current_iter)
        if phase is not None and self.optimizer_g.phase != phase:
            get_root_logger().info(f'OBProxSG: {self.optimizer_g.phase} steps from iteration {current_iter + 1} '
                                   f'(epoch {self.optimizer_g.epoch})')
        if current_iter % self.opt['logger']['print_freq'] == 0:
            self.log_dict.update({f'density_{k}': v for k, v in self.density().items()})

    def density(self) -> dict[str, float]:
        """Fraction of non-zero conv / linear kernel weights of net_g per block / layer, plus 'total'."""
        return density_by_group(self.get_bare_model(self.net_g))

    def net_g_state(self) -> dict:
        """State dict of net_g (the trained weights; the exact zeros the optimizer made live here, not in the EMA)."""
        return {k: v.detach().cpu() for k, v in self.get_bare_model(self.net_g).state_dict().items()}

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if isinstance(self.optimizer_g, OBProxSG):
            c = self.optimizer_g.counters()
            get_root_logger().info(f"Resumed OBProxSG in the {c['phase']} phase: epoch {c['epoch']}, step "
                                   f"{c['step_in_epoch']} of the epoch")

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
        report = {'mode': self.prune_opt['mode'], 'weights': 'params (net_g, exact zeros; not the EMA)',
                  'arch': self.opt['network_g'], 'density': density,
                  'density_authors': authors_density(self.get_bare_model(self.net_g), self.opt['network_g']['type'])}
        if isinstance(self.optimizer_g, OBProxSG):
            group = self.optimizer_g.param_groups[0]
            report['optimizer'] = {**self.optimizer_g.counters(), 'lr': group['lr'], 'lambda_': group['lambda_']}
        try:
            report['structure'] = structure(self.net_g_state(), dict(self.opt['network_g']))
        except ValueError:  # not an EDSR / SwinIR family network: element density only
            pass
        with open(path, 'w') as f:
            json.dump(report, f, indent=2)
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
        """Cut the compact network (prune.target / prune.ratio) from net_g; models/net_g_compact.pth.

        net_g, not the EMA: the zeros the optimizer made are exact in net_g only, so only there do dead groups
        rank last and their removal change nothing."""
        try:
            params, arch = compress_state(self.net_g_state(), dict(self.opt['network_g']), self.prune_opt.get('target'),
                                          self.prune_opt.get('ratio'))
        except ValueError as err:
            raise DDSRError(f'prune: {err}') from err
        path = osp.join(self.opt['path']['models'], 'net_g_compact.pth')
        save_self_describing(path, params, arch)
        get_root_logger().info(f'Compact network {arch} saved to {path}')
        return path
