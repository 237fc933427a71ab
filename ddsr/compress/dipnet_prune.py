"""DIPNet middle-width pruning (paper section 3.4): L2 filter-norm importance, channel slicing, iterative schedule.

Each RRFB has two middle feature maps of the block width ``m``: ``c1_r``'s output (= ``c2_r``'s input) and
``c2_r``'s output (= ``c3_r``'s input). Both are pruned to the same new width, each keeping its own
highest-L2-norm filters, so a block stays described by one width (``mid_channels[i]``). The block input/output
width (``num_feat``) is tied to the long skip and the residuals and is not pruned. Pruning works on the deploy
form (DIPNet reparameterizes first, then prunes); the result is a new deploy-form :class:`DIPNet` whose
:meth:`DIPNet.config` rebuilds it.
"""
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ddsr.archs.dipnet.dipnet_arch import DIPNet


def importance(model: DIPNet) -> list[Tensor]:
    """Per block a ``(2, m_i)`` tensor: L2 norms of the ``c1_r`` filters (row 0) and ``c2_r`` filters (row 1)."""
    _check_deploy(model)
    with torch.no_grad():
        return [torch.stack([_filter_norms(block.c1_r), _filter_norms(block.c2_r)]) for block in model.blocks]


def _filter_norms(conv: nn.Module) -> Tensor:
    """L2 norm of every output filter of a convolution."""
    assert isinstance(conv, nn.Conv2d), 'pruning needs the deploy form (fused 3x3 convs)'
    return conv.weight.flatten(1).norm(dim=1)


def iterative_schedule(num_mid: int, ratio: float, steps: int) -> list[int]:
    """Widths after each of ``steps`` pruning steps; each step keeps ``floor(w * (1 - ratio))``, at least 1."""
    if not 0 <= ratio < 1:
        raise ValueError(f'ratio must be in [0, 1), got {ratio}')
    widths, width = [], num_mid
    for _ in range(steps):
        width = max(1, math.floor(width * (1 - ratio) + 1e-9))  # tolerance: 10 * (1 - 0.3) must give 7
        widths.append(width)
    return widths


def widths_after(num_mid: int, ratio: float, k: int) -> int:
    """Width after ``k`` steps of :func:`iterative_schedule` (``num_mid`` for ``k = 0``)."""
    return iterative_schedule(num_mid, ratio, k)[-1] if k > 0 else num_mid


def prune_dipnet(model: DIPNet, widths: int | Sequence[int] | None = None,
                 ratio: float | None = None) -> DIPNet:
    """A new deploy-form DIPNet keeping, per block, the highest-norm middle channels of ``model``.

    Args:
        model (DIPNet): Deploy-form network (left unchanged).
        widths (int | list[int] | None): New middle width for every block, or one per block.
        ratio (float | None): Instead of ``widths``: prune this fraction once (``widths_after(m_i, ratio, 1)``).

    Returns:
        DIPNet: Pruned network with the same device, dtype and train/eval mode.
    """
    _check_deploy(model)
    if (widths is None) == (ratio is None):
        raise ValueError('give exactly one of widths and ratio')
    if ratio is not None:
        widths = [widths_after(mid, ratio, 1) for mid in model.mid_channels]
    elif isinstance(widths, int):
        widths = [widths] * len(model.mid_channels)
    widths = [int(w) for w in widths or ()]
    if len(widths) != len(model.mid_channels) or any(
            not 1 <= w <= m for w, m in zip(widths, model.mid_channels, strict=True)):
        raise ValueError(f'widths {widths} must give 1 <= w <= current width for each of {model.mid_channels}')

    config = model.config()
    config.pop('type')
    config['mid_channels'] = widths
    pruned = DIPNet(**config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for i, (scores, width) in enumerate(zip(importance(model), widths, strict=False)):
        keep1, keep2 = (score.topk(width).indices.sort().values for score in scores)
        prefix = f'block_{i + 1}.'
        state[prefix + 'c1_r.weight'] = state[prefix + 'c1_r.weight'][keep1]
        state[prefix + 'c2_r.weight'] = state[prefix + 'c2_r.weight'][keep2][:, keep1]
        state[prefix + 'c3_r.weight'] = state[prefix + 'c3_r.weight'][:, keep2]
    pruned.load_state_dict(state, strict=True)
    return pruned.to(model.conv_1.weight).train(model.training)


def _check_deploy(model: DIPNet) -> None:
    if not model.deploy:
        raise ValueError('DIPNet pruning needs the deploy form: call model.switch_to_deploy() first')
