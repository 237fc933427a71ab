"""``ddsr make-lmdb``: pack a folder of HR images (+ LR folders or generated MATLAB-bicubic LR) into BasicSR LMDBs."""
import argparse
from os import path as osp

from ddsr.commands import add_output
from ddsr.data.lmdb_tools import PRESETS, make_lmdbs
from ddsr.errors import DDSRError

NAME = 'make-lmdb'
HELP = 'pack HR images (and LR: given or MATLAB-bicubic x2/x3/x4) into BasicSR LMDBs, verified, written atomically'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--hr', required=True, help='folder of HR images')
    add_output(parser, 'output folder (<output>/HR.lmdb, <output>/LR_bicubic_X<s>.lmdb; with --preset '
               '<output>/<preset>/)', required=True)
    parser.add_argument('--preset', choices=sorted(PRESETS),
                        help='standard set: test sets are stored whole at x2/x3/x4; DIV2K-train as 480/240 sub-images')
    parser.add_argument('--scales', type=int, nargs='+', help='LR scales (default 2 3 4)')
    parser.add_argument('--lr', action='append', default=[], metavar='SCALE=DIR',
                        help='existing LR folder for a scale (same file stems as HR); other scales are generated')
    parser.add_argument('--crop-size', type=int, help='HR sub-image size (training sets); omit for whole images')
    parser.add_argument('--step', type=int, help='HR sub-image step (default crop size / 2)')
    parser.add_argument('--thresh-size', type=int,
                        help='keep a last row/column if it leaves more than this uncovered (default 0)')
    parser.add_argument('--modcrop', type=int, help='crop HR to a multiple of this (default: lcm of the scales)')
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression level in the LMDB (default 1)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing LMDBs')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')


def _parse_lr(values) -> dict[int, str]:
    lr_dirs = {}
    for value in values:
        scale, sep, folder = value.partition('=')
        if not sep or not scale.lstrip('xX').isdigit():
            raise DDSRError(f'--lr expects SCALE=DIR, got {value!r}')
        lr_dirs[int(scale.lstrip('xX'))] = folder
    return lr_dirs


def run(args: argparse.Namespace) -> int:
    preset = PRESETS.get(args.preset, {})
    out = osp.join(args.output, args.preset) if args.preset else args.output
    crop_size = args.crop_size if args.crop_size is not None else preset.get('crop_size')
    summary = make_lmdbs(
        args.hr, out, scales=args.scales or preset.get('scales', (2, 3, 4)), lr_dirs=_parse_lr(args.lr),
        crop_size=crop_size, step=args.step if args.step is not None else preset.get('step'),
        thresh_size=args.thresh_size if args.thresh_size is not None else preset.get('thresh_size', 0),
        mod=args.modcrop, overwrite=args.overwrite, compress_level=args.compress_level, progress=not args.quiet)
    print(f'verified (read back via BasicSR FileClient lmdb): {"sub-images" if crop_size else "whole images"}')
    for row in summary:
        (h0, w0), (h1, w1) = row['min_hw'], row['max_hw']
        sizes = f'{w0}x{h0}' if (h0, w0) == (h1, w1) else f'{w0}x{h0} .. {w1}x{h1}'
        print(f'  {row["path"]}: {row["images"]} images, {sizes}, {row["mbytes"]:.1f} MB')
    return 0
