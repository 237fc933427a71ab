"""``ddsr export``: deploy checkpoint (fused, inference weights + arch) and/or ONNX model of a trained network."""
import argparse

from ddsr.commands.upscale import add_network_arguments, checked_options, source_from_args
from ddsr.errors import DDSRError

NAME = 'export'
HELP = 'write a deploy checkpoint (reparameterized, self-describing) and/or an ONNX model (dynamic H/W), checked'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_network_arguments(parser)
    parser.add_argument('--out-pth', help='deploy checkpoint to write (.pth)')
    parser.add_argument('--out-onnx', help='ONNX model to write (.onnx, opset 17, dynamic height/width)')
    parser.add_argument('--fold-bn', action='store_true', help='DDistillSR: also fold the dynamic-branch BNs')
    parser.add_argument('--check-size', type=int, default=64, help='natural-image crop size of the check (LR px)')


def run(args: argparse.Namespace) -> int:
    from ddsr.deploy.export import export_checkpoint, export_onnx, onnx_max_diff
    if not args.out_pth and not args.out_onnx:
        raise DDSRError('nothing to write: give --out-pth and/or --out-onnx')
    source = source_from_args(args, checked_options(args))
    if source.check_fit and (source.given_arch is not None or isinstance(source.raw.get('arch'), dict)):
        from ddsr.checks.networks import check_network  # a given or stored arch builds (one error line otherwise)
        check_network(source.given_arch or source.raw['arch'],
                      '--arch' if source.given_arch and source.label == '--weights' else f'{source.weights}: arch')
    net, arch = source.network, source.arch
    if args.out_pth:
        ckpt = export_checkpoint(net, args.out_pth, arch, args.fold_bn)
        print(f"wrote {args.out_pth} (params: {len(ckpt['params'])} tensors; arch {ckpt['arch']})")
    elif args.fold_bn:
        raise DDSRError('--fold-bn changes the checkpoint layout: use it with --out-pth')
    if args.out_onnx:
        meta = export_onnx(net, args.out_onnx)
        diff = onnx_max_diff(net, args.out_onnx, args.check_size)
        print(f'wrote {args.out_onnx} ({meta}); max |ONNX - PyTorch| on a natural {args.check_size}px crop: '
              f'{diff:.2e}')
        if diff > 1e-3:
            print(f'warning: ONNX differs from PyTorch by {diff:.2e} (> 1e-3)')
    return 0
