"""Every patch ddsr applies to basicsr 1.4.2 on today's stack, in one place.

`import ddsr` calls :func:`apply` before anything imports basicsr. Each fix is small, idempotent and
documented here (see also DESIGN.md section 4):

1. ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17; basicsr 1.4.2 imports
   ``rgb_to_grayscale`` from it. We alias the module to its private successor.
2. ``torch.load`` defaults to ``weights_only=True`` since torch 2.6. BasicSR's MultiStepRestartLR keeps its
   milestones in a ``collections.Counter``; we allow-list it so training states load safely.
3. Resume without CUDA: basicsr's ``load_resume_state`` calls ``torch.cuda.current_device()``. Ours maps
   to the model's device (CPU when ``num_gpu: 0`` or no CUDA).
4. ``--auto_resume`` looked for ``experiments/<name>`` relative to the working directory; ours uses
   ``opt['path']['training_states']`` (under the root) and skips corrupt newest states.
5. On resume, basicsr redirects every ``pretrain_network_*`` to the run's own checkpoints and turns
   ``param_key_*`` ``params_ema`` into ``params``. Frozen networks (the teacher ``network_t``) keep both.
6. Distributed: ``--launcher pytorch`` hard-codes NCCL and CUDA devices; on a CPU-only machine we fall back
   to gloo and wrap models in DDP without ``device_ids``.
7. Checkpoints and training states saved by BasicSR's ``BaseModel`` are written atomically (temp file, fsync,
   ``os.replace``): a kill at any moment leaves the previous or the new file, never a truncated one.
8. Registration is idempotent for the same class (re-import, reload); a different class under an existing
   name still raises as in BasicSR. Unknown names raise :class:`ddsr.errors.UnknownTypeError` listing close names.
9. NaN/Inf guard: every model built by ``basicsr train`` stops at the first non-finite loss or gradient, after
   saving the last good training state (see :func:`install_nonfinite_guard`).
10. Datasets built by BasicSR's pipelines raise :class:`ddsr.errors.DDSRError` naming the sample's files when a
    sample cannot be loaded (corrupt or truncated image, patch larger than the image), instead of a traceback.
"""
import collections
import copy
import difflib
import functools
import glob
import os
import sys
import tempfile
import types
import warnings
from os import path as osp

import torch

from ddsr.errors import DDSRError, NonFiniteLossError, UnknownTypeError

# Networks that must never be redirected to the student's checkpoints on resume.
FROZEN_NETWORKS = ('network_t', )

_APPLIED = False
_TRAIN_EPOCH = {'epoch': 0}
# 'setup' while a ``basicsr train|test`` run builds datasets and models from the options, 'training' from the first
# optimize_parameters on (set by ddsr.cli and the model guard; the CLI reports set-up failures as bad options).
PIPELINE = {'stage': None}  # the epoch BasicSR's train loop is in (recorded by EnlargedSampler.set_epoch)


def _alias_functional_tensor() -> None:
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision: nothing to do)
    except ImportError:
        import torchvision.transforms._functional_tensor as successor
        sys.modules[name] = successor


def _allow_training_state_types() -> None:
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch >= 2.4
        add([collections.Counter])


def _idempotent_registry() -> None:
    from basicsr.utils.registry import Registry

    def _do_register(self, name, obj, suffix=None):
        if isinstance(suffix, str):
            name = name + '_' + suffix
        old = self._obj_map.get(name)
        if old is not None and old is not obj and _qualified(old) != _qualified(obj):
            raise AssertionError(f"An object named '{name}' was already registered in '{self._name}' registry!")
        self._obj_map[name] = obj

    def get(self, name, suffix='basicsr'):
        ret = self._obj_map.get(name)
        if ret is None:
            ret = self._obj_map.get(f'{name}_{suffix}')
        if ret is None:
            close = difflib.get_close_matches(str(name), list(self._obj_map.keys()), n=5, cutoff=0.5)
            hint = f' Close names: {", ".join(close)}.' if close else ''
            raise UnknownTypeError(f"unknown type '{name}' in the {self._name} registry.{hint}")
        return ret

    Registry._do_register = _do_register
    Registry.get = get


def _qualified(obj) -> tuple:
    return getattr(obj, '__module__', None), getattr(obj, '__qualname__', None)


def find_resume_state(state_dir: str) -> str | None:
    """Newest loadable ``<iter>.state`` in ``state_dir`` (corrupt or truncated ones are skipped with a warning)."""
    states = []
    for path in glob.glob(osp.join(state_dir, '*.state')):
        stem = osp.basename(path)[:-len('.state')]
        if stem.isdigit():
            states.append((int(stem), path))
    for _, path in sorted(states, reverse=True):
        try:
            load_training_state(path, 'cpu')
            return path
        except Exception as err:  # a killed writer leaves a truncated file: fall back to the previous one
            warnings.warn(f'skipping unreadable training state {path}: {err}', stacklevel=2)
    return None


def load_training_state(path: str, device) -> dict:
    """Load a BasicSR training state safely (``weights_only``) onto ``device``."""
    return torch.load(path, map_location=device, weights_only=True)


def check_resume(opt: dict, resume_iter: int) -> None:
    """BasicSR's ``check_resume`` that leaves frozen networks (teacher) and their param keys alone."""
    from basicsr.utils.misc import check_resume as basicsr_check_resume
    frozen = [net for net in FROZEN_NETWORKS if net in opt]
    kept = {key: opt['path'].get(key) for net in frozen for key in (f'param_key_{net[len("network_"):]}', )}
    ignore = list(opt['path'].get('ignore_resume_networks') or [])
    opt['path']['ignore_resume_networks'] = ignore + [net for net in frozen if net not in ignore]
    basicsr_check_resume(opt, resume_iter)
    for key, value in kept.items():
        if value is not None:
            opt['path'][key] = value


def load_resume_state(opt: dict) -> dict | None:
    """Replacement of ``basicsr.train.load_resume_state``: root-relative auto-resume, CPU-safe map_location."""
    resume_state_path = None
    if opt['auto_resume']:
        state_dir = opt['path'].get('training_states') or osp.join(
            opt.get('root_path', '.'), 'experiments', opt['name'], 'training_states')
        resume_state_path = find_resume_state(state_dir) if osp.isdir(state_dir) else None
        if resume_state_path is not None:
            opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    use_cuda = opt.get('num_gpu', 0) != 0 and torch.cuda.is_available()
    device = torch.device('cuda', torch.cuda.current_device()) if use_cuda else torch.device('cpu')
    resume_state = load_training_state(resume_state_path, device)
    check_resume(opt, resume_state['iter'])
    return resume_state


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path`` (atomic on POSIX)."""
    if not isinstance(path, (str, os.PathLike)):
        return torch.save(obj, path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class _TorchWithAtomicSave(types.ModuleType):
    """Stands in for ``torch`` inside ``basicsr.models.base_model`` so its ``torch.save`` calls are atomic."""
    save = staticmethod(atomic_save)

    def __getattr__(self, name):
        return getattr(torch, name)


# ---- 9. NaN/Inf guard ----


class _NonFiniteStep(Exception):
    """Raised inside ``optimizer.step`` (before it changes anything) when a gradient is NaN/Inf."""


def _grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads, float('inf')))).all())


def _is_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    try:
        return bool(abs(float(value)) < float('inf'))  # False for nan and inf
    except (TypeError, ValueError):
        return True


def install_nonfinite_guard(model) -> None:
    """Stop training at the first NaN/Inf loss or gradient of ``model`` (any BasicSR model), saving a state first.

    How it works (nothing here changes a finite run):

    - every ``optimizer.step`` of ``model.optimizers`` first checks that all gradients are finite; if not it
      raises before touching the weights, the optimizer moments or the EMA (which updates after the step);
    - ``update_learning_rate`` snapshots the schedulers (and the optimizers' lr) before stepping them, so they
      can be put back to where iteration N-1 left them;
    - after ``optimize_parameters`` the logged losses (``log_dict``) are checked too.

    Which state is saved: when the gradients of iteration N are non-finite, the step is refused, the schedulers
    are restored, and ``model.save(epoch, N - 1)`` writes ``models/net_*_{N-1}.pth`` and
    ``training_states/{N-1}.state``: exactly the state a periodic save at iteration N-1 would have written (the
    last good one). When only a logged loss is non-finite (the weights were stepped with finite gradients and are
    still finite), the state of iteration N is saved; if the weights are no longer finite, nothing is saved and
    the previous periodic state is the last good one. Then :class:`ddsr.errors.NonFiniteLossError` names the
    iteration and the saved state; the command line prints it and exits with code 2.

    How to resume: ``basicsr train -opt X.yml --auto_resume`` picks the newest state, i.e. the last good one.
    Without a change the run will most likely diverge again at the same point: lower ``train.optim_g.lr``
    (or add warm-up / gradient clipping in the model), check the data, then resume. A model with several
    optimizers (GANs) that fails at its second optimizer has already stepped the first network at iteration N.
    """
    if getattr(model, '_ddsr_nonfinite_guard', False):
        return
    model._ddsr_nonfinite_guard = True
    snapshot = {}

    original_update_lr = model.update_learning_rate
    original_optimize = model.optimize_parameters

    def update_learning_rate(*args, **kwargs):
        snapshot['schedulers'] = [copy.deepcopy(s.state_dict()) for s in model.schedulers]
        snapshot['lrs'] = [[group['lr'] for group in o.param_groups] for o in model.optimizers]
        return original_update_lr(*args, **kwargs)

    def optimize_parameters(current_iter, *args, **kwargs):
        PIPELINE['stage'] = 'training'
        for optimizer in getattr(model, 'optimizers', []):  # every call: models may rebuild their optimizers
            _guard_step(optimizer)
        try:
            original_optimize(current_iter, *args, **kwargs)
        except _NonFiniteStep:
            _stop_nonfinite(model, current_iter, snapshot, stepped=False)
        bad = {k: v for k, v in (getattr(model, 'log_dict', None) or {}).items() if not _is_finite(v)}
        if bad:
            _stop_nonfinite(model, current_iter, snapshot, stepped=True, losses=bad)

    model.update_learning_rate = update_learning_rate
    model.optimize_parameters = optimize_parameters


def _guard_step(optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer.step`` refuse to run on NaN/Inf gradients (raises :class:`_NonFiniteStep`); idempotent."""
    original_step = optimizer.step
    if getattr(original_step, '_ddsr_finite_guard', False):
        return

    @functools.wraps(original_step)  # keeps the LR scheduler's ``_wrapped_by_lr_sched`` mark
    def step(*args, **kwargs):
        if not _grads_finite(optimizer):
            raise _NonFiniteStep()
        return original_step(*args, **kwargs)

    step._ddsr_finite_guard = True
    optimizer.step = step


def _stop_nonfinite(model, current_iter: int, snapshot: dict, stepped: bool, losses: dict | None = None) -> None:
    from basicsr.utils import get_root_logger
    output = getattr(model, 'output', None)
    if losses:
        what = 'loss ' + ', '.join(f'{k}={float(v)}' for k, v in losses.items())
    else:
        bad_output = isinstance(output, torch.Tensor) and not bool(torch.isfinite(output).all())
        what = 'loss/gradient' + (' (the network output has NaN/Inf)' if bad_output else '')
    good = current_iter
    if not stepped:
        good = current_iter - 1
        for sched, state in zip(model.schedulers, snapshot.get('schedulers', []), strict=False):
            sched.load_state_dict(state)
        for optimizer, lrs in zip(model.optimizers, snapshot.get('lrs', []), strict=False):
            for group, lr in zip(optimizer.param_groups, lrs, strict=False):
                group['lr'] = lr
    else:
        nets = [net for net in vars(model).values() if isinstance(net, torch.nn.Module)]
        if not all(bool(torch.isfinite(p).all()) for net in nets for p in net.parameters()):
            good = 0
    states = model.opt['path'].get('training_states', 'training_states')
    if good >= 1:
        get_root_logger().info(f'Non-finite {what} at iteration {current_iter}: saving the state of iteration {good}.')
        model.save(_TRAIN_EPOCH['epoch'], good)
        saved = (f'saved the last good state, iteration {good}: {osp.join(states, f"{good}.state")} (+ models/net_*_'
                 f'{good}.pth); resume from it with --auto_resume after lowering the learning rate or checking the '
                 f'data')
    else:
        found = find_resume_state(states) if osp.isdir(states) else None
        saved = (f'no good state to save (the weights are not finite or nothing was trained yet); the last good one is '
                 f'{found} (--auto_resume uses it)' if found else 'no good state to save and no earlier state exists')
    raise NonFiniteLossError(f'non-finite {what} at iteration {current_iter}: training stopped; {saved}')


def _record_epoch(set_epoch):

    def wrapper(self, epoch):
        _TRAIN_EPOCH['epoch'] = epoch
        return set_epoch(self, epoch)

    wrapper._ddsr_wrapped = True
    return wrapper


def _build_model_with_guard(build_model):

    def build(opt):
        model = build_model(opt)
        if opt.get('is_train'):
            install_nonfinite_guard(model)
        return model

    return build


# ---- 10. dataset samples that cannot be loaded ----


def _sample_files(dataset, index) -> str:
    paths = getattr(dataset, 'paths', None)
    try:
        entry = paths[index % len(paths)]
    except (TypeError, IndexError, KeyError, ZeroDivisionError):
        return f'sample {index}'
    if isinstance(entry, dict):
        return ', '.join(f'{k} {v}' for k, v in entry.items())
    return str(entry)


def _guarded_getitem(getitem):

    def __getitem__(self, index):
        try:
            return getitem(self, index)
        except DDSRError:
            raise
        except Exception as err:  # noqa: B902  (decoding, cropping, augmentation: all point at the files)
            opt = getattr(self, 'opt', None) or {}
            where = f"datasets.{opt.get('phase', '?')} ({opt.get('name', type(self).__name__)})"
            hint = ' (unreadable or truncated image?)' if isinstance(err, AttributeError) else ''
            raise DDSRError(f'{where}: cannot load {_sample_files(self, index)}: {type(err).__name__}: '
                            f'{" ".join(str(err).split())[:300]}{hint}') from None

    __getitem__._ddsr_wrapped = True
    return __getitem__


def _build_dataset_guarded(build_dataset):

    def build(dataset_opt):
        dataset = build_dataset(dataset_opt)
        cls = type(dataset)
        if not getattr(cls.__getitem__, '_ddsr_wrapped', False):
            cls.__getitem__ = _guarded_getitem(cls.__getitem__)
        return dataset

    return build


def _init_dist_pytorch(backend: str = 'nccl', **kwargs) -> None:
    import torch.distributed as dist
    rank = int(os.environ['RANK'])
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count())
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


def _model_to_device(self, net):
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        return DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
    if self.opt['num_gpu'] > 1:
        return DataParallel(net)
    return net


def _patch_basicsr_modules() -> None:
    import basicsr.data
    import basicsr.models.base_model as base_model
    import basicsr.test
    import basicsr.train
    import basicsr.utils.dist_util
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.models.base_model import BaseModel
    base_model.torch = _TorchWithAtomicSave('torch')
    if not getattr(EnlargedSampler.set_epoch, '_ddsr_wrapped', False):
        EnlargedSampler.set_epoch = _record_epoch(EnlargedSampler.set_epoch)
    if not hasattr(basicsr.train.build_model, '__wrapped_build__'):
        basicsr.train.build_model = _build_model_with_guard(basicsr.train.build_model)
        basicsr.train.build_model.__wrapped_build__ = True
    for module in (basicsr.data, basicsr.train, basicsr.test):
        if not hasattr(module.build_dataset, '__wrapped_build__'):
            module.build_dataset = _build_dataset_guarded(module.build_dataset)
            module.build_dataset.__wrapped_build__ = True
    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.dist_util._init_dist_pytorch = _init_dist_pytorch
    BaseModel.model_to_device = _model_to_device


def reset_basicsr_logger() -> None:
    """Forget BasicSR's root logger set-up (its file handler), so the next pipeline run in this process logs to
    its own file (BasicSR initialises the logger once per process)."""
    import logging

    from basicsr.utils import logger as basicsr_logger
    basicsr_logger.initialized_logger.pop('basicsr', None)
    log = logging.getLogger('basicsr')
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def apply() -> None:
    """Apply every patch once; safe to call again."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_functional_tensor()
    _allow_training_state_types()
    _idempotent_registry()
    _patch_basicsr_modules()
    _APPLIED = True
