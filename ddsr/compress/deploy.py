"""Deploy conversion of checkpoints: train-form network (reparameterizable branches) -> fused deploy form.

Generic over every registered arch that takes a ``deploy`` kwarg and contains
:class:`ddsr.archs.reparam.Reparameterizable` modules (DDistillSR, DIPNet, ...). The written checkpoint is
self-describing: ``{'params': ..., 'params_ema': ..., 'arch': {'type': ..., **kwargs, 'deploy': True}}`` and loads
with BasicSR's ``load_network`` (``param_key_g: params`` or ``params_ema``).
"""
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from ddsr.archs.reparam import switch_to_deploy
from ddsr.compat import atomic_save
from ddsr.errors import DDSRError

PARAM_KEYS = ('params', 'params_ema')
PathLike = str | Path


def arch_config_from_options(opt_path: PathLike) -> dict:
    """The ``network_g`` mapping (``type`` + kwargs) of a BasicSR option file."""
    opt = yaml.safe_load(Path(opt_path).read_text())
    config = opt.get('network_g') if isinstance(opt, dict) else None
    if not isinstance(config, dict) or 'type' not in config:
        raise DDSRError(f'{opt_path}: no network_g mapping with a type key')
    return dict(config)


def build_network(config: Mapping, **overrides) -> nn.Module:
    """Instantiate ``config['type']`` from ARCH_REGISTRY with the other keys (and ``overrides``) as kwargs."""
    kwargs = {k: v for k, v in config.items() if k != 'type'}
    kwargs.update(overrides)
    try:
        cls = ARCH_REGISTRY.get(config['type'])
    except KeyError:
        raise DDSRError(f"network_g type '{config['type']}' is not a registered arch") from None
    return cls(**kwargs)


def _state_dicts(ckpt: Mapping, src: PathLike) -> dict[str, dict]:
    """``{param_key: state_dict}`` of a BasicSR checkpoint; a plain state_dict counts as ``params``."""
    found = {key: ckpt[key] for key in PARAM_KEYS if key in ckpt}
    if found:
        return found
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return {'params': dict(ckpt)}
    raise DDSRError(f'{src}: neither params/params_ema nor a plain state_dict')


def deploy_network(config: Mapping, state_dict: Mapping, fold_bn: bool = False) -> nn.Module:
    """Build the train form of ``config``, load ``state_dict`` strictly, convert it in place (eval mode)."""
    net = build_network(config, deploy=False)
    state_dict = {k[7:] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    expected = net.state_dict()
    missing, unexpected = sorted(expected.keys() - state_dict.keys()), sorted(state_dict.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state_dict.keys() if expected[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        raise DDSRError(f"checkpoint is not the {config['type']} train form {dict(config)}: "
                        f'missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {sorted(wrong)[:3]} '
                        f'({len(missing)}/{len(unexpected)}/{len(wrong)} keys)')
    net.load_state_dict(state_dict, strict=True)
    switch_to_deploy(net)
    if fold_bn:
        if not hasattr(net, 'fold_dynamic_bn'):
            raise DDSRError(f"{config['type']} has no BN folding (fold_bn is for DDistillSR)")
        net.fold_dynamic_bn()
    return net


def deploy_config(net: nn.Module, config: Mapping) -> dict:
    """Self-describing arch dict of a converted network (its own ``config()`` when it has one)."""
    if hasattr(net, 'config'):
        return dict(net.config())
    return {**config, 'deploy': True}


def convert_checkpoint(src_path: PathLike, dst_path: PathLike, arch: Mapping | PathLike,
                       fold_bn: bool = False, device: str | None = None) -> dict:
    """Convert a train-form checkpoint to the deploy form and write it atomically.

    Args:
        src_path (str | Path): BasicSR checkpoint with ``params`` and/or ``params_ema`` (or a plain state_dict).
        dst_path (str | Path): Output ``.pth``: the same param keys, deploy form, plus ``arch``.
        arch (dict | str | Path): ``network_g`` mapping (``type`` + kwargs) or a BasicSR option file holding it.
        fold_bn (bool): Also fold DDistillSR's dynamic-branch BNs (own key layout, ``fold_bn: true``).
        device (str | None): Map location for loading. Default: CPU.

    Returns:
        dict: The checkpoint that was written.
    """
    config = dict(arch) if isinstance(arch, Mapping) else arch_config_from_options(arch)
    if not Path(src_path).is_file():
        raise DDSRError(f'checkpoint not found: {src_path}')
    ckpt = torch.load(src_path, map_location=device or 'cpu', weights_only=True)
    out, net = {}, None
    for key, state_dict in _state_dicts(ckpt, src_path).items():
        net = deploy_network(config, state_dict, fold_bn)
        out[key] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    out['arch'] = deploy_config(net, config)
    atomic_save(out, str(dst_path))
    return out
