"""Compression of BasicSR SwinIR-family networks (SwinIR with upsampler 'pixelshuffledirect', SwinIRmini).

Groups (keep-indices per group, own slicing: Torch-Pruning has no notion of heads and LayerNorm-coupled dims):
- embed: every tensor with an embed_dim axis (convs, LayerNorms, qkv/fc1 inputs, proj/fc2 outputs, upsampler
  input), ranked by the norm over all of them;
- heads of block (i, j): qkv rows of the head (q, k, v parts), its relative-position-bias column, proj columns;
- head dims: q/k dims ranked by |q_d||k_d| (same subset for q and k), v dims by |v_d||proj_d| (weights and biases);
  q is rescaled by scale_src / scale_tgt so that q k^T * scale is unchanged;
- MLP units of block (i, j): fc1 rows = fc2 columns;
- blocks and RSTB layers: ranked by the norm of their residual output (proj+fc2, layer conv); dropped ones
  become the identity.

Dead groups: a group is dead only where removing it is exact; dead groups rank after every live one (each ordered by
norm, :func:`ddsr.compress.importance.rank_scores`), so ``ratio: 1`` removes exactly them:
- a head whose v rows (weights and biases) or proj columns are zero (its attention output is 0 whatever q, k are);
  a head dim whose q or k row is zero (the q.k term is 0), a v dim whose v row or proj column is zero;
- an MLP unit whose fc1 row and bias are zero (GELU(0) = 0) or whose fc2 column is zero;
- a block whose heads and units are all dead *and* whose proj and fc2 biases are zero: with non-zero biases the block
  adds a constant token to the residual stream, which the next LayerNorm cannot absorb (no exact fold);
- an RSTB layer whose ``conv`` (weight and bias) is zero. Its blocks do not decide: a layer whose blocks are all
  dead still adds ``conv(x)``, so it stays (with depth 0) unless the conv is zero;
- embed channels are never dead: every LayerNorm (patch_embed.norm, norm1, norm2, norm) averages over the embed
  axis, so dropping even an all-zero channel changes the mean and variance the others are normalised with.
  Removing embed channels (a smaller embed_dim target) is approximate, recovered by distillation.
"""
import math
from typing import Any

import torch

from ddsr.compress.importance import group_scores, keep_top, rank_scores
from ddsr.compress.slicing import take

# The authors' SRModel.get_density counts every parameter named '*weight*' under this prefix (authors_density)
AUTHORS_DENSITY_SCOPE = 'layers'

BASE = dict(upscale=2, in_chans=3, img_size=64, img_range=1., upsampler='pixelshuffledirect', resi_connection='1conv')
SWINIR = dict(embed_dim=96, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6], window_size=7, mlp_ratio=4.)
MINI = dict(embed_dim=24, depths=[4, 4, 4], num_heads=[6, 6, 6], window_size=8, mlp_ratio=2.)


def normalize(arch: dict) -> dict:
    """Full SwinIRmini kwargs (head_dim, per-block heads and MLP widths explicit) of a SwinIR(mini) option."""
    kw: dict[str, Any] = {**BASE, **(MINI if arch.get('type') == 'SwinIRmini' else SWINIR)}
    kw.update({k: v for k, v in arch.items() if k != 'type'})
    if kw['upsampler'] != 'pixelshuffledirect' or kw['resi_connection'] != '1conv':
        raise ValueError("compression supports upsampler 'pixelshuffledirect' with resi_connection '1conv' only")
    dims = {kw.get('head_dim') or kw['embed_dim'] // h for h in kw['num_heads']}
    if len(dims) != 1:
        raise ValueError(f'layers have different head dims {sorted(dims)}: set head_dim')
    kw['head_dim'] = dims.pop()
    kw['depths'], kw['num_heads'] = list(kw['depths']), list(kw['num_heads'])
    default_heads = [[h] * d for h, d in zip(kw['num_heads'], kw['depths'], strict=False)]
    kw['layer_heads'] = [list(r) for r in kw.get('layer_heads') or default_heads]
    hidden = int(kw['embed_dim'] * kw['mlp_ratio'])
    kw['layer_mlp_hidden'] = [list(r) for r in kw.get('layer_mlp_hidden') or [[hidden] * d for d in kw['depths']]]
    return kw


def compact_arch(kw: dict) -> dict:
    """SwinIRmini arch option, dropping per-block tables that equal the per-layer defaults."""
    out = {'type': 'SwinIRmini', **kw}
    out['num_heads'] = [row[0] if row else 1 for row in kw['layer_heads']]
    if all(len(set(row)) <= 1 for row in kw['layer_heads']):
        out.pop('layer_heads')
    if all(kw['embed_dim'] // h == kw['head_dim'] for h in out['num_heads'] if h):
        out.pop('head_dim')
    hidden = int(kw['embed_dim'] * kw['mlp_ratio'])
    if all(u == hidden for row in kw['layer_mlp_hidden'] for u in row):
        out.pop('layer_mlp_hidden')
    return out


def _rank(alive: torch.Tensor, full: torch.Tensor) -> dict[str, torch.Tensor]:
    return {'alive': alive, 'score': rank_scores(alive, full)}


def _block_scores(state: dict[str, torch.Tensor], pre: str, heads: int, hd: int, hidden: int) -> dict:
    qkv_w, qkv_b = state[f'{pre}.attn.qkv.weight'], state[f'{pre}.attn.qkv.bias']
    proj = state[f'{pre}.attn.proj.weight']
    w = qkv_w.reshape(3, heads, hd, qkv_w.shape[1]).float()
    b = qkv_b.reshape(3, heads, hd, 1).float()
    p = proj.reshape(proj.shape[0], heads, hd).float()
    rows = torch.cat([w, b], dim=-1)  # 3 x heads x hd x (dim + 1): a q / k / v row with its bias
    head_src = group_scores([(rows.transpose(0, 1), 0)], heads)
    v_src, head_cons = group_scores([(rows[2], 0)], heads), group_scores([(p, 1)], heads)
    out: dict[str, Any] = {'head': _rank((v_src > 0) & (head_cons > 0), (head_src**2 + head_cons**2).sqrt())}
    qn, kn, vn = (rows[t].norm(dim=-1) for t in range(3))  # heads x hd
    out['qk_dim'], out['v_dim'] = qn * kn, vn * p.norm(dim=0)
    fc1 = [(state[f'{pre}.mlp.fc1.weight'], 0), (state[f'{pre}.mlp.fc1.bias'], 0)]
    fc2 = group_scores([(state[f'{pre}.mlp.fc2.weight'], 1)], hidden)
    unit_src = group_scores(fc1, hidden)
    out['unit'] = _rank((unit_src > 0) & (fc2 > 0), (unit_src**2 + fc2**2).sqrt())
    biased = bool(state[f'{pre}.attn.proj.bias'].any() or state[f'{pre}.mlp.fc2.bias'].any())
    out['block_alive'] = bool(out['head']['alive'].any() or out['unit']['alive'].any() or biased)
    out['block'] = proj.float().norm() + state[f'{pre}.mlp.fc2.weight'].float().norm()
    return out


def _embed_slices(state: dict[str, torch.Tensor]) -> list:
    """(tensor, axis) of every tensor with an embed_dim axis."""
    slices = []
    for k, t in state.items():
        if k.endswith(('relative_position_bias_table', 'relative_position_index', 'attn_mask')):
            continue
        if k.endswith(('norm1.weight', 'norm2.weight', 'norm.weight', 'proj.weight', 'fc2.weight', 'conv.weight',
                       'conv_first.weight', 'conv_after_body.weight')):
            slices.append((t, 0))
        if k.endswith(('qkv.weight', 'fc1.weight', 'upsample.0.weight', '.conv.weight', 'conv_after_body.weight')):
            slices.append((t, 1))
    return slices


def scores(state: dict[str, torch.Tensor], kw: dict) -> dict:
    """Scores and 'alive' tests (see the module docstring) of embed channels, layers, blocks, heads, head dims and
    MLP units."""
    every = torch.ones(kw['embed_dim'], dtype=torch.bool)  # never dead: the LayerNorms span the embed axis
    out: dict[str, Any] = {'embed': _rank(every, group_scores(_embed_slices(state), kw['embed_dim'])), 'blocks': []}
    for i, depth in enumerate(kw['depths']):
        out['blocks'].append([
            _block_scores(state, f'layers.{i}.residual_group.blocks.{j}', kw['layer_heads'][i][j], kw['head_dim'],
                          kw['layer_mlp_hidden'][i][j]) for j in range(depth)
        ])
    for layer in out['blocks']:
        if layer:
            ranked = rank_scores(torch.tensor([b['block_alive'] for b in layer]),
                                 torch.stack([b['block'] for b in layer]))
            for j, b in enumerate(layer):
                b['block'] = ranked[j]
    layers = range(len(kw['depths']))
    convs = [(state[f'layers.{i}.conv.weight'], state[f'layers.{i}.conv.bias']) for i in layers]
    out['layer_alive'] = torch.tensor([bool(w.any() or b.any()) for w, b in convs])
    out['layer'] = rank_scores(out['layer_alive'], torch.stack([w.float().norm() for w, _ in convs]))
    return out


def structure(state: dict[str, torch.Tensor], kw: dict) -> dict:
    """Exact-zero structure: live / total / dead indices of embed channels, heads and MLP units per block, blocks
    per layer, and whether each layer is alive."""
    sc = scores(state, kw)
    group = lambda a: {'alive': int(a.sum()), 'total': a.numel(),  # noqa: E731
                       'dead': [i for i, v in enumerate(a.tolist()) if not v]}
    return {'embed': group(sc['embed']['alive']),
            'layers': [{'alive': bool(alive), 'blocks': group(torch.tensor([b['block_alive'] for b in layer])),
                        'heads': [group(b['head']['alive']) for b in layer],
                        'units': [group(b['unit']['alive']) for b in layer]}
                       for alive, layer in zip(sc['layer_alive'].tolist(), sc['blocks'], strict=True)]}


def config_for_alpha(kw: dict, sc: dict, alpha: float) -> dict:
    """Target widths = ceil(alpha * live count) per group; dead layers and dead blocks are dropped (a live layer may
    keep no block, a live block no head; an MLP keeps at least one unit, a dead one where none lives)."""
    width = lambda a: math.ceil(alpha * int(a.sum()))  # noqa: E731
    heads, hidden, depths = [], [], []
    for alive, layer in zip(sc['layer_alive'].tolist(), sc['blocks'], strict=True):
        if not alive:
            continue
        live = [b for b in layer if b['block_alive']]
        depths.append(len(live))
        heads.append([width(b['head']['alive']) for b in live])
        hidden.append([max(1, width(b['unit']['alive'])) for b in live])  # BasicSR's Mlp reads 0 as embed_dim
    return {**kw, 'embed_dim': max(1, width(sc['embed']['alive'])), 'depths': depths, 'layer_heads': heads,
            'layer_mlp_hidden': hidden, 'num_heads': [max(1, r[0]) if r else 1 for r in heads],
            'head_dim': max(1, math.ceil(alpha * kw['head_dim']))}


def _block(state: dict, src_pre: str, tgt_pre: str, sc: dict, embed: list[int], src: dict, tgt: dict, heads_n: int,
           hidden_n: int, hd_src: int) -> dict[str, torch.Tensor]:
    hd = tgt['head_dim']
    heads = keep_top(sc['head']['score'], heads_n)
    qk = [keep_top(sc['qk_dim'][h], hd) for h in heads]
    v = [keep_top(sc['v_dim'][h], hd) for h in heads]
    q_rows = [h * hd_src + d for h, ds in zip(heads, qk, strict=False) for d in ds]
    n_src = sc['head']['score'].numel() * hd_src
    v_rows = [2 * n_src + h * hd_src + d for h, ds in zip(heads, v, strict=True) for d in ds]
    rows = q_rows + [n_src + r for r in q_rows] + v_rows
    scale_src = src.get('qk_scale') or hd_src**-0.5
    fold = scale_src / (tgt.get('qk_scale') or hd**-0.5)
    gain = torch.ones(len(rows))
    gain[:len(q_rows)] = fold
    units = keep_top(sc['unit']['score'], hidden_n)
    g = lambda k: state[f'{src_pre}.{k}']  # noqa: E731
    out = {f'norm{n}.{p}': take(g(f'norm{n}.{p}'), {0: embed}) for n in (1, 2) for p in ('weight', 'bias')}
    out['attn.relative_position_bias_table'] = take(g('attn.relative_position_bias_table'), {1: heads})
    out['attn.qkv.weight'] = take(g('attn.qkv.weight'), {0: rows, 1: embed}) * gain[:, None].to(g('attn.qkv.weight'))
    out['attn.qkv.bias'] = take(g('attn.qkv.bias'), {0: rows}) * gain.to(g('attn.qkv.bias'))
    v_cols = [r - 2 * n_src for r in rows[2 * len(q_rows):]]
    out['attn.proj.weight'] = take(g('attn.proj.weight'), {0: embed, 1: v_cols})
    out['attn.proj.bias'] = take(g('attn.proj.bias'), {0: embed})
    out['mlp.fc1.weight'] = take(g('mlp.fc1.weight'), {0: units, 1: embed})
    out['mlp.fc1.bias'] = take(g('mlp.fc1.bias'), {0: units})
    out['mlp.fc2.weight'] = take(g('mlp.fc2.weight'), {0: embed, 1: units})
    out['mlp.fc2.bias'] = take(g('mlp.fc2.bias'), {0: embed})
    return {f'{tgt_pre}.{k}': t for k, t in out.items()}


def compress(state: dict[str, torch.Tensor], src: dict, tgt: dict) -> dict[str, torch.Tensor]:
    """State dict (parameters only; buffers come from the target model) of SwinIRmini ``tgt`` carved from ``src``."""
    for key in ('upscale', 'window_size', 'img_size', 'in_chans'):
        if src[key] != tgt[key]:
            raise ValueError(f'{key} differs: source {src[key]}, target {tgt[key]}')
    sc = scores(state, src)
    embed = keep_top(sc['embed']['score'], tgt['embed_dim'])
    layers = keep_top(sc['layer'], len(tgt['depths']))
    out = {}
    for k in ('conv_first', 'conv_after_body'):
        out[f'{k}.weight'] = take(state[f'{k}.weight'], {0: embed, 1: embed if k == 'conv_after_body' else None})
        out[f'{k}.bias'] = take(state[f'{k}.bias'], {0: embed})
    for k in ('patch_embed.norm', 'norm'):
        for p in ('weight', 'bias'):
            out[f'{k}.{p}'] = take(state[f'{k}.{p}'], {0: embed})
    out['upsample.0.weight'] = take(state['upsample.0.weight'], {1: embed})
    out['upsample.0.bias'] = state['upsample.0.bias'].clone()
    for ti, si in enumerate(layers):
        bsc = sc['blocks'][si]
        blocks = keep_top(torch.stack([b['block'] for b in bsc]), tgt['depths'][ti]) if tgt['depths'][ti] else []
        for tj, sj in enumerate(blocks):
            pre = f'layers.{ti}.residual_group.blocks.{tj}'
            out.update(_block(state, f'layers.{si}.residual_group.blocks.{sj}', pre, bsc[sj], embed, src, tgt,
                              tgt['layer_heads'][ti][tj], tgt['layer_mlp_hidden'][ti][tj], src['head_dim']))
        out[f'layers.{ti}.conv.weight'] = take(state[f'layers.{si}.conv.weight'], {0: embed, 1: embed})
        out[f'layers.{ti}.conv.bias'] = take(state[f'layers.{si}.conv.bias'], {0: embed})
    return out
