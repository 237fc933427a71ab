"""The small base of ddsr's pruning procedures: an SRModel whose ``net_g`` checkpoints describe themselves.

Pruning changes a network's widths, so a checkpoint alone must say how to rebuild it: ``net_g_<iter>.pth`` holds
``{'params'[, 'params_ema'], 'arch'}`` (the net's ``config()``, e.g. ``DIPNet.config()`` with ``mid_channels``).
When ``path.pretrain_network_g`` holds an ``arch`` of the network_g type, network_g is rebuilt from it: that is
how a run starts from a pruned checkpoint without writing its widths into the YAML, and how a resumed run
(BasicSR points pretrain_network_g at ``net_g_<iter>.pth``) gets the pruned arch back. The network is then
always loaded strictly (ddsr's option checks compare the checkpoint with that same arch).
"""
from os import path as osp

from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from ddsr.checkpoint import atomic_save, checkpoint_arch, network_arch


class SelfDescribingSRModel(SRModel):
    """SRModel that rebuilds ``network_g`` from its pretrained checkpoint's ``arch`` and saves ``net_g`` with one."""

    rebuilds_network_from_checkpoint = True  # read by ddsr.checks (the arch the checkpoint is checked against)

    def __init__(self, opt: dict):
        arch = checkpoint_arch(opt['path'].get('pretrain_network_g'))
        if arch is not None and arch.get('type') == opt['network_g'].get('type'):
            if arch != opt['network_g']:
                get_root_logger().info(f'network_g rebuilt from the arch of pretrain_network_g: {arch}')
            opt['network_g'] = arch
            opt['path']['strict_load_g'] = True  # built from the checkpoint's own arch: every key must fit
        super().__init__(opt)

    def checkpoint_dict(self) -> dict:
        """``{'params'[, 'params_ema'], 'arch'}`` of the current network (CPU tensors)."""
        nets = {'params': self.net_g}
        if hasattr(self, 'net_g_ema'):
            nets['params_ema'] = self.net_g_ema
        ckpt: dict = {key: {k: v.detach().cpu() for k, v in self.get_bare_model(net).state_dict().items()}
                      for key, net in nets.items()}
        ckpt['arch'] = network_arch(self.get_bare_model(self.net_g), self.opt['network_g'])
        return ckpt

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        if net_label != 'net_g':
            return super().save_network(net, net_label, current_iter, param_key)
        name = f"{net_label}_{'latest' if current_iter == -1 else current_iter}.pth"
        atomic_save(self.checkpoint_dict(), osp.join(self.opt['path']['models'], name))
