"""Reduced-precision inference (issue 23): per network (DIPNet x4, DDistill-SR x4) and precision (fp32, bf16, int8):

- forward ms: the ``ImageUpscaler`` runner of that precision on one 480x270 LR photo (fastest of ``--runs`` after a
  warm-up; ``ddsr.deploy.backends.min_ms``);
- end to end: ``ddsr upscale --precision P`` on the 6-photo folder of ``bench_upscale_e2e.py`` as a whole process
  (median of ``--runs``, after one run that fills the cache), and its ratio to the authors' fp32 eager script timed the
  same way (``bench_upscale_e2e.BASELINE``, the two interleaved);
- quality: mean PSNR / SSIM (Y channel, ``crop_border`` = scale, BasicSR's metrics) on the 13-photo eval split
  (``ddsr.data.demo.build_eval_data``) and their change vs fp32 (contract: +-0.02 dB for bf16, +-0.05 dB for int8),
  and the max pixel change vs the fp32 output (8-bit levels);
- a time profile of each end-to-end median (ddsr per precision and the official script), split into measured
  parts: (a) start-up: the same command on one 32x32 image (interpreter, imports, weights, network build, ddsr's
  cache lookup; median of ``--runs``, interleaved with the e2e runs); (b) forward: the per-photo forward x the photo
  count (ddsr: the runner above; official: the released deploy network eager, NCHW, ``torch.no_grad``, as the
  script runs it); (c) image I/O: reading the LR photos and writing their outputs (each way's writer: official
  ``cv2.imwrite``, ddsr :func:`ddsr.data.image_io.write_png` at :data:`ddsr.deploy.pipeline.PNG_LEVEL`), in-process;
  (d) rest = e2e - (a) - (b) - (c) (conversions, thread hand-offs; negative where ddsr's reader/writer threads and
  its 2 images in flight overlap the parts). (b) and (c) are the fastest of ``--runs`` (``min_ms``), (a) and e2e
  medians. With it: the standalone ``import torch`` / ``import onnxruntime`` times and, per network, 0.25x of the
  official e2e (issue 23's goal) next to ddsr's lower bound from (a).

The CPU flags that matter (amx_bf16, avx512_bf16, amx_int8, avx512_vnni) and the load average are printed with the
table: run it on an idle machine for publishable times.

    DDSR_PRETRAINED_DIR=... python benchmarks/bench_precision.py [--runs 3] [--quick] \\
        [--out benchmarks/results/precision.md]

``--quick``: 2 eval photos, 2 e2e photos at 160x90 (forward timed at that size too), one timed run (checks the
script, not the machine).
"""
import argparse
import importlib
import json
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
from bench_upscale_e2e import BASELINE, IMPORTS, NETS, photos, timed, tiny_folder  # benchmarks/bench_upscale_e2e.py
from pretrained import pretrained_dir  # benchmarks/pretrained.py
from report import load_average, publish  # benchmarks/report.py

from ddsr import ImageUpscaler
from ddsr.data.demo import build_eval_data
from ddsr.data.image_io import read_image, write_png
from ddsr.deploy.backends import min_ms
from ddsr.deploy.pipeline import PNG_LEVEL
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


def official_forward_ms(module: str, cls: str, kwargs: str, weights: str, x: torch.Tensor, runs: int) -> float:
    """Fastest forward (ms) of the released deploy network built and run as :data:`BASELINE` runs it (eager, NCHW,
    float32, ``torch.no_grad``) on ``x``."""
    model = getattr(importlib.import_module(module), cls)(**json.loads(kwargs))
    model.load_state_dict(torch.load(weights, map_location='cpu'), strict=True)
    model.eval()

    def forward() -> None:
        with torch.no_grad():
            model(x)
    return min_ms(forward, runs)


def io_ms(src: Path, outs: Path, official: bool, runs: int) -> float:
    """Fastest time (ms) to read the LR photos of ``src`` and write their outputs (the PNGs in ``outs``, loaded
    first) the way the official script (``cv2.imread`` / ``cv2.imwrite``) or ``ddsr upscale`` (``read_image`` /
    ``write_png`` at ``PNG_LEVEL``) does."""
    files = sorted(src.glob('*.png'))
    images = [cv2.imread(str(outs / f.name), cv2.IMREAD_UNCHANGED) for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        def read_write() -> None:
            for f, img in zip(files, images, strict=True):
                if official:
                    cv2.imread(str(f), cv2.IMREAD_COLOR)
                    cv2.imwrite(str(Path(tmp) / f.name), img)
                else:
                    read_image(f, 'unchanged')
                    write_png(Path(tmp) / f.name, img, compression=PNG_LEVEL)
        return min_ms(read_write, runs)


def profile_table(parts: dict, n: int) -> list[str]:
    """The profile rows (Markdown) of ``{(net, way): {'e2e', 'startup', 'forward', 'io'} (s)}``, and per network
    0.25x the official e2e next to ddsr's lower bound from the start-up, per precision (the quality contract is in
    the main table)."""
    table = [f'| network | way | e2e ({n} photos) | (a) start-up (1 tiny image) | (b) forward x {n} | (c) image I/O | '
             '(d) rest | (a) + (b) |', '|---|---|---:|---:|---:|---:|---:|---:|']
    notes = []
    for net in dict.fromkeys(k[0] for k in parts):
        for (name, way), t in parts.items():
            if name == net:
                rest = t['e2e'] - t['startup'] - t['forward'] - t['io']
                table.append(f'| {net} x4 | {way} | {t["e2e"]:.2f} s | {t["startup"]:.2f} s | {t["forward"]:.2f} s '
                             f'| {t["io"]:.2f} s | {rest:+.2f} s | {t["startup"] + t["forward"]:.2f} s |')
        goal = 0.25 * parts[net, 'official fp32']['e2e']
        lows = ', '.join(f'{way} {t["startup"]:.2f} s ({"within" if t["startup"] < goal else "BEYOND"})'
                         for (name, way), t in parts.items() if name == net and way != 'official fp32')
        notes.append(f'- {net} x4: 0.25x of the official e2e = {goal:.2f} s; lower bound of the ddsr e2e from (a), '
                     f'per precision (0.25x within or beyond reach of the start-up alone): {lows}')
    return table + [''] + notes


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
        n_photos = len(list((tmp_path / 'in').glob('*.png')))
        tiny = tiny_folder(tmp_path / 'tiny')
        (tmp_path / 'baseline.py').write_text(BASELINE)
        env['DDSR_CACHE_DIR'] = str(tmp_path / 'cache')
        first = sorted((tmp_path / 'in').glob('*.png'))[0]
        x = torch.from_numpy(cv2.imread(str(first))[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
        parts: dict = {}
        for net, (module, cls, kwargs) in NETS.items():
            weights = str(pretrained_dir() / WEIGHTS[net])

            def commands(src: Path, tag: str, module=module, cls=cls, kwargs=kwargs, weights=weights) -> dict:
                cmds = {'official fp32': [sys.executable, str(tmp_path / 'baseline.py'), module, cls, kwargs, weights,
                                          str(src), str(tmp_path / f'base_{cls}{tag}')]}
                for p in PRECISIONS:
                    cmds[p] = [sys.executable, '-m', 'ddsr.cli', 'upscale', '--weights', weights, '-i', str(src),
                               '-o', str(tmp_path / f'{cls}_{p}{tag}'), '--precision', p, *threads]
                return cmds
            cmds, tiny_cmds = commands(tmp_path / 'in', ''), commands(tiny, '_tiny')
            for p in PRECISIONS:
                timed(cmds[p], env)  # fills the cache (probe, export, int8 quantization)
            times: dict[str, list[float]] = {k: [] for k in cmds}
            startup: dict[str, list[float]] = {k: [] for k in cmds}
            for _ in range(runs):
                for key, cmd in cmds.items():
                    times[key].append(timed(cmd, env))
                    startup[key].append(timed(tiny_cmds[key], env))
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
                parts[net, p] = {'e2e': e2e, 'startup': statistics.median(startup[p]),
                                 'forward': forward * n_photos / 1e3,
                                 'io': io_ms(tmp_path / 'in', tmp_path / f'{cls}_{p}', False, runs) / 1e3}
            rows.append(f'| {net} x4 | official fp32 script | | {base:.2f} s | 1.00x | | | | | |')
            parts[net, 'official fp32'] = {
                'e2e': base, 'startup': statistics.median(startup['official fp32']),
                'forward': official_forward_ms(module, cls, kwargs, weights, x, runs) * n_photos / 1e3,
                'io': io_ms(tmp_path / 'in', tmp_path / f'base_{cls}', True, runs) / 1e3}
            print(f'{net} done ({load_average()})', flush=True)
        imports = {name: statistics.median(timed(cmd, env) for _ in range(runs)) for name, cmd in IMPORTS.items()}
        proc = subprocess.run(cmds['fp32'][:-2 - len(threads)] + ['--precision', 'auto', *threads], env=env,
                              capture_output=True, text=True, cwd=REPO)
        auto = proc.stdout.split(' with ', 1)[1].split(' into ')[0] if ' with ' in proc.stdout else proc.stderr[-300:]
    lines.append(f'{load_average()} at end')
    lr = f'{x.shape[3]}x{x.shape[2]}'
    table = [f'| network | precision | forward ms ({lr} LR) | e2e ({n_photos} photos) | e2e vs official | '
             'mean PSNR (Y) | PSNR change vs fp32 (dB) | SSIM change | max pixel change vs fp32 | contract held |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---|', *rows]
    profile = ['## Where the end-to-end time goes', '', *profile_table(parts, n_photos), '',
               '| start-up alone (median) | s |', '|---|---:|', *(f'| {k} | {v:.2f} |' for k, v in imports.items()), '',
               '(d) rest includes the uint8 <-> float conversions and thread hand-offs; it is negative where ddsr\'s '
               'reader/writer threads and its 2 images in flight overlap (b) and (c). (b), (c): fastest of the runs '
               'in this process; e2e, (a): medians of whole processes.']
    report = '\n'.join(lines + [''] + table + ['', f'`--precision auto` on the last network chose: {auto}', '']
                       + profile)
    publish(report, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
