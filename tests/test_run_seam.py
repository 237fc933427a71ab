"""Issue 22 (run seam): a ``basicsr train|test`` run started by ddsr changes basicsr only through ddsr.run_seam, and
puts everything back (``build_model``, ``build_dataset``, ``parse_options``, ``EnlargedSampler.set_epoch``,
``sys.argv``, ...) after a successful run and after a failing one.

The basicsr modules' attributes (and those of the classes they define) are snapshot before the run, inside a hook
during training, and after it: during the run every attribute that differs is one that
:func:`ddsr.run_seam.declared` lists; after it, none differs.
"""
import inspect
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from ddsr import run_seam
from ddsr.run_state import RunHook
from tests.conftest import run_cli_inprocess, write_options


def tiny_options(root: Path, name: str, iters: int = 3) -> dict:
    """A 3-iteration MSRResNet run on one 32x32 image with the short console (a few seconds on one thread)."""
    rng = np.random.default_rng(0)
    hr = cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (5, 5), 1.5)
    for folder, img in (('HR', hr), ('LR', cv2.resize(hr, (8, 8), interpolation=cv2.INTER_AREA))):
        (root / 'data' / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / 'data' / folder / 'only.png'), img)
    data = {'name': 'one', 'type': 'PairedImageDataset', 'dataroot_gt': str(root / 'data' / 'HR'),
            'dataroot_lq': str(root / 'data' / 'LR'), 'io_backend': {'type': 'disk'}}
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {**data, 'gt_size': 32, 'use_hflip': False, 'use_rot': False, 'num_worker_per_gpu': 0,
                               'batch_size_per_gpu': 1, 'dataset_enlarge_ratio': 2, 'prefetch_mode': None},
                     'val': {**data, 'name': 'val'}},
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1,
                      'upscale': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [100],
                                                                          'gamma': 0.5},
                  'total_iter': iters, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': iters, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr',
                                                                           'crop_border': 4}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': iters, 'use_tb_logger': False, 'console': 'progress'},
    }


def _snapshot() -> dict:
    """(module, attribute) -> value for every loaded basicsr module and every class such a module defines."""
    seen = {}
    for name, module in list(sys.modules.items()):
        if not (name == 'basicsr' or name.startswith('basicsr.')) or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, types.ModuleType):
                continue  # sub-modules appear as attributes when first imported: not a replacement
            seen[(name, attr)] = value
            if inspect.isclass(value) and value.__module__ == name:
                for cattr, cvalue in list(vars(value).items()):
                    seen[(f'{name}.{value.__qualname__}', cattr)] = cvalue
    seen[('sys', 'argv')] = (sys.argv, list(sys.argv))  # the list object and its items
    return seen


def _changed(before: dict, now: dict) -> set:
    def same(a, b):
        return a is b or (isinstance(a, tuple) and a[0] is b[0] and a[1] == b[1])
    return {key for key in before if key not in now or not same(now[key], before[key])}


def _run(args: list, cwd: Path) -> tuple[int, str, str]:
    """``ddsr.cli.main(args)`` in this process in ``cwd`` (unlike conftest's helper, ``sys.argv`` is not put back
    here: the command line itself must do it)."""
    import contextlib
    import io
    import os

    from ddsr.cli import main
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def _declared_keys(phase: str) -> set:
    keys = set()
    for owner, attr in run_seam.declared(phase):
        keys.add((owner.__name__ if isinstance(owner, types.ModuleType) else f'{owner.__module__}.{owner.__qualname__}',
                  attr))
    return keys


class _Probe(RunHook):
    """Snapshots basicsr while the run trains; raises there when asked to (a failing run)."""

    def __init__(self, fail: bool) -> None:
        self.fail, self.during, self.saves = fail, None, []

    def after_save_state(self, state, model, epoch, current_iter):
        self.saves.append(current_iter)

    def after_optimize(self, state, model, current_iter):
        if current_iter == 2:
            self.during = _snapshot()
            if self.fail:
                raise RuntimeError('probe: a run that fails during training')


@pytest.mark.parametrize('fail', [False, True], ids=['success', 'failure'])
def test_basicsr_is_changed_only_by_the_seam_and_restored_after_the_run(tmp_path, monkeypatch, one_thread, fail):
    import basicsr.test
    import basicsr.train
    from basicsr.data.data_sampler import EnlargedSampler
    yml = write_options(tmp_path / 'seam.yml', tiny_options(tmp_path, 'seam'))
    probe = _Probe(fail)
    default_hooks = run_seam.default_hooks
    monkeypatch.setattr(run_seam, 'default_hooks', lambda *args: [*default_hooks(*args), probe])
    originals = (basicsr.train.build_model, basicsr.train.build_dataset, basicsr.train.parse_options,
                 basicsr.test.build_dataset, basicsr.test.parse_options, basicsr.train.get_root_logger,
                 EnlargedSampler.set_epoch)
    argv, argv_object = list(sys.argv), sys.argv
    before = _snapshot()
    code, out, err = _run(['basicsr', 'train', '-opt', yml], tmp_path)
    after = _snapshot()
    assert code == (1 if fail else 0), err[-2000:]
    if fail:
        assert 'error: unexpected RuntimeError: probe: a run that fails during training' in err
    else:
        assert 'result: seam after 3 iterations' in out
        # the model instance's save_training_state told the hooks of the periodic and the final ('latest') save;
        # exact resume (a hook) wrote its record next to the state
        assert probe.saves == [3, -1]
        assert (tmp_path / 'experiments' / 'seam' / 'training_states' / '3.state.rng').is_file()
    assert probe.during is not None
    during = _changed(before, probe.during)
    declared = _declared_keys('train')
    assert during <= declared, f'replaced outside the seam: {sorted(during - declared)}'
    # the replacements of the training pipeline were in place while it trained
    assert {('basicsr.train', 'build_model'), ('basicsr.train', 'build_dataset'), ('basicsr.train', 'parse_options'),
            ('basicsr.train', 'create_train_val_dataloader'),
            ('basicsr.data.data_sampler.EnlargedSampler', 'set_epoch'), ('sys', 'argv')} <= during
    assert probe.during[('sys', 'argv')][1][:1] == ['basicsr train']
    assert _changed(before, after) == set(), sorted(_changed(before, after))
    assert (basicsr.train.build_model, basicsr.train.build_dataset, basicsr.train.parse_options,
            basicsr.test.build_dataset, basicsr.test.parse_options, basicsr.train.get_root_logger,
            EnlargedSampler.set_epoch) == originals
    assert sys.argv is argv_object and sys.argv == argv


def test_a_test_run_restores_basicsr_too(tmp_path, one_thread):
    """``basicsr test`` (here of a model trained just before) likewise leaves no replacement behind."""
    import basicsr.test
    opt = tiny_options(tmp_path, 'seamtest')
    yml = write_options(tmp_path / 'train.yml', opt)
    assert run_cli_inprocess(['basicsr', 'train', '-opt', yml], tmp_path)[0] == 0
    test_opt = {key: opt[key] for key in ('name', 'model_type', 'scale', 'num_gpu', 'network_g', 'val')}
    test_opt['datasets'] = {'test_1': opt['datasets']['val']}
    test_opt['path'] = {'pretrain_network_g': str(tmp_path / 'experiments' / 'seamtest' / 'models' /
                                                  'net_g_latest.pth'), 'strict_load_g': True}
    before = _snapshot()
    build_dataset = basicsr.test.build_dataset
    code, out, err = _run(['basicsr', 'test', '-opt', write_options(tmp_path / 't.yml', test_opt)],
                                       tmp_path)
    assert code == 0, err[-2000:]
    assert _changed(before, _snapshot()) == set()
    assert basicsr.test.build_dataset is build_dataset


def test_interrupt_restores_everything(tmp_path, one_thread):
    """KeyboardInterrupt inside the seam: each hook's exit runs and every attribute is put back."""
    import basicsr.train

    from ddsr.run_state import RunState
    exits = []

    class Hook(RunHook):
        def exit(self, state, success):
            exits.append(success)

    before = _snapshot()
    with pytest.raises(KeyboardInterrupt):
        with run_seam.running(RunState(phase='train', hooks=[Hook(), Hook()]), ['basicsr train', '-opt', 'x']):
            assert sys.argv == ['basicsr train', '-opt', 'x']
            assert basicsr.train.build_model is not before[('basicsr.train', 'build_model')]
            raise KeyboardInterrupt
    assert exits == [False, False]
    assert _changed(before, _snapshot()) == set()


def test_every_patch_of_basicsr_is_listed_once_in_the_compatibility_doc():
    """docs/compatibility.md names every attribute compat replaces for good and every one the seam replaces per run,
    and compat's list is what the process really runs with (each of them is ddsr's, not basicsr's)."""
    import importlib

    from ddsr import compat
    doc = (Path(__file__).resolve().parent.parent / 'docs' / 'compatibility.md').read_text()
    rows = [line for line in doc.splitlines() if line.startswith('| ')]
    for module, cls, attr in compat.PATCHED:
        owner = importlib.import_module(module)
        if cls is not None:
            owner = getattr(owner, cls)
        value = vars(owner)[attr]
        code = getattr(value, '__code__', None)  # functools.wraps copies __module__: ask where the code is
        assert 'ddsr' in (code.co_filename if code is not None else type(value).__module__), (module, cls, attr)
        assert sum(f'`{attr}`' in row or f'.{attr}`' in row for row in rows) == 1, (module, cls, attr)
    for owner, attr in {*run_seam.declared('train'), *run_seam.declared('test')}:
        assert sum(f'{attr}`' in row for row in rows) == 1, (owner, attr)


def test_train_hooks_run_in_their_documented_order(tmp_path):
    """The order the module docstring and docs/compatibility.md give: exact resume before preemption and the guard
    (whose saves it records), the console last."""
    from ddsr import console, guards, preempt, resume, sample_errors
    hooks = run_seam.default_hooks('train', tiny_options(tmp_path, 'order'))
    assert [type(h) for h in hooks] == [run_seam.OptionPaths, sample_errors.ReportingDatasets, resume.ExactResume,
                                        preempt.Preemption, guards.NonFiniteGuard, console.ConsoleRun]
    assert not any(isinstance(h, resume.ExactResume) for h in run_seam.default_hooks('test', {}))
