"""``ddsr bench efficiency|quality``: params/MACs/activations/runtime/memory, and Y-PSNR/SSIM on test sets."""
from __future__ import annotations

import argparse
import os
from os import path as osp
from typing import TYPE_CHECKING

from ddsr import commands as flags
from ddsr import zoo
from ddsr.errors import DDSRError

if TYPE_CHECKING:  # imported where used: `ddsr bench --help` must not import torch
    from ddsr.bench.models import ModelSpec
    from ddsr.bench.quality import PairedSet

NAME = 'bench'
HELP = 'benchmark networks: `efficiency` (params, MACs, activations, runtime, memory) or `quality` (Y-PSNR/SSIM)'
QUALITY_COLUMNS = [('name', 'model', '{}'), ('set', 'set', '{}'), ('images', 'images', '{}'),
                   ('psnr', 'PSNR-Y', '{:.4f}'), ('ssim', 'SSIM-Y', '{:.4f}')]


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('models (any combination)')
    group.add_argument('-opt', action='append', default=[], metavar='OPTION.yml',
                       help='BasicSR option file: network_g (+ path.pretrain_network_g); repeatable')
    flags.add_arch(group, 'registered arch type, e.g. EDSR')
    flags.add_arch_kwargs(group)
    flags.add_weights(group, 'checkpoint (BasicSR params/params_ema or plain state_dict); the network is '
                      'recognised from it when --arch is not given')
    group.add_argument('--model', action='append', default=[], metavar='NAME',
                       help='pretrained network by name (`ddsr models`), downloaded on first use; repeatable')
    group.add_argument('--name', help='display name for --arch (default: the type)')
    group.add_argument('--models', metavar='LIST.yml', help='model list (e.g. benchmarks/compare_lightweight.yml)')
    group = parser.add_argument_group('test sets')
    group.add_argument('--dataset', nargs=2, action='append', default=[], metavar=('GT', 'LQ'),
                       help='paired test set: two LMDBs (same keys) or two folders (same stems); repeatable')
    group.add_argument('--data-root', help='folder of make-lmdb outputs: <root>/<set>/HR.lmdb, LR_bicubic_X<s>.lmdb')
    group.add_argument('--sets', nargs='+', default=[], help='set names under --data-root (e.g. Set5 Set14)')
    group.add_argument('--scale', type=int, help='upscale factor (default: from the option file / network)')
    flags.add_device(parser)
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    flags.add_output(parser, 'folder for CSV/JSON/Markdown (+ PNG plot)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='bench', metavar='{efficiency,quality}')
    eff = sub.add_parser('efficiency', help='params, MACs, activations, convs, runtime, peak memory per form')
    _add_model_args(eff)
    eff.add_argument('--size', type=int, nargs=2, default=[256, 256], metavar=('H', 'W'),
                     help='LR input size for runtime and memory (default 256 256)')
    eff.add_argument('--count-size', type=int, nargs=2, default=[256, 256], metavar=('H', 'W'),
                     help='LR input size for MACs and activations (default 256 256, NTIRE ESR)')
    eff.add_argument('--runs', type=int, default=10, help='timed runs (default 10; 0 skips runtime)')
    eff.add_argument('--warmup', type=int, default=2, help='untimed warm-up runs (default 2)')
    eff.add_argument('--no-memory', action='store_true', help='skip the peak memory measurement')
    qual = sub.add_parser('quality', help='Y-PSNR / SSIM (border = scale) of models on paired LMDB/folder sets')
    _add_model_args(qual)
    flags.add_tiles(qual)


def _checked(spec: ModelSpec) -> ModelSpec:
    """The spec, after checking that its network builds and its weight files are readable (one error line)."""
    from ddsr.checkpoint import load_file
    from ddsr.checks.networks import check_network
    check_network(spec.network, f'{spec.name}: network')
    for weights in (spec.weights, spec.deploy_weights):
        if weights and osp.isfile(weights):
            load_file(weights, spec.name)
    return spec


def _spec_from_options(path: str) -> ModelSpec:
    """``spec_from_option_file`` after checking the file parses and its keys have the right kinds."""
    from ddsr.bench.models import spec_from_option_file
    from ddsr.option_file import load_options
    opt = load_options(path)
    if not isinstance(opt.get('path', {}), (dict, type(None))):
        raise DDSRError(f'{path}: path must be a mapping of keys')
    if opt.get('scale') is not None and not isinstance(opt['scale'], int):
        raise DDSRError(f'{path}: scale must be an integer, got {opt["scale"]!r}')
    return _checked(spec_from_option_file(path, opt))


def collect_specs(args: argparse.Namespace) -> list[ModelSpec]:
    from ddsr.bench.models import ModelSpec, is_registered, specs_from_model_list
    from ddsr.option_file import load_options
    model_list = load_options(args.models) if args.models else None  # parsed once (one error line otherwise)
    specs = [_spec_from_options(path) for path in args.opt]
    network = flags.arch_from_args(args)
    if network or args.weights:
        if args.weights and not osp.isfile(args.weights):
            raise DDSRError(f'--weights not found: {args.weights}')
        if args.weights:  # without --arch: recognised from the checkpoint
            from ddsr.deploy.source import from_weights
            network = from_weights(args.weights, network).arch
        assert network is not None
        specs.append(_checked(ModelSpec(name=args.name or network['type'], network=network, weights=args.weights)))
    for name in args.model:
        from ddsr.deploy.source import from_model
        model = from_model(name)
        specs.append(_checked(ModelSpec(name=zoo.lookup(name).name, network=dict(model.given_arch or {}),
                                        weights=str(model.weights))))
    if args.models:
        for spec in specs_from_model_list(args.models, doc=model_list):
            if not is_registered(spec.network['type']):
                print(f'skipped {spec.name}: arch {spec.network["type"]} is not registered')
                continue
            for note in spec.notes:
                print(f'{spec.name}: {note}')
            specs.append(_checked(spec))
    if not specs:
        raise DDSRError('no model given (use -opt, --model, --weights, --arch or --models)')
    if args.scale:
        for spec in specs:
            spec.scale = args.scale
    return specs


def collect_sets(args: argparse.Namespace, scale: int) -> list[PairedSet]:
    from ddsr.bench.quality import PairedSet
    sets = []
    for gt, lq in args.dataset:
        gt_dir = osp.abspath(gt.rstrip(os.sep))
        name = osp.basename(osp.dirname(gt_dir)) if osp.basename(gt_dir) == 'HR.lmdb' else osp.basename(gt_dir)
        sets.append(PairedSet(name, gt, lq))
    if args.sets and not args.data_root:
        raise DDSRError('--sets needs --data-root')
    for name in args.sets:
        root = osp.join(args.data_root, name)
        sets.append(PairedSet(name, osp.join(root, 'HR.lmdb'), osp.join(root, f'LR_bicubic_X{scale}.lmdb')))
    return sets


def _quality(specs: list[ModelSpec], args: argparse.Namespace, tile: int | None = None,
             overlap: int = 16) -> list[dict]:
    from ddsr.bench.models import build_for_quality
    from ddsr.bench.quality import evaluate
    rows = []
    for spec in specs:
        sets = collect_sets(args, spec.upscale)
        if not sets:
            raise DDSRError('no test set given (use --dataset GT LQ or --data-root DIR --sets NAMES)')
        net = build_for_quality(spec)
        for test_set in sets:
            res = evaluate(net, test_set, spec.upscale, args.device, tile, overlap, progress=not args.quiet,
                           desc=f'{spec.name} {test_set.name}')
            rows.append(dict(name=spec.name, **res))
    return rows


def run_efficiency(args: argparse.Namespace) -> int:
    from ddsr.bench.efficiency import benchmark_forms
    from ddsr.bench.models import build_network
    from ddsr.bench.report import EFFICIENCY_COLUMNS, columns_for, format_table, plot_quality_cost, write_csv_json
    specs = collect_specs(args)
    rows = []
    for spec in specs:
        net = build_network(spec)
        for res in benchmark_forms(net, spec.name, input_size=tuple(args.size), count_size=tuple(args.count_size),
                                   device=args.device, runs=args.runs, warmup=args.warmup,
                                   memory=not args.no_memory):
            rows.append(res.as_dict())
            print(f'measured {spec.name} ({res.form})', flush=True)
    if args.dataset or args.sets:
        with_weights = [s for s in specs if s.weights or s.deploy_weights]
        for qrow in _quality(with_weights, args):
            for row in rows:
                if row['name'] == qrow['name']:
                    row[f'psnr_{qrow["set"]}'], row[f'ssim_{qrow["set"]}'] = qrow['psnr'], qrow['ssim']
    columns = columns_for(rows, EFFICIENCY_COLUMNS)
    print(format_table(rows, columns))
    if args.output:
        written = write_csv_json(rows, osp.join(args.output, 'efficiency'))
        with open(osp.join(args.output, 'efficiency.md'), 'w') as f:
            f.write(format_table(rows, columns, markdown=True) + '\n')
        written.append(osp.join(args.output, 'efficiency.md'))
        for key in [k for k, _, _ in columns if k.startswith('psnr_')]:
            title = f'{key} (Y) vs cost; runtime at {args.size[0]}x{args.size[1]} LR on {args.device}'
            plot = plot_quality_cost(rows, key, osp.join(args.output, f'{key}_vs_cost.png'), title=title)
            written += [plot] if plot else []
        print('wrote ' + ', '.join(written))
    return 0


def run_quality(args: argparse.Namespace) -> int:
    from ddsr.bench.models import build_network
    from ddsr.bench.report import format_table, plot_quality_cost, write_csv_json
    specs = collect_specs(args)
    rows = _quality(specs, args, args.tile, args.tile_overlap)
    print(format_table(rows, QUALITY_COLUMNS))
    if args.output:
        written = write_csv_json(rows, osp.join(args.output, 'quality'))
        params = {spec.name: sum(p.numel() for p in build_network(spec).parameters()) for spec in specs}
        for set_name in dict.fromkeys(row['set'] for row in rows):
            points = [{'name': row['name'], 'params': params[row['name']], 'psnr': row['psnr']} for row in rows
                      if row['set'] == set_name]
            plot = plot_quality_cost(points, 'psnr', osp.join(args.output, f'quality_{set_name}_psnr_vs_params.png'),
                                     title=f'{set_name}: Y-PSNR vs params', costs=('params',))
            written += [plot] if plot else []
        print('wrote ' + ', '.join(written))
    return 0


def run(args: argparse.Namespace) -> int:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bench == 'efficiency':
        return run_efficiency(args)
    if args.bench == 'quality':
        return run_quality(args)
    raise DDSRError('usage: ddsr bench {efficiency,quality} ... (see ddsr bench efficiency -h)')
