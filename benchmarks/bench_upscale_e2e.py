"""End-to-end speed as a user feels it: a folder of 6 photos (480x270 LR -> 1920x1080, x4) super-resolved by whole
processes, the official releases' way vs ``ddsr upscale``.

Baseline (what the authors' test scripts do: xiumu00/DIPNet ``test_demo.py``, icandle/DDistill-SR's BasicSR test):
a fresh ``python`` process importing only torch, cv2 and the deploy network module, building the network, loading the
released weights (``torch.load`` + ``load_state_dict(strict=True)``), then per image: ``cv2.imread``, BGR->RGB,
float [0, 1] NCHW tensor, eager ``model(x)`` under ``torch.no_grad``, clamp, round to uint8, ``cv2.imwrite``.
ddsr: ``python -m ddsr.cli upscale --weights W --arch A -i in -o out`` with a private cache folder
(``DDSR_CACHE_DIR``); its first run (probe + export, filling the cache) is timed and reported apart, the timed runs
start from the filled cache, as every later use does.

Each figure: median of ``--runs`` wall times, the two commands interleaved per run (the machine is shared and
noisy); ``uptime`` load averages are printed with the table. Outputs are compared (max |diff| in 8-bit levels).
A profile of the ddsr runs (start-up vs per-image work) follows the table.

    python benchmarks/bench_upscale_e2e.py --dipnet experiments/pretrained_models/DIPNet_x4.pth \\
        --ddistill experiments/pretrained_models/DDistill-SRx4_inference.pth [--runs 3] \\
        [--out benchmarks/results/upscale_e2e.md]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from report import load_average, publish  # benchmarks/report.py

REPO = Path(__file__).resolve().parents[1]
LR_SIZE = (480, 270)  # (w, h)
NETS = {'DIPNet': ('ddsr.archs.dipnet.dipnet_arch', 'DIPNet', '{}'),
        'DDistill-SR': ('ddsr.archs.ddistill.ddistill_arch', 'DDistillSR', '{"upscale": 4, "deploy": true}')}

BASELINE = '''
import sys, glob, os, json
import cv2
import torch
import importlib
module, cls, kwargs, weights, src, dst = sys.argv[1:7]
model = getattr(importlib.import_module(module), cls)(**json.loads(kwargs))
model.load_state_dict(torch.load(weights, map_location='cpu'), strict=True)
model.eval()
for p in model.parameters():
    p.requires_grad = False
os.makedirs(dst, exist_ok=True)
for path in sorted(glob.glob(os.path.join(src, '*.png'))):
    img = cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1]
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float().div(255.).unsqueeze(0)
    with torch.no_grad():
        sr = model(x)
    out = sr.squeeze(0).clamp(0, 1).mul(255.).round().byte().permute(1, 2, 0).numpy()
    cv2.imwrite(os.path.join(dst, os.path.basename(path)), out[:, :, ::-1])
'''


def photos() -> dict[str, np.ndarray]:
    """6 scikit-image photos (RGB), centre-cropped to 16:9 and resized (area) to 480x270 LR, as BGR."""
    from skimage import data
    sources = {'astronaut': data.astronaut, 'coffee': data.coffee, 'chelsea': data.chelsea, 'rocket': data.rocket,
               'ihc': data.immunohistochemistry, 'motorcycle': lambda: data.stereo_motorcycle()[0]}
    out = {}
    for name, load in sources.items():
        img = load()[..., :3]
        h, w = img.shape[:2]
        ch, cw = (h, h * 16 // 9) if w * 9 >= h * 16 else (w * 9 // 16, w)
        y, x = (h - ch) // 2, (w - cw) // 2
        crop = np.ascontiguousarray(img[y:y + ch, x:x + cw, ::-1])
        out[name] = cv2.resize(crop, LR_SIZE, interpolation=cv2.INTER_AREA)
    return out


# start-up of the two runtimes alone: a fresh interpreter importing torch / onnxruntime
IMPORTS = {f'python -c "import {m}"': [sys.executable, '-c', f'import {m}'] for m in ('torch', 'onnxruntime')}


def tiny_folder(folder: Path) -> Path:
    """``folder`` holding one 32x32 crop of the first photo: a run on it is a process's start-up cost."""
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), next(iter(photos().values()))[:32, :32])
    return folder


def timed(cmd: list[str], env: dict) -> float:
    """Wall time (s) of the process ``cmd`` (run in the repository root); exits naming it when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f'failed ({proc.returncode}): {" ".join(cmd)}\n{proc.stderr[-2000:]}')
    return elapsed


def max_diff(a: Path, b: Path) -> int:
    worst = 0
    for path in sorted(a.glob('*.png')):
        x = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(int)
        y = cv2.imread(str(b / path.name), cv2.IMREAD_UNCHANGED).astype(int)
        assert x.shape == y.shape, path.name
        worst = max(worst, int(np.abs(x - y).max()))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dipnet', required=True, help='DIPNet x4 deploy weights (xiumu00/DIPNet release)')
    parser.add_argument('--ddistill', required=True, help='DDistill-SR x4 inference weights (icandle/DDistill-SR)')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--out', help='also write the report (Markdown) here')
    parser.add_argument('--threads', type=int, default=None,
                        help='intra-op threads of both processes (OMP_NUM_THREADS for the baseline, ddsr --threads); '
                        'default: the libraries\' defaults')
    args = parser.parse_args()
    weights = {'DIPNet': args.dipnet, 'DDistill-SR': args.ddistill}
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    threads = ['--threads', str(args.threads)] if args.threads else []
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    lines = [f'threads: {args.threads or "library defaults"} ({os.cpu_count()} CPUs); {load_average()} at start']
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / 'in').mkdir()
        for name, img in photos().items():
            cv2.imwrite(str(tmp / 'in' / f'{name}.png'), img)
        (tmp / 'baseline.py').write_text(BASELINE)
        env['DDSR_CACHE_DIR'] = str(tmp / 'cache')
        cmds = {}
        for net, (module, cls, kwargs) in NETS.items():
            cmds[net, 'baseline'] = [sys.executable, str(tmp / 'baseline.py'), module, cls, kwargs, weights[net],
                                     str(tmp / 'in'), str(tmp / f'base_{cls}')]
            cmds[net, 'ddsr'] = [sys.executable, '-m', 'ddsr.cli', 'upscale', '--weights', weights[net], '--arch', cls,
                                 '--arch-kwargs', kwargs, '-i', str(tmp / 'in'), '-o', str(tmp / f'ddsr_{cls}'),
                                 *threads]
        first = {net: timed(cmds[net, 'ddsr'], env) for net in NETS}  # fills the cache (probe + export)
        times: dict = {key: [] for key in cmds}
        for run in range(args.runs):
            for key, cmd in cmds.items():
                times[key].append(timed(cmd, env))
            print(f'run {run + 1}/{args.runs} done ({load_average()})', flush=True)
        choice = {}
        for net in NETS:
            proc = subprocess.run(cmds[net, 'ddsr'], env=env, capture_output=True, text=True, cwd=REPO)
            choice[net] = proc.stdout.split(' with ', 1)[1].split(' into ')[0] if ' with ' in proc.stdout else '?'
        startup = {name: [] for name in (*IMPORTS, 'ddsr --help', 'ddsr upscale (1 tiny image, cached onnxruntime)',
                                         'ddsr upscale (1 tiny image, --backend torch)')}
        tiny = ['--weights', args.dipnet, '--arch', 'DIPNet', '-i', str(tiny_folder(tmp / 'tiny')), *threads]
        startup_cmds = [*IMPORTS.values(), [sys.executable, '-m', 'ddsr.cli', '--help'],
                        [sys.executable, '-m', 'ddsr.cli', 'upscale', *tiny, '-o', str(tmp / 't1'), '--backend',
                         'onnxruntime'],
                        [sys.executable, '-m', 'ddsr.cli', 'upscale', *tiny, '-o', str(tmp / 't2'), '--backend',
                         'torch']]
        timed(startup_cmds[3], env)  # cache entry for the tiny runs' key (same weights: already there)
        for _ in range(args.runs):
            for name, cmd in zip(startup, startup_cmds, strict=True):
                startup[name].append(timed(cmd, env))
        diffs = {net: max_diff(tmp / f'base_{NETS[net][1]}', tmp / f'ddsr_{NETS[net][1]}') for net in NETS}
    lines.append(f'{load_average()} at end')
    table = ['| network | official way (baseline process) | `ddsr upscale` (cached choice) | ratio | max abs diff '
             '(8-bit levels) | ddsr first run (probe + export) | backend chosen |',
             '|---|---:|---:|---:|---:|---:|---|']
    for net in NETS:
        base, ours = statistics.median(times[net, 'baseline']), statistics.median(times[net, 'ddsr'])
        table.append(f'| {net} x4 | {base:.2f} s | {ours:.2f} s | {ours / base:.2f}x | {diffs[net]} | '
                     f'{first[net]:.2f} s | {choice[net]} |')
    table += ['', '| start-up (median) | s |', '|---|---:|']
    table += [f'| {name} | {statistics.median(t):.2f} |' for name, t in startup.items()]
    raw = [f'raw {net} {kind}: ' + ', '.join(f'{t:.2f}' for t in times[net, kind]) for net, kind in times]
    report = '\n'.join(lines + [''] + table + [''] + raw)
    publish(report, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
