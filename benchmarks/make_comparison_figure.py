"""README's picture: one crop of a held-out photo, x4, as bicubic / DIPNet / DDistill-SR / ground truth.

    python benchmarks/make_comparison_figure.py [--photo coffee] [--out docs/images/comparison_x4.jpg]

The photo comes from the 13-photo eval split (``ddsr make-demo-data --eval``, scikit-image's photographs; none is
in the demo training set). Its LR is the split's MATLAB-bicubic x4 downscale; each network upscales the whole LR
photo with the official weights (found through benchmarks/pretrained.py), bicubic is OpenCV's. The PSNR under each
panel is BasicSR's: Y channel, 4-pixel border cropped, over the WHOLE photo (not the crop). The crop is chosen
here (a detailed region); the picture is written as JPEG (quality 92) to keep the repository small.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrained import pretrained_dir  # noqa: E402

from ddsr.bench.quality import y_psnr_ssim  # noqa: E402
from ddsr.data.demo import EVAL_ROOT, build_eval_data  # noqa: E402
from ddsr.data.image_io import read_image  # noqa: E402
from ddsr.data.side_by_side import bicubic_upscale, crop, side_by_side  # noqa: E402

SCALE = 4
NETWORKS = (('DIPNet', 'DIPNet_x4.pth'), ('DDistill-SR', 'DDistill-SRx4_inference.pth'))
CROPS = {'coffee': (150, 190), 'chelsea': (60, 150), 'brick': (100, 100), 'camera': (60, 180)}  # HR (top, left)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--photo', default='coffee', choices=sorted(CROPS))
    parser.add_argument('--size', type=int, default=192, help='crop side in HR pixels (default 192)')
    parser.add_argument('--out', default='docs/images/comparison_x4.jpg')
    args = parser.parse_args(argv)
    from ddsr import ImageUpscaler
    root = build_eval_data(EVAL_ROOT)
    hr = read_image(os.path.join(root, 'HR', f'{args.photo}.png'))
    lr = read_image(os.path.join(root, 'LR_bicubic', f'X{SCALE}', f'{args.photo}.png'))
    outputs = [('bicubic', bicubic_upscale(lr, SCALE))]
    for label, file in NETWORKS:
        path = pretrained_dir() / file
        if not path.is_file():
            print(f'error: {path} not found (set DDSR_PRETRAINED_DIR)', file=sys.stderr)
            return 2
        rgb = ImageUpscaler.from_file(path)(np.ascontiguousarray(lr[..., ::-1]))
        outputs.append((label, np.ascontiguousarray(rgb[..., ::-1])))
    top, left = CROPS[args.photo]
    panels = []
    for label, sr in outputs:
        psnr, _ = y_psnr_ssim(sr, hr, SCALE)
        print(f'{label:12s} PSNR {psnr:.2f} dB (Y, whole photo)')
        panels.append((f'{label} {psnr:.2f} dB', crop(sr, top, left, args.size)))
    panels.append(('HR (ground truth)', crop(hr, top, left, args.size)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, side_by_side(panels), [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
