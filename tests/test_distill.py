"""Distillation: LapPyramidLoss, feature hooks + FeatureDistillLoss, DistillSRModel, enhanced-HR targets."""
import re
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network

from ddsr.data.enhanced_paired_dataset import EnhancedPairedImageDataset
from ddsr.errors import DDSRError
from ddsr.losses.feature_distill_loss import FeatureDistillLoss
from ddsr.losses.lap_pyramid_loss import LapPyramidLoss
from ddsr.models.distill_model import DistillSRModel
from ddsr.models.parts.hooks import FeatureRecorder
from tests.conftest import run_cli, write_options

TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 24, 'num_block': 2, 'upscale': 4}
STUDENT = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}


# ---------------------------------------------------------------- LapPyramidLoss
def _ref_blur(img: torch.Tensor, gain: float = 1.) -> torch.Tensor:
    """Binomial blur of one (H, W) plane, reflect padding, written out with an explicit 2-D kernel."""
    k1 = torch.tensor([1., 4., 6., 4., 1.], dtype=img.dtype)
    k = gain * k1[:, None] * k1[None, :] / 256.
    padded = F.pad(img[None, None], (2, 2, 2, 2), mode='reflect')[0, 0]
    h, w = img.shape
    out = torch.zeros_like(img)
    for dy in range(5):
        for dx in range(5):
            out += k[dy, dx] * padded[dy:dy + h, dx:dx + w]
    return out


def _ref_pyramid(img: torch.Tensor, levels: int) -> list:
    bands, cur = [], img
    for _ in range(levels - 1):
        b = _ref_blur(cur)
        h, w = b.shape
        down = b.reshape(h // 2, 2, w // 2, 2).mean(dim=(1, 3))
        zeros = torch.zeros_like(cur)
        zeros[0::2, 0::2] = down
        bands.append(cur - _ref_blur(zeros, gain=4.))
        cur = down
    return bands + [cur]


def _ref_lap_l1(a: torch.Tensor, b: torch.Tensor, levels: int) -> torch.Tensor:
    n, c = a.shape[:2]
    total = 0.
    per_level = [[] for _ in range(levels)]
    for i in range(n):
        for j in range(c):
            pyramids = zip(_ref_pyramid(a[i, j], levels), _ref_pyramid(b[i, j], levels), strict=True)
            for lvl, (la, lb) in enumerate(pyramids):
                per_level[lvl].append((la - lb).abs().flatten())
    for lvl, diffs in enumerate(per_level):
        total += 2**lvl * torch.cat(diffs).mean()
    return total


def _ref_ldis(s: torch.Tensor, t: torch.Tensor, levels: int = 5) -> torch.Tensor:
    hs = torch.stack([torch.stack([x - _ref_blur(x) for x in img]) for img in s])
    ht = torch.stack([torch.stack([x - _ref_blur(x) for x in img]) for img in t])
    return _ref_lap_l1(s, t, levels) + _ref_lap_l1(hs, ht, levels)


def test_lap_pyramid_matches_direct_formula():
    torch.manual_seed(0)
    s, t = torch.rand(2, 3, 64, 48, dtype=torch.float64), torch.rand(2, 3, 64, 48, dtype=torch.float64)
    loss = LapPyramidLoss(loss_weight=0.5)(s, t)
    ref = 0.5 * _ref_ldis(s, t)
    assert abs(loss.item() - ref.item()) < 1e-6 * max(1., ref.item())
    assert loss.item() > 0.1
    # the gradient (custom backward of the separable filters) equals autograd's through the direct formula
    s1 = torch.rand(1, 2, 32, 48, dtype=torch.float64, requires_grad=True)
    t1 = torch.rand(1, 2, 32, 48, dtype=torch.float64)
    grad, = torch.autograd.grad(LapPyramidLoss()(s1, t1), s1)
    ref_grad, = torch.autograd.grad(_ref_ldis(s1, t1), s1)
    assert torch.allclose(grad, ref_grad, rtol=1e-6, atol=1e-12)
    # sizes not divisible by 16: the loss is the formula on the bottom/right reflect-padded inputs
    s2, t2 = torch.rand(1, 2, 50, 40, dtype=torch.float64), torch.rand(1, 2, 50, 40, dtype=torch.float64)
    pad = (0, 8, 0, 14)
    ref2 = _ref_ldis(F.pad(s2, pad, mode='reflect'), F.pad(t2, pad, mode='reflect'))
    assert abs(LapPyramidLoss()(s2, t2).item() - ref2.item()) < 1e-6 * max(1., ref2.item())
    # float32 stays within float32 rounding of the float64 value
    s3, t3 = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    loss32 = LapPyramidLoss()(s3, t3).item()
    assert loss32 == pytest.approx(LapPyramidLoss()(s3.double(), t3.double()).item(), rel=1e-5)


def test_lap_pyramid_zero_gradients_and_frequencies():
    torch.manual_seed(1)
    loss_fn = LapPyramidLoss()
    x = torch.rand(1, 3, 64, 64)
    assert loss_fn(x, x.clone()).item() == 0.
    s = x.clone().requires_grad_(True)
    loss_fn(s, torch.rand(1, 3, 64, 64)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    offset = loss_fn(x + 0.1, x).item()  # pure low frequency: only the residual level sees it
    assert offset == pytest.approx(2**4 * 0.1, rel=1e-4)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing='ij')
    checker = (0.05 * (-1.)**(yy + xx)).float().expand(1, 3, 64, 64)
    high = loss_fn(x + checker, x).item()  # pure high frequency: the finest band sees it
    assert high > 0.05
    assert loss_fn(x[..., :50, :40] + checker[..., :50, :40], x[..., :50, :40]).item() > 0.05  # padded size
    with pytest.raises(ValueError, match='too small'):
        loss_fn(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


# ---------------------------------------------------------------- hooks + FeatureDistillLoss
def test_feature_recorder_shapes_tokens_and_bad_names():
    edsr = build_network(dict(TEACHER))
    with FeatureRecorder(edsr, ['body.0', 'body.1', 'conv_after_body']) as rec:
        edsr(torch.rand(2, 3, 12, 10))
    assert [tuple(f.shape) for f in rec.features] == [(2, 24, 12, 10)] * 3
    swin = build_network({'type': 'SwinIR', 'upscale': 2, 'img_size': 16, 'window_size': 4, 'embed_dim': 12,
                          'depths': [1, 1], 'num_heads': [2, 2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect'})
    with FeatureRecorder(swin, ['layers.0', 'layers.1']) as rec:
        swin(torch.rand(1, 3, 16, 12))
    assert [tuple(f.shape) for f in rec.features] == [(1, 12, 16, 12)] * 2
    with pytest.raises(DDSRError, match=r"no module named 'body\.7'.*body\.0"):
        FeatureRecorder(edsr, ['body.7'])


def test_feature_distill_adapters_learn_and_loss_decreases():
    torch.manual_seed(0)
    teacher, student = build_network(dict(TEACHER, img_range=1.)).eval(), build_network(dict(STUDENT))
    loss_fn = FeatureDistillLoss(['conv_first', 'body.0'], ['body.0', 'body.1'], anchor_weights=[1., 2.],
                                 student_channels=[8, 8], teacher_channels=[24, 24])
    assert [tuple(c.weight.shape) for c in loss_fn.adapters.convs] == [(24, 8, 1, 1)] * 2
    params = list(student.parameters()) + list(loss_fn.adapters.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad(), FeatureRecorder(teacher, loss_fn.teacher_anchors) as rec_t:
        teacher(x)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        with FeatureRecorder(student, loss_fn.student_anchors) as rec_s:
            student(x)
        loss = loss_fn(rec_s.features, rec_t.features)
        loss.backward()
        if not losses:
            assert all(c.weight.grad.abs().sum() > 0 for c in loss_fn.adapters.convs)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


# ---------------------------------------------------------------- DistillSRModel (in process)
def _save_teacher(path: Path, net_opt=TEACHER, bias: float = 0.) -> Path:
    torch.manual_seed(3)
    net = build_network(dict(net_opt))
    if bias:
        net.conv_last.bias.data.fill_(bias)
    torch.save({'params': net.state_dict()}, path)
    return path


def _model_opt(teacher_path, teacher=TEACHER, **train):
    train_opt = {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [100],
                 'gamma': 0.5}, 'total_iter': 10, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.1},
                 'distill_opt': {'type': 'LapPyramidLoss', 'loss_weight': 1.0}}
    train_opt.update(train)
    opt = {'is_train': True, 'dist': False, 'num_gpu': 0, 'scale': 4, 'network_g': dict(STUDENT),
           'path': {'pretrain_network_t': str(teacher_path), 'strict_load_t': True}, 'train': train_opt,
           'datasets': {'train': {'gt_size': 64, 'batch_size_per_gpu': 4}}}
    if teacher is not None:
        opt['network_t'] = dict(teacher)
    return opt


def test_model_teacher_frozen_progressive_and_checks(tmp_path):
    torch.manual_seed(0)
    opt = _model_opt(_save_teacher(tmp_path / 't.pth'),
                     feature_opt={'type': 'FeatureDistillLoss', 'student_anchors': ['body.0'],
                                  'teacher_anchors': ['body.1']},
                     progressive={'milestones': [2], 'gt_size': [32, 64], 'batch_size': [4, 2]})
    model = DistillSRModel(opt)
    before = {k: v.clone() for k, v in model.net_t.state_dict().items()}
    model.net_t.train()
    assert not model.net_t.training and not any(p.requires_grad for p in model.net_t.parameters())
    adapter_w = model.cri_feat.adapters.convs[0].weight.clone()
    shapes = []
    for it in (1, 2, 3):
        model.feed_data({'lq': torch.rand(4, 3, 16, 16), 'gt': torch.rand(4, 3, 64, 64)})
        model.optimize_parameters(it)
        shapes.append((tuple(model.lq.shape), tuple(model.output.shape)))
        assert set(model.log_dict) == {'l_pix', 'l_distill', 'l_feat'}
    assert shapes == [((4, 3, 8, 8), (4, 3, 32, 32))] * 2 + [((2, 3, 16, 16), (2, 3, 64, 64))]
    assert all(torch.equal(before[k], v) for k, v in model.net_t.state_dict().items())
    assert not torch.equal(adapter_w, model.cri_feat.adapters.convs[0].weight)
    with pytest.raises(DDSRError, match='scale'):
        DistillSRModel(_model_opt(_save_teacher(tmp_path / 't2.pth', dict(TEACHER, upscale=2)),
                                  teacher=dict(TEACHER, upscale=2)))
    with pytest.raises(DDSRError, match='output range'):
        DistillSRModel(_model_opt(_save_teacher(tmp_path / 't3.pth', bias=5e4)))
    with pytest.raises(DDSRError, match=r"teacher_anchors: no module named 'body\.9'"):
        DistillSRModel(_model_opt(tmp_path / 't.pth', feature_opt={
            'type': 'FeatureDistillLoss', 'student_anchors': ['body.0'], 'teacher_anchors': ['body.9']}))


def test_model_stored_targets_skip_teacher(tmp_path):
    opt = _model_opt(None, teacher=None, pixel_opt=None, enhanced_opt={'type': 'L1Loss', 'loss_weight': 1.0})
    model = DistillSRModel(opt)
    assert model.net_t is None
    enhanced = torch.rand(2, 3, 64, 64)
    model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 64, 64), 'enhanced': enhanced})
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_enh', 'l_distill'}
    assert model.log_dict['l_enh'] == pytest.approx((model.output - enhanced).abs().mean().item(), rel=1e-3)
    model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 64, 64)})
    with pytest.raises(DDSRError, match='no network_t'):
        model.optimize_parameters(2)


# ---------------------------------------------------------------- end to end: basicsr train + resume
def _train_options(teacher_path: str, total_iter: int) -> dict:
    return {
        'name': 'kd_e2e', 'model_type': 'DistillSRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'demo_train', 'type': 'PairedImageDataset', 'dataroot_gt': 'datasets/demo/train/HR',
                      'dataroot_lq': 'datasets/demo/train/LR_bicubic/X4', 'io_backend': {'type': 'disk'},
                      'gt_size': 64, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': 4, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'demo_val', 'type': 'PairedImageDataset', 'dataroot_gt': 'datasets/demo/val/HR',
                    'dataroot_lq': 'datasets/demo/val/LR_bicubic/X4', 'io_backend': {'type': 'disk'}}},
        'network_g': dict(STUDENT), 'network_t': dict(TEACHER),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'pretrain_network_t': teacher_path, 'param_key_t': 'params', 'strict_load_t': True},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': total_iter,
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5}, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.1},
                  'enhanced_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                  'distill_opt': {'type': 'LapPyramidLoss', 'loss_weight': 1.0},
                  'feature_opt': {'type': 'FeatureDistillLoss', 'student_anchors': ['conv_first', 'body.0'],
                                  'teacher_anchors': ['body.0', 'body.1']},
                  'progressive': {'milestones': [4], 'gt_size': [32, 64], 'batch_size': [4, 2]}},
        'val': {'val_freq': 4, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}},
        'logger': {'print_freq': 2, 'save_checkpoint_freq': 4, 'use_tb_logger': False}}


def test_train_resume_end_to_end(workdir):
    teacher = _save_teacher(workdir / 'teacher_edsr.pth')
    teacher_bytes = teacher.read_bytes()
    yml = write_options(workdir / 'kd.yml', _train_options(str(teacher), 4))
    res = run_cli(['basicsr', 'train', '-opt', yml], workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    exp = workdir / 'experiments' / 'kd_e2e'
    log1 = ''.join(p.read_text() for p in sorted(exp.glob('train_*.log')))
    for name in ('l_pix', 'l_enh', 'l_distill', 'l_feat'):
        assert re.search(rf'{name}: [0-9.e+-]+', log1), name
    assert 'Progressive stage 0 at iter 1: gt_size 32, batch_size 4' in log1
    student = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)
    assert set(student) == {'params', 'params_ema'}
    build_network(dict(STUDENT)).load_state_dict(student['params'], strict=True)  # only the student inside
    adapters = torch.load(exp / 'models' / 'net_adapters_4.pth', weights_only=True)['params']
    assert [tuple(adapters[f'convs.{i}.weight'].shape) for i in range(2)] == [(24, 8, 1, 1)] * 2

    res = run_cli(['basicsr', 'train', '-opt', yml, '--auto_resume', '--force_yml', 'train:total_iter=6'], workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    logs = sorted(exp.glob('train_*.log'), key=lambda p: p.stat().st_mtime)
    log2 = logs[-1].read_text()
    assert 'Resuming training from epoch' in log2 and 'iter: 4' in log2
    assert f'pretrain_network_t: {teacher} [params]' in log2
    assert 'net_g_4.pth' in log2 and f'Loading EDSR model from {teacher}' in log2
    assert 'Progressive stage 1 at iter 5: gt_size 64, batch_size 2' in log2
    assert all((exp / 'models' / f'net_{net}_latest.pth').is_file() for net in ('g', 'adapters'))
    assert teacher.read_bytes() == teacher_bytes
    assert not list((exp / 'models').glob('net_t*'))


# ---------------------------------------------------------------- offline enhanced HR
def test_make_enhanced_hr_and_triplet_dataset(workdir, demo_root):
    teacher = _save_teacher(workdir / 'teacher_edsr.pth')
    lq_dir = workdir / 'lq_subset'
    lq_dir.mkdir()
    names = sorted(p.name for p in (demo_root / 'train' / 'LR_bicubic' / 'X4').glob('*.png'))[:6]
    for name in names:
        (lq_dir / name).write_bytes((demo_root / 'train' / 'LR_bicubic' / 'X4' / name).read_bytes())
    out = workdir / 'enhanced_X4'
    args = ['make-enhanced-hr', '--arch', 'EDSR', '--arch-args'] + [f'{k}={v}' for k, v in TEACHER.items()
                                                                    if k != 'type']
    res = run_cli(args + ['--weights', teacher, '--lq', lq_dir, '-o', out, '--lmdb'], workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.glob('*.png')) == names
    assert all(cv2.imread(str(out / n)).shape == (96, 96, 3) for n in names)
    assert len((out.parent / 'enhanced_X4.lmdb' / 'meta_info.txt').read_text().splitlines()) == 6
    assert not list(workdir.glob('.enhanced_tmp_*'))

    hr_dir = workdir / 'hr_subset'
    hr_dir.mkdir()
    for name in names:
        (hr_dir / name).write_bytes((demo_root / 'train' / 'HR' / name).read_bytes())
    for backend, enh, gt, lq in (('disk', out, hr_dir, lq_dir),
                                 ('lmdb', out.parent / 'enhanced_X4.lmdb', demo_root / 'train' / 'HR.lmdb',
                                  demo_root / 'train' / 'LR_bicubic_X4.lmdb')):
        ds = EnhancedPairedImageDataset({
            'phase': 'train', 'scale': 4, 'dataroot_gt': str(gt), 'dataroot_lq': str(lq),
            'dataroot_enhanced': str(enh), 'io_backend': {'type': backend}, 'gt_size': 32,
            'use_hflip': False, 'use_rot': False})
        if backend == 'lmdb':
            ds.paths = [p for p in ds.paths if p['lq_path'] + '.png' in names]
        for idx in range(len(ds.paths)):
            item = ds[idx]
            assert item['enhanced'].shape == item['gt'].shape == (3, 32, 32) and item['lq'].shape == (3, 8, 8)
            name = Path(item['lq_path']).stem + '.png'
            full_gt = torch.from_numpy(cv2.imread(str(demo_root / 'train' / 'HR' / name))[..., ::-1].copy())
            full_enh = torch.from_numpy(cv2.imread(str(out / name))[..., ::-1].copy())
            gt_u8 = (item['gt'] * 255).round().permute(1, 2, 0).to(torch.uint8)
            enh_u8 = (item['enhanced'] * 255).round().permute(1, 2, 0).to(torch.uint8)
            hits = [(y, x) for y in range(0, 65, 4) for x in range(0, 65, 4)
                    if torch.equal(full_gt[y:y + 32, x:x + 32], gt_u8)]
            assert hits and any(torch.equal(full_enh[y:y + 32, x:x + 32], enh_u8) for y, x in hits)
