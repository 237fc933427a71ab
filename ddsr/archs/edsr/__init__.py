"""EDSR family: ddsr's EDSRmini (:mod:`.edsrmini_arch`, Jiang et al.'s compressed EDSR, any per-block widths) and
BasicSR's EDSR; recognised from a state dict, compacted by :mod:`ddsr.compress.edsr_compress`."""
from ddsr.archs.detection import Candidates, State, indices, out, upsample_scale
from ddsr.archs.units import ArchUnit


def detect(s: State, c: Candidates) -> None:
    """Per-block and per-upsample-stage widths (pruned), x2/x3/x4. What the weights cannot tell is a stated rule:
    16 features x 8 blocks with uniform widths = EDSRmini (res_scale 2, the paper's config); EDSR's ``res_scale``
    is 1 for EDSR-M 64x16 and 0.1 for EDSR-L 256x32 (BasicSR's option files); other uniform widths are ambiguous
    and both are listed."""
    keys = ('conv_first.weight', 'body.0.conv1.weight', 'conv_after_body.weight', 'upsample.0.weight',
            'conv_last.weight')
    if not all(k in s for k in keys) or 'upconv1.weight' in s:
        return
    num_feat, num_in = (int(x) for x in s['conv_first.weight'].shape[:2])
    blocks = indices(s, r'body\.(\d+)\.conv1\.weight')
    widths = [out(s, f'body.{i}.conv1.weight') for i in blocks]
    ups = upsample_scale(s, 'upsample', int(s['conv_last.weight'].shape[1]))
    if ups is None:
        return
    up, up_channels = ups
    base = {'num_in_ch': num_in, 'num_out_ch': out(s, 'conv_last.weight'), 'num_feat': num_feat,
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


UNIT = ArchUnit(
    name='EDSR',
    networks={'EDSRmini': f'{__name__}.edsrmini_arch'},
    detects=('EDSRmini', 'EDSR'),
    detect=detect,
    compaction={'EDSR': 'ddsr.compress.edsr_compress', 'EDSRmini': 'ddsr.compress.edsr_compress'},
    presets={'EDSRmini-default': {'type': 'EDSRmini'}},  # the paper's EDSRmini (EDSRmini's defaults)
)
