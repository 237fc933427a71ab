"""Option checks of the networks: every ``network_*`` builds, its ``upscale`` equals ``scale``, and every
``path.pretrain_network_*`` fits it (the checkpoint's ``param_key_*`` entry against the network's state_dict:
key set and shapes with ``strict_load_*``; at least one matching tensor otherwise), naming the first mismatching
keys and shapes."""
import inspect
from os import path as osp
from typing import Any

import torch
from basicsr.utils.registry import ARCH_REGISTRY

from ddsr import checkpoint
from ddsr.archs.capabilities import capabilities_of
from ddsr.checks.structure import model_class
from ddsr.errors import DDSRError, UnknownTypeError

SHOWN = 3  # mismatching keys named per kind


def resolve(root: str, value: str) -> str:
    """An option path as BasicSR reads it, relative to the root."""
    return osp.join(root, osp.expanduser(value))


def build_arch(net_opt: dict, label: str = 'network_g') -> torch.nn.Module:
    """Instantiate an arch from its option dict (``type`` + kwargs) without BasicSR's logger (which must first
    be set up by the pipeline): :func:`ddsr.checkpoint.build_network` on the ``meta`` device (no memory, no init
    cost: enough for key and shape checks; the CPU when the arch computes values at build time). A failure to build
    from these kwargs is a :class:`DDSRError` naming them."""
    try:
        return checkpoint.build_network(net_opt, meta=True)
    except UnknownTypeError:
        raise
    except Exception as err:  # noqa: B902  (any failure to build from these kwargs is a bad network option)
        kwargs = ', '.join(str(k) for k in net_opt if k != 'type')
        raise DDSRError(f'{label}: cannot build {net_opt.get("type")}({kwargs}): {type(err).__name__}: {err}') \
            from None


def check_network(net_opt: Any, label: str = 'network_g') -> torch.nn.Module:
    """A network option (``type`` + kwargs) that builds; the network (possibly on the meta device)."""
    if not isinstance(net_opt, dict) or 'type' not in net_opt:
        raise DDSRError(f'{label}: expected a mapping with "type:" and the arch kwargs, got {net_opt!r}')
    if not isinstance(net_opt['type'], str):
        raise DDSRError(f'{label}.type must be a name, got {net_opt["type"]!r}')
    try:
        ARCH_REGISTRY.get(net_opt['type'])
    except UnknownTypeError as err:
        raise UnknownTypeError(f'{label}.type: {err}') from None
    return build_arch(net_opt, label)


def _shape(value) -> str:
    return str(tuple(value.shape)) if hasattr(value, 'shape') else type(value).__name__


def compare_state(net: torch.nn.Module, params: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Human-readable differences between ``params`` and ``net.state_dict()`` that would break loading:
    shape mismatches (always dropped by BasicSR when not strict, so only reported with ``strict``), missing and
    unexpected keys (``strict`` only). Not strict and no tensor in common is reported too."""
    own = net.state_dict()
    misfit = checkpoint.state_mismatch(own, params)
    shapes, missing, unexpected = misfit.shapes, misfit.missing, misfit.unexpected
    problems = []
    if strict:
        if shapes:
            named = [f'{k} checkpoint {_shape(params[k])} vs network {_shape(own[k])}' for k in shapes[:SHOWN]]
            more = f' (+{len(shapes) - SHOWN} more)' if len(shapes) > SHOWN else ''
            problems.append(f'shape mismatch: {"; ".join(named)}{more}')
        for what, keys in (('missing in checkpoint', missing), ('unexpected in checkpoint', unexpected)):
            if keys:
                problems.append(f'{what}: {", ".join(map(str, keys[:SHOWN]))}' +
                                (f' (+{len(keys) - SHOWN} more)' if len(keys) > SHOWN else ''))
    elif own and len(shapes) + len(missing) == len(own):
        problems.append(f'no tensor in common (first network keys: {", ".join(list(own)[:SHOWN])}; first checkpoint '
                        f'keys: {", ".join(map(str, list(params)[:SHOWN]))})')
    return problems


def check_checkpoint(net: torch.nn.Module, ckpt: str, param_key: str | None = 'params', strict: bool = True,
                     label: str = 'network_g') -> None:
    """Raise a :class:`DDSRError` naming the first mismatching keys/shapes if ``ckpt`` does not fit ``net``."""
    params = checkpoint.load_state(ckpt, param_key, label)
    problems = compare_state(net, params, strict)
    if problems:
        raise DDSRError(f'{label}: checkpoint {ckpt} does not match {type(net).__name__} '
                        f'(strict_load {strict}): {"; ".join(problems)}')


def declared_upscale(net_opt: dict) -> int | None:
    """``upscale`` (or ``scale``) of a network option, else the arch's default; None if it has neither."""
    for key in ('upscale', 'scale'):
        if key in net_opt:
            return net_opt[key]
    try:
        params = inspect.signature(ARCH_REGISTRY.get(net_opt['type'])).parameters
    except (TypeError, ValueError):
        return None
    for key in ('upscale', 'scale'):
        if key in params and isinstance(params[key].default, int):
            return params[key].default
    return None


def min_input_size(net_opt: dict) -> int:
    """Smallest LR side the network accepts (:func:`ddsr.archs.capabilities.capabilities_of`; 1 when unknown)."""
    return capabilities_of(net_opt).size.min_size


def rebuilt_from_checkpoint(opt: dict) -> bool:
    """Whether the model rebuilds network_g from the ``arch`` of its checkpoint (pruning procedures: pruned
    widths); asked of the class ``model_type`` builds (:func:`ddsr.checks.structure.model_class`)."""
    try:
        model_cls = model_class(opt)
    except (KeyError, TypeError):
        return False
    return bool(getattr(model_cls, 'rebuilds_network_from_checkpoint', False))


def check_networks(path: str, opt: dict, root: str) -> None:
    paths = opt.get('path') or {}
    scale = opt.get('scale')
    for key in [k for k in opt if str(k).startswith('network_')]:
        suffix = key[len('network_'):]
        up = declared_upscale(opt[key])
        if scale is not None and up is not None and up != scale:
            raise DDSRError(f'{path}: scale mismatch: {key}.upscale is {up} but scale is {scale}')
        ckpt = paths.get(f'pretrain_network_{suffix}')
        net_opt = opt[key]
        if key == 'network_g' and rebuilt_from_checkpoint(opt) and ckpt:
            # PruneSRModel builds network_g from the checkpoint's arch (pruned widths)
            arch = checkpoint.checkpoint_arch(resolve(root, ckpt))
            net_opt = arch if arch is not None and arch.get('type') == net_opt.get('type') else net_opt
        net = build_arch(net_opt, f'{path}: {key}')
        if ckpt:
            param_key = paths.get(f'param_key_{suffix}', 'params')
            strict = paths.get(f'strict_load_{suffix}', True)
            check_checkpoint(net, resolve(root, ckpt), param_key, bool(strict),
                             f'{path}: path.pretrain_network_{suffix} -> {key}')


# ---- data: LMDB integrity, pairing, image sizes ----

