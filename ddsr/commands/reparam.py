"""``ddsr reparam``: convert a train-form checkpoint (reparameterizable branches) to the fused deploy form."""
import argparse
import os

from ddsr.compress.deploy import convert_checkpoint
from ddsr.errors import DDSRError
from ddsr.preflight import check_network, load_options, read_checkpoint

NAME = 'reparam'
HELP = 'fuse the reparameterizable branches of a train checkpoint (params + params_ema) into a deploy checkpoint'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('-opt', '--opt', help='train option YAML whose network_g describes the checkpoint')
    src.add_argument('--arch', help='registered arch name instead of -opt (e.g. DDistillSR); default kwargs')
    parser.add_argument('--upscale', type=int, help='upscale factor for --arch (default: the arch default)')
    parser.add_argument('--ckpt', required=True, help='train-form checkpoint (BasicSR net_g_*.pth)')
    parser.add_argument('-o', '--out', required=True, help='output deploy checkpoint (.pth, written atomically)')
    parser.add_argument('--fold-bn', action='store_true',
                        help='DDistillSR: also fold the dynamic-branch BNs (faster on CPU; not the official layout)')


def run(args: argparse.Namespace) -> int:
    if args.opt is not None:
        check_network(load_options(args.opt).get('network_g'), f'{args.opt}: network_g')
    else:
        check_network({'type': args.arch}, '--arch')
    if os.path.isfile(args.ckpt):
        read_checkpoint(args.ckpt, '--ckpt')
    if args.opt is not None:
        if args.upscale is not None:
            raise DDSRError('--upscale goes with --arch; with -opt the option file sets network_g.upscale')
        arch = args.opt
    else:
        arch = {'type': args.arch}
        if args.upscale is not None:
            arch['upscale'] = args.upscale
    ckpt = convert_checkpoint(args.ckpt, args.out, arch, fold_bn=args.fold_bn)
    keys = ', '.join(k for k in ckpt if k != 'arch')
    print(f"wrote {args.out} ({keys}; arch {ckpt['arch']})")
    return 0
