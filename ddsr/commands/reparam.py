"""``ddsr reparam``: convert a train-form checkpoint (reparameterizable branches) to the fused deploy form."""
import argparse
import os

from ddsr.commands import add_arch, add_arch_kwargs, add_output, add_weights, arch_from_args

NAME = 'reparam'
HELP = 'fuse the reparameterizable branches of a train checkpoint (params + params_ema) into a deploy checkpoint'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('-opt', '--opt', help='train option YAML whose network_g describes the checkpoint')
    add_arch(src, 'registered arch type instead of -opt (e.g. DDistillSR), built with --arch-kwargs')
    add_arch_kwargs(parser, 'constructor kwargs of --arch, a JSON object, e.g. \'{"upscale": 3}\' (default: the '
                    'arch defaults)', upscale_alias=True)
    add_weights(parser, 'train-form checkpoint (BasicSR net_g_*.pth)', required=True)
    add_output(parser, 'output deploy checkpoint (.pth, written atomically)', required=True)
    parser.add_argument('--fold-bn', action='store_true',
                        help='DDistillSR: also fold the dynamic-branch BNs (faster on CPU; not the official layout)')


def run(args: argparse.Namespace) -> int:
    from ddsr.checkpoint import load_file
    from ddsr.checks.networks import check_network
    from ddsr.deploy.convert import convert_checkpoint
    from ddsr.option_file import load_options
    arch = arch_from_args(args)
    if arch is None:
        check_network(load_options(args.opt).get('network_g'), f'{args.opt}: network_g')
    else:
        check_network(arch, '--arch')
    if os.path.isfile(args.weights):
        load_file(args.weights, '--weights')
    ckpt = convert_checkpoint(args.weights, args.output, arch or args.opt, fold_bn=args.fold_bn)
    keys = ', '.join(k for k in ckpt if k != 'arch')
    print(f"wrote {args.output} ({keys}; arch {ckpt['arch']})")
    return 0
