"""Deploy conversion of checkpoints: train-form network (reparameterizable branches) -> fused deploy form.

Generic over every registered arch that takes a ``deploy`` kwarg and contains
:class:`ddsr.archs.reparam.Reparameterizable` modules (DDistillSR, DIPNet, ...). The written checkpoint is
self-describing: ``{'params': ..., 'params_ema': ..., 'arch': {'type': ..., **kwargs, 'deploy': True}}`` and loads
with BasicSR's ``load_network`` (``param_key_g: params`` or ``params_ema``).
"""
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ddsr import checkpoint
from ddsr.archs.reparam import switch_to_deploy
from ddsr.checkpoint import PARAM_KEYS, atomic_save, build_network, is_state_dict, load_file, strip_module
from ddsr.deploy.export import arch_config, fold_dynamic_bn
from ddsr.errors import DDSRError
from ddsr.option_file import load_options

PathLike = str | Path


def arch_config_from_options(opt_path: PathLike) -> dict:
    """The ``network_g`` mapping (``type`` + kwargs) of a BasicSR option file."""
    config = load_options(str(opt_path)).get('network_g')
    if not isinstance(config, dict) or 'type' not in config:
        raise DDSRError(f'{opt_path}: no network_g mapping with a type key')
    return dict(config)


def _state_dicts(ckpt: Mapping, src: PathLike) -> dict[str, dict]:
    """``{param_key: state_dict}`` of a BasicSR checkpoint; a plain state_dict counts as ``params``."""
    found = {key: ckpt[key] for key in PARAM_KEYS if key in ckpt}
    if found:
        return found
    if is_state_dict(ckpt):
        return {'params': dict(ckpt)}
    raise DDSRError(f'{src}: neither params/params_ema nor a plain state_dict')


def deploy_network(config: Mapping, state_dict: Mapping, fold_bn: bool = False) -> nn.Module:
    """Build the train form of ``config``, load ``state_dict`` strictly, convert it in place (eval mode)."""
    net = build_network(config, deploy=False)
    state_dict = strip_module(state_dict)
    expected = net.state_dict()
    misfit = checkpoint.state_mismatch(expected, state_dict)
    missing, unexpected, wrong = sorted(misfit.missing), sorted(misfit.unexpected), misfit.shapes
    if missing or unexpected or wrong:
        raise DDSRError(f"checkpoint is not the {config['type']} train form {dict(config)}: "
                        f'missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {sorted(wrong)[:3]} '
                        f'({len(missing)}/{len(unexpected)}/{len(wrong)} keys)')
    net.load_state_dict(state_dict, strict=True)
    switch_to_deploy(net)
    if fold_bn:
        fold_dynamic_bn(net)
    return net


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
    ckpt = load_file(src_path, 'checkpoint', map_location=device or 'cpu')
    out: dict = {}
    states = _state_dicts(ckpt, src_path)
    nets = {key: deploy_network(config, state_dict, fold_bn) for key, state_dict in states.items()}
    for key, net in nets.items():
        out[key] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    out['arch'] = arch_config(next(iter(nets.values())), config)
    atomic_save(out, str(dst_path))
    return out
