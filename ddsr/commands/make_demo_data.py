"""``ddsr make-demo-data``: build the embedded demo data set (see :mod:`ddsr.data.demo`)."""
import argparse
import os

from ddsr.commands import add_output
from ddsr.data.demo import DEMO_ROOT, EVAL_ROOT, build_demo_data, build_eval_data, is_built
from ddsr.errors import DDSRError

NAME = 'make-demo-data'
HELP = 'build the small demo data set (train/val, x2/x3/x4, folders + LMDB) from scikit-image photos'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output(parser, f'output folder (default: {DEMO_ROOT}, with --eval {EVAL_ROOT})')
    parser.add_argument('--eval', action='store_true', help='build the held-out evaluation split instead (13 '
                        'scikit-image photographs not in train; docs/ablations.md)')
    parser.add_argument('--force', action='store_true', help='rebuild even if a complete build exists')


def run(args: argparse.Namespace) -> int:
    if args.output is None:
        args.output = EVAL_ROOT if args.eval else DEMO_ROOT
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise DDSRError(f'-o {args.output} is a file: give a folder')
    if os.path.isdir(args.output) and os.listdir(args.output) and not is_built(args.output):
        raise DDSRError(f'-o {args.output} is a non-empty folder that is not a demo data set; it is never replaced: '
                        'choose a new or empty folder')
    if is_built(args.output) and not args.force:
        print(f'demo data already built at {args.output} (use --force to rebuild)')
        return 0
    (build_eval_data if args.eval else build_demo_data)(args.output, force=args.force)
    print(f'demo data written to {args.output}')
    return 0
