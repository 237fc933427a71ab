"""DIPNet (Yu et al.; the fastest inference of all NTIRE 2023 efficient SR challenge entries, per its paper): the
network (:mod:`.dipnet_arch`), its recognition from a state dict, its published x4 deploy checkpoint, and the size
requirements of the ESA family it belongs to (DIPNet builds on
RLFN, which builds on RFDN: networks of other packages that ddsr does not ship)."""
from ddsr.archs.detection import Candidates, State, indices, out, root
from ddsr.archs.sizes import ESA_REQUIREMENTS
from ddsr.archs.units import ArchUnit, released


def detect(s: State, c: Candidates) -> None:
    """Train form (RepConv branches, expansion width) or deploy form, per-block (pruned) middle widths."""
    if 'conv_1.weight' not in s or 'block_1.esa.conv1.weight' not in s:
        return
    blocks = indices(s, r'block_(\d+)\.c5\.weight')
    deploy = 'block_1.c1_r.weight' in s
    mid_key = 'block_{}.c1_r.weight' if deploy else 'block_{}.c1_r.squeeze.weight'
    mids = [out(s, mid_key.format(i)) for i in blocks]
    num_feat, num_in = s['conv_1.weight'].shape[:2]
    num_out = int(num_in)
    up = root(out(s, 'upsampler.0.weight') / num_out)
    if up is None or not mids:
        return
    arch = {'type': 'DIPNet', 'num_in_ch': int(num_in), 'num_out_ch': num_out, 'num_feat': int(num_feat),
            'num_mid': mids[0], 'num_block': len(blocks), 'esa_channels': out(s, 'block_1.esa.conv1.weight'),
            'upscale': up, 'deploy': deploy}
    if not deploy:
        arch['expand_width'] = out(s, 'block_1.c1_r.expand.weight')
    pruned = len(set(mids)) > 1
    if pruned:
        arch['mid_channels'] = mids
    c.add(arch, ('deploy form' if deploy else 'train form') + (', pruned widths' if pruned else ''))


UNIT = ArchUnit(
    name='DIPNet',
    networks={'DIPNet': f'{__name__}.dipnet_arch'},
    detects=('DIPNet',),
    detect=detect,
    requirements={'RFDN': ESA_REQUIREMENTS, 'RLFN': ESA_REQUIREMENTS},
    # Its paper's abstract: "the fastest inference time among all participants in the NTIRE 2023 efficient
    # super-resolution challenge": the claim made here (first in runtime), not that it won the challenge.
    models=(
        released('DIPNet-x4', {'type': 'DIPNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 44, 'num_mid': 38,
                               'num_block': 4, 'esa_channels': 16, 'upscale': 4, 'deploy': True},
                 'xiumu00/DIPNet/master/model_zoo/DIPNet.pth',
                 '7495450802b78cd15f4892851b2479de6605b24f1df1dbbfcaa5227201d61cc1', 'MIT',
                 'Yu et al., DIPNet, fastest inference of all NTIRE 2023 efficient SR challenge entries '
                 '(xiumu00/DIPNet, model_zoo/)',
                 'x4 deploy weights, 44 features, middle width 38, 4 blocks, ESA 16; plain state dict, RGB in [0, 1]',
                 ('DIPNet', 'DIPNet_x4')),
    ),
)
