"""Long commands off a terminal (issue 26): `make-lmdb`, `bench quality` and `bench efficiency` run with stdout and
stderr as pipes print plain progress lines (no carriage return), the first one at the first step; bench efficiency
says what it measures before each step."""
import io
import re
from pathlib import Path

import cv2
import numpy as np
import torch

from ddsr.progress import LineProgress, track
from tests.conftest import run_cli

TINY = {'num_feat': 8, 'num_block': 1, 'upscale': 2}


def test_first_line_at_first_step_and_unknown_total_ends_with_a_line():
    stream = io.StringIO()
    bar = LineProgress(None, 'pack', unit='img', file=stream, every=3600)  # an hour between lines
    for _ in range(4):
        bar.update()
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]  # only the first step printed
    assert stream.getvalue().startswith('pack: 1, ')
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith('pack: 4, ')  # the unreported steps at the end
    stream = io.StringIO()
    assert list(track(iter('abc'), desc='t', file=stream, every=3600)) == ['a', 'b', 'c']
    assert [line.split(',')[0] for line in stream.getvalue().splitlines()] == ['t: 1', 't: 3']


def _no_carriage_return(res) -> None:
    assert res.returncode == 0, res.stderr[-3000:]
    assert '\r' not in res.stdout and '\r' not in res.stderr


def test_long_commands_print_plain_progress_lines_into_pipes(tmp_path: Path):
    from basicsr.archs.srresnet_arch import MSRResNet
    hr = tmp_path / 'hr'
    hr.mkdir()
    rng = np.random.default_rng(0)
    for idx in range(3):
        cv2.imwrite(str(hr / f'img{idx}.png'), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    env = {'OMP_NUM_THREADS': '1'}

    res = run_cli(['make-lmdb', '--hr', hr, '-o', tmp_path / 'db', '--scales', '2'], tmp_path, env=env)
    _no_carriage_return(res)
    assert re.search(r'^HR\.lmdb: 1/3 \(33%\)', res.stderr, re.M), res.stderr
    assert re.search(r'^LR_bicubic_X2\.lmdb: 3/3 \(100%\)', res.stderr, re.M), res.stderr
    res = run_cli(['make-lmdb', '--hr', hr, '-o', tmp_path / 'sub', '--scales', '2', '--crop-size', '24',
                   '--step', '12'], tmp_path, env=env)  # sub-images: total unknown in advance
    _no_carriage_return(res)
    counts = [int(n) for n in re.findall(r'^HR\.lmdb: (\d+), ', res.stderr, re.M)]
    stored = int(re.search(r'HR\.lmdb: (\d+) images', res.stdout).group(1))
    assert counts[0] == 1 and counts[-1] == stored == 27, res.stderr  # 3 images x 3x3 grid, the total at the end

    torch.manual_seed(0)
    torch.save(MSRResNet(**TINY).state_dict(), tmp_path / 'w.pth')
    model = ['--arch', 'MSRResNet', '--arch-kwargs', '{"num_feat": 8, "num_block": 1, "upscale": 2}',
             '--weights', tmp_path / 'w.pth', '--name', 'tiny']
    data = ['--dataset', tmp_path / 'db/HR.lmdb', tmp_path / 'db/LR_bicubic_X2.lmdb']
    res = run_cli(['bench', 'quality', *model, *data], tmp_path, env=env)
    _no_carriage_return(res)
    assert re.search(r'^tiny db: 1/3 \(33%\)', res.stderr, re.M), res.stderr
    assert 'PSNR-Y' in res.stdout

    res = run_cli(['bench', 'efficiency', *model, '--size', '16', '16', '--count-size', '16', '16', '--runs', '3'],
                  tmp_path, env=env)
    _no_carriage_return(res)
    said = res.stderr.splitlines()
    steps = ['tiny: counting MACs, activations and convs of one forward at 16x16',
             'tiny: peak memory of one forward at 16x16 on cpu',
             'tiny: runtime, 2 warm-up + 3 timed forwards at 16x16 on cpu']
    assert [line for line in said if line in steps] == steps, res.stderr
    assert any(line.startswith('tiny runtime: 1/5 (20%)') for line in said), res.stderr
    assert any(line.startswith('tiny runtime: 5/5 (100%)') for line in said), res.stderr
