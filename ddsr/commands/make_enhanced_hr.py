"""``ddsr make-enhanced-hr``: write a teacher's outputs on a training LR set (enhanced-HR targets)."""
import argparse
import os

from ddsr import zoo
from ddsr.commands import add_arch, add_arch_kwargs, add_device, add_output, add_weights, arch_from_args
from ddsr.errors import DDSRError

NAME = 'make-enhanced-hr'
HELP = 'run a teacher over an LR folder/LMDB and write its outputs (PNG folder, optional LMDB) as KD targets'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument('-opt', help='option YAML: uses network_t + path.pretrain_network_t (else network_g + '
                     'path.pretrain_network_g)')
    add_arch(src, 'registered arch type, e.g. EDSR (with --arch-kwargs and --weights; without it the network is '
             'recognised from --weights)')
    src.add_argument('--model', metavar='NAME', help='pretrained teacher by name (`ddsr models`), downloaded on '
                     'first use')
    add_arch_kwargs(parser)
    add_weights(parser, 'checkpoint of the teacher')
    parser.add_argument('--param-key', default='params', help='key in the checkpoint (default: params)')
    parser.add_argument('--lq', required=True, help='LR folder or BasicSR .lmdb')
    add_output(parser, 'output folder (PNG, same names as the LR images)', required=True)
    parser.add_argument('--lmdb', action='store_true', help='also write OUTPUT.lmdb (BasicSR layout + meta_info.txt)')
    add_device(parser)


def _teacher(args: argparse.Namespace) -> tuple[dict, str, str]:
    from ddsr.option_file import load_options
    arch = arch_from_args(args)
    if args.opt:
        opt = load_options(args.opt)
        net_key = 'network_t' if 'network_t' in opt else 'network_g'
        suffix = net_key[len('network_'):]
        paths = value if isinstance(value := opt.get('path'), dict) else {}
        weights = paths.get(f'pretrain_network_{suffix}')
        if not weights:
            raise DDSRError(f'{args.opt}: path.pretrain_network_{suffix} is required')
        if not zoo.is_model_ref(weights) and not os.path.isfile(weights):
            raise DDSRError(f'{args.opt}: path.pretrain_network_{suffix}: checkpoint not found: {weights}')
        return dict(opt[net_key]), zoo.resolve(weights), paths.get(f'param_key_{suffix}', 'params')
    if args.model:
        model = zoo.lookup(args.model)
        return dict(model.arch), str(zoo.fetch(model)), 'params'
    if not args.weights:
        raise DDSRError('give the teacher: -opt OPTION.yml, --model NAME or --weights FILE [--arch TYPE]')
    if not os.path.isfile(args.weights):
        raise DDSRError(f'teacher weights not found: {args.weights}')
    from ddsr.checkpoint import load_file
    from ddsr.detect import resolve_arch
    arch = resolve_arch(load_file(args.weights, 'teacher weights'), arch, args.param_key, args.weights)
    return arch, args.weights, args.param_key


def run(args: argparse.Namespace) -> int:
    import cv2

    from ddsr.checkpoint import build_network, load_file, load_weights
    from ddsr.checks.networks import check_network
    from ddsr.models.parts.enhanced import make_enhanced_hr
    net_opt, weights, param_key = _teacher(args)
    check_network(net_opt, 'teacher network')
    if not isinstance(weights, str) or not os.path.isfile(weights):
        raise DDSRError(f'teacher weights not found: {weights}')
    load_file(weights, 'teacher weights')
    try:
        net = build_network(dict(net_opt))
    except TypeError as err:
        raise DDSRError(f'cannot build {net_opt.get("type")}: {err}') from None
    load_weights(net, weights, param_key)
    try:
        names = make_enhanced_hr(net, args.lq, args.output, write_lmdb=args.lmdb, device=args.device)
    except (AttributeError, cv2.error) as err:  # cv2 gives None for an undecodable image
        raise DDSRError(f'--lq {args.lq}: an image could not be decoded (corrupt or truncated?): {err}') from None
    where = args.output + (f' and {args.output.rstrip("/")}.lmdb' if args.lmdb else '')
    print(f'wrote {len(names)} enhanced-HR images to {where}')
    return 0
