"""SwinIR family: ddsr's SwinIRmini (:mod:`.swinirmini_arch`, Jiang et al.'s compressed SwinIR, per-block pruned
heads and MLP widths) and BasicSR's SwinIR; recognised from a state dict, compacted by
:mod:`ddsr.compress.swinir_compress`."""
import re

from ddsr.archs.detection import Candidates, State, indices, out, root, upsample_scale
from ddsr.archs.units import ArchUnit


def detect(s: State, c: Candidates) -> None:
    """Depths, heads, window and training patch size (from the stored relative position index and shift masks),
    MLP widths, per-block pruned heads/widths, upsampler, residual connection. Rules for what weights cannot tell:
    embed 24 with depths [4, 4, 4] = SwinIRmini (the paper's config); ``img_range`` 1 (BasicSR's default)."""
    if 'conv_first.weight' not in s or 'layers.0.residual_group.blocks.0.attn.qkv.weight' not in s:
        return
    embed, in_chans = (int(x) for x in s['conv_first.weight'].shape[:2])
    layers = indices(s, r'layers\.(\d+)\.residual_group\.blocks\.0\.norm1\.weight')
    blk = 'layers.{}.residual_group.blocks.{}'
    depths = [len(indices(s, re.escape(f'layers.{i}.residual_group.blocks.') + r'(\d+)\.norm1\.weight'))
              for i in layers]
    window = root(s[blk.format(0, 0) + '.attn.relative_position_index'].shape[0])
    heads = [[int(s[blk.format(i, j) + '.attn.relative_position_bias_table'].shape[1]) for j in range(d)]
             for i, d in zip(layers, depths, strict=True)]
    qkv = [[out(s, blk.format(i, j) + '.attn.qkv.weight') for j in range(d)] for i, d in zip(layers, depths,
                                                                                              strict=True)]
    hidden = [[out(s, blk.format(i, j) + '.mlp.fc1.weight') for j in range(d)] for i, d in zip(layers, depths,
                                                                                                strict=True)]
    masks = [k for k in s if k.endswith('.attn_mask')]
    img_size = window * (root(s[masks[0]].shape[0]) or 1) if masks and window else 64
    up: int | None
    if 'upsample.0.weight' in s and 'conv_before_upsample.0.weight' not in s:
        upsampler = 'pixelshuffledirect'
        up = root(out(s, 'upsample.0.weight') / in_chans)
    elif 'conv_before_upsample.0.weight' in s and 'upsample.0.weight' in s:
        upsampler = 'pixelshuffle'
        ups = upsample_scale(s, 'upsample', int(s['conv_last.weight'].shape[1]))
        up = ups[0] if ups else None
    elif 'conv_up1.weight' in s:
        upsampler, up = 'nearest+conv', 4
    else:
        upsampler, up = '', 1
    if window is None or up is None:
        return
    arch = {'upscale': up, 'in_chans': in_chans, 'img_size': img_size, 'window_size': window, 'img_range': 1.,
            'embed_dim': embed, 'depths': depths, 'num_heads': [row[0] for row in heads],
            'mlp_ratio': hidden[0][0] / embed, 'upsampler': upsampler,
            'resi_connection': '3conv' if 'conv_after_body.0.weight' in s else '1conv'}
    if 'absolute_pos_embed' in s:
        arch['ape'] = True
    if 'patch_embed.norm.weight' not in s:
        arch['patch_norm'] = False
    if blk.format(0, 0) + '.attn.qkv.bias' not in s:
        arch['qkv_bias'] = False
    head_dims = {q // (3 * h) for qrow, hrow in zip(qkv, heads, strict=True) for q, h in zip(qrow, hrow, strict=True)
                 if h}
    basicsr_dims = all(q == 3 * embed for row in qkv for q in row if q) and all(embed % h == 0 for row in heads
                                                                                  for h in row if h)
    uniform_heads = all(len(set(row)) == 1 for row in heads) and all(h for row in heads for h in row)
    uniform_hidden = len({h for row in hidden for h in row}) == 1
    if uniform_heads and uniform_hidden and basicsr_dims:
        if embed == 24 and depths == [4, 4, 4]:
            c.add({'type': 'SwinIRmini', **arch}, '', "embed 24, depths [4, 4, 4]: the paper's SwinIRmini")
        else:
            c.add({'type': 'SwinIR', **arch})
        return
    mini = {'type': 'SwinIRmini', **arch}
    if len(head_dims) == 1 and not basicsr_dims:
        mini['head_dim'] = head_dims.pop()
    if not uniform_heads:
        mini['layer_heads'] = heads
    if not uniform_hidden:
        mini['layer_mlp_hidden'] = hidden
    c.add(mini, 'pruned widths')


UNIT = ArchUnit(
    name='SwinIR',
    networks={'SwinIRmini': f'{__name__}.swinirmini_arch'},
    detects=('SwinIRmini', 'SwinIR'),
    detect=detect,
    compaction={'SwinIR': 'ddsr.compress.swinir_compress', 'SwinIRmini': 'ddsr.compress.swinir_compress'},
    presets={'SwinIRmini-default': {'type': 'SwinIRmini'}},  # the paper's SwinIRmini (SwinIRmini's defaults)
)
