"""Reduced-precision inference (issue 23): per network (DIPNet x4, DDistill-SR x4) and precision (fp32, bf16, int8):

- forward ms: the ``ImageUpscaler`` runner of that precision on one 480x270 LR photo (fastest of ``--runs`` after a
  warm-up; ``ddsr.deploy.backends.min_ms``);
- end to end: ``ddsr upscale --precision P`` on the 6-photo folder of ``bench_upscale_e2e.py`` as a whole process
  (median of ``--runs``, after one run that fills the cache), and its ratio to the authors' fp32 eager script timed the
  same way (``bench_upscale_e2e.BASELINE``, the two interleaved);
- quality: mean PSNR / SSIM (Y channel, ``crop_border`` = scale, BasicSR's metrics) on the 13-photo eval split
  (``ddsr.data.demo.build_eval_data``) and their change vs fp32 (contract: +-0.02 dB for bf16, +-0.05 dB for int8),
  and the max pixel change vs the fp32 output (8-bit levels).

The CPU flags that matter (amx_bf16, avx512_bf16, amx_int8, avx512_vnni) and the load average are printed with the
table: run it on an idle machine for publishable times.

    DDSR_PRETRAINED_DIR=... python benchmarks/bench_precision.py [--runs 3] [--quick] \\
        [--out benchmarks/results/precision.md]

``--quick``: 2 eval photos, 2 e2e photos at 160x90, one timed run (checks the script, not the machine).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from bench_upscale_e2e import BASELINE, NETS, photos, timed  # benchmarks/bench_upscale_e2e.py
from pretrained import pretrained_dir  # benchmarks/pretrained.py
from report import load_average, publish  # benchmarks/report.py

from ddsr import ImageUpscaler
from ddsr.data.demo import build_eval_data
from ddsr.deploy.backends import min_ms
from ddsr.deploy.precision import NATIVE_FLAGS, cpu_flags

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = {'DIPNet': 'DIPNet_x4.pth', 'DDistill-SR': 'DDistill-SRx4_inference.pth'}
PRECISIONS = ('fp32', 'bf16', 'int8')
CONTRACT_DB = {'fp32': 0.0, 'bf16': 0.02, 'int8': 0.05}  # issue 23's quality contract (mean PSNR change vs fp32)
SCALE = 4


def eval_pairs(root: str, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) BGR uint8 pairs of the eval split (x4)."""
    names = sorted(os.listdir(Path(root) / 'HR'))[:limit]
    return [(cv2.imread(str(Path(root) / 'LR_bicubic' / f'X{SCALE}' / n)), cv2.imread(str(Path(root) / 'HR' / n)))
            for n in names]


def quality(up: ImageUpscaler, pairs: list) -> tuple[float, float, list[np.ndarray]]:
    """Mean PSNR, mean SSIM (Y, border cropped) and the outputs (the runner works on cv2's BGR via upscale_array)."""
    from ddsr.api import upscale_array
    outs = [upscale_array(up.runner, lr) for lr, _ in pairs]
    psnr = [calculate_psnr(o, hr, SCALE, test_y_channel=True) for o, (_, hr) in zip(outs, pairs, strict=True)]
    ssim = [calculate_ssim(o, hr, SCALE, test_y_channel=True) for o, (_, hr) in zip(outs, pairs, strict=True)]
    return float(np.mean(psnr)), float(np.mean(ssim)), outs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--quick', action='store_true', help='tiny setting: checks that the script works')
    parser.add_argument('--threads', type=int, default=None, help='torch / onnxruntime threads (default: library)')
    parser.add_argument('--out', help='also write the report (Markdown) here')
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = sorted(cpu_flags() & {f for names in NATIVE_FLAGS.values() for f in names})
    lines = [f'CPU flags: {", ".join(flags) or "none of " + str(NATIVE_FLAGS)}; threads: {args.threads or "default"} '
             f'({os.cpu_count()} CPUs); {load_average()} at start' + ('; --quick' if args.quick else '')]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    threads = ['--threads', str(args.threads)] if args.threads else []
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pairs = eval_pairs(build_eval_data(str(tmp_path / 'eval')), 2 if args.quick else None)
        (tmp_path / 'in').mkdir()
        for name, img in list(photos().items())[:2 if args.quick else None]:
            cv2.imwrite(str(tmp_path / 'in' / f'{name}.png'), cv2.resize(img, (160, 90), interpolation=cv2.INTER_AREA)
                        if args.quick else img)
        (tmp_path / 'baseline.py').write_text(BASELINE)
        env['DDSR_CACHE_DIR'] = str(tmp_path / 'cache')
        x = torch.from_numpy(next(iter(photos().values()))[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
        for net, (module, cls, kwargs) in NETS.items():
            weights = str(pretrained_dir() / WEIGHTS[net])
            cmds = {'official fp32': [sys.executable, str(tmp_path / 'baseline.py'), module, cls, kwargs, weights,
                                      str(tmp_path / 'in'), str(tmp_path / f'base_{cls}')]}
            for p in PRECISIONS:
                cmds[p] = [sys.executable, '-m', 'ddsr.cli', 'upscale', '--weights', weights, '-i',
                           str(tmp_path / 'in'), '-o', str(tmp_path / f'{cls}_{p}'), '--precision', p, *threads]
                timed(cmds[p], env)  # fills the cache (probe, export, int8 quantization)
            times: dict[str, list[float]] = {k: [] for k in cmds}
            for _ in range(runs):
                for key, cmd in cmds.items():
                    times[key].append(timed(cmd, env))
            base = statistics.median(times['official fp32'])
            ref: dict = {}
            for p in PRECISIONS:
                up = ImageUpscaler.from_file(weights, precision=p)
                forward = min_ms(lambda up=up: up.runner(x), runs)
                psnr, ssim, outs = quality(up, pairs)
                ref = ref or {'psnr': psnr, 'ssim': ssim, 'outs': outs}
                diff = max(int(np.abs(o.astype(int) - r.astype(int)).max()) for o, r in zip(outs, ref['outs'],
                                                                                            strict=True))
                e2e = statistics.median(times[p])
                held = abs(psnr - ref['psnr']) <= CONTRACT_DB[p]
                rows.append(f'| {net} x4 | {p} | {forward:.0f} | {e2e:.2f} s | {e2e / base:.2f}x | {psnr:.3f} | '
                            f'{psnr - ref["psnr"]:+.3f} | {ssim - ref["ssim"]:+.4f} | {diff} | '
                            f'{"yes" if held else "NO"} |')
            rows.append(f'| {net} x4 | official fp32 script | | {base:.2f} s | 1.00x | | | | | |')
            print(f'{net} done ({load_average()})', flush=True)
        proc = subprocess.run(cmds['fp32'][:-2 - len(threads)] + ['--precision', 'auto', *threads], env=env,
                              capture_output=True, text=True, cwd=REPO)
        auto = proc.stdout.split(' with ', 1)[1].split(' into ')[0] if ' with ' in proc.stdout else proc.stderr[-300:]
    lines.append(f'{load_average()} at end')
    table = ['| network | precision | forward ms (480x270 LR) | e2e (6 photos) | e2e vs official | mean PSNR (Y) | '
             'PSNR change vs fp32 (dB) | SSIM change | max pixel change vs fp32 | contract held |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---|', *rows]
    report = '\n'.join(lines + [''] + table + ['', f'`--precision auto` on the last network chose: {auto}'])
    publish(report, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
