"""Cost of a KD iteration with stored enhanced-HR targets vs. a plain SRModel iteration (same student).

With targets in the batch (EnhancedPairedImageDataset) DistillSRModel never runs the teacher, so an iteration
should cost about the same as SRModel's (target: <= 1.2x), with the enhanced-HR L1 loss and with LapPyramidLoss
(L_dis) on the stored targets. Also shown: an online teacher (EDSR nf64 nb16, the EDSR-baseline) for reference.
Each thread count (``--threads``) is measured separately; the runs are interleaved iteration by iteration so that
load from other processes on a shared machine hits all of them alike.

    python benchmarks/bench_distill_iteration.py [--iters 30] [--batch 8] [--gt-size 96] [--threads 1 2]
"""
import argparse
import tempfile
import time
from os import path as osp

import torch
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel

import ddsr  # noqa: F401  (compat + registration)
from ddsr.models.distill_model import DistillSRModel

STUDENT = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 4, 'upscale': 4}
TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 16, 'upscale': 4}


def opt(train_losses: dict, teacher_path: str = None) -> dict:
    train = {'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'total_iter': 1000,
             'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}}
    train.update(train_losses)
    out = {'is_train': True, 'dist': False, 'num_gpu': 0, 'scale': 4, 'network_g': dict(STUDENT),
           'path': {}, 'train': train, 'datasets': {'train': {}}}
    if teacher_path:
        out['network_t'] = dict(TEACHER)
        out['path'].update({'pretrain_network_t': teacher_path, 'param_key_t': 'params'})
    return out


def time_iteration(model, batch, it: int) -> float:
    start = time.perf_counter()
    model.feed_data(batch)
    model.optimize_parameters(it)
    return (time.perf_counter() - start) * 1e3


def median_times(runs, iters: int) -> list:
    """Median ms per iteration of each run; runs are interleaved so that load changes hit all of them alike."""
    times = [[] for _ in runs]
    for it in range(iters + 3):
        for idx, (_, model, data) in enumerate(runs):
            ms = time_iteration(model, data[it % len(data)], it + 1)
            if it >= 3:  # warm-up
                times[idx].append(ms)
    return [sorted(t)[len(t) // 2] for t in times]


def measure(args: argparse.Namespace) -> None:
    """Build the four runs and print the median iteration times and ratios at the current thread count."""
    torch.manual_seed(0)
    lq_size = args.gt_size // 4
    batches = [{'lq': torch.rand(args.batch, 3, lq_size, lq_size),
                'gt': torch.rand(args.batch, 3, args.gt_size, args.gt_size),
                'enhanced': torch.rand(args.batch, 3, args.gt_size, args.gt_size)} for _ in range(4)]
    plain = [{k: v for k, v in b.items() if k != 'enhanced'} for b in batches]
    l1 = {'type': 'L1Loss', 'loss_weight': 1.0}
    with tempfile.TemporaryDirectory() as tmp:
        teacher_path = osp.join(tmp, 'teacher.pth')
        torch.save({'params': build_network(dict(TEACHER)).state_dict()}, teacher_path)
        runs = [
            ('SRModel, L1 to GT', SRModel(opt({'pixel_opt': l1})), plain),
            ('DistillSRModel, stored targets, L1 GT + L1 enh', DistillSRModel(opt({'pixel_opt': l1,
                                                                                   'enhanced_opt': l1})), batches),
            ('DistillSRModel, stored targets, L_dis + 0.1 L1', DistillSRModel(opt({
                'pixel_opt': dict(l1, loss_weight=0.1), 'distill_opt': {'type': 'LapPyramidLoss'}})), batches),
            ('DistillSRModel, online EDSR teacher, L_dis + 0.1 L1', DistillSRModel(opt({
                'pixel_opt': dict(l1, loss_weight=0.1), 'distill_opt': {'type': 'LapPyramidLoss'}}, teacher_path)),
             plain),
        ]
        rows = list(zip([name for name, _, _ in runs], median_times(runs, args.iters), strict=False))
    base = rows[0][1]
    print(f'\nbatch {args.batch}, GT patch {args.gt_size}, student MSRResNet nf32 nb4, CPU threads '
          f'{torch.get_num_threads()}, median of {args.iters} interleaved iterations')
    print(f'{"iteration":54s} {"ms":>8s} {"ratio":>6s}')
    for name, ms in rows:
        print(f'{name:54s} {ms:8.1f} {ms / base:6.2f}x', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--gt-size', type=int, default=96)
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2], help='torch CPU thread counts to measure')
    args = parser.parse_args()
    for threads in args.threads:
        torch.set_num_threads(threads)
        measure(args)


if __name__ == '__main__':
    main()
