"""Channel / block compression of BasicSR EDSR-family networks (EDSR, EDSRmini) into an EDSRmini.

Dependency groups (each pruned with one keep-index list); trunk and block middles come from Torch-Pruning's
dependency graph (ddsr.compress.dependency):
- trunk: conv_first out, every block's conv2 out, conv_after_body out/in, block conv1 in, upsample.0 in;
- mid of block i: conv1 out = conv2 in;
- upsample stage s: post-shuffle channel c = conv rows c*r^2..c*r^2+r^2-1 (PixelShuffle groups) = next conv in;
- blocks: a dropped residual block becomes the identity.
Dead groups (removal leaves the output unchanged; :func:`ddsr.compress.importance.rank_scores` ranks them after every
live group, ordered by their group L2 norm over producers and consumers):
- a channel (trunk, block middle, upsample stage) is dead when its producers (weights and biases) are exactly zero,
  or when every weight that reads it is: either way nothing downstream sees it;
- a block is dead when every middle channel is dead and its ``conv2.bias`` is zero. A non-zero ``conv2.bias`` keeps
  the block (with its dead middle channels it adds a constant to the trunk): the constant cannot be folded exactly
  into another layer, because the next 3x3 convs zero-pad (the border sees the constant differently) and the
  earlier layers must not see it.
conv2 is rescaled by res_scale_src / res_scale_tgt so the block output is preserved.
"""
import math
from typing import Any

import torch

from ddsr.archs.edsr.edsrmini_arch import EDSRmini
from ddsr.compress.dependency import coupled_slices
from ddsr.compress.importance import group_scores, keep_top, rank_scores
from ddsr.compress.slicing import shuffle_groups, take

# The authors' SRModel.get_density counts every parameter named '*weight*' under this prefix (authors_density)
AUTHORS_DENSITY_SCOPE = 'body'

DEFAULTS = dict(num_in_ch=3, num_out_ch=3, upscale=4, res_scale=1, img_range=255., rgb_mean=[0.4488, 0.4371, 0.4040])
MINI_DEFAULTS = dict(num_feat=16, num_block=8, res_scale=2)


def normalize(arch: dict) -> dict:
    """Full EDSRmini kwargs (explicit block / upsample widths) of an EDSR or EDSRmini arch option."""
    kw = {k: v for k, v in arch.items() if k != 'type'}
    if arch.get('type') == 'EDSRmini':
        kw = {**DEFAULTS, 'upscale': 2, **MINI_DEFAULTS, **kw}
    else:
        kw = {**DEFAULTS, 'num_feat': 64, 'num_block': 16, **kw}
    kw['rgb_mean'] = list(kw['rgb_mean'])
    kw['block_channels'] = list(kw.get('block_channels') or [kw['num_feat']] * kw['num_block'])
    stages = 1 if kw['upscale'] == 3 else int(math.log2(kw['upscale']))
    kw['upsample_channels'] = list(kw.get('upsample_channels') or [kw['num_feat']] * stages)
    return kw


def compact_arch(kw: dict) -> dict:
    """EDSRmini arch option, dropping width lists that equal num_feat everywhere."""
    out = {'type': 'EDSRmini', **kw}
    for key in ('block_channels', 'upsample_channels'):
        if all(c == kw['num_feat'] for c in kw[key]):
            out.pop(key)
    return out


def _ratio(kw: dict) -> int:
    return 3 if kw['upscale'] == 3 else 2


def scores(state: dict[str, torch.Tensor], kw: dict) -> dict:
    """Ranking scores and 'alive' tests (see the module docstring) of every channel group and block."""
    nf, blocks, ups, r = kw['num_feat'], range(kw['num_block']), kw['upsample_channels'], _ratio(kw)
    groups = coupled_slices(EDSRmini(**{k: v for k, v in kw.items() if k != 'type'}),
                            ['conv_first'] + [f'body.{i}.conv1' for i in blocks], torch.zeros(1, kw['num_in_ch'], 8, 8))
    slices = lambda names: [(state[key], axis) for key, axis in names]  # noqa: E731
    prod, cons = map(slices, groups['conv_first'])
    out: dict[str, Any] = {'trunk': _rank(prod, cons, nf)}
    out['mid'] = []
    for i, c in zip(blocks, kw['block_channels'], strict=False):
        p, q = map(slices, groups[f'body.{i}.conv1'])
        out['mid'].append(_rank(p, q, c))
    conv2 = torch.stack([state[f'body.{i}.conv2.weight'].float().norm().cpu() for i in blocks])
    trunk = out['trunk']['alive']  # a bias entry of a dead trunk channel reaches nothing
    out['block_alive'] = torch.stack([m['alive'].any() | bool(state[f'body.{i}.conv2.bias'].cpu()[trunk].any())
                                      for i, m in zip(blocks, out['mid'], strict=True)])
    out['block'] = rank_scores(out['block_alive'], conv2)
    out['up'] = []
    for s, c in enumerate(ups):
        w, b = state[f'upsample.{2 * s}.weight'], state[f'upsample.{2 * s}.bias']
        nxt = state[f'upsample.{2 * s + 2}.weight'] if s + 1 < len(ups) else state['conv_last.weight']
        out['up'].append(_rank([(w.reshape(c, r * r, *w.shape[1:]), 0), (b.reshape(c, r * r), 0)], [(nxt, 1)], c))
    return out


def _rank(producers: list, consumers: list, size: int) -> dict[str, torch.Tensor]:
    """'alive' = neither the producers (weights, biases) nor the consumers are exactly zero; 'score' = the norm over
    both, dead channels ranked after live ones."""
    prod, cons = group_scores(producers, size), group_scores(consumers, size)
    alive = (prod > 0) & (cons > 0)
    return {'alive': alive, 'score': rank_scores(alive, (prod**2 + cons**2).sqrt())}


def structure(state: dict[str, torch.Tensor], kw: dict) -> dict:
    """Exact-zero structure: per group the live count, the total and the indices of dead channels / blocks."""
    sc = scores(state, kw)
    group = lambda a: {'alive': int(a.sum()), 'total': a.numel(),  # noqa: E731
                       'dead': [i for i, v in enumerate(a.tolist()) if not v]}
    return {'trunk': group(sc['trunk']['alive']), 'mid': [group(m['alive']) for m in sc['mid']],
            'blocks': group(sc['block_alive']),
            'upsample': [group(u['alive']) for u in sc['up']]}


def config_for_alpha(kw: dict, sc: dict, alpha: float) -> dict:
    """Target widths = ceil(alpha * alive channels) per group (at least 1); dead blocks are dropped."""
    width = lambda a: max(1, math.ceil(alpha * int(a.sum())))  # noqa: E731
    live_blocks = [i for i, alive in enumerate(sc['block_alive'].tolist()) if alive]
    return {**kw, 'num_feat': width(sc['trunk']['alive']), 'num_block': len(live_blocks),
            'block_channels': [width(sc['mid'][i]['alive']) for i in live_blocks],
            'upsample_channels': [width(u['alive']) for u in sc['up']]}


def compress(state: dict[str, torch.Tensor], src: dict, tgt: dict) -> dict[str, torch.Tensor]:
    """State dict of the EDSRmini ``tgt`` (normalized kwargs) carved out of the ``src`` network's ``state``."""
    if src['upscale'] != tgt['upscale']:
        raise ValueError(f"upscale differs: source x{src['upscale']}, target x{tgt['upscale']}")
    sc = scores(state, src)
    trunk = keep_top(sc['trunk']['score'], tgt['num_feat'])
    blocks = keep_top(sc['block'], tgt['num_block'])
    fold = src['res_scale'] / tgt['res_scale']
    out = {
        'conv_first.weight': take(state['conv_first.weight'], {0: trunk}),
        'conv_first.bias': take(state['conv_first.bias'], {0: trunk}),
        'conv_after_body.weight': take(state['conv_after_body.weight'], {0: trunk, 1: trunk}),
        'conv_after_body.bias': take(state['conv_after_body.bias'], {0: trunk}),
    }
    for j, (i, c) in enumerate(zip(blocks, tgt['block_channels'], strict=False)):
        mid = keep_top(sc['mid'][i]['score'], c)
        out[f'body.{j}.conv1.weight'] = take(state[f'body.{i}.conv1.weight'], {0: mid, 1: trunk})
        out[f'body.{j}.conv1.bias'] = take(state[f'body.{i}.conv1.bias'], {0: mid})
        out[f'body.{j}.conv2.weight'] = take(state[f'body.{i}.conv2.weight'], {0: trunk, 1: mid}) * fold
        out[f'body.{j}.conv2.bias'] = take(state[f'body.{i}.conv2.bias'], {0: trunk}) * fold
    prev: list[int] = trunk
    for s, c in enumerate(tgt['upsample_channels']):
        keep = keep_top(sc['up'][s]['score'], c)
        rows = shuffle_groups(keep, _ratio(src))
        out[f'upsample.{2 * s}.weight'] = take(state[f'upsample.{2 * s}.weight'], {0: rows, 1: prev})
        out[f'upsample.{2 * s}.bias'] = take(state[f'upsample.{2 * s}.bias'], {0: rows})
        prev = keep
    out['conv_last.weight'] = take(state['conv_last.weight'], {1: prev})
    out['conv_last.bias'] = state['conv_last.bias'].clone()
    return out
