"""How far tiled inference is from whole-image inference, per tile size and overlap (the claim in docs/upscale.md).

Runs a network on scikit-image's ``coffee`` photo (400x600 RGB, used as the LR input: no download) whole and with
``--tile N --tile-overlap O`` for every N x O given, and prints max |tiled - whole| in 1/255 units (8-bit output
steps) and the PSNR of the tiled output against the whole one.

    python benchmarks/bench_tiling.py --model DIPNet-x4                 # pretrained by name (ddsr models)
    python benchmarks/bench_tiling.py --weights DIPNet_x4.pth --tiles 128 256 --overlaps 16 32 48 64
"""
import argparse
import math
import os
import subprocess
import sys

import numpy as np
import torch
from skimage import data

import ddsr  # noqa: F401  (registration)
from ddsr.api import ImageUpscaler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--model', help='pretrained network by name')
    src.add_argument('--weights', help='checkpoint (recognised from its keys)')
    parser.add_argument('--tiles', type=int, nargs='+', default=[128, 256])
    parser.add_argument('--overlaps', type=int, nargs='+', default=[16, 32, 48, 64])
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    up = ImageUpscaler.from_pretrained(args.model) if args.model else ImageUpscaler.from_file(args.weights)
    lr = data.coffee().astype(np.float32) / 255  # float in, float out: differences below one 8-bit step show
    load = subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip() if os.name == 'posix' else ''
    print(f'{up.name}: LR {lr.shape[1]}x{lr.shape[0]} (skimage coffee) -> x{up.scale}; {load}')
    whole = up(lr).astype(np.float64) * 255
    print("| tile | overlap | max abs diff (1/255) | PSNR vs whole (dB) |\n|---|---|---|---|")
    for tile in args.tiles:
        for overlap in args.overlaps:
            if overlap >= tile:
                continue
            tiled = up(lr, tile=tile, tile_overlap=overlap).astype(np.float64) * 255
            diff = np.abs(tiled - whole)
            mse = float((diff ** 2).mean())
            psnr = math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)
            print(f'| {tile} | {overlap} | {diff.max():.2f} | {psnr:.1f} |', flush=True)


if __name__ == '__main__':
    sys.exit(main())
