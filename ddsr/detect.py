"""Which network a checkpoint holds, from its keys and tensor shapes (as spandrel does for its archs).

``ddsr upscale|export|bench --weights FILE`` without ``--arch``, and :meth:`ddsr.ImageUpscaler.from_file`, use it:
a self-describing checkpoint (``arch`` entry, written by ddsr) is taken at its word; a plain state dict (or a
BasicSR ``params`` / ``params_ema`` checkpoint) is recognised as one of

- ``DDistillSR``: train form (DBB branches), deploy form (``dbb_reparam``), deploy with folded BNs; x2/x3/x4;
- ``DIPNet``: train form (RepConv branches, expansion width) or deploy form, per-block (pruned) middle widths;
- ``EDSRmini`` / BasicSR ``EDSR``: per-block and per-upsample-stage widths (pruned), x2/x3/x4;
- ``SwinIRmini`` / BasicSR ``SwinIR``: depths, heads, window and training patch size (from the stored relative
  position index and shift masks), MLP widths, per-block pruned heads/widths, upsampler, residual connection;
- BasicSR ``MSRResNet``.

Every candidate is built (on the ``meta`` device: no memory, no init cost) and kept only if its state dict has
exactly the checkpoint's keys and shapes. What weights cannot tell is filled in by rule, and each rule is stated
with the candidate: EDSR's ``res_scale`` (1 for EDSR-M 64x16, 0.1 for EDSR-L 256x32, BasicSR's option files;
other uniform widths are ambiguous and listed), 16 features x 8 blocks with uniform widths = EDSRmini (res_scale
2, the paper's config), embed 24 with depths [4, 4, 4] = SwinIRmini (the paper's config), ``img_range`` 255 for
EDSR and 1 for SwinIR (BasicSR's defaults). Several fitting candidates are an error listing them.
"""
from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ddsr.archs.registry import arch_class  # ddsr's archs without importing basicsr (inference never imports it)
from ddsr.checkpoint import is_state_dict, load_file, select_params, strip_module
from ddsr.errors import DDSRError

State = Mapping[str, Tensor]


@dataclass
class Detection:
    """A network option (``type`` + kwargs) that fits a state dict exactly, and how it was decided."""
    arch: dict
    form: str = ''
    rule: str = ''

    def describe(self) -> str:
        kwargs = ', '.join(f'{k}={v}' for k, v in self.arch.items() if k != 'type')
        form = f' [{self.form}]' if self.form else ''
        rule = f' ({self.rule})' if self.rule else ''
        return f'{self.arch["type"]}({kwargs}){form}{rule}'


@dataclass
class _Candidates:
    found: list[Detection] = field(default_factory=list)

    def add(self, arch: dict, form: str = '', rule: str = '') -> None:
        self.found.append(Detection(arch, form, rule))


def _indices(state: State, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.fullmatch(k))})


def _out(state: State, key: str) -> int:
    return int(state[key].shape[0])


def _root(value: float) -> int | None:
    root = int(round(math.sqrt(value)))
    return root if root * root == value else None


# ---- detectors: each adds the candidates the keys suggest; all are verified by building them ----


def _ddistill(s: State, c: _Candidates) -> None:
    if 'fea_conv.weight' not in s or 'B1.c1_r.unit.dy_branch.q.weight' not in s:
        return
    scales = _indices(s, r'upsamplerx(\d+)\.0\.weight')
    if len(scales) != 1:
        return
    up = scales[0]
    num_feat, num_in = s['fea_conv.weight'].shape[:2]
    deploy = 'B1.c1_r.unit.dbb_reparam.weight' in s
    fold_bn = deploy and 'B1.c1_r.unit.dy_branch.bn1.weight' not in s
    arch = {'type': 'DDistillSR', 'num_in_ch': int(num_in), 'num_out_ch': _out(s, f'upsamplerx{up}.2.weight'),
            'num_feat': int(num_feat), 'dyn_dim': _out(s, 'B1.c1_r.unit.dy_branch.q.weight'), 'upscale': up,
            'deploy': deploy}
    if fold_bn:
        arch['fold_bn'] = True
    c.add(arch, 'deploy form, BNs folded' if fold_bn else ('deploy form' if deploy else 'train form'))


def _dipnet(s: State, c: _Candidates) -> None:
    if 'conv_1.weight' not in s or 'block_1.esa.conv1.weight' not in s:
        return
    blocks = _indices(s, r'block_(\d+)\.c5\.weight')
    deploy = 'block_1.c1_r.weight' in s
    mid_key = 'block_{}.c1_r.weight' if deploy else 'block_{}.c1_r.squeeze.weight'
    mids = [_out(s, mid_key.format(i)) for i in blocks]
    num_feat, num_in = s['conv_1.weight'].shape[:2]
    num_out = int(num_in)
    up = _root(_out(s, 'upsampler.0.weight') / num_out)
    if up is None or not mids:
        return
    arch = {'type': 'DIPNet', 'num_in_ch': int(num_in), 'num_out_ch': num_out, 'num_feat': int(num_feat),
            'num_mid': mids[0], 'num_block': len(blocks), 'esa_channels': _out(s, 'block_1.esa.conv1.weight'),
            'upscale': up, 'deploy': deploy}
    if not deploy:
        arch['expand_width'] = _out(s, 'block_1.c1_r.expand.weight')
    pruned = len(set(mids)) > 1
    if pruned:
        arch['mid_channels'] = mids
    c.add(arch, ('deploy form' if deploy else 'train form') + (', pruned widths' if pruned else ''))


def _upsample_scale(s: State, prefix: str, last_in: int) -> tuple[int, list[int]] | None:
    """(upscale, post-shuffle channels per stage) of a BasicSR ``Upsample`` at ``prefix`` (.0, .2, ...)."""
    stages = _indices(s, re.escape(prefix) + r'\.(\d+)\.weight')
    if not stages:
        return None
    outs = [_out(s, f'{prefix}.{j}.weight') for j in stages]
    ins = [int(s[f'{prefix}.{j}.weight'].shape[1]) for j in stages[1:]] + [last_in]
    roots = [_root(o / i) for o, i in zip(outs, ins, strict=True)]
    factors = [f for f in roots if f in (2, 3)]
    if len(factors) != len(roots) or (3 in factors and len(factors) > 1):
        return None
    return math.prod(factors), ins


def _edsr(s: State, c: _Candidates) -> None:
    keys = ('conv_first.weight', 'body.0.conv1.weight', 'conv_after_body.weight', 'upsample.0.weight',
            'conv_last.weight')
    if not all(k in s for k in keys) or 'upconv1.weight' in s:
        return
    num_feat, num_in = (int(x) for x in s['conv_first.weight'].shape[:2])
    blocks = _indices(s, r'body\.(\d+)\.conv1\.weight')
    widths = [_out(s, f'body.{i}.conv1.weight') for i in blocks]
    ups = _upsample_scale(s, 'upsample', int(s['conv_last.weight'].shape[1]))
    if ups is None:
        return
    up, up_channels = ups
    base = {'num_in_ch': num_in, 'num_out_ch': _out(s, 'conv_last.weight'), 'num_feat': num_feat,
            'num_block': len(blocks), 'upscale': up}
    uniform = all(w == num_feat for w in widths) and all(ch == num_feat for ch in up_channels)
    if not uniform:
        arch = {'type': 'EDSRmini', **base}
        if any(w != num_feat for w in widths):
            arch['block_channels'] = widths
        if any(ch != num_feat for ch in up_channels):
            arch['upsample_channels'] = up_channels
        c.add(arch, 'pruned widths', 'non-uniform widths: EDSRmini; res_scale 2 is its default (not stored)')
    elif (num_feat, len(blocks)) == (16, 8):
        c.add({'type': 'EDSRmini', **base}, '', '16 features x 8 blocks: the paper\'s EDSRmini, res_scale 2')
    elif (num_feat, len(blocks)) == (64, 16):
        c.add({'type': 'EDSR', **base, 'res_scale': 1}, '', 'EDSR-M: res_scale 1 as in BasicSR\'s options')
    elif (num_feat, len(blocks)) == (256, 32):
        c.add({'type': 'EDSR', **base, 'res_scale': 0.1}, '', 'EDSR-L: res_scale 0.1 as in BasicSR\'s options')
    else:
        for res_scale in (1, 0.1):
            c.add({'type': 'EDSR', **base, 'res_scale': res_scale}, '', 'res_scale is not stored in the weights')


def _msrresnet(s: State, c: _Candidates) -> None:
    if not all(k in s for k in ('conv_first.weight', 'upconv1.weight', 'conv_hr.weight', 'conv_last.weight')):
        return
    num_feat, num_in = (int(x) for x in s['conv_first.weight'].shape[:2])
    up = 4 if 'upconv2.weight' in s else _root(_out(s, 'upconv1.weight') / num_feat)
    if up not in (2, 3, 4):
        return
    c.add({'type': 'MSRResNet', 'num_in_ch': num_in, 'num_out_ch': _out(s, 'conv_last.weight'),
           'num_feat': num_feat, 'num_block': len(_indices(s, r'body\.(\d+)\.conv1\.weight')), 'upscale': up})


def _swinir(s: State, c: _Candidates) -> None:
    if 'conv_first.weight' not in s or 'layers.0.residual_group.blocks.0.attn.qkv.weight' not in s:
        return
    embed, in_chans = (int(x) for x in s['conv_first.weight'].shape[:2])
    layers = _indices(s, r'layers\.(\d+)\.residual_group\.blocks\.0\.norm1\.weight')
    blk = 'layers.{}.residual_group.blocks.{}'
    depths = [len(_indices(s, re.escape(f'layers.{i}.residual_group.blocks.') + r'(\d+)\.norm1\.weight'))
              for i in layers]
    window = _root(s[blk.format(0, 0) + '.attn.relative_position_index'].shape[0])
    heads = [[int(s[blk.format(i, j) + '.attn.relative_position_bias_table'].shape[1]) for j in range(d)]
             for i, d in zip(layers, depths, strict=True)]
    qkv = [[_out(s, blk.format(i, j) + '.attn.qkv.weight') for j in range(d)] for i, d in zip(layers, depths,
                                                                                               strict=True)]
    hidden = [[_out(s, blk.format(i, j) + '.mlp.fc1.weight') for j in range(d)] for i, d in zip(layers, depths,
                                                                                                 strict=True)]
    masks = [k for k in s if k.endswith('.attn_mask')]
    img_size = window * (_root(s[masks[0]].shape[0]) or 1) if masks and window else 64
    if 'upsample.0.weight' in s and 'conv_before_upsample.0.weight' not in s:
        upsampler = 'pixelshuffledirect'
        up = _root(_out(s, 'upsample.0.weight') / in_chans)
    elif 'conv_before_upsample.0.weight' in s and 'upsample.0.weight' in s:
        upsampler = 'pixelshuffle'
        ups = _upsample_scale(s, 'upsample', int(s['conv_last.weight'].shape[1]))
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


DETECTORS: tuple[Callable[[State, _Candidates], None], ...] = (_ddistill, _dipnet, _edsr, _msrresnet, _swinir)
KNOWN = 'DDistillSR, DIPNet, EDSRmini, SwinIRmini, EDSR, SwinIR, MSRResNet'


# ---- verification and entry points ----


def build_meta(arch: Mapping) -> torch.nn.Module:
    """The network of ``arch`` on the meta device (keys and shapes only), on the CPU if that fails."""
    cls = arch_class(arch['type'])
    kwargs = {k: v for k, v in arch.items() if k != 'type'}
    try:
        with torch.device('meta'):
            return cls(**kwargs)
    except Exception:  # noqa: B902  (archs that compute values at build time: retried on the CPU)
        return cls(**kwargs)


def mismatch(arch: Mapping, state: State) -> list[str]:
    """Keys missing / unexpected / of another shape when loading ``state`` into ``arch`` (empty: it fits)."""
    try:
        own = build_meta(arch).state_dict()
    except Exception as err:  # noqa: B902  (kwargs that do not build: reported as a mismatch)
        return [f'cannot build {arch.get("type")}: {err}']
    problems = [f'missing {k}' for k in own if k not in state]
    problems += [f'unexpected {k}' for k in state if k not in own]
    problems += [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
                 if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    return problems


def candidates(state: State) -> list[Detection]:
    """Every known network option that fits ``state`` exactly."""
    state = strip_module(state)
    found = _Candidates()
    for detector in DETECTORS:
        try:
            detector(state, found)
        except (KeyError, IndexError, ZeroDivisionError, TypeError, ValueError):  # keys of another layout
            continue
    return [d for d in found.found if not mismatch(d.arch, state)]


def detect(state: State, label: str = 'checkpoint') -> Detection:
    """The one network that fits ``state``; DDSRError when none or several do (the error lists them)."""
    found = candidates(state)
    if len(found) == 1:
        return found[0]
    if not found:
        raise DDSRError(f'{label}: not a checkpoint of a known arch ({KNOWN}), recognised from its keys and shapes; '
                        'give --arch TYPE [--arch-kwargs JSON]')
    listed = '; '.join(d.describe() for d in found)
    raise DDSRError(f'{label}: the weights fit {len(found)} networks: {listed}; choose one with --arch TYPE '
                    '--arch-kwargs JSON')


def params_of(raw: Mapping, param_key: str | None = 'params', label: str = 'checkpoint') -> dict[str, Tensor]:
    """The state dict BasicSR's ``load_network`` picks from a read checkpoint (``param_key``, else ``params``), or
    the file itself when it is a plain state dict (:func:`ddsr.checkpoint.select_params`)."""
    if is_state_dict(raw):
        return strip_module(raw)
    return select_params(dict(raw), param_key, label, label)


def _defaults(arch_type: str) -> dict:
    try:
        params = inspect.signature(arch_class(arch_type)).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def _same(a: object, b: object) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def other_form_message(arch: Mapping, found: Detection, label: str) -> str:
    """One line: the file fits ``found``, the same arch as ``arch`` with other kwargs (which, and how to fix)."""
    defaults = _defaults(found.arch['type'])
    diff = {k: v for k, v in found.arch.items() if k != 'type' and not _same(arch.get(k, defaults.get(k)), v)}
    extra = [k for k in arch if k != 'type' and k not in found.arch and not _same(arch[k], defaults.get(k))]
    what = f'the {found.form} of {found.arch["type"]}' if found.form else f'a {found.arch["type"]} checkpoint'
    fix = f'set {json.dumps(diff)} in --arch-kwargs' if diff else 'use the detected config'
    dropped = f' and drop {", ".join(extra)}' if extra else ''
    return (f'{label} holds {what} ({found.describe()}), which does not match the given {dict(arch)}: {fix}{dropped}, '
            'or leave out --arch (the file is recognised)')


def resolve_arch(raw: Mapping, arch: Mapping | None = None, param_key: str | None = 'params',
                 label: str = 'checkpoint') -> dict:
    """The network option to load ``raw`` (a read checkpoint) into.

    - ``arch`` given and fitting: ``arch``. Given but not fitting: if the weights are recognised, a DDSRError in one
      line naming what they are (e.g. the deploy form of the same arch and the kwargs to change); otherwise
      ``arch`` (the loader then reports the mismatching keys).
    - no ``arch``: the checkpoint's own ``arch`` entry (self-describing), else :func:`detect`.
    """
    if arch is None and isinstance(raw.get('arch'), Mapping) and 'type' in raw['arch']:
        return dict(raw['arch'])
    state = params_of(raw, param_key, label)
    if arch is None:
        return dict(detect(state, label).arch)
    if not mismatch(arch, state):
        return dict(arch)
    found = candidates(state)
    if len(found) != 1:
        return dict(arch)
    if found[0].arch['type'] == arch.get('type'):
        raise DDSRError(other_form_message(arch, found[0], label))
    raise DDSRError(f'{label} holds {found[0].describe()}, not a {arch.get("type")}: leave out --arch (the file is '
                    f'recognised) or give --arch {found[0].arch["type"]}')


def detect_file(path: str, param_key: str | None = 'params') -> Detection:
    """:func:`detect` on a checkpoint file (its own ``arch`` entry when it has one)."""
    raw = load_file(path, path)
    if isinstance(raw.get('arch'), Mapping) and 'type' in raw['arch']:
        return Detection(dict(raw['arch']), 'self-describing')
    return detect(params_of(raw, param_key, path), path)
