"""Issue 2: install/registration, compat layer, demo data builder, CLI errors."""
import ast
import filecmp
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

from ddsr.data.demo import SCALES, build_demo_data
from tests.conftest import REPO_ROOT, run_cli, write_options

REGISTRIES = {'ARCH_REGISTRY': ARCH_REGISTRY, 'LOSS_REGISTRY': LOSS_REGISTRY, 'MODEL_REGISTRY': MODEL_REGISTRY,
              'DATASET_REGISTRY': DATASET_REGISTRY}


def _registered_in_source():
    """(registry name, class name) of every ``@X_REGISTRY.register()`` class in the ddsr sources."""
    found = []
    for path in (REPO_ROOT / 'ddsr').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for deco in node.decorator_list:
                    func = deco.func if isinstance(deco, ast.Call) else deco
                    if isinstance(func, ast.Attribute) and func.attr == 'register':
                        found.append((func.value.id, node.name))
    return found


def test_every_registered_class_is_in_basicsr_registries():
    found = _registered_in_source()
    assert len(found) >= 1
    for registry, name in found:
        assert name in REGISTRIES[registry], f'{name} not in {registry}'


def test_contract_names_registered():
    """The public names of DESIGN.md section 2."""
    for name in ('DDistillSR', 'DIPNet', 'EDSRmini', 'SwinIRmini'):
        assert name in ARCH_REGISTRY
    for name in ('DistillSRModel', 'PruneSRModel'):
        assert name in MODEL_REGISTRY
    for name in ('LapPyramidLoss', 'FeatureDistillLoss'):
        assert name in LOSS_REGISTRY


@pytest.mark.parametrize('code', [
    # importing twice and re-importing the registering modules must not raise
    'import ddsr, importlib; import ddsr; [importlib.reload(m) for m in ddsr.archs._modules + ddsr.models._modules]',
    # basicsr imported first (its torchvision import satisfied beforehand, as an older torchvision does), then ddsr
    'import sys, torchvision.transforms._functional_tensor as f; '
    'sys.modules["torchvision.transforms.functional_tensor"]'
    ' = f; import basicsr; import ddsr; from basicsr.utils.registry import ARCH_REGISTRY; ARCH_REGISTRY.get("EDSR")',
])
def test_import_orders(code):
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr


def test_registering_a_different_class_under_a_taken_name_still_raises():
    class EDSR(torch.nn.Module):  # noqa: N801  (same name as BasicSR's EDSR, different class)
        pass

    with pytest.raises(AssertionError, match='already registered'):
        ARCH_REGISTRY.register(EDSR)


def test_unknown_type_lists_close_names():
    with pytest.raises(KeyError, match='Close names: .*EDSR'):
        ARCH_REGISTRY.get('EDRS')


def _sr_model_opt(tmp_path: Path) -> dict:
    return {
        'name': 'state', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'dist': False, 'is_train': True,
        'network_g': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'training_states': str(tmp_path / 'training_states'), 'models': str(tmp_path / 'models')},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [3, 6], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'auto_resume': True, 'root_path': str(tmp_path),
    }


def test_training_state_resumes_under_weights_only_torch_load(tmp_path):
    """A BasicSR training state (Adam + MultiStepLR, whose milestones are a Counter) loads with weights_only."""
    from basicsr.models import build_model

    from ddsr import compat
    (tmp_path / 'training_states').mkdir()
    (tmp_path / 'models').mkdir()
    model = build_model(_sr_model_opt(tmp_path))
    for it in range(1, 5):
        model.update_learning_rate(it)
        model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16)})
        model.optimize_parameters(it)
    model.save(epoch=1, current_iter=4)
    with pytest.raises(Exception):  # noqa: B017  what basicsr 1.4.2 itself does on a CPU-only machine
        torch.load(tmp_path / 'training_states' / '4.state', map_location=lambda s, loc: s.cuda(0))

    opt = _sr_model_opt(tmp_path)
    state = compat.load_resume_state(opt)
    assert state['iter'] == 4 and opt['path']['resume_state'].endswith('4.state')
    resumed = build_model(opt)
    resumed.resume_training(state)
    assert resumed.schedulers[0].last_epoch == model.schedulers[0].last_epoch
    assert resumed.get_current_learning_rate() == pytest.approx(model.get_current_learning_rate())
    before = model.optimizers[0].state_dict()['state'][0]['exp_avg']
    assert torch.equal(resumed.optimizers[0].state_dict()['state'][0]['exp_avg'], before)


def test_auto_resume_skips_a_truncated_newest_state(tmp_path):
    from basicsr.models import build_model

    from ddsr import compat
    (tmp_path / 'training_states').mkdir()
    model = build_model(_sr_model_opt(tmp_path))
    model.save_training_state(epoch=0, current_iter=2)
    good = (tmp_path / 'training_states' / '2.state').read_bytes()
    (tmp_path / 'training_states' / '3.state').write_bytes(good[:len(good) // 2])
    with pytest.warns(UserWarning, match='3.state'):
        state = compat.load_resume_state(_sr_model_opt(tmp_path))
    assert state['iter'] == 2


def test_resume_keeps_the_teacher_path_and_param_key():
    from ddsr import compat
    opt = {'network_g': {}, 'network_t': {}, 'path': {
        'resume_state': 'x/7.state', 'models': 'exp/models', 'pretrain_network_g': 'student.pth',
        'param_key_g': 'params_ema', 'pretrain_network_t': 'teacher.pth', 'param_key_t': 'params_ema'}}
    compat.check_resume(opt, 7)
    assert opt['path']['pretrain_network_g'].endswith('net_g_7.pth') and opt['path']['param_key_g'] == 'params'
    assert opt['path']['pretrain_network_t'] == 'teacher.pth' and opt['path']['param_key_t'] == 'params_ema'


def test_demo_data_layout_and_lr_is_matlab_bicubic(demo_root):
    for split in ('train', 'val'):
        names = (demo_root / split / 'meta_info.txt').read_text().split()
        assert len(names) >= (200 if split == 'train' else 2)
        for name in names[::max(1, len(names) // 5)]:
            hr = cv2.imread(str(demo_root / split / 'HR' / name), cv2.IMREAD_UNCHANGED)
            if split == 'train':
                assert hr.shape == (96, 96, 3)
            for scale in SCALES:
                lr = cv2.imread(str(demo_root / split / 'LR_bicubic' / f'X{scale}' / name), cv2.IMREAD_UNCHANGED)
                assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3)
                expected = np.clip(np.round(imresize(hr / 255., 1 / scale) * 255.), 0, 255)
                assert np.array_equal(lr, expected.astype(np.uint8))


def test_demo_lmdb_is_read_by_paired_image_dataset(demo_root):
    dataset = DATASET_REGISTRY.get('PairedImageDataset')({
        'name': 'demo', 'phase': 'val', 'scale': 4, 'io_backend': {'type': 'lmdb'},
        'dataroot_gt': str(demo_root / 'val' / 'HR.lmdb'),
        'dataroot_lq': str(demo_root / 'val' / 'LR_bicubic_X4.lmdb')})
    assert len(dataset) == 2
    sample = dataset[0]
    hr = cv2.imread(str(demo_root / 'val' / 'HR' / 'chelsea.png')).astype(np.float32) / 255.
    assert sample['gt'].shape == (3, ) + hr.shape[:2]
    assert np.allclose(sample['gt'].numpy().transpose(1, 2, 0)[..., ::-1], hr, atol=1e-6)
    assert sample['lq'].shape == (3, hr.shape[0] // 4, hr.shape[1] // 4)


def test_demo_build_is_byte_identical_and_idempotent(demo_root, tmp_path):
    again = Path(build_demo_data(str(tmp_path / 'demo')))
    cmp = filecmp.dircmp(demo_root, again)
    stack = [cmp]
    files = 0
    while stack:
        c = stack.pop()
        assert not c.left_only and not c.right_only
        match, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors, mismatch
        files += len(match)
        stack.extend(c.subdirs.values())
    assert files > 1000
    mtime = (again / 'train' / 'HR.lmdb' / 'data.mdb').stat().st_mtime_ns
    build_demo_data(str(again))  # complete build is kept
    assert (again / 'train' / 'HR.lmdb' / 'data.mdb').stat().st_mtime_ns == mtime


def _tiny_opt(workdir: Path, **over) -> dict:
    from tests.conftest import load_yaml
    opt = load_yaml(REPO_ROOT / 'options' / 'demo' / 'train_MSRResNet_demo_x4.yml')
    opt['name'] = 'tiny'
    opt['network_g'].update(num_feat=8, num_block=1)
    opt['datasets']['train'].update(gt_size=48, batch_size_per_gpu=2)
    opt['train']['total_iter'] = 4
    opt['train']['scheduler']['milestones'] = [2]
    opt['val']['val_freq'] = 4
    opt['logger'].update(print_freq=1, save_checkpoint_freq=4)
    for key, value in over.items():
        opt[key] = value
    return opt


def _log(run_dir: Path, pattern: str) -> str:
    return '\n'.join(p.read_text() for p in sorted(run_dir.glob(pattern)))


def test_train_validate_then_auto_resume_from_another_working_directory(workdir, tmp_path_factory):
    yml = write_options(workdir / 'tiny.yml', _tiny_opt(workdir))
    proc = run_cli(['basicsr', 'train', '-opt', yml], workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = workdir / 'experiments' / 'tiny'
    assert (exp / 'models' / 'net_g_4.pth').is_file() and (exp / 'training_states' / '4.state').is_file()
    log = _log(exp, 'train_*.log')
    assert '# psnr:' in log and '# ssim:' in log

    # continue to 8 iterations, launched from an unrelated working directory with the root given explicitly
    other = tmp_path_factory.mktemp('elsewhere')
    opt = _tiny_opt(workdir)
    for ds in opt['datasets'].values():
        for key in ('dataroot_gt', 'dataroot_lq'):
            ds[key] = str(workdir / ds[key])
    yml2 = write_options(workdir / 'tiny_abs.yml', opt)
    code = ('import sys, ddsr; from basicsr.train import train_pipeline; '
            f'sys.argv = ["train", "-opt", r"{yml2}", "--auto_resume", "--force_yml", "train:total_iter=8"]; '
            f'train_pipeline(r"{workdir}")')
    proc = subprocess.run([sys.executable, '-c', code], cwd=other, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Resuming training from epoch' in _log(exp, 'train_*.log')
    assert (exp / 'models' / 'net_g_8.pth').is_file()
    assert not list((workdir / 'experiments').glob('tiny_archived_*'))
    assert not (other / 'experiments').exists() or not list((other / 'experiments').iterdir())

    # basicsr test on the trained weights: images and PSNR in the log
    test_opt = {
        'name': 'tiny_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': {'name': 'demo_val', 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                                'dataroot_gt': 'datasets/demo/val/HR',
                                'dataroot_lq': 'datasets/demo/val/LR_bicubic/X4'}},
        'network_g': opt['network_g'],
        'path': {'pretrain_network_g': 'experiments/tiny/models/net_g_8.pth', 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4,
                                                       'test_y_channel': True}}},
    }
    proc = run_cli(['basicsr', 'test', '-opt', write_options(workdir / 'test.yml', test_opt)], workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = workdir / 'results' / 'tiny_test'
    assert len(list((results / 'visualization' / 'demo_val').glob('*.png'))) == 2
    psnr = [float(line.split('# psnr:')[1].split()[0]) for line in _log(results, 'test_*.log').splitlines()
            if '# psnr:' in line]
    assert psnr and 15 < psnr[0] < 40


def test_two_process_cpu_training_with_the_pytorch_launcher(workdir):
    opt = _tiny_opt(workdir, name='tiny_ddp')
    opt.pop('val')
    yml = write_options(workdir / 'ddp.yml', opt)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29533', '-m',
           'ddsr.train', '-opt', str(yml), '--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = workdir / 'experiments' / 'tiny_ddp'
    log = _log(exp, 'train_*.log')
    assert 'World size (gpu number): 2' in log
    assert (exp / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('case, expect', [
    ('missing', 'option file not found'),
    ('malformed', 'malformed option file'),
    ('unknown_type', "unknown type 'MSRResNett'"),
    ('missing_path', 'datasets.train.dataroot_gt: path does not exist'),
    ('missing_key', 'missing required key(s): network_g'),
])
def test_clear_errors_exit_2(workdir, case, expect):
    yml = workdir / f'{case}.yml'
    opt = _tiny_opt(workdir)
    if case == 'malformed':
        yml.write_text('name: x\n  model_type: [SRModel\n')
    elif case == 'unknown_type':
        opt['network_g']['type'] = 'MSRResNett'
    elif case == 'missing_path':
        opt['datasets']['train']['dataroot_gt'] = 'no/such/folder'
    elif case == 'missing_key':
        opt.pop('network_g')
    if case not in ('missing', 'malformed'):
        write_options(yml, opt)
    proc = run_cli(['basicsr', 'train', '-opt', yml], workdir)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error:') and expect in lines[0], proc.stderr
    assert not (workdir / 'experiments').exists()
