"""DDistill-SR (Wang et al.): the network (:mod:`.ddistill_arch`), its recognition from a state dict and its
published x4 inference checkpoint."""
from ddsr.archs.detection import Candidates, State, indices, out
from ddsr.archs.units import ArchUnit, released


def detect(s: State, c: Candidates) -> None:
    """Train form (DBB branches), deploy form (``dbb_reparam``), deploy with folded BNs; x2/x3/x4."""
    if 'fea_conv.weight' not in s or 'B1.c1_r.unit.dy_branch.q.weight' not in s:
        return
    scales = indices(s, r'upsamplerx(\d+)\.0\.weight')
    if len(scales) != 1:
        return
    up = scales[0]
    num_feat, num_in = s['fea_conv.weight'].shape[:2]
    deploy = 'B1.c1_r.unit.dbb_reparam.weight' in s
    fold_bn = deploy and 'B1.c1_r.unit.dy_branch.bn1.weight' not in s
    arch = {'type': 'DDistillSR', 'num_in_ch': int(num_in), 'num_out_ch': out(s, f'upsamplerx{up}.2.weight'),
            'num_feat': int(num_feat), 'dyn_dim': out(s, 'B1.c1_r.unit.dy_branch.q.weight'), 'upscale': up,
            'deploy': deploy}
    if fold_bn:
        arch['fold_bn'] = True
    c.add(arch, 'deploy form, BNs folded' if fold_bn else ('deploy form' if deploy else 'train form'))


UNIT = ArchUnit(
    name='DDistill-SR',
    networks={'DDistillSR': f'{__name__}.ddistill_arch'},
    detects=('DDistillSR',),
    detect=detect,
    models=(
        released('DDistill-SR-x4', {'type': 'DDistillSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 56,
                                    'dyn_dim': 16, 'upscale': 4, 'deploy': True},
                 'icandle/DDistill-SR/main/model-backup/DDistill-SRx4_inference.pth',
                 'd0a7a6d99dcfbd8ea605e83354b8c1225bbd6aab6656ca07793df9a7c08db5a4', 'Apache-2.0',
                 'Wang et al., DDistill-SR (icandle/DDistill-SR, model-backup/)',
                 'x4 inference (reparameterized) weights, 56 features, L=16; plain state dict, RGB in [0, 1]',
                 ('DDistillSR-x4', 'DDistill-SRx4')),
        # Not listed: the train-form DDistill-SRx2/x3/x4.pth of the same folder, whose sha256 could not be
        # established here (no network access when this entry was written); listing a file means verifying it.
    ),
)
