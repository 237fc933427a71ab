"""Data-loading throughput of BasicSR's PairedImageDataset: LMDB vs PNG folders, same samples, same crops.

    python benchmarks/bench_lmdb_loading.py [--demo-root datasets/demo] [--scale 4] [--epochs 3] [--repeats 3]

Reads the demo train split (96x96 HR sub-images + MATLAB-bicubic LR) through ``io_backend: lmdb`` and
``io_backend: disk`` with identical options (gt_size 64, flips/rotations), seeding Python's ``random`` the same
way before each pass so both backends produce the same crops (checked). Each pass runs ``epochs`` epochs of
``dataset[i]`` in order (decode + crop + augment + to tensor, no DataLoader workers); one untimed warm-up pass per
backend fills the page cache. Prints samples/s (median of ``repeats`` passes) and the LMDB / PNG ratio.
"""
import argparse
import random
import statistics
import sys
import time
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from basicsr.data.paired_image_dataset import PairedImageDataset  # noqa: E402

import ddsr  # noqa: E402,F401  (compat before basicsr)
from ddsr.data.demo import build_demo_data  # noqa: E402


def dataset(root: str, scale: int, backend: str, gt_size: int) -> PairedImageDataset:
    train = osp.join(root, 'train')
    if backend == 'lmdb':
        gt, lq = osp.join(train, 'HR.lmdb'), osp.join(train, f'LR_bicubic_X{scale}.lmdb')
    else:
        gt, lq = osp.join(train, 'HR'), osp.join(train, 'LR_bicubic', f'X{scale}')
    opt = dict(name=f'demo_{backend}', dataroot_gt=gt, dataroot_lq=lq, io_backend=dict(type=backend),
               filename_tmpl='{}', gt_size=gt_size, use_hflip=True, use_rot=True, scale=scale, phase='train')
    data = PairedImageDataset(opt)
    # LMDB samples come in sorted key order, folder samples in os.scandir order: align them for equal crops
    data.paths.sort(key=lambda p: osp.splitext(osp.basename(p['gt_path']))[0])
    return data


def one_pass(data: PairedImageDataset, epochs: int, seed: int = 0) -> float:
    random.seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in range(len(data)):
            data[idx]
    return epochs * len(data) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--demo-root', default=osp.join('datasets', 'demo'))
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--gt-size', type=int, default=64)
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    root = build_demo_data(args.demo_root)
    sets = {backend: dataset(root, args.scale, backend, args.gt_size) for backend in ('lmdb', 'disk')}
    assert len(sets['lmdb']) == len(sets['disk']), 'LMDB and PNG folders hold different sample counts'
    for idx in (0, len(sets['disk']) - 1):  # same seed -> same crop and augmentation from both backends
        random.seed(idx)
        a = sets['lmdb'][idx]
        random.seed(idx)
        b = sets['disk'][idx]
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq']), f'sample {idx} differs'
    rates = {}
    for backend, data in sets.items():
        one_pass(data, 1)  # warm-up: page cache, lazy LMDB open
        rates[backend] = statistics.median(one_pass(data, args.epochs) for _ in range(args.repeats))
    n = len(sets['disk'])
    print(f'PairedImageDataset, demo train x{args.scale}: {n} pairs (HR 96x96 -> crop {args.gt_size}), '
          f'{args.epochs} epochs per pass, median of {args.repeats} passes, torch threads {torch.get_num_threads()}')
    print(f'{"backend":<8} {"samples/s":>10}')
    for backend, rate in rates.items():
        print(f'{"PNG" if backend == "disk" else "LMDB":<8} {rate:>10.1f}')
    print(f'LMDB / PNG throughput ratio: {rates["lmdb"] / rates["disk"]:.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
