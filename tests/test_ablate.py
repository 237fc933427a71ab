"""The ablation harness (benchmarks/ablate.py): its statistics against hand-computed values, its analysis of a
known result set, and a 2-seed run of a few iterations end to end (real ``basicsr train`` runs)."""
import importlib
import json
import math
import sys

import numpy as np
import pytest

from ddsr.bench.stats import mean_std, paired_interval, t_quantile
from ddsr.data.demo import EVAL_PHOTOS, TRAIN_PHOTOS, VAL_PHOTOS
from tests.conftest import REPO_ROOT


def _ablate():
    """benchmarks/ablate.py as module ``ablate`` (importable by name: its worker processes are spawned)."""
    if str(REPO_ROOT / 'benchmarks') not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / 'benchmarks'))
    return importlib.import_module('ablate')


def test_interval_hand_computed():
    # differences 0.1, 0.3, 0.2: mean 0.2, sd 0.1, t_{0.975, 2} = 4.3027, half-width 4.3027 * 0.1 / sqrt(3) = 0.2484
    res = paired_interval([30.0, 31.0, 29.0], [30.1, 31.3, 29.2])
    assert res['n'] == 3 and res['diffs'] == pytest.approx([0.1, 0.3, 0.2])
    assert res['mean_diff'] == pytest.approx(0.2) and res['sd_diff'] == pytest.approx(0.1)
    assert res['t'] == pytest.approx(4.3027, abs=1e-4) and res['half_width'] == pytest.approx(0.2484, abs=1e-4)
    assert (res['low'], res['high']) == pytest.approx((-0.0484, 0.4484), abs=1e-4) and not res['excludes_zero']
    assert res['baseline'] == pytest.approx((30.0, 1.0)) and res['variant'] == pytest.approx((30.2, 1.05357), abs=1e-5)
    # a consistent loss: -0.25 +- 4.3027 * 0.05 / sqrt(3) = [-0.3742, -0.1258] excludes 0
    res = paired_interval([30.0, 30.0, 30.0], [29.8, 29.7, 29.75])
    assert (res['low'], res['high']) == pytest.approx((-0.3742, -0.1258), abs=1e-4) and res['excludes_zero']
    assert t_quantile(0.95, 1) == pytest.approx(12.7062, abs=1e-4) and t_quantile(0.95, 4) == pytest.approx(2.7764,
                                                                                                           abs=1e-4)
    one = paired_interval([1.0], [2.0])
    assert one['mean_diff'] == 1.0 and math.isnan(one['half_width']) and not one['excludes_zero']
    assert mean_std([2.0, 4.0]) == pytest.approx((3.0, math.sqrt(2)))
    with pytest.raises(ValueError, match='length'):
        paired_interval([1.0, 2.0], [1.0])


def test_eval_split_is_held_out():
    assert not set(EVAL_PHOTOS) & set(TRAIN_PHOTOS) and set(VAL_PHOTOS) <= set(EVAL_PHOTOS)
    assert len(EVAL_PHOTOS) == 13


def _record(psnr: dict) -> dict:
    return {'runs': [], 'psnr': {k: v for k, v in psnr.items()}, 'wall_s': 10.0}


def test_analyse_and_render(tmp_path):
    ablate = _ablate()
    gt = [[29.0, 30.0], [29.5, 31.0], [28.5, 29.0]]  # (half, final) per seed
    enh = [[29.2, 30.1], [29.8, 31.3], [28.75, 29.2]]  # diffs half 0.2, 0.3, 0.25; final 0.1, 0.3, 0.2
    data = {'runs': {'gt': {str(s): _record({'75': h, '150': f}) for s, (h, f) in enumerate(gt)},
                     'enh': {str(s): _record({'75': h, '150': f}) for s, (h, f) in enumerate(enh)},
                     'prune': {'0': _record({'40': 27.0, '80': 28.0}), '1': _record({'40': 27.0, '80': 28.5})},
                     'prune_scratch': {'0': _record({'115': 27.5, '230': 27.5}),
                                       '1': _record({'115': 27.5, '230': 27.6})}},
            'meta': {'profile': 'test', 'uptime_start': '1.00, 1.00, 1.00'}}
    rows = {(r['key'], r['budget']): r for r in ablate.analyse(data)}
    assert set(rows) == {('1a', 'final'), ('1a', 'half'), ('4', 'final')}  # 4: no half budget; others lack runs
    final, half = rows['1a', 'final'], rows['1a', 'half']
    assert final['iters_variant'] == 150 and half['iters_variant'] == 75 and final['seeds'] == [0, 1, 2]
    assert final['mean_diff'] == pytest.approx(0.2) and final['half_width'] == pytest.approx(0.2484, abs=1e-4)
    assert not final['excludes_zero'] and half['excludes_zero'] and half['mean_diff'] == pytest.approx(0.25)
    assert rows['4', 'final']['diffs'] == pytest.approx([0.5, 0.9]) and rows['4', 'final']['iters_baseline'] == 230
    (tmp_path / 'ablations_test.json').write_text(json.dumps(data))
    text = ablate.render(tmp_path)
    assert '| +0.200 | [-0.048, +0.448] | 3 |' in text and '| **+0.250** | **[+0.126, +0.374]** | 3 |' in text
    assert 's1: 31.000 → 31.300' in text
    assert (tmp_path / 'ablations_test.png').read_bytes()[:4] == b'\x89PNG'


def test_harness_two_seeds_end_to_end(tmp_path, demo_root):
    """Comparison 3 (train form vs deploy form), 2 seeds x 2 iterations, scored on 2 eval photographs."""
    ablate = _ablate()
    work, results = tmp_path / 'work', tmp_path / 'results'
    (work / 'datasets').mkdir(parents=True)
    (work / 'datasets' / 'demo').symlink_to(demo_root)
    args = ['--only', '3', '--seeds', '2', '--iters', '2', '--eval-limit', '2', '--jobs', '1', '--nice', '0',
            '--workdir', str(work), '--results', str(results)]
    code = ablate.main(args)
    assert code == 0
    data = json.loads((results / 'ablations_default-2.json').read_text())
    assert data['failed'] == [] and data['meta']['eval_images'] == 2 and data['meta']['seeds'] == 2
    psnr = {v: {s: data['runs'][v][s]['psnr'] for s in ('0', '1')} for v in ('gt', 'gt_deploy')}
    for variant in psnr.values():
        for by_iter in variant.values():
            assert sorted(by_iter, key=int) == ['1', '2']
            assert all(np.isfinite(v) and 5 < v < 50 for v in by_iter.values())
    # same seed, different architecture: different networks; same architecture, different seeds: different too
    assert psnr['gt']['0']['2'] != psnr['gt_deploy']['0']['2'] and psnr['gt']['0']['2'] != psnr['gt']['1']['2']
    rows = {(r['key'], r['budget']): r for r in ablate.analyse(data)}
    assert set(rows) == {('3', 'final'), ('3', 'half')}
    expected = paired_interval([psnr['gt_deploy'][s]['2'] for s in '01'], [psnr['gt'][s]['2'] for s in '01'])
    assert rows['3', 'final']['mean_diff'] == pytest.approx(expected['mean_diff'])
    assert rows['3', 'final']['high'] == pytest.approx(expected['high']) and np.isfinite(expected['high'])
    assert (work / 'options' / 'abl_default-2_gt_s1.yml').is_file()
    assert (work / 'runs' / 'abl_default-2_gt_s1.done.json').is_file()
    assert '| 3 | reparameterization' in (results / 'ablations.md').read_text()
    # a second invocation reuses the finished runs (done.json) instead of training again
    before = (work / 'runs' / 'abl_default-2_gt_s0.done.json').read_text()
    assert ablate.main(args) == 0
    assert (work / 'runs' / 'abl_default-2_gt_s0.done.json').read_text() == before
