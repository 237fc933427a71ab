"""BasicSR's MSRResNet: recognised from a state dict only (the network is BasicSR's; no ddsr arch module)."""
from ddsr.archs.detection import Candidates, State, indices, out, root
from ddsr.archs.units import ArchUnit


def detect(s: State, c: Candidates) -> None:
    """Features, blocks and scale (x4: two upconvs; x2/x3: one, its width / features = scale^2)."""
    if not all(k in s for k in ('conv_first.weight', 'upconv1.weight', 'conv_hr.weight', 'conv_last.weight')):
        return
    num_feat, num_in = (int(x) for x in s['conv_first.weight'].shape[:2])
    up = 4 if 'upconv2.weight' in s else root(out(s, 'upconv1.weight') / num_feat)
    if up not in (2, 3, 4):
        return
    c.add({'type': 'MSRResNet', 'num_in_ch': num_in, 'num_out_ch': out(s, 'conv_last.weight'),
           'num_feat': num_feat, 'num_block': len(indices(s, r'body\.(\d+)\.conv1\.weight')), 'upscale': up})


UNIT = ArchUnit(name='MSRResNet', detects=('MSRResNet',), detect=detect)
