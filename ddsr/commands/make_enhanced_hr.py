"""``ddsr make-enhanced-hr``: write a teacher's outputs on a training LR set (enhanced-HR targets)."""
import argparse

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


def _teacher(args: argparse.Namespace):
    """The teacher's :class:`ddsr.deploy.source.NetworkSource`: ``-opt`` (``network_t`` + ``pretrain_network_t``,
    else ``network_g``), ``--model`` or ``--weights`` [``--arch``]."""
    from ddsr.deploy import source
    arch = arch_from_args(args)
    if args.opt:
        from ddsr.option_file import load_options
        opt = load_options(args.opt)
        return source.from_options(args.opt, opt, net='t' if 'network_t' in opt else 'g')
    if args.model:
        return source.from_model(args.model)
    if not args.weights:
        raise DDSRError('give the teacher: -opt OPTION.yml, --model NAME or --weights FILE [--arch TYPE]')
    return source.from_weights(args.weights, arch, args.param_key, label='teacher weights')


def run(args: argparse.Namespace) -> int:
    import cv2

    from ddsr.checks.networks import check_network
    from ddsr.models.parts.enhanced import make_enhanced_hr
    teacher = _teacher(args)
    check_network(teacher.arch, 'teacher network')
    net = teacher.network
    try:
        names = make_enhanced_hr(net, args.lq, args.output, write_lmdb=args.lmdb, device=args.device)
    except (AttributeError, cv2.error) as err:  # cv2 gives None for an undecodable image
        raise DDSRError(f'--lq {args.lq}: an image could not be decoded (corrupt or truncated?): {err}') from None
    where = args.output + (f' and {args.output.rstrip("/")}.lmdb' if args.lmdb else '')
    print(f'wrote {len(names)} enhanced-HR images to {where}')
    return 0
