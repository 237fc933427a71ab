"""SwinIRmini (Jiang et al., "Compressing Deep Image Super-resolution Models"): BasicSR's lightweight SwinIR at
embed_dim 24, depths [4, 4, 4], 6 heads, with optional per-block heads / MLP widths so that any pruned SwinIR is an
ordinary arch described in YAML.

State-dict keys equal BasicSR's ``SwinIR`` (layers.i.residual_group.blocks.j.attn.qkv, ...), so teacher weights carry
over by slicing (ddsr.compress.swinir_compress). Unlike BasicSR's SwinIR, the forward pads the input to a multiple
of the window size (reflect) and crops the output, so any input size works.
"""
import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.archs.swinir_arch import Mlp, SwinIR, WindowAttention
from torch import nn

from ddsr.archs.registry import ARCH_REGISTRY
from ddsr.archs.sizes import SizeRequirements


class PrunedWindowAttention(WindowAttention):
    """W-MSA with ``num_heads`` heads of ``head_dim`` channels each (heads * head_dim may differ from ``dim``).

    attn = softmax(scale * q k^T + B_rel (+ shift mask)) v, per head; qkv: dim -> 3*heads*head_dim, proj back to dim.
    """

    relative_position_bias_table: nn.Parameter

    def __init__(self, dim: int, window_size, num_heads: int, head_dim: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__(dim, window_size, max(num_heads, 1), qkv_bias, qk_scale, attn_drop, proj_drop)
        self.num_heads = num_heads  # 0 heads (all pruned) leaves proj's bias
        self.relative_position_bias_table = nn.Parameter(self.relative_position_bias_table.data[:, :num_heads])
        self.head_dim = head_dim
        self.scale = qk_scale or head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * head_dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_, n, _ = x.shape
        q, k, v = self.qkv(x).view(b_, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1).unsqueeze(0)  # 1, nH, n, n
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1).unsqueeze(0)).expand(b_ // nw, -1, -1, -1, -1)
            bias = bias.reshape(b_, self.num_heads, n, n)
        drop = self.attn_drop.p if self.training else 0.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop, scale=self.scale)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b_, n, self.num_heads * self.head_dim)))


@ARCH_REGISTRY.register()
class SwinIRmini(SwinIR):
    """SwinIR with per-block widths (paper defaults: embed_dim 24, depths [4,4,4], heads [6,6,6], mlp_ratio 2).

    Args:
        upscale (int): Upscale factor. Default: 2.
        in_chans (int): Image channels. Default: 3.
        img_size (int): Training LR patch size (sizes the stored shift masks). Default: 64.
        window_size (int): Attention window. Default: 8.
        img_range (float): Image range. Default: 1.
        embed_dim (int): Token (trunk) channels. Default: 24.
        depths (list[int]): Swin blocks per RSTB layer. Default: [4, 4, 4].
        num_heads (list[int]): Heads per layer. Default: [6, 6, 6].
        mlp_ratio (float): MLP hidden width / embed_dim. Default: 2.
        upsampler (str): BasicSR SwinIR upsampler. Default: 'pixelshuffledirect'.
        resi_connection (str): '1conv' or '3conv'. Default: '1conv'.
        head_dim (int | None): Channels per head; None = embed_dim // heads of the layer (BasicSR's rule).
        layer_heads (list[list[int]] | None): Heads of every block (layer i, block j); None = num_heads[i].
        layer_mlp_hidden (list[list[int]] | None): MLP hidden width of every block; None = embed_dim * mlp_ratio.
        kwargs: Any other BasicSR SwinIR argument (qkv_bias, qk_scale, drop_path_rate, ...).
    """

    def __init__(self,
                 upscale: int = 2,
                 in_chans: int = 3,
                 img_size: int = 64,
                 window_size: int = 8,
                 img_range: float = 1.,
                 embed_dim: int = 24,
                 depths: Sequence[int] = (4, 4, 4),
                 num_heads: Sequence[int] = (6, 6, 6),
                 mlp_ratio: float = 2.,
                 upsampler: str = 'pixelshuffledirect',
                 resi_connection: str = '1conv',
                 head_dim: int | None = None,
                 layer_heads: Sequence[Sequence[int]] | None = None,
                 layer_mlp_hidden: Sequence[Sequence[int]] | None = None,
                 **kwargs):
        super().__init__(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim, depths=depths,
                         num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio, upscale=upscale,
                         img_range=img_range, upsampler=upsampler, resi_connection=resi_connection, **kwargs)
        self.window_size = window_size
        self.kwargs = dict(upscale=upscale, in_chans=in_chans, img_size=img_size, window_size=window_size,
                           img_range=img_range, embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads),
                           mlp_ratio=mlp_ratio, upsampler=upsampler, resi_connection=resi_connection, **kwargs)
        if head_dim is not None:
            self.kwargs['head_dim'] = head_dim
        for name, table in (('layer_heads', layer_heads), ('layer_mlp_hidden', layer_mlp_hidden)):
            if table is not None and [len(row) for row in table] != list(depths):
                raise ValueError(f'{name} must have one entry per block: row lengths {list(depths)}')
            if table is not None:
                self.kwargs[name] = [[int(v) for v in row] for row in table]
        if head_dim is not None or layer_heads is not None:
            self._init_heads(num_heads, head_dim, layer_heads, kwargs.get('qk_scale'))
        if layer_mlp_hidden is not None:
            self._init_hidden(layer_mlp_hidden)

    def _init_heads(self, num_heads, head_dim, layer_heads, qk_scale) -> None:
        for i, layer in enumerate(self.layers):
            dim_i = head_dim or self.embed_dim // num_heads[i]
            for j, blk in enumerate(layer.residual_group.blocks):
                heads = layer_heads[i][j] if layer_heads is not None else num_heads[i]
                old = blk.attn
                blk.attn = PrunedWindowAttention(self.embed_dim, old.window_size, heads, dim_i,
                                                 old.qkv.bias is not None, qk_scale, old.attn_drop.p, old.proj_drop.p)
                blk.num_heads = heads

    def _init_hidden(self, layer_mlp_hidden: Sequence[Sequence[int]]) -> None:
        for i, layer in enumerate(self.layers):
            for j, blk in enumerate(layer.residual_group.blocks):
                blk.mlp = Mlp(self.embed_dim, layer_mlp_hidden[i][j], drop=blk.mlp.drop.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        ph, pw = (-h) % self.window_size, (-w) % self.window_size
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode='reflect' if ph < h and pw < w else 'replicate')
        return super().forward(x)[..., :h * self.upscale, :w * self.upscale]

    is_deployed = True  # a single form: nothing to fuse

    def size_requirements(self) -> SizeRequirements:
        """Any size (the forward pads to the window itself), but ``multiple`` = the window: padding outside keeps
        exported ONNX graphs (traced without the pad) right at every size."""
        return SizeRequirements(min_size=1, multiple=self.window_size, grid=1)

    def config(self) -> dict:
        """Self-describing config ``{'type': 'SwinIRmini', **kwargs}`` that rebuilds this network (pruned heads
        and MLP widths included)."""
        return {'type': 'SwinIRmini', **copy.deepcopy(self.kwargs)}
