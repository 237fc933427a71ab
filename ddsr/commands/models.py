"""``ddsr models``: the pretrained networks known by name (``--model NAME``, ``ddsr://NAME``), fetch or add them."""
import argparse
import json

from ddsr import zoo
from ddsr.fileio import cache_root

NAME = 'models'
HELP = 'list the pretrained networks usable by name (--model NAME, ddsr://NAME); --fetch downloads them'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--fetch', nargs='+', metavar='NAME', help='download (and verify) these models now')
    parser.add_argument('--add', nargs=2, metavar=('NAME', 'FILE'),
                        help='put a file obtained by hand into the cache (its sha256 is checked)')
    parser.add_argument('--json', action='store_true', help='print the list as JSON')


def _rows() -> list[dict]:
    rows = []
    for model in zoo.MODELS.values():
        rows.append({'name': model.name, 'scale': model.scale, 'form': model.form, 'arch': dict(model.arch),
                     'license': model.license, 'sha256': model.sha256, 'url': model.url,
                     'source': model.source, 'notes': model.notes, 'file': str(zoo.cached_path(model)),
                     'cached': zoo.is_cached(model)})
    return rows


def run(args: argparse.Namespace) -> int:
    if args.add:
        path = zoo.copy_into_cache(*args.add)
        print(f'added {zoo.lookup(args.add[0]).name}: {path}')
        return 0
    if args.fetch:
        for name in args.fetch:
            print(f'{zoo.lookup(name).name}: {zoo.fetch(name)}')
        return 0
    rows = _rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        kwargs = ', '.join(f'{k}={v}' for k, v in row['arch'].items() if k != 'type')
        print(f"{row['name']}  x{row['scale']}  {row['arch']['type']} ({row['form']} form)  {row['license']}  "
              f"{'cached' if row['cached'] else 'not downloaded'}")
        print(f"    arch: {row['arch']['type']}({kwargs})")
        print(f"    from: {row['source']}: {row['url']}")
        print(f"    sha256: {row['sha256']}")
        print(f"    file: {row['file']}")
    print(f'cache: {cache_root()} (DDSR_CACHE_DIR; mirror: DDSR_MODEL_MIRROR=URL or FOLDER serves '
          '<upstream file name> or <model name>.pth; offline: ddsr models --add NAME FILE)')
    return 0
