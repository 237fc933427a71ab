"""The measured effects behind docs/compression.md's table of deviations from the compression authors' KD code:
a SwinIR teacher in train mode (theirs) gives random targets, one in eval mode (ddsr's) does not; EDSR has nothing
stochastic; building the teacher before the student (theirs) changes the student's initial weights for one seed."""
import torch

from ddsr.checkpoint import build_network as build

SWINIR_LIGHT = dict(type='SwinIR', upscale=2, in_chans=3, img_size=64, window_size=8, img_range=1.,
                    depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2,
                    upsampler='pixelshuffledirect', resi_connection='1conv')  # BasicSR's drop_path_rate 0.1


def _train_vs_eval(arch: dict, draws: int = 5) -> list[float]:
    torch.manual_seed(0)
    net = build(arch)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = net.eval()(x)
        net.train()
        return [float((net(x) - ref).abs().max()) for _ in range(draws)]


def test_teacher_train_mode_gives_random_targets():
    swin = _train_vs_eval(SWINIR_LIGHT)
    print('SwinIR-light train vs eval, max |diff| per draw:', swin)
    assert min(swin) > 1e-4 and len(set(swin)) > 1  # stochastic depth: a different target at every call
    edsr = _train_vs_eval(dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=2))
    assert max(edsr) == 0.0


def test_teacher_first_changes_the_student_init():
    torch.manual_seed(10)
    student_first = build({'type': 'SwinIRmini'}).state_dict()
    torch.manual_seed(10)
    build(SWINIR_LIGHT)  # the authors' order: teacher, then student
    teacher_first = build({'type': 'SwinIRmini'}).state_dict()
    diff = max(float((a - teacher_first[k]).abs().max()) for k, a in student_first.items() if a.is_floating_point())
    print('student init, max |weight diff| between the two build orders:', diff)
    assert diff > 0.1
