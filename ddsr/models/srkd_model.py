"""SRModelKD: the authors' option format of the KD stage of Jiang et al., run by :class:`DistillSRModel`.

The released distillation files (``distill_EDSR_Minix2_KD.yml``, ``distill_SwinIRmini_SRx2_scratch_kd.yml``) use
``model_type: SRModelKD`` with their own keys. They are mapped onto DistillSRModel's before anything is built:

- ``tea_network_g`` -> ``network_t``;
- ``tea_path.pretrain_network_g`` / ``strict_load_g`` / ``param_key_g`` -> ``path.pretrain_network_t`` /
  ``strict_load_t`` / ``param_key_t``;
- ``train.dis_opt`` (student vs teacher output) -> ``train.distill_opt``;
- ``train.stu_opt`` (student vs GT) -> ``train.pixel_opt``;
- ``train.alpha`` is dropped: the authors' model never reads it.

The loss is the authors': ``dis_opt(S, T) + stu_opt(S, HR)``. Differences from their model (both deliberate): the
teacher runs in eval mode under ``torch.no_grad`` (theirs stays in train mode, where SwinIR's default stochastic
depth, drop_path_rate 0.1, is active in the teacher's forward), and validation of a ``SwinIR`` student pads the
input to a multiple of the window size as BasicSR's SwinIRModel does (theirs does the same in ``test_swinIR``).
"""
from basicsr.models.swinir_model import SwinIRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ddsr.models.distill_model import DistillSRModel

TEACHER_PATH_KEYS = {'pretrain_network_g': 'pretrain_network_t', 'strict_load_g': 'strict_load_t',
                     'param_key_g': 'param_key_t'}
LOSS_KEYS = {'dis_opt': 'distill_opt', 'stu_opt': 'pixel_opt'}


def translate(opt: dict) -> dict:
    """The authors' SRModelKD options mapped in place onto DistillSRModel's (see the module docstring)."""
    if 'tea_network_g' in opt:
        opt['network_t'] = opt.pop('tea_network_g')
    tea_path = opt.pop('tea_path', None) or {}
    for theirs, ours in TEACHER_PATH_KEYS.items():
        if theirs in tea_path:
            opt['path'][ours] = tea_path[theirs]
    train = opt.get('train') or {}
    for theirs, ours in LOSS_KEYS.items():
        if theirs in train:
            train[ours] = train.pop(theirs)
    if 'alpha' in train:
        get_root_logger().info(f"train.alpha ({train.pop('alpha')}) ignored: the authors' SRModelKD never reads it")
    return opt


@MODEL_REGISTRY.register()
class SRModelKD(DistillSRModel):
    """DistillSRModel reading the authors' KD option keys (see the module docstring)."""

    def __init__(self, opt: dict):
        super().__init__(translate(opt))

    def test(self):
        if self.opt['network_g'].get('type') == 'SwinIR':
            return SwinIRModel.test(self)
        return super().test()
