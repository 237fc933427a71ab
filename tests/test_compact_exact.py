"""Stage 2 (compaction) removes a group only where that is exact: every group kind of EDSRmini and SwinIRmini on
hand-zeroed networks, output of the compact network vs the dense one to 1e-6.

Where a group looks dead but is not (a bias or a residual projection still writes to the trunk), the test shows
both that compaction keeps it (exact) and that dropping it would have changed the output (> 1e-4), so the test would
catch a detector that ignores that path.
"""
import pytest
import torch

from ddsr.checkpoint import build_network as build
from ddsr.compress.compact import compress_state, structure

TOL, EFFECT = 1e-6, 1e-4
EDSR = dict(type='EDSRmini', upscale=4, img_range=1.)  # 16 feat, 8 blocks, 2 upsample stages; range 1: visible diffs
SWIN = dict(type='SwinIRmini', upscale=2, embed_dim=24, depths=[2, 2], num_heads=[4, 4], img_size=16)
HD, DIM = 6, 24  # SwinIR head dim (24 / 4) and embed dim


def _net(arch: dict, std: float | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = build(arch)
    if std is not None:  # SwinIR's init (std 0.02, zero biases) is too small to see anything through 12 LayerNorms
        for p in net.parameters():
            p.data.normal_(0, std)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _out(arch: dict, state: dict, size: int) -> torch.Tensor:
    net = build(arch)
    full = net.state_dict()
    full.update(state)
    net.load_state_dict(full)
    torch.manual_seed(1)
    with torch.no_grad():
        return net.eval()(torch.rand(1, 3, size, size))


def _compact(arch: dict, state: dict, size: int, target: dict | None = None) -> tuple[dict, float]:
    """(compact arch, max |dense - compact|) for ratio 1 (or the explicit ``target``)."""
    params, compact = compress_state(state, arch, target=target) if target else compress_state(state, arch, ratio=1.0)
    return compact, float((_out(arch, state, size) - _out(compact, params, size)).abs().max())


def _effect(arch: dict, state: dict, changed: dict, size: int) -> float:
    """max |output change| when the tensors in ``changed`` replace the state's (what dropping a group would do)."""
    return float((_out(arch, state, size) - _out(arch, {**state, **changed}, size)).abs().max())


# --- EDSRmini -------------------------------------------------------------------------------------------------------

def _zero(sd: dict, key: str, index) -> None:
    sd[key][index] = 0


def test_edsr_trunk_channel_dead_by_producers_or_consumers():
    sd = _net(EDSR)
    for k in ['conv_first', 'conv_after_body'] + [f'body.{i}.conv2' for i in range(8)]:  # channel 3: nothing writes
        _zero(sd, f'{k}.weight', 3)
        _zero(sd, f'{k}.bias', 3)
    for k in ['conv_after_body', 'upsample.0'] + [f'body.{i}.conv1' for i in range(8)]:  # channel 9: nothing reads
        sd[f'{k}.weight'][:, 9] = 0
    compact, diff = _compact(EDSR, sd, 12)
    assert compact['num_feat'] == 14 and diff <= TOL, (compact, diff)
    assert structure(sd, EDSR)['trunk']['dead'] == [3, 9]


def test_edsr_middle_and_upsample_channels():
    sd = _net(EDSR)
    _zero(sd, 'body.2.conv1.weight', [1, 7])  # mid channels 1, 7 of block 2: producers zero
    _zero(sd, 'body.2.conv1.bias', [1, 7])
    sd['body.5.conv2.weight'][:, 4] = 0  # mid channel 4 of block 5: its consumer column zero
    _zero(sd, 'upsample.2.weight', slice(20, 24))  # post-shuffle channel 5 of stage 2 (PixelShuffle group of 4)
    _zero(sd, 'upsample.2.bias', slice(20, 24))
    compact, diff = _compact(EDSR, sd, 12)
    assert compact['block_channels'] == [16, 16, 14, 16, 16, 15, 16, 16] and compact['upsample_channels'] == [16, 15]
    assert diff <= TOL


def test_edsr_mid_channel_with_bias_only_is_alive():
    """conv1 weights of a mid channel zero but its bias not: ReLU(bias) is read by conv2 (not removable)."""
    sd = _net(EDSR)
    _zero(sd, 'body.4.conv1.weight', 2)
    compact, diff = _compact(EDSR, sd, 12)
    assert 'block_channels' not in compact and diff <= TOL


def test_edsr_dead_block_is_dropped():
    sd = _net(EDSR)
    sd['body.6.conv1.weight'].zero_()
    sd['body.6.conv1.bias'].zero_()
    sd['body.6.conv2.bias'].zero_()
    compact, diff = _compact(EDSR, sd, 12)
    assert compact['num_block'] == 7 and diff <= TOL


def test_edsr_block_with_output_bias_is_kept():
    """Issue 24: every middle channel dead but conv2.bias non-zero: the block adds a constant; it stays."""
    sd = _net(EDSR)
    sd['body.6.conv1.weight'].zero_()
    sd['body.6.conv1.bias'].zero_()
    assert sd['body.6.conv2.bias'].abs().min() > 0
    compact, diff = _compact(EDSR, sd, 12)
    assert compact['num_block'] == 8 and compact['block_channels'][6] == 1 and diff <= TOL
    assert structure(sd, EDSR)['blocks']['dead'] == []
    assert _effect(EDSR, sd, {'body.6.conv2.bias': torch.zeros(16)}, 12) > EFFECT  # dropping it is not exact


# --- SwinIRmini -----------------------------------------------------------------------------------------------------

def _blk(i: int, j: int) -> str:
    return f'layers.{i}.residual_group.blocks.{j}'


def _kill_heads(sd: dict, pre: str, heads) -> None:
    """Zero the v rows (weights and bias) of ``heads``: q and k stay non-zero."""
    rows = [2 * DIM + h * HD + d for h in heads for d in range(HD)]
    _zero(sd, f'{pre}.attn.qkv.weight', rows)
    _zero(sd, f'{pre}.attn.qkv.bias', rows)


def _kill_units(sd: dict, pre: str, units) -> None:
    _zero(sd, f'{pre}.mlp.fc1.weight', units)
    _zero(sd, f'{pre}.mlp.fc1.bias', units)


def _kill_block(sd: dict, pre: str, biases: bool = True) -> None:
    _kill_heads(sd, pre, range(4))
    _kill_units(sd, pre, slice(None))
    if biases:
        sd[f'{pre}.attn.proj.bias'].zero_()
        sd[f'{pre}.mlp.fc2.bias'].zero_()


def test_swinir_heads_and_units():
    sd = _net(SWIN, 0.1)
    _kill_heads(sd, _blk(1, 0), [2])  # head 2: v rows zero (q, k live)
    sd[f'{_blk(0, 1)}.attn.proj.weight'][:, 0:HD] = 0  # head 0: its proj columns zero
    _kill_units(sd, _blk(0, 1), [0, 5, 9])  # MLP units 0, 5, 9: fc1 rows + bias zero
    sd[f'{_blk(1, 1)}.mlp.fc2.weight'][:, [3]] = 0  # unit 3: fc2 column zero
    compact, diff = _compact(SWIN, sd, 16)
    assert compact['layer_heads'] == [[4, 3], [3, 4]] and compact['layer_mlp_hidden'] == [[48, 45], [48, 47]]
    assert diff <= TOL, diff


def test_swinir_head_dims():
    """q row 0 = 0 in every head (the q.k term of dim 0 vanishes), v row 1 = 0: head_dim 6 -> 5 is exact. In block
    (0, 0) the q weights of dim 5 are zero too but not their biases: q_5 = bias still meets k_5, so dim 0 must go."""
    sd = _net(SWIN, 0.1)
    for i in range(2):
        for j in range(2):
            rows = [h * HD for h in range(4)] + [2 * DIM + h * HD + 1 for h in range(4)]
            _zero(sd, f'{_blk(i, j)}.attn.qkv.weight', rows)
            _zero(sd, f'{_blk(i, j)}.attn.qkv.bias', rows)
    _zero(sd, f'{_blk(0, 0)}.attn.qkv.weight', [h * HD + 5 for h in range(4)])
    compact, diff = _compact(SWIN, sd, 16, target=dict(SWIN, head_dim=5))
    assert compact['head_dim'] == 5 and diff <= TOL, diff


def test_swinir_dead_block_is_dropped():
    sd = _net(SWIN, 0.1)
    _kill_block(sd, _blk(0, 1))
    compact, diff = _compact(SWIN, sd, 16)
    assert compact['depths'] == [1, 2] and diff <= TOL


def test_swinir_block_with_biases_is_kept():
    """Issue 24: heads and units dead, proj / fc2 biases non-zero: the block adds a constant token; it stays."""
    sd = _net(SWIN, 0.1)
    _kill_block(sd, _blk(0, 1), biases=False)
    compact, diff = _compact(SWIN, sd, 16)
    assert compact['depths'] == [2, 2] and compact['layer_heads'][0][1] == 0 and diff <= TOL, (compact, diff)
    zero = {f'{_blk(0, 1)}.{k}': torch.zeros(DIM) for k in ('attn.proj.bias', 'mlp.fc2.bias')}
    assert _effect(SWIN, sd, zero, 16) > EFFECT


def test_swinir_dead_layer_is_dropped():
    sd = _net(SWIN, 0.1)
    sd['layers.1.conv.weight'].zero_()
    sd['layers.1.conv.bias'].zero_()  # its blocks are alive: they feed nothing but the zero conv
    compact, diff = _compact(SWIN, sd, 16)
    assert compact['depths'] == [2] and diff <= TOL


def test_swinir_layer_with_live_conv_is_kept():
    """Issue 24: every block of layer 1 dead, its RSTB conv non-zero: the layer still adds conv(x); it stays."""
    sd = _net(SWIN, 0.1)
    for j in range(2):
        _kill_block(sd, _blk(1, j))
    compact, diff = _compact(SWIN, sd, 16)
    assert compact['depths'] == [2, 0] and diff <= TOL, (compact, diff)
    zero = {'layers.1.conv.weight': torch.zeros(DIM, DIM, 3, 3), 'layers.1.conv.bias': torch.zeros(DIM)}
    assert _effect(SWIN, sd, zero, 16) > EFFECT


@pytest.mark.parametrize('rows', [False, True])
def test_swinir_embed_channel_is_never_dead(rows):
    """Issue 24: embed channel 5 with zero conv_first row and proj / fc2 / conv biases, (rows=False) its proj / fc2 /
    conv weight rows non-zero, or (rows=True) zero too. Either way it stays: the LayerNorms average over the embed
    axis, so even an all-zero channel cannot be dropped exactly (shown with an explicit embed_dim 23 target)."""
    sd = _net(SWIN, 0.1)
    keys = [k for k in sd if k.endswith(('proj.bias', 'fc2.bias', 'conv.bias', 'conv_first.weight', 'conv_first.bias',
                                         'conv_after_body.bias'))]
    if rows:
        keys += [k for k in sd if k.endswith(('proj.weight', 'fc2.weight', 'conv.weight', 'conv_after_body.weight'))]
        keys = [k for k in keys if k != 'patch_embed.proj.weight']
    for k in keys:
        _zero(sd, k, 5)
    assert structure(sd, SWIN)['embed']['dead'] == []
    compact, diff = _compact(SWIN, sd, 16)
    assert compact['embed_dim'] == DIM and diff <= TOL
    _, dropped = _compact(SWIN, sd, 16, target=dict(SWIN, embed_dim=23, head_dim=HD))
    assert dropped > EFFECT, dropped


def test_swinir_compact_of_a_compact_network():
    """A compact network with a depth-0 layer and a head-less block compresses again (ratio 1: unchanged)."""
    sd = _net(SWIN, 0.1)
    for j in range(2):
        _kill_block(sd, _blk(1, j))
    _kill_block(sd, _blk(0, 1), biases=False)
    params, compact = compress_state(sd, SWIN, ratio=1.0)
    again, arch = compress_state(params, compact, ratio=1.0)
    assert arch['depths'] == [2, 0] and float((_out(compact, params, 16) - _out(arch, again, 16)).abs().max()) <= TOL
