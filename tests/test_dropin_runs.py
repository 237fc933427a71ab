"""Issue 14 (2-4): option files written like BasicSR's run as under plain BasicSR; failed runs keep what they wrote;
BasicSR's dataset classes stay BasicSR's.

Runs the command line in-process (``tests.conftest.run_cli_inprocess``).
"""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from tests.conftest import run_cli_inprocess

NET = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _img(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 2))


def _pairs(root: Path, sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]]) -> tuple[str, str]:
    """HR/LR folders: ``{name: ((hr_h, hr_w), (lr_h, lr_w))}``."""
    for i, (name, (hr, lr)) in enumerate(sizes.items()):
        _img(root / 'HR' / f'{name}.png', *hr, seed=i)
        _img(root / 'LR' / f'{name}.png', *lr, seed=100 + i)
    return str(root / 'HR'), str(root / 'LR')


def _names_only_lmdb(folder: str, out: Path) -> str:
    names = sorted(p.name for p in Path(folder).glob('*.png'))
    make_lmdb_from_imgs(folder, str(out), names, [n[:-4] for n in names], n_thread=1,
                        map_size=1 << 24)
    (out / 'meta_info.txt').write_text(''.join(f'{n}\n' for n in names))  # BasicSR reads only the name
    return str(out)


TRAIN_YML = """# written as BasicSR's own option files are
name: {name}
model_type: SRModel
scale: 4
num_gpu: 0
manual_seed: 0

datasets:
  train:
    name: tiny
    type: PairedImageDataset
    dataroot_gt: {train_gt}
    dataroot_lq: {train_lq}
    io_backend:
      type: lmdb
    gt_size: 32
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
  val:
    name: bench
    type: PairedImageDataset
    dataroot_gt: {val_gt}
    dataroot_lq: {val_lq}
    io_backend:
      type: disk

network_g:
  type: MSRResNet
  num_in_ch: 3
  num_out_ch: 3
  num_feat: 8
  num_block: 1
  upscale: 4

path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~

train:
  ema_decay: 0
  optim_g:
    type: Adam
    lr: !!float 2e-4
    weight_decay: 0
    betas: !!python/tuple [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [1]
    gamma: 0.5
  total_iter: 2
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean

val:
  val_freq: !!float 2e3
  save_img: false
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 4
      test_y_channel: true

logger:
  print_freq: 1
  save_checkpoint_freq: !!float 5e3
  use_tb_logger: false
"""


def _expected_psnr(weights: Path, gt_dir: str, lq_dir: str) -> float:
    """PSNR as BasicSR computes it on a benchmark set whose HR it crops to LR x 4, computed here independently."""
    net = MSRResNet(**NET)
    net.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True)['params'])
    net.eval()
    values = []
    for lq_path in sorted(Path(lq_dir).glob('*.png')):
        lq = cv2.imread(str(lq_path)).astype(np.float32) / 255.
        gt = cv2.imread(str(Path(gt_dir) / lq_path.name))[:lq.shape[0] * 4, :lq.shape[1] * 4]
        with torch.no_grad():
            out = net(img2tensor(lq, bgr2rgb=True, float32=True)[None])
        values.append(calculate_psnr(tensor2img(out), gt, crop_border=4, test_y_channel=True))
    return float(np.mean(values))


def test_basicsr_style_options_benchmark_val_tuple_and_names_only_lmdb(tmp_path):
    train_gt, train_lq = _pairs(tmp_path / 'train', {f't{i}': ((48, 48), (12, 12)) for i in range(4)})
    val_gt, val_lq = _pairs(tmp_path / 'val', {'chelsea': ((75, 113), (18, 28)), 'coffee': ((48, 48), (12, 12))})
    keys = dict(train_gt=_names_only_lmdb(train_gt, tmp_path / 'HR.lmdb'),
                train_lq=_names_only_lmdb(train_lq, tmp_path / 'LR.lmdb'), val_gt=val_gt, val_lq=val_lq)
    yml = tmp_path / 'bench.yml'
    yml.write_text(TRAIN_YML.format(name='bench', **keys))
    code, out, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml], tmp_path)
    assert code == 0, err[-3000:]
    notes = [line for line in out.splitlines() if line.startswith('note:')]
    assert notes == [f'note: {yml}: datasets.val: 1 HR image(s) not an exact multiple of LR x 4 (first: '
                     'chelsea.png); BasicSR crops them to LR x 4']
    exp = tmp_path / 'experiments' / 'bench'
    log = ''.join(p.read_text() for p in exp.glob('train_*.log'))
    assert "'betas': (0.9, 0.99)" in log or 'betas: (0.9, 0.99)' in log  # the tuple, as BasicSR parsed it
    logged = float(re.findall(r'# psnr: ([\d.]+)', log)[-1])
    assert logged == pytest.approx(_expected_psnr(exp / 'models' / 'net_g_latest.pth', val_gt, val_lq), abs=1e-4)

    # where BasicSR fails, preflight still stops first: non-multiple HR in training data (paired_random_crop
    # raises "Scale mismatches"), and val HR smaller than LR x scale with metrics (calculate_psnr's shape check)
    for name, kind, gt, lq, needle in (('bad_train', 'train', val_gt, val_lq, 'HR must be exactly LR x 4'),
                                       ('bad_val', 'val', val_lq, val_lq, 'HR must be at least LR x 4')):
        text = TRAIN_YML.format(name=name, **keys).replace('type: lmdb', 'type: disk')
        text = text.replace(keys['train_gt'], gt if kind == 'train' else train_gt)
        text = text.replace(keys['train_lq'], lq if kind == 'train' else train_lq)
        text = text.replace(f'dataroot_gt: {val_gt}', f'dataroot_gt: {gt}') if kind == 'val' else text
        (tmp_path / f'{name}.yml').write_text(text)
        code, _, err = run_cli_inprocess(['basicsr', 'train', '-opt', tmp_path / f'{name}.yml'], tmp_path)
        lines = [line for line in err.splitlines() if line.startswith('error:')]
        assert code == 2 and len(lines) == 1 and 'scale mismatch' in lines[0] and needle in lines[0], err[-2000:]
        assert f'datasets.{kind}' in lines[0] and not (tmp_path / 'experiments' / name).exists()


TEST_YML = """name: three_sets
model_type: SRModel
scale: 4
num_gpu: 0
manual_seed: 0
datasets:
{sets}
network_g: {{type: MSRResNet, num_in_ch: 3, num_out_ch: 3, num_feat: 8, num_block: 1, upscale: 4}}
path:
  pretrain_network_g: {weights}
  strict_load_g: true
  param_key_g: params
val:
  save_img: true
  suffix: ~
  metrics:
    psnr: {{type: calculate_psnr, crop_border: 4, test_y_channel: false}}
"""


def test_test_run_failing_on_its_third_set_keeps_the_first_two_and_classes_stay_basicsr(tmp_path):
    import basicsr.data
    import basicsr.test
    from basicsr.data.paired_image_dataset import PairedImageDataset
    own_getitem = PairedImageDataset.__dict__['__getitem__']
    weights = tmp_path / 'net.pth'
    torch.manual_seed(0)
    torch.save({'params': MSRResNet(**NET).state_dict()}, weights)
    sets = []
    for i in (1, 2, 3):
        gt, lq = _pairs(tmp_path / f'set{i}', {f'a{i}': ((48, 48), (12, 12)), f'b{i}': ((48, 40), (12, 10))})
        sets.append(f'  test_{i}:\n    name: set{i}\n    type: PairedImageDataset\n    dataroot_gt: {gt}\n'
                    f'    dataroot_lq: {lq}\n    io_backend: {{type: disk}}')
    bad = tmp_path / 'set3' / 'LR' / 'b3.png'
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])  # truncated: the header (size) still reads
    yml = tmp_path / 'test.yml'
    yml.write_text(TEST_YML.format(sets='\n'.join(sets), weights=weights))
    code, _, err = run_cli_inprocess(['basicsr', 'test', '-opt', yml], tmp_path)
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f'error: datasets.test (set3): cannot load {bad} (unreadable or truncated image): '
                               'AttributeError: '), lines[0]
    assert 'run folder kept: results/three_sets' in err
    results = tmp_path / 'results' / 'three_sets'
    for i in (1, 2):
        saved = sorted(p.name for p in (results / 'visualization' / f'set{i}').glob('*.png'))
        assert saved == [f'a{i}_three_sets.png', f'b{i}_three_sets.png']
    log = ''.join(p.read_text() for p in results.glob('test_three_sets_*.log'))
    assert log.count('# psnr: ') == 2 and 'Testing set3...' in log

    # after the failed run, BasicSR's dataset class, its __getitem__ and the pipeline's build_dataset are BasicSR's
    assert PairedImageDataset.__dict__['__getitem__'] is own_getitem
    assert own_getitem.__code__.co_filename.endswith('basicsr/data/paired_image_dataset.py')
    assert basicsr.test.build_dataset is basicsr.data.build_dataset
    opt = {'name': 'set3', 'type': 'PairedImageDataset', 'dataroot_gt': str(tmp_path / 'set3' / 'HR'),
           'dataroot_lq': str(tmp_path / 'set3' / 'LR'), 'io_backend': {'type': 'disk'}, 'phase': 'test', 'scale': 4}
    dataset = basicsr.data.build_dataset(opt)
    assert type(dataset).__getitem__ is own_getitem and '__getitems__' not in vars(dataset)
    with pytest.raises(AttributeError):  # BasicSR's own error for the truncated image (not a ddsr type)
        dataset[1]
    with pytest.raises(IndexError):
        dataset[2]
    dataset.paths = dataset.paths[:1]
    assert [sample['lq_path'] for sample in dataset] == [str(tmp_path / 'set3' / 'LR' / 'a3.png')]  # IndexError ends
