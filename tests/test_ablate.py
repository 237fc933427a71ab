"""The ablation harness (benchmarks/ablate.py): its statistics against hand-computed values (t-interval, paired
p-value, Holm), its analysis of a known result set, the seeds (data order and crops vary with the seed, both arms
of a pair see the same batches), the fine-tune option files, a 2-seed run of a few iterations end to end (real
``basicsr train`` runs) and, marked slow, every comparison of every profile from the current option files."""
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddsr.bench.stats import mean_std, paired_interval, t_quantile
from ddsr.data.demo import EVAL_PHOTOS, TRAIN_PHOTOS, VAL_PHOTOS
from tests.conftest import PRETRAINED, REPO_ROOT

SLOW = pytest.mark.skipif(not os.environ.get('DDSR_SLOW_TESTS'), reason='slow (several minutes on a 2-core CPU: '
                          '42 training runs and the teacher outputs): run with DDSR_SLOW_TESTS=1')


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
            'meta': {'harness': ablate.HARNESS_VERSION, 'profile': 'test', 'uptime_start': '1.00, 1.00, 1.00'}}
    rows = {(r['key'], r['budget']): r for r in ablate.analyse(data)}
    assert set(rows) == {('1a', 'final'), ('1a', 'half'), ('4', 'final')}  # 4: no half budget; others lack runs
    final, half = rows['1a', 'final'], rows['1a', 'half']
    assert final['iters_variant'] == 150 and half['iters_variant'] == 75 and final['seeds'] == [0, 1, 2]
    assert final['mean_diff'] == pytest.approx(0.2) and final['half_width'] == pytest.approx(0.2484, abs=1e-4)
    assert not final['excludes_zero'] and half['excludes_zero'] and half['mean_diff'] == pytest.approx(0.25)
    assert rows['4', 'final']['diffs'] == pytest.approx([0.5, 0.9]) and rows['4', 'final']['iters_baseline'] == 230
    # p-values: t = mean / (sd / sqrt(n)); final 0.2 / (0.1 / sqrt 3) = 3.4641 -> p = 0.07418 (2 dof); half:
    # 0.25 / (0.05 / sqrt 3) = 8.6603 -> p = 0.01307; 4: 0.7 / (0.28284 / sqrt 2) = 3.5 -> p = 0.17717 (1 dof)
    assert final['p'] == pytest.approx(0.07418, abs=1e-5) and half['p'] == pytest.approx(0.01307, abs=1e-5)
    assert rows['4', 'final']['p'] == pytest.approx(0.17717, abs=1e-5)
    # Holm over the 3: 3 * 0.01307 = 0.0392 (holds), max(0.0392, 2 * 0.07418) = 0.1484, max(.., 1 * 0.17717)
    assert half['p_holm'] == pytest.approx(0.03922, abs=1e-4) and half['holm']
    assert final['p_holm'] == pytest.approx(0.14837, abs=1e-4) and not final['holm']
    assert rows['4', 'final']['p_holm'] == pytest.approx(0.17717, abs=1e-5)
    (tmp_path / 'ablations_test.json').write_text(json.dumps(data))
    text = ablate.render(tmp_path)
    assert '| +0.200 | [-0.048, +0.448] | 3 |' in text and '| **+0.250** | **[+0.126, +0.374]** | 3 |' in text
    assert '| 0.013 | 0.039 ✓ |' in text and '| 0.074 | 0.15 |' in text and 'the Holm family): 3.' in text
    assert 's1: 31.000 → 31.300' in text
    assert (tmp_path / 'ablations_test.png').read_bytes()[:4] == b'\x89PNG'
    # results of harness version 1 (no 'harness' in meta): comparison 4 (unequal schedules) is left out, and said so
    data['meta'].pop('harness')
    assert {r['key'] for r in ablate.analyse(data)} == {'1a'}
    (tmp_path / 'ablations_test.json').write_text(json.dumps(data))
    text = ablate.render(tmp_path)
    assert 'Harness version 1' in text and '| 4 |' not in text and 'the Holm family): 2.' in text


def test_holm_step_down():
    ablate = _ablate()
    # sorted 0.01, 0.02, 0.03, 0.04 x (4, 3, 2, 1) = 0.04, 0.06, 0.06, 0.04 -> running max 0.04, 0.06, 0.06, 0.06
    assert ablate.holm([0.03, 0.01, 0.04, 0.02, math.nan])[:4] == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert math.isnan(ablate.holm([0.5, math.nan])[1]) and ablate.holm([0.5, math.nan])[0] == 0.5  # family of 1
    assert ablate.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def _small_tiles(monkeypatch, ablate):
    """One photograph's corner (16 tiles of 144x144) instead of the four demo photographs: same code, seconds."""
    from skimage import data as skdata
    monkeypatch.setattr('ddsr.data.demo.TRAIN_PHOTOS', {'astronaut': lambda: skdata.astronaut()[:320, :320]})


def _first_batches(opt: dict, seed: int, count: int) -> list[dict]:
    """The first ``count`` training batches of ``opt`` as BasicSR's train.py draws them (seeded, its sampler)."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.utils import set_random_seed
    dataset_opt = dict(opt['datasets']['train'], phase='train', scale=opt['scale'])
    set_random_seed(seed)
    dataset = build_dataset(dataset_opt)
    sampler = EnlargedSampler(dataset, 1, 0, dataset_opt['dataset_enlarge_ratio'])
    loader = build_dataloader(dataset, dataset_opt, num_gpu=0, dist=False, sampler=sampler, seed=seed)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            return batches
    raise AssertionError('fewer batches than asked for')


def test_seeds_vary_data_order_and_crops_pairs_share_batches(tmp_path, monkeypatch):
    ablate = _ablate()
    _small_tiles(monkeypatch, ablate)
    names = ablate.build_train_tiles(tmp_path, 2)
    assert len(names) == 16 and len(ablate.build_train_tiles(tmp_path, 2, 8)) == 8
    assert len((tmp_path / ablate.meta_info(1)).read_text().split()) == 8
    assert len(list((tmp_path / ablate.TRAIN_ROOT / 'LR_used_X4').iterdir())) == 8
    names = ablate.build_train_tiles(tmp_path, 2)  # back to every tile
    monkeypatch.chdir(tmp_path)  # option paths are relative to the workdir (BasicSR's root)
    import cv2
    assert cv2.imread(str(tmp_path / ablate.TRAIN_HR / names[0])).shape == (144, 144, 3)  # > gt_size 96
    orders = [(tmp_path / ablate.meta_info(s)).read_text().split() for s in (0, 1)]
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(names) and orders[0] != orders[1]
    enhanced = tmp_path / 'enhanced_X4'  # stand-in teacher outputs: the dataset needs GT-sized images per LR tile
    shutil.copytree(tmp_path / ablate.TRAIN_HR, enhanced)
    kd = ablate.KD(dict(ablate.PRETRAINED_TEACHER), str(ablate.PRETRAINED), str(enhanced))
    prof = ablate.PROFILES['finetune']
    opts = {(arm, s): ablate.dipnet_options(arm, f'{arm}_s{s}', s, prof, 0, kd, {}) for arm in ('ft_gt', 'ft_enh')
            for s in (0, 1)}
    batches = {key: _first_batches(opt, key[1], 2) for key, opt in opts.items()}
    for seed in (0, 1):  # both arms of a pair: the same tiles, crops, flips and rotations, batch by batch
        for gt_only, kd_arm in zip(batches['ft_gt', seed], batches['ft_enh', seed], strict=True):
            assert gt_only['gt_path'] == kd_arm['gt_path']
            assert torch_equal(gt_only['lq'], kd_arm['lq']) and torch_equal(gt_only['gt'], kd_arm['gt'])
    # two seeds: another tile order (first 16 samples = one epoch, as paths) and other patches
    paths = {s: [p for b in batches['ft_gt', s] for p in b['gt_path']] for s in (0, 1)}
    assert paths[0] != paths[1] and sorted(paths[0]) == sorted(paths[1])
    # the same tile cropped under the two seeds: other crop positions (tiles 144 > gt_size 96)
    ds_opt = dict(opts['ft_gt', 0]['datasets']['train'], phase='train', scale=4, use_hflip=False, use_rot=False)
    from basicsr.data import build_dataset
    from basicsr.utils import set_random_seed
    crops = []
    for seed in (0, 1):
        set_random_seed(seed)
        crops.append(build_dataset(ds_opt)[0]['gt'])
    assert crops[0].shape[-1] == 96 and not torch_equal(crops[0], crops[1])


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_finetune_and_chain_options(tmp_path):
    """The fine-tune arms start from the official DIPNet weights with a constant Adam 1e-4; every scratch arm and
    both arms of 4 follow the same learning rate at every iteration; 6a/6b read the current EDSRmini files."""
    ablate = _ablate()
    kd = ablate.KD(dict(ablate.PRETRAINED_TEACHER), str(ablate.PRETRAINED), 'enh')
    ft = ablate.PROFILES['finetune']
    assert ft.iters == 200 and ft.lr == 1e-4
    for arm in ('ft_gt', 'ft_enh', 'ft_lap', 'ft_enh_feat'):
        opt = ablate.dipnet_options(arm, arm, 3, ft, 0, kd, {})
        assert opt['path']['pretrain_network_g'] == str(ablate.FT_WEIGHTS) and opt['path']['param_key_g'] is None
        assert opt['network_g'] == ablate.FT_STUDENT and opt['manual_seed'] == 3
        assert opt['train']['optim_g']['lr'] == 1e-4 and opt['train']['scheduler']['milestones'] == [10 ** 9]
        assert opt['train']['total_iter'] == 200 and opt['datasets']['train']['meta_info_file'].endswith('_s3.txt')
    pruning = ablate.dipnet_options('ft_prune', 'p', 0, ft, 0, kd, {})
    assert pruning['model_type'] == 'PruneSRModel' and pruning['network_g'] == ablate.FT_STUDENT
    assert pruning['path']['pretrain_network_g'] == str(ablate.FT_WEIGHTS) and pruning['path']['param_key_g'] is None
    assert pruning['prune']['steps'] == 2 and pruning['train']['optim_g']['lr'] == 1e-4
    # the arms after pruning start from the seed's pruned checkpoint, with its widths
    from ddsr.archs.dipnet.dipnet_arch import DIPNet
    from ddsr.checkpoint import save_self_describing
    pruned = DIPNet(mid_channels=[21, 21, 21, 20])
    (tmp_path / 'experiments' / 'p' / 'models').mkdir(parents=True)
    save_self_describing(tmp_path / 'experiments/p/models/net_g_latest.pth', pruned.state_dict(), pruned.config())
    for arm in ('ft_prune_gt', 'ft_prune_enh'):
        opt = ablate.dipnet_options(arm, arm, 0, ft, 0, kd, {'ft_prune': 'p'}, tmp_path)
        assert opt['network_g'] == dict(ablate.FT_STUDENT, mid_channels=[21, 21, 21, 20])
        assert opt['path']['pretrain_network_g'] == 'experiments/p/models/net_g_latest.pth'
        assert opt['path']['param_key_g'] == 'params' and opt['train']['optim_g']['lr'] == 1e-4
    assert ablate.dipnet_options('ft_prune_enh', 'x', 0, ft, 0, kd, {'ft_prune': 'p'}, tmp_path)['model_type'] == \
        'DistillSRModel'
    sc = ablate.PROFILES['long']
    assert sc.iters >= 1500

    def rate(opt: dict, it: int) -> float:  # learning rate at (1-based) iteration it of one run
        sched = opt['train']['scheduler']
        return opt['train']['optim_g']['lr'] * sched['gamma'] ** sum(it > m for m in sched['milestones'])

    exp = {'gt_deploy': 'gd'}
    opts = {arm: ablate.dipnet_options(arm, arm, 0, sc, 0, kd, exp) for arm in
            ('gt', 'gt_deploy', 'enh', 'lap', 'enh_feat', 'enh_prog', 'prune', 'prune_scratch')}
    for it in (1, sc.iters // 2, round(sc.iters * 0.75), round(sc.iters * 0.75) + 1, sc.iters):
        assert len({rate(o, it) for a, o in opts.items() if a != 'prune'}) == 1
    for it in range(1, sc.prune_iters + 1, 97):  # 4: pruned run = dense gt_deploy then prune; same rate as scratch
        assert rate(opts['prune'], it) == rate(opts['prune_scratch'], sc.iters + it)
    assert opts['prune_scratch']['train']['total_iter'] == sc.iters + sc.prune_iters
    exp = {r: f'{r}_x' for r in ('chain_teacher', 'chain_prune', 'chain_compress')}
    compressed = ablate.chain_options('chain_kd_compressed', 'c', 1, sc, 0, exp)
    assert compressed['path']['pretrain_network_g'] == 'experiments/chain_compress_x/models/net_g_compact.pth'
    assert compressed['path']['pretrain_network_t'] == 'experiments/chain_prune_x/models/net_g_latest.pth'
    released = ablate.chain_options('chain_kd_released', 'r', 1, sc, 0, exp)
    assert released['path']['pretrain_network_t'] == 'experiments/chain_teacher_x/models/net_g_latest.pth'
    assert released['datasets']['train']['meta_info_file'] == ablate.meta_info(1)
    assert ablate.chain_options('chain_prune', 'p', 1, sc, 0, exp)['path']['pretrain_network_g'] == \
        'experiments/chain_teacher_x/models/net_g_latest.pth'
    with pytest.raises(ValueError, match='not an earlier stage'):
        ablate.chain_options('chain_prune', 'p', 1, sc, 0, {})


def test_missing_official_weights_is_an_error(tmp_path, monkeypatch, capsys):
    ablate = _ablate()
    monkeypatch.setattr(ablate, 'FT_WEIGHTS', tmp_path / 'absent.pth')
    assert ablate.main(['--workdir', str(tmp_path / 'w'), '--results', str(tmp_path / 'r')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'absent.pth' in err and 'DDSR_PRETRAINED_DIR' in err
    assert not (tmp_path / 'r').exists()


def test_harness_two_seeds_end_to_end(tmp_path, demo_root, monkeypatch):
    """Comparison 3 (train form vs deploy form), 2 seeds x 2 iterations, scored on 2 eval photographs."""
    ablate = _ablate()
    _small_tiles(monkeypatch, ablate)
    work, results = tmp_path / 'work', tmp_path / 'results'
    (work / 'datasets').mkdir(parents=True)
    (work / 'datasets' / 'demo').symlink_to(demo_root)
    args = ['--profile', 'scratch', '--only', '3', '--seeds', '2', '--iters', '2', '--eval-limit', '2', '--jobs', '1',
            '--nice', '0', '--workdir', str(work), '--results', str(results)]
    code = ablate.main(args)
    assert code == 0
    data = json.loads((results / 'ablations_scratch-2.json').read_text())
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
    assert (work / 'options' / 'abl_scratch-2_gt_s1.yml').is_file()
    assert (work / 'runs' / 'abl_scratch-2_gt_s1.done.json').is_file()
    assert '| 3 | reparameterization' in (results / 'ablations.md').read_text()
    # a second invocation reuses the finished runs (done.json) instead of training again
    before = (work / 'runs' / 'abl_scratch-2_gt_s0.done.json').read_text()
    assert ablate.main(args) == 0
    assert (work / 'runs' / 'abl_scratch-2_gt_s0.done.json').read_text() == before


@pytest.mark.slow
@SLOW
def test_every_comparison_runs_from_the_current_option_files(tmp_path):
    """Smoke test: every comparison of the finetune and scratch profiles (long has scratch's arms and files), 2 seeds
    x 2 iterations on 16 training tiles, in an empty work folder (training tiles, eval split, demo set and teacher
    outputs built there, once for both profiles) from the option files as they stand; every run finishes and every
    comparison gets its intervals at both budgets."""
    weights = Path(os.environ.get('DDSR_PRETRAINED_DIR') or PRETRAINED)
    if not all((weights / f).is_file() for f in ('DIPNet_x4.pth', 'DDistill-SRx4_inference.pth')):
        pytest.skip(f'official weights not in {weights} (set DDSR_PRETRAINED_DIR)')
    work, results = tmp_path / 'work', tmp_path / 'results'
    env = dict(os.environ, DDSR_PRETRAINED_DIR=str(weights))
    ablate = _ablate()
    for profile in ('finetune', 'scratch'):
        cmd = [sys.executable, str(REPO_ROOT / 'benchmarks' / 'ablate.py'), '--profile', profile, '--seeds', '2',
               '--iters', '2', '--eval-limit', '1', '--max-tiles', '16', '--jobs', '2', '--nice', '0',
               '--teacher', 'pretrained', '--workdir', str(work), '--results', str(results)]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=7200)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        data = json.loads((results / f'ablations_{profile}-2.json').read_text())
        assert data['failed'] == [] and data['meta']['harness'] == 2
        own = [c for c in ablate.COMPARISONS if c.kind == ablate.PROFILES[profile].kind]
        rows = ablate.analyse(data)
        expected = {(c.key, b) for c in own for b in (('final', 'half') if c.half_budget else ('final',))}
        assert {(r['key'], r['budget']) for r in rows} == expected and all(r['n'] == 2 for r in rows)


def _basicsr_iterations(samples: int, batch: int, iters: int, ratio: int) -> int:
    """Iterations BasicSR 1.4.2's train loop runs: ``ceil(samples * r / batch)`` planned per epoch,
    ``total_epochs = ceil(iters / planned)``, epochs ``0 .. total_epochs``, a loader that drops the last partial batch,
    and a stop after ``iters``."""
    planned = math.ceil(samples * ratio / batch)
    return min(iters, (math.ceil(iters / planned) + 1) * (samples * ratio // batch))


@pytest.mark.parametrize('samples, batch, iters, ratio', [(229, 8, 1500, 2), (229, 8, 3000, 2), (229, 8, 200, 1),
                                                          (229, 8, 100, 1), (16, 8, 2, 1), (3, 2, 5, 2)])
def test_enlarge_ratio_lets_basicsr_reach_total_iter(samples, batch, iters, ratio):
    """With ratio 1 a 1500-iteration run on 229 tiles (batch 8) stopped at 1484, before its final checkpoint (seen in
    the long profile's log: 'Total epochs: 52; iters: 1500', last iteration 1484); the fine-tune profile's 200 reach."""
    assert _ablate().enlarge_ratio(samples, batch, iters) == ratio
    assert _basicsr_iterations(samples, batch, iters, ratio) == iters
    assert ratio == 1 or _basicsr_iterations(samples, batch, iters, ratio - 1) < iters
    if (samples, iters) == (229, 1500):
        assert _basicsr_iterations(229, 8, 1500, 1) == 1484
