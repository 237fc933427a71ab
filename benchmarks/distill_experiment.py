"""Does distillation help? Same student, iterations and seed, trained on GT only vs. distilled from a teacher.

Runs three ``basicsr train`` jobs on the demo data (CPU): (1) a teacher (BasicSR EDSR), (2) the student with
L1 to GT only (SRModel), (3) the same student with DistillSRModel: L = L_dis(S, T) + 0.1 * L1(S, HR) (the
compression paper's KD loss, teacher run online). Prints the validation Y-PSNR (crop = scale) on the held-out
demo split for all three.

    python benchmarks/distill_experiment.py [--teacher-iters 400] [--student-iters 300] [--workdir /tmp/kd]
"""
import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 4, 'upscale': 4}
STUDENT = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2, 'upscale': 4}


def options(name: str, net: dict, iters: int, model: str = 'SRModel', train_extra: dict = None) -> dict:
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]}, 'total_iter': iters,
             'scheduler': {'type': 'MultiStepLR', 'milestones': [int(iters * 0.8)], 'gamma': 0.5},
             'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
    train.update(train_extra or {})
    return {
        'name': name, 'model_type': model, 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'demo_train', 'type': 'PairedImageDataset',
                      'dataroot_gt': 'datasets/demo/train/HR.lmdb',
                      'dataroot_lq': 'datasets/demo/train/LR_bicubic_X4.lmdb',
                      'io_backend': {'type': 'lmdb'}, 'gt_size': 64, 'use_hflip': True, 'use_rot': True,
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': 8, 'dataset_enlarge_ratio': 1,
                      'prefetch_mode': None},
            'val': {'name': 'demo_val', 'type': 'PairedImageDataset', 'dataroot_gt': 'datasets/demo/val/HR',
                    'dataroot_lq': 'datasets/demo/val/LR_bicubic/X4', 'io_backend': {'type': 'disk'}}},
        'network_g': dict(net), 'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': train,
        'val': {'val_freq': iters, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}},
        'logger': {'print_freq': 50, 'save_checkpoint_freq': iters, 'use_tb_logger': False}}


def train(workdir: Path, opt: dict) -> float:
    """Run basicsr train on ``opt``; return (final val PSNR, seconds)."""
    yml = workdir / f'{opt["name"]}.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    start = time.time()
    res = subprocess.run([sys.executable, '-m', 'ddsr.cli', 'basicsr', 'train', '-opt', str(yml)], cwd=workdir,
                         capture_output=True, text=True)
    if res.returncode:
        sys.exit(f'{opt["name"]} failed:\n{res.stderr[-3000:]}')
    log = ''.join(p.read_text() for p in sorted((workdir / 'experiments' / opt['name']).glob('train_*.log')))
    return float(re.findall(r'# psnr: ([0-9.]+)', log)[-1]), time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--teacher-iters', type=int, default=400)
    parser.add_argument('--student-iters', type=int, default=300)
    parser.add_argument('--workdir', default='/tmp/ddsr_distill_experiment')
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)  # the CLI builds datasets/demo there on first use
    os.environ.setdefault('PYTHONUNBUFFERED', '1')

    rows = []
    psnr_t, sec = train(workdir, options('kdx_teacher', TEACHER, args.teacher_iters))
    rows.append(('teacher EDSR nf32 nb4', args.teacher_iters, psnr_t, sec))
    teacher_path = str(workdir / 'experiments' / 'kdx_teacher' / 'models' / 'net_g_latest.pth')
    psnr_a, sec = train(workdir, options('kdx_student_gt', STUDENT, args.student_iters))
    rows.append(('(a) student, L1 to GT', args.student_iters, psnr_a, sec))
    kd = options('kdx_student_kd', STUDENT, args.student_iters, 'DistillSRModel',
                 {'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.1},
                  'distill_opt': {'type': 'LapPyramidLoss', 'loss_weight': 1.0}})
    kd['network_t'] = dict(TEACHER)
    kd['path'].update({'pretrain_network_t': teacher_path, 'param_key_t': 'params'})
    psnr_b, sec = train(workdir, kd)
    rows.append(('(b) student, L_dis(S,T) + 0.1 L1', args.student_iters, psnr_b, sec))

    print(f'\n{"run":36s} {"iters":>6s} {"val Y-PSNR":>11s} {"time s":>7s}')
    for name, iters, psnr, sec in rows:
        print(f'{name:36s} {iters:6d} {psnr:11.3f} {sec:7.0f}')
    print(f'\nKD gain over GT-only (same student, iterations, seed): {psnr_b - psnr_a:+.3f} dB')


if __name__ == '__main__':
    main()
