"""The docs cannot drift: README's code blocks marked ``<!-- docs:test -->`` (and those of docs/*.md) run as written,
every README block is marked (docs:test, ``docs:skip: <reason>`` or the CI blocks), README stays short."""
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import pytest

from ddsr import zoo
from tests.conftest import PRETRAINED, REPO_ROOT

MARKER = re.compile(r'<!-- (docs:test|docs:skip: [^>]+|ci:setup|ci:test) -->')
README_LIMIT = 12_000  # characters (issue 17: "README at most ~12k characters")
OFFICIAL = {'DDistill-SRx4_inference.pth': 'DDistill-SRx4_inference.pth', 'DIPNet_x4.pth': 'DIPNet.pth'}


def code_blocks(path: Path) -> list[tuple[str | None, str, str, int]]:
    """(marker or None, language, code, line number) of every fenced block of a Markdown file."""
    found, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith('```'):
            lang, start = lines[i][3:].strip(), i
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), '')
            match = MARKER.fullmatch(previous.strip())
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith('```'):
                body.append(lines[i])
                i += 1
            found.append((match.group(1) if match else None, lang, '\n'.join(body) + '\n', start + 1))
        i += 1
    return found


DOC_FILES = [REPO_ROOT / 'README.md', *sorted((REPO_ROOT / 'docs').glob('*.md'))]
TESTED = [(path, code, line, lang) for path in DOC_FILES for marker, lang, code, line in code_blocks(path)
          if marker == 'docs:test']


def test_readme_is_short_and_every_block_is_accounted_for():
    text = (REPO_ROOT / 'README.md').read_text()
    assert len(text) <= README_LIMIT, f'README.md has {len(text)} characters (limit {README_LIMIT})'
    blocks = code_blocks(REPO_ROOT / 'README.md')
    unmarked = [line for marker, _, _, line in blocks if marker is None]
    assert not unmarked, f'README.md code blocks at lines {unmarked} need <!-- docs:test --> or <!-- docs:skip: why -->'
    markers = [marker for marker, *_ in blocks]
    assert markers.count('ci:setup') == 1 and markers.count('ci:test') == 1  # .ci/run extracts these
    assert sum(marker == 'docs:test' for marker in markers) >= 2  # upscale-my-photo and the Python example
    setup = next(code for marker, _, code, _ in blocks if marker == 'ci:setup')
    demo = re.search(r'basicsr train -opt (\S+)', setup).group(1)
    assert 'console: progress' in (REPO_ROOT / demo).read_text()  # the demo's short console


def test_doc_links_point_to_files():
    for path in DOC_FILES:
        for target in re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', path.read_text()):
            assert (path.parent / target).exists(), f'{path.name}: broken link {target}'


@pytest.fixture(scope='module')
def mirror(tmp_path_factory):
    """The official weights under their source file names, served on 127.0.0.1 (skipped where absent)."""
    if not all((PRETRAINED / name).is_file() for name in OFFICIAL):
        pytest.skip(f'official weights not available at {PRETRAINED}')
    root = tmp_path_factory.mktemp('mirror')
    for src, dst in OFFICIAL.items():
        shutil.copy(PRETRAINED / src, root / dst)
    handler = type('Quiet', (http.server.SimpleHTTPRequestHandler,), {'log_message': lambda *a: None})
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize('path,code,line,lang', TESTED, ids=[f'{p.name}:{line}' for p, _, line, _ in TESTED])
def test_marked_block_runs(path, code, line, lang, mirror, tmp_path):
    from skimage import data
    photo = cv2.resize(data.coffee(), (72, 48), interpolation=cv2.INTER_AREA)[..., ::-1]
    cv2.imwrite(str(tmp_path / 'photo.png'), photo)
    cache = tmp_path.parent / f'{tmp_path.name}_cache'
    env = dict(os.environ, DDSR_MODEL_MIRROR=mirror, DDSR_CACHE_DIR=str(cache), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get('PYTHONPATH', '')]))
    if lang == 'bash':
        script = '\n'.join(cmd for cmd in code.splitlines() if not cmd.startswith('pip install'))
        cmd = ['bash', '-euo', 'pipefail', '-c', script]
    else:
        assert lang == 'python', f'{path.name}:{line}: no runner for ```{lang}'
        cmd = [sys.executable, '-c', code]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f'{path.name}:{line}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}'
    outputs = [p for p in tmp_path.rglob('*.png') if p.name != 'photo.png']
    assert outputs, f'{path.name}:{line} wrote no image'
    for out in outputs:  # every example is x4
        assert cv2.imread(str(out)).shape == (48 * 4, 72 * 4, 3), out
    assert {p.name for p in (cache / 'models').iterdir()} <= {m.file_name for m in zoo.MODELS.values()}
