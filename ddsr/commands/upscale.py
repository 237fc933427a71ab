"""``ddsr upscale``: super-resolve image files (any size, gray/RGB/RGBA, 8/16-bit) with a deploy network."""
from __future__ import annotations

import argparse
import glob
import os
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ddsr import commands as flags
from ddsr.errors import DDSRError

if TYPE_CHECKING:
    from ddsr.deploy.output import OutputSettings
    from ddsr.deploy.pipeline import Save

NAME = 'upscale'
HELP = ('super-resolve images (file, folder or glob) with a model (option file, checkpoint or ONNX) into PNG, '
        'JPEG or WebP files')


def add_network_arguments(parser: argparse.ArgumentParser, onnx: bool = False) -> None:
    """The network source flags shared by ``upscale`` and ``export``: -opt | --weights [--arch ...] (| --onnx)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('-opt', '--opt', help='BasicSR option file: network_g + path.pretrain_network_g')
    flags.add_weights(src, 'checkpoint (.pth); the network is recognised from it (its own arch entry, or its keys '
                      'and shapes), --arch only to override')
    src.add_argument('--model', metavar='NAME', help='pretrained network by name, downloaded on first use (`ddsr '
                     'models` lists them)')
    if onnx:
        src.add_argument('--onnx', help='ONNX model written by `ddsr export` (run by onnxruntime)')
    flags.add_arch(parser, 'registered arch type for --weights (e.g. DIPNet)')
    flags.add_arch_kwargs(parser)
    parser.add_argument('--param-key', default='params', help='checkpoint key (falls back to params_ema/params)')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_network_arguments(parser, onnx=True)
    parser.add_argument('-i', '--input', required=True, help='image file, folder or glob pattern (quote it)')
    flags.add_output(parser, 'output folder (PNG files, same bit depth and mode)', required=True)
    flags.add_tiles(parser)
    flags.add_device(parser)
    parser.add_argument('--backend', default='auto', choices=('auto', 'torch', 'onnxruntime'),
                        help='auto (default): on CPU the faster of PyTorch (inference_mode + channels_last) and '
                        'onnxruntime (ONNX export checked against PyTorch), timed once per network and machine on a '
                        'probe image and cached (docs/deploy.md); CUDA and tiled ESA nets: PyTorch; torch: PyTorch '
                        'inference_mode (no cache); onnxruntime: the cached export')
    parser.add_argument('--channels-last', action='store_true', help='--backend torch: channels_last memory format')
    parser.add_argument('--precision', default='fp32', choices=('auto', 'fp32', 'bf16', 'int8'),
                        help='fp32 (default); bf16: PyTorch bfloat16 (AMX/AVX512-BF16 CPUs); int8: onnxruntime int8 '
                        'quantization calibrated on the demo photos (cached); auto: a reduced precision only where '
                        'the CPU runs it natively, the probe timed it faster and its output stays within the quality '
                        'floor (docs/deploy.md)')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (default: the CPU policy of docs/threads.md)')
    parser.add_argument('--suffix', default='', help='appended to output names, e.g. _x4')
    add_output_arguments(parser)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """What is written: --outscale, --ext, --quality, --alpha, --compare (docs/upscale.md)."""
    from ddsr.deploy.output_choices import ALPHA_MODES, DEFAULT_QUALITY, EXTS
    parser.add_argument('--outscale', type=float, default=None, metavar='FLOAT',
                        help="final scale (default: the network's): the network, then a resize to round(FLOAT x input "
                        'size) (INTER_AREA shrinking, LANCZOS4 enlarging)')
    parser.add_argument('--ext', default='png', choices=EXTS,
                        help="output format (default png); auto: the input's format (PNG for others and for 16-bit/"
                        'alpha images it cannot hold); jpg: 16-bit becomes 8-bit, alpha is composited onto white')
    parser.add_argument('--quality', type=int, default=DEFAULT_QUALITY,
                        help=f'jpg/webp quality 1-100 (default {DEFAULT_QUALITY})')
    parser.add_argument('--alpha', default='bicubic', choices=ALPHA_MODES,
                        help='alpha channel: bicubic interpolation (default) or the network on it as a gray image')
    parser.add_argument('--compare', action='store_true',
                        help='also write <name>_compare.png beside each output: bicubic vs the network (centre '
                        'crops of at most 512 px)')


def output_settings_from_args(args: argparse.Namespace, source) -> OutputSettings:
    """The :class:`ddsr.deploy.output.OutputSettings` of the flags (checked); ``source`` names the network of a
    comparison picture."""
    from ddsr.deploy.output import OutputSettings
    label = None
    if args.compare:
        label = Path(source.onnx).stem if source.onnx is not None else str(source.summary['type'])
    settings = OutputSettings(outscale=args.outscale, ext=args.ext, quality=args.quality, alpha=args.alpha,
                              compare=label)
    settings.check()
    return settings


def collect_inputs(pattern: str) -> list[Path]:
    """Image files of a file path, a folder (its image files, sorted) or a glob pattern."""
    from ddsr.data.image_io import IMAGE_EXTS
    path = Path(pattern)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(pattern) if os.path.isfile(p))
    if not files:
        raise DDSRError(f'--input {pattern}: no image files')
    return files


def source_from_args(args: argparse.Namespace, options: dict | None = None):
    """The :class:`ddsr.deploy.source.NetworkSource` of ``-opt`` (``options``: parsed and checked by the caller),
    ``--model``, ``--weights`` [``--arch``/``--arch-kwargs``/``--param-key``] or ``--onnx``."""
    from ddsr.deploy import source
    onnx = getattr(args, 'onnx', None)
    arch = None if onnx or args.opt else flags.arch_from_args(args)
    return source.resolve(opt=args.opt, weights=args.weights, model=getattr(args, 'model', None), onnx=onnx,
                          arch=arch, param_key=args.param_key, options=options)


def checked_options(args: argparse.Namespace) -> dict | None:
    """``-opt``'s option file, parsed once and checked as ``basicsr test`` would (``network_g`` builds); None
    without ``-opt``."""
    if not args.opt:
        return None
    from ddsr.checks.networks import check_network
    from ddsr.option_file import load_options
    opt = load_options(args.opt)
    check_network(opt.get('network_g'), f'{args.opt}: network_g')
    return opt


def settings_from_args(args: argparse.Namespace):
    """The runtime's :class:`ddsr.deploy.runner.RunSettings` of the command line's flags."""
    from ddsr.deploy.runner import RunSettings
    return RunSettings(backend=args.backend, device=args.device, threads=args.threads, tile=args.tile,
                       tile_overlap=args.tile_overlap, channels_last=args.channels_last,
                       precision=args.precision)


def notify(message: str) -> None:
    """One message line on stderr (next to the progress lines), flushed at once."""
    print(message, file=sys.stderr, flush=True)


def saver(output: OutputSettings) -> tuple[Save, dict[str, int]]:
    """The folder pipeline's ``save`` for ``output``, and the conversion notes it counts (``{note: images}``)."""
    from ddsr.deploy.output import make_output, save_output
    from ddsr.deploy.pipeline import PNG_LEVEL
    notes: dict[str, int] = {}

    def save(src: Path, dst: Path, sr, alpha_sr, img) -> None:
        for note in save_output(dst, src, make_output(sr, alpha_sr, img, output), img, output, PNG_LEVEL)[1]:
            notes[note] = notes.get(note, 0) + 1

    return save, notes


def run(args: argparse.Namespace) -> int:
    """Exit code 0 when every image was written; 1 when some failed (listed on stderr); 2 on bad arguments."""
    flags.check_tiles(args)
    files = collect_inputs(args.input)
    out_dir = Path(args.output)
    resolved = {f.resolve() for f in files}
    from ddsr.deploy.output import alpha_input, compare_path, target_name
    targets = [out_dir / target_name(f, args.suffix, args.ext) for f in files]
    if any(f.parent.resolve() == out_dir.resolve() for f in files) or resolved & {t.resolve() for t in targets}:
        raise DDSRError(f'--output {out_dir} holds input images: choose another folder (inputs are never overwritten)')
    seen: dict[Path, Path] = {}
    for src, dst in zip(files, targets, strict=True):
        if dst in seen:
            raise DDSRError(f'{seen[dst]} and {src} would both be written to {dst} (same stem, different extension): '
                            'move or rename one of them, or give them separate runs')
        seen[dst] = src
    clash = sorted(str(p) for p in {compare_path(t) for t in targets} & set(targets)) if args.compare else []
    if clash:
        raise DDSRError(f'--compare: {clash[0]} is both an output and a comparison picture: rename that input')
    from ddsr.deploy.pipeline import run_folder
    from ddsr.deploy.runner import describe, make_plan
    from ddsr.progress import progress
    source = source_from_args(args, checked_options(args))
    output = output_settings_from_args(args, source)
    plan = make_plan(source, settings_from_args(args), files, notify)
    save, notes = saver(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    with progress(len(files), 'upscale', unit='img', file=sys.stderr, every=10) as bar:
        def on_image(src: Path, shape: tuple[int, ...]) -> None:
            tiles = ''
            if args.tile:
                from ddsr.deploy.tiling import num_tiles
                tiles = f' ({num_tiles(shape[0], shape[1], args.tile)} tiles)'
            bar.set_postfix_str(f'{src.name}{tiles}')

        errors = run_folder(plan.forward, files, targets, on_image, lambda src: bar.update(), plan.workers,
                            save, partial(alpha_input, settings=output))
    failed = [f'{src}: {err}' if str(src) not in str(err) else str(err) for src, err in errors.items()]
    resized = f' resized to x{output.outscale:g}' if output.outscale not in (None, plan.scale) else ''
    print(f'upscaled {len(files) - len(failed)}/{len(files)} images x{plan.scale}{resized} with {describe(plan)} into '
          f'{out_dir}'
          + (f'; failed: {len(failed)}' if failed else ''))
    for note, count in notes.items():
        notify(f'note: {note}: {count} image(s)')
    for line in failed:
        print(f'failed: {line}', file=sys.stderr)
    return 1 if failed else 0
