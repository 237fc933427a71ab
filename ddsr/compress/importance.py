"""Importance and density of weight groups, shared by the network-specific compressors.

- group importance: L2 (or L1) norm over every weight slice that produces or consumes a channel
  (Torch-Pruning's group-norm criterion, computed directly on state-dict tensors);
- density: fraction of non-zero elements of the prunable weights (conv / linear kernels) per block / layer and in
  total (:func:`density_by_group`). This is ddsr's measure, not the authors': their ``get_density`` (SRModel of the
  compression release) is one number over every parameter whose name contains ``weight`` and ``body`` (EDSR: the
  blocks and conv_after_body) or ``layers`` (SwinIR: the RSTB layers, LayerNorm scales included); conv_first and the
  upsampler are left out (:func:`authors_density`).
  ddsr leaves norm scales out of its groups because they are not connections that pruning removes.
"""
from collections import OrderedDict
from collections.abc import Iterable

import torch
from torch import nn

PRUNABLE = (nn.Conv2d, nn.Linear)


def slice_norm(t: torch.Tensor, dim: int, p: int = 2) -> torch.Tensor:
    """Per-index p-th power sum of ``t`` along ``dim`` (so group norms add up over slices)."""
    other = [d for d in range(t.dim()) if d != dim]
    return t.detach().abs().pow(p).sum(dim=other) if other else t.detach().abs().pow(p)


def group_scores(slices: Iterable[tuple[torch.Tensor, int]], size: int, p: int = 2) -> torch.Tensor:
    """Norm of each of ``size`` channels over (tensor, channel dim) slices: (sum_s sum |w|^p)^(1/p)."""
    score = torch.zeros(size)
    for t, dim in slices:
        score += slice_norm(t.float().cpu(), dim, p)
    return score.pow(1.0 / p)


def rank_scores(alive: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Ranking scores: live groups first, by norm; dead groups (exact-zero producers) after them, also by norm.

    Dead scores are ``norm - (max norm + 1)`` < 0 <= live scores, so :func:`keep_top` removes dead groups first
    and, among groups of the same kind, the one of smaller norm first (ties between dead groups are broken by the
    norm of the weights that read them)."""
    norm = norm.float()
    offset = float(norm.max()) + 1.0 if norm.numel() else 0.0
    return torch.where(alive, norm, norm - offset)


def keep_top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest scores, in ascending index order (ties: lower index first)."""
    if k > scores.numel():
        raise ValueError(f'cannot keep {k} of {scores.numel()} channels')
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def group_name(param_name: str) -> str:
    """Density group of a parameter: ``body.3`` / ``layers.1`` for repeated blocks, else the top module name."""
    parts = param_name.split('.')
    return '.'.join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def prunable_weights(net: nn.Module) -> 'OrderedDict[str, torch.Tensor]':
    """Kernels of every Conv2d / Linear (biases, norms and position tables are not regularised)."""
    return OrderedDict((f'{name}.weight', m.weight) for name, m in net.named_modules() if isinstance(m, PRUNABLE))


def density_by_group(net: nn.Module) -> dict[str, float]:
    """Fraction of non-zero prunable weights per block / layer, plus 'total'."""
    nnz: dict[str, list[int]] = OrderedDict()
    for name, w in prunable_weights(net).items():
        count = nnz.setdefault(group_name(name), [0, 0])
        count[0] += int((w.detach() != 0).sum())
        count[1] += w.numel()
    out = {g: c[0] / c[1] for g, c in nnz.items()}
    out['total'] = sum(c[0] for c in nnz.values()) / max(1, sum(c[1] for c in nnz.values()))
    return out


def authors_density(net: nn.Module, arch_type: str) -> float | None:
    """The authors' ``get_density``: non-zero fraction of every parameter whose name contains ``weight`` and
    ``body`` (EDSR family) / ``layers`` (SwinIR family): the ``AUTHORS_DENSITY_SCOPE`` of the arch's compaction family
    (named by its arch unit); None for networks without one."""
    import importlib

    from ddsr.archs.units import compaction_modules
    module = compaction_modules().get(arch_type)
    if module is None:
        return None
    scope = importlib.import_module(module).AUTHORS_DENSITY_SCOPE
    weights = [w.detach() for name, w in net.named_parameters() if 'weight' in name and scope in name]
    return sum(int((w != 0).sum()) for w in weights) / max(1, sum(w.numel() for w in weights))
