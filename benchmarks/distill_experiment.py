"""Does distillation help? Same student, iterations and seed: trained on GT only vs. distilled from a better teacher.

Steps (CPU, demo data, every training a real ``basicsr train`` run):

1. Teacher. With ``DDistill-SRx4_inference.pth`` in the pretrained folder (``$DDSR_PRETRAINED_DIR``, default
   ``experiments/pretrained_models/``) (``--teacher auto``, the realistic KD setting): the official
   DDistill-SR x4 weights (trained on DF2K). Without it (or ``--teacher train``): a larger BasicSR EDSR trained
   here for ``--teacher-iters`` iterations. The output says which.
2. Enhanced HR: ``ddsr make-enhanced-hr`` runs the teacher once over the training LR set (offline targets).
3. (a) student, L1 to GT (SRModel); (b) the same student, same iterations, seed and patches (disk backend, one
   seed: EnhancedPairedImageDataset draws the same crops as PairedImageDataset) with DistillSRModel on the stored
   teacher outputs, once per KD loss the methods prescribe (``--kd-loss both``, default): the compression
   paper's L = L_dis(S, T) + 0.1 * L1(S, HR) (LapPyramidLoss) and DIPNet's enhanced HR, L1(S, T) + 0.1 L1(S, HR).
4. Y-PSNR (border 4, as BasicSR's validation) on the held-out demo val split for bicubic (MATLAB-style
   upsampling), the teacher and every student, all computed by the same function.

Three student runs of 500 iterations. Measured: 1822 s on a 2-core CPU shared with other jobs (load 7-9, up to
2 s per iteration); the idle time was not measured (estimated 3-5 minutes). Use ``--kd-loss lap`` or
``--kd-loss enhanced`` (one KD student) or fewer ``--iters`` to shorten it.

    python benchmarks/distill_experiment.py [--iters 500] [--teacher auto|train] [--workdir /tmp/kdx]
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.matlab_functions import imresize
from pretrained import pretrained_dir

import ddsr  # noqa: F401  (compat + registration)
from ddsr.checkpoint import load_weights

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = pretrained_dir() / 'DDistill-SRx4_inference.pth'
PRETRAINED_TEACHER = {'type': 'DDistillSR', 'num_feat': 56, 'dyn_dim': 16, 'upscale': 4, 'deploy': True}
TRAINED_TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 8, 'upscale': 4,
                   'img_range': 1.0}
STUDENT = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2, 'upscale': 4}
TRAIN_HR, TRAIN_LR = 'datasets/demo/train/HR', 'datasets/demo/train/LR_bicubic/X4'
VAL_HR, VAL_LR = 'datasets/demo/val/HR', 'datasets/demo/val/LR_bicubic/X4'
KD_LOSSES = {
    'lap': {'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.1},
            'distill_opt': {'type': 'LapPyramidLoss', 'loss_weight': 1.0}},
    'enhanced': {'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.1},
                 'enhanced_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
}
KD_NAMES = {'lap': 'L_dis(S,T) + 0.1 L1(S,HR)', 'enhanced': 'L1(S,T) + 0.1 L1(S,HR)'}


def options(name: str, net: dict, iters: int, model: str = 'SRModel', train_extra: dict = None,
            enhanced: str = None) -> dict:
    """BasicSR training options on the demo data (disk backend, so that every run sees the same patches)."""
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]}, 'total_iter': iters,
             'scheduler': {'type': 'MultiStepLR', 'milestones': [int(iters * 0.6), int(iters * 0.85)], 'gamma': 0.5},
             'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
    train.update(train_extra or {})
    dataset = {'name': 'demo_train', 'type': 'PairedImageDataset', 'dataroot_gt': TRAIN_HR, 'dataroot_lq': TRAIN_LR,
               'io_backend': {'type': 'disk'}, 'gt_size': 64, 'use_hflip': True, 'use_rot': True,
               'num_worker_per_gpu': 0, 'batch_size_per_gpu': 16, 'dataset_enlarge_ratio': 1,
               'prefetch_mode': None}
    if enhanced:
        dataset.update(type='EnhancedPairedImageDataset', dataroot_enhanced=enhanced)
    return {
        'name': name, 'model_type': model, 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': dataset,
                     'val': {'name': 'demo_val', 'type': 'PairedImageDataset', 'dataroot_gt': VAL_HR,
                             'dataroot_lq': VAL_LR, 'io_backend': {'type': 'disk'}}},
        'network_g': dict(net), 'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': train,
        'val': {'val_freq': iters, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}},
        'logger': {'print_freq': 100, 'save_checkpoint_freq': iters, 'use_tb_logger': False}}


def cli(args: list[str], workdir: Path) -> None:
    res = subprocess.run([sys.executable, '-m', 'ddsr.cli', *args], cwd=workdir, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED='1'))
    if res.returncode:
        sys.exit(f'{" ".join(args[:3])} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}')


def train(workdir: Path, opt: dict) -> tuple[Path, float]:
    """Run ``basicsr train`` on ``opt``; return (final student checkpoint, seconds)."""
    yml = workdir / f'{opt["name"]}.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    start = time.time()
    cli(['basicsr', 'train', '-opt', str(yml)], workdir)
    return workdir / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth', time.time() - start


def val_pairs(workdir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) BGR float32 [0, 1] images of the held-out val split."""
    pairs = []
    for hr_path in sorted((workdir / VAL_HR).glob('*.png')):
        hr = cv2.imread(str(hr_path)).astype(np.float32) / 255.
        lr = cv2.imread(str(workdir / VAL_LR / hr_path.name)).astype(np.float32) / 255.
        pairs.append((lr, hr))
    return pairs


def mean_psnr(upscale, pairs) -> float:
    """Mean Y-PSNR (border 4) of ``upscale(lr) -> BGR uint8`` over the pairs, as BasicSR's validation."""
    scores = [calculate_psnr(upscale(lr), (hr * 255.).round().astype(np.uint8), crop_border=4, test_y_channel=True)
              for lr, hr in pairs]
    return float(np.mean(scores))


def net_upscale(net: torch.nn.Module):

    @torch.no_grad()
    def run(lr: np.ndarray) -> np.ndarray:
        return tensor2img(net(img2tensor(lr, bgr2rgb=True, float32=True)[None]).clamp_(0, 1), rgb2bgr=True)

    return run


def bicubic(lr: np.ndarray) -> np.ndarray:
    return tensor2img(img2tensor(np.clip(imresize(lr, 4), 0, 1), bgr2rgb=True), rgb2bgr=True)


def load(net_opt: dict, path, param_key: str = 'params') -> torch.nn.Module:
    return load_weights(build_network(dict(net_opt)), str(path), param_key).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=500, help='student iterations (both runs)')
    parser.add_argument('--teacher', choices=('auto', 'train'), default='auto',
                        help='auto: pretrained DDistill-SR x4 when the pretrained folder has it, else train one')
    parser.add_argument('--teacher-iters', type=int, default=3000, help='iterations of a trained teacher')
    parser.add_argument('--kd-loss', choices=sorted(KD_LOSSES) + ['both'], default='both',
                        help='lap: L_dis(S,T) + 0.1 L1(S,HR) (Jiang et al.); enhanced: L1(S,T) + 0.1 L1(S,HR) '
                        '(DIPNet-style enhanced HR); both: one student each (default)')
    parser.add_argument('--workdir', default='/tmp/ddsr_distill_experiment')
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    demo = workdir / 'datasets' / 'demo'
    if not demo.exists() and (REPO / 'datasets' / 'demo').is_dir():
        demo.parent.mkdir(exist_ok=True)
        demo.symlink_to(REPO / 'datasets' / 'demo')  # otherwise the CLI builds it there on first use
    start = time.time()
    rows: dict[str, tuple[str, float]] = {}

    if args.teacher == 'auto' and PRETRAINED.is_file():
        teacher_opt, teacher_path, t_iters = PRETRAINED_TEACHER, PRETRAINED, 'pretrained (DF2K)'
        teacher_name = 'teacher DDistill-SR x4, official pretrained weights'
        print(f'Teacher: pretrained DDistill-SR x4 from {PRETRAINED}', flush=True)
    else:
        reason = 'requested' if args.teacher == 'train' else f'{PRETRAINED} not found'
        print(f'Teacher: training BasicSR EDSR nf64 nb8 here for {args.teacher_iters} iterations ({reason})',
              flush=True)
        teacher_path, sec = train(workdir, options('kdx_teacher', TRAINED_TEACHER, args.teacher_iters))
        teacher_opt, t_iters = TRAINED_TEACHER, f'{args.teacher_iters} ({sec:.0f} s)'
        teacher_name = 'teacher EDSR nf64 nb8, trained here'
    teacher = load(teacher_opt, teacher_path)

    enhanced = workdir / 'enhanced_X4'
    arch_args = [f'{k}={v}' for k, v in teacher_opt.items() if k != 'type']
    marker, made_by = enhanced / '.made_by', f'{teacher_opt} {teacher_path} {os.path.getmtime(teacher_path)}'
    if marker.is_file() and marker.read_text() == made_by:
        print(f'Enhanced HR: reusing {enhanced} (same teacher)', flush=True)
    else:
        t0 = time.time()
        cli(['make-enhanced-hr', '--arch', teacher_opt['type'], '--arch-args', *arch_args, '--weights',
             str(teacher_path), '--lq', TRAIN_LR, '-o', str(enhanced), '--device', 'cpu'], workdir)
        marker.write_text(made_by)
        print(f'Enhanced HR (teacher outputs on the training LR set) written in {time.time() - t0:.0f} s', flush=True)

    student_a, sec_a = train(workdir, options('kdx_student_gt', STUDENT, args.iters))
    print(f'(a) done in {sec_a:.0f} s', flush=True)
    kd_students = []
    for kd_loss in (sorted(KD_LOSSES) if args.kd_loss == 'both' else [args.kd_loss]):
        path, sec = train(workdir, options(f'kdx_student_kd_{kd_loss}', STUDENT, args.iters, 'DistillSRModel',
                                           KD_LOSSES[kd_loss], enhanced=str(enhanced)))
        kd_students.append((KD_NAMES[kd_loss], path))
        print(f'(b) {KD_NAMES[kd_loss]} done in {sec:.0f} s', flush=True)

    pairs = val_pairs(workdir)
    rows = [('bicubic (MATLAB-style)', '-', mean_psnr(bicubic, pairs)),
            (teacher_name, t_iters, mean_psnr(net_upscale(teacher), pairs)),
            ('(a) student, L1 to GT', str(args.iters), mean_psnr(net_upscale(load(STUDENT, student_a)), pairs))]
    rows += [(f'(b) student, KD {name}', str(args.iters), mean_psnr(net_upscale(load(STUDENT, path)), pairs))
             for name, path in kd_students]
    print(f'\nStudent MSRResNet nf16 nb2 ({sum(p.numel() for p in build_network(dict(STUDENT)).parameters()):,} '
          f'params), batch 16, GT patch 64, Adam 1e-3, seed 0; val = demo val split ({len(pairs)} images), '
          'Y-PSNR, border 4')
    print(f'{"model":58s} {"iterations":>18s} {"val Y-PSNR":>10s}')
    for name, iters, psnr in rows:
        print(f'{name:58s} {iters:>18s} {psnr:10.3f}')
    print(f'\nteacher - GT-only student: {rows[1][2] - rows[2][2]:+.3f} dB')
    for name, _, psnr in rows[3:]:
        print(f'KD gain over GT-only (same student, iterations, seed, patches), {name[len("(b) student, "):]}: '
              f'{psnr - rows[2][2]:+.3f} dB')
    print(f'total {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
