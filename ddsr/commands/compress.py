"""``ddsr compress``: dense EDSR / SwinIR checkpoint -> compact EDSRmini / SwinIRmini checkpoint (weights carried over).

Two ways to say what to compress:
- ``-opt STAGE2.yml``: the stage-2 option file (network_g, path.pretrain_network_g, path.param_key_g, prune.target
  or prune.ratio); output defaults to experiments/<name>/models/net_g_compact.pth, as ``basicsr train`` writes it;
- ``--weights dense.pth --arch-opt teacher.yml`` (any option file whose network_g describes the checkpoint) with
  ``--target EDSRmini-default|SwinIRmini-default|arch.yml`` or ``--ratio 0.1``, and ``-o out.pth``.
(``--ckpt`` and ``--out`` are the old spellings of ``--weights`` and ``--output``, see :mod:`ddsr.commands`.)
"""
import argparse
import os
import os.path as osp

from ddsr.commands import add_output, add_weights
from ddsr.errors import DDSRError

NAME = 'compress'
HELP = 'carve a compact EDSRmini / SwinIRmini (params + arch) out of a dense EDSR / SwinIR checkpoint'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('-opt', '--opt', help='stage-2 option YAML (network_g, path.pretrain_network_g, prune.target)')
    add_weights(parser, 'dense checkpoint (instead of path.pretrain_network_g)')
    parser.add_argument('--arch-opt', help='option YAML whose network_g describes --weights (instead of -opt)')
    parser.add_argument('--param-key', default=None, help="checkpoint entry to read (default: -opt's or 'params')")
    how = parser.add_mutually_exclusive_group()
    how.add_argument('--target', help="preset (EDSRmini-default, SwinIRmini-default) or a YAML with network_g/arch")
    how.add_argument('--ratio', type=float, help='keep at most this fraction of the dense params')
    add_output(parser, 'output checkpoint (default with -opt: experiments/<name>/models/net_g_compact.pth)')


def run(args: argparse.Namespace) -> int:
    from ddsr.checkpoint import load_file, load_state, save_self_describing
    from ddsr.checks.networks import check_network
    from ddsr.compress.compact import compress_state, count_params
    from ddsr.option_file import load_options
    opt = load_options(args.opt) if args.opt else {}
    if args.arch_opt:
        opt = {**opt, 'network_g': load_options(args.arch_opt)['network_g']}
    if 'network_g' not in opt:
        raise DDSRError('network_g: give -opt or --arch-opt with a network_g section')
    path_opt = value if isinstance(value := opt.get('path'), dict) else {}
    ckpt = args.weights or path_opt.get('pretrain_network_g')
    if not ckpt or not osp.isfile(ckpt):
        raise DDSRError(f'--weights / path.pretrain_network_g: checkpoint not found: {ckpt}')
    prune = value if isinstance(value := opt.get('prune'), dict) else {}
    target, ratio = prune.get('target'), prune.get('ratio')
    if args.target or args.ratio is not None:
        target, ratio = args.target, args.ratio
    if isinstance(target, str) and target.endswith(('.yml', '.yaml')):
        doc = load_options(target)
        target = doc.get('network_g', doc.get('arch', doc))
    if (target is None) == (ratio is None):
        raise DDSRError('prune.target / --target or prune.ratio / --ratio: give exactly one')
    default_out = osp.join('experiments', opt['name'], 'models', 'net_g_compact.pth') if 'name' in opt else None
    out = args.output or default_out
    if not out:
        raise DDSRError('-o/--output: output path needed without -opt')
    check_network(opt['network_g'], 'network_g')
    load_file(ckpt, '--weights / path.pretrain_network_g')
    try:
        state = load_state(ckpt, args.param_key or path_opt.get('param_key_g', 'params'))
        params, arch = compress_state(state, dict(opt['network_g']), target, ratio)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as err:
        raise DDSRError(f'compress: {err}') from err
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    save_self_describing(out, params, arch)
    dense, compact = count_params(dict(opt['network_g'])), count_params(arch)
    print(f'wrote {out}: {arch}\nparams {dense:,} -> {compact:,} ({100 * (1 - compact / dense):.1f}% fewer)')
    return 0
