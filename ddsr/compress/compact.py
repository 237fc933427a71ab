"""Dense checkpoint -> compact network with carried-over weights, for every supported family.

Targets: an arch option dict (e.g. exactly the paper's EDSRmini), a named preset ('EDSRmini-default',
'SwinIRmini-default': the paper's configs at the source's scale), or a parameter ratio (widths = ceil(alpha * live
channels) per group, alpha found by bisection so that params <= ratio * dense params; ratio 1 removes only
exactly-zero channels). The compact checkpoint is self-describing: {'params': state, 'arch': {'type': ..., kwargs}}.
"""
import importlib
from types import ModuleType

import torch

from ddsr.archs.units import compaction_modules, compaction_presets
from ddsr.checkpoint import build_network

SCALE_KEYS = ('upscale', 'img_size', 'window_size', 'img_range', 'rgb_mean', 'in_chans', 'num_in_ch', 'num_out_ch')


def family(arch: dict) -> ModuleType:
    """The compaction family of ``arch['type']``; ValueError naming the supported types."""
    modules = compaction_modules()
    if arch.get('type') not in modules:
        raise ValueError(f"arch type '{arch.get('type')}' cannot be compressed (supported: {', '.join(modules)})")
    return importlib.import_module(modules[arch['type']])


def count_params(arch: dict) -> int:
    return sum(p.numel() for p in build_network(arch).parameters())


def resolve_target(src_arch: dict, target: str | dict) -> dict:
    """Target arch option: a preset name or a dict; scale-bound keys the target leaves out come from the source."""
    if isinstance(target, str):
        presets = compaction_presets()
        if target not in presets:
            raise ValueError(f"unknown target preset '{target}' (known: {', '.join(presets)})")
        target = dict(presets[target])
    fam = family(src_arch)
    if family(target) is not fam:
        raise ValueError(f"target type '{target['type']}' is not in the family of '{src_arch['type']}'")
    inherited = {k: src_arch[k] for k in SCALE_KEYS if k in src_arch and k not in target}
    return {**target, **inherited}


def ratio_target(state: dict[str, torch.Tensor], src_arch: dict, ratio: float, steps: int = 20) -> dict:
    """Largest alpha in (0, 1] whose config has <= ratio * dense params (bisection); the normalized target."""
    fam = family(src_arch)
    src = fam.normalize(src_arch)
    sc = fam.scores(state, src)
    budget = ratio * count_params(src_arch)
    lo, hi = 0.0, 1.0
    best = fam.config_for_alpha(src, sc, 1e-6)
    if count_params(fam.compact_arch(fam.config_for_alpha(src, sc, 1.0))) <= budget:
        return fam.config_for_alpha(src, sc, 1.0)
    for _ in range(steps):
        mid = (lo + hi) / 2
        cfg = fam.config_for_alpha(src, sc, mid)
        if count_params(fam.compact_arch(cfg)) <= budget:
            lo, best = mid, cfg
        else:
            hi = mid
    return best


def structure(state: dict[str, torch.Tensor], arch: dict) -> dict:
    """Exact-zero structure of an EDSR / SwinIR family ``state``: live / total / dead indices of every channel, head,
    MLP unit and block group (ValueError for other archs)."""
    fam = family(arch)
    return fam.structure(state, fam.normalize(arch))


def compress_state(state: dict[str, torch.Tensor], src_arch: dict, target: str | dict | None = None,
                   ratio: float | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(compact state dict, compact arch option) from a dense ``state`` of ``src_arch`` (give target or ratio)."""
    if (target is None) == (ratio is None):
        raise ValueError('give exactly one of target and ratio')
    fam = family(src_arch)
    src = fam.normalize(src_arch)
    tgt = fam.normalize(resolve_target(src_arch, target)) if target is not None else ratio_target(
        state, src_arch, float(ratio or 0))
    arch = fam.compact_arch(tgt)
    params = fam.compress(state, src, tgt)
    net = build_network(arch)
    full = net.state_dict()
    missing = set(params) ^ {k for k, _ in net.named_parameters()}
    if missing:
        raise RuntimeError(f'compressor produced mismatched keys: {sorted(missing)[:5]}')
    full.update(params)
    net.load_state_dict(full, strict=True)
    return net.state_dict(), arch
