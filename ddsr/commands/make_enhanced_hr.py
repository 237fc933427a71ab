"""``ddsr make-enhanced-hr``: write a teacher's outputs on a training LR set (enhanced-HR targets)."""
import argparse
import os

import cv2
import torch
import yaml
from basicsr.archs import build_network

from ddsr.bench.models import load_weights
from ddsr.errors import DDSRError
from ddsr.models.enhanced import make_enhanced_hr
from ddsr.preflight import check_network, load_options, read_checkpoint

NAME = 'make-enhanced-hr'
HELP = 'run a teacher over an LR folder/LMDB and write its outputs (PNG folder, optional LMDB) as KD targets'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('-opt', help='option YAML: uses network_t + path.pretrain_network_t (else network_g + '
                     'path.pretrain_network_g)')
    src.add_argument('--arch', help='registered arch type, e.g. EDSR (with --arch-args and --weights)')
    parser.add_argument('--arch-args', nargs='*', default=[], metavar='KEY=VALUE', help='arch kwargs (YAML values)')
    parser.add_argument('--weights', help='checkpoint of the teacher (with --arch)')
    parser.add_argument('--param-key', default='params', help='key in the checkpoint (default: params)')
    parser.add_argument('--lq', required=True, help='LR folder or BasicSR .lmdb')
    parser.add_argument('-o', '--out', required=True, help='output folder (PNG, same names as the LR images)')
    parser.add_argument('--lmdb', action='store_true', help='also write OUT.lmdb (BasicSR layout + meta_info.txt)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')


def _teacher(args: argparse.Namespace):
    if args.opt:
        opt = load_options(args.opt)
        net_key = 'network_t' if 'network_t' in opt else 'network_g'
        suffix = net_key[len('network_'):]
        paths = opt.get('path') if isinstance(opt.get('path'), dict) else {}
        weights = paths.get(f'pretrain_network_{suffix}')
        if not weights:
            raise DDSRError(f'{args.opt}: path.pretrain_network_{suffix} is required')
        return dict(opt[net_key]), weights, paths.get(f'param_key_{suffix}', 'params')
    if not args.weights:
        raise DDSRError('--arch needs --weights')
    net_opt = {'type': args.arch}
    for item in args.arch_args:
        if '=' not in item:
            raise DDSRError(f'--arch-args: expected KEY=VALUE, got {item}')
        key, value = item.split('=', 1)
        try:
            net_opt[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise DDSRError(f'--arch-args {item}: not a YAML value ({err})') from None
    return net_opt, args.weights, args.param_key


def run(args: argparse.Namespace) -> int:
    net_opt, weights, param_key = _teacher(args)
    check_network(net_opt, 'teacher network')
    if not isinstance(weights, str) or not os.path.isfile(weights):
        raise DDSRError(f'teacher weights not found: {weights}')
    read_checkpoint(weights, 'teacher weights')
    try:
        net = build_network(dict(net_opt))
    except TypeError as err:
        raise DDSRError(f'cannot build {net_opt.get("type")}: {err}') from None
    load_weights(net, weights, param_key)
    try:
        names = make_enhanced_hr(net, args.lq, args.out, write_lmdb=args.lmdb, device=args.device)
    except (AttributeError, cv2.error) as err:  # cv2 gives None for an undecodable image
        raise DDSRError(f'--lq {args.lq}: an image could not be decoded (corrupt or truncated?): {err}') from None
    where = args.out + (f' and {args.out.rstrip("/")}.lmdb' if args.lmdb else '')
    print(f'wrote {len(names)} enhanced-HR images to {where}')
    return 0
