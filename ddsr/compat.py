"""The permanent patches ddsr applies to basicsr 1.4.2 on today's stack, in one place.

:mod:`ddsr.registration` calls :func:`apply_pre_import` just before basicsr is imported and :func:`apply` just
after; from then on they hold for every use of basicsr in the process. Each fix is small, idempotent and documented
here (and in docs/compatibility.md, with how to remove it); :data:`PATCHED` names every attribute they replace:

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
   name still raises as in BasicSR. The first lookup in a registry imports ddsr's registering modules
   (:func:`ddsr.registration.register_all`). Unknown names raise :class:`ddsr.errors.UnknownTypeError` listing
   close names.
9. Optimizers: ``BaseModel.get_optimizer`` of basicsr 1.4.2 knows only ``Adam``. Names added with
   :func:`register_optimizer` (``OBProxSG``, :mod:`ddsr.compress.obproxsg`) are built from ``train.optim_g`` by
   every model (``SRModel``, ``SwinIRModel``, ddsr's); ``Adam`` and unknown names behave exactly as before.

The only other place that changes basicsr is :mod:`ddsr.run_seam`: for the duration of one run started by ddsr's
command line it replaces the attributes its ``declared()`` lists (``parse_options``, ``build_dataset``,
``build_model``, ...) to plug in the run's hooks (NaN/Inf guard, preemption, console, unreadable samples,
``ddsr://`` paths), and puts them back afterwards.
"""
import collections
import difflib
import functools
import glob
import os
import sys
import types
import warnings
from os import path as osp

import torch

from ddsr.checkpoint import atomic_save, load_training_state
from ddsr.errors import UnknownTypeError

# Networks that must never be redirected to the student's checkpoints on resume.
FROZEN_NETWORKS = ('network_t', )

_APPLIED = False
EXTRA_OPTIMIZERS: dict[str, type] = {}  # name in train.optim_g.type -> optimizer class (patch 9)

# (module, class or None, attribute) of every basicsr attribute that :func:`apply` replaces, by patch number.
PATCHED = (
    ('basicsr.train', None, 'load_resume_state'),  # 3, 4, 5
    ('basicsr.utils.dist_util', None, '_init_dist_pytorch'),  # 6
    ('basicsr.models.base_model', 'BaseModel', 'model_to_device'),  # 6
    ('basicsr.models.base_model', None, 'torch'),  # 7
    ('basicsr.utils.registry', 'Registry', '_do_register'),  # 8
    ('basicsr.utils.registry', 'Registry', 'get'),  # 8
    ('basicsr.utils.registry', 'Registry', '__contains__'),  # 8
    ('basicsr.utils.registry', 'Registry', '__iter__'),  # 8
    ('basicsr.utils.registry', 'Registry', 'keys'),  # 8
    ('basicsr.models.base_model', 'BaseModel', 'get_optimizer'),  # 9
)


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

    def registered_first(method):  # ddsr's classes enter the registries on first use (ddsr.registration)
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            from ddsr.registry_import import first_use
            first_use()
            return method(self, *args, **kwargs)
        wrapper._ddsr_registered_first = True
        return wrapper

    Registry._do_register = _do_register
    Registry.get = registered_first(get)
    for name in ('__contains__', '__iter__', 'keys'):
        if not getattr(getattr(Registry, name), '_ddsr_registered_first', False):
            setattr(Registry, name, registered_first(getattr(Registry, name)))


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


class _TorchWithAtomicSave(types.ModuleType):
    """Stands in for ``torch`` inside ``basicsr.models.base_model`` so its ``torch.save`` calls are atomic."""
    save = staticmethod(atomic_save)

    def __getattr__(self, name):
        return getattr(torch, name)


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


def register_optimizer(name: str, cls: type) -> None:
    """Make ``train.optim_<x>.type: <name>`` build ``cls(params, lr, **kwargs)`` in every BasicSR model."""
    EXTRA_OPTIMIZERS[name] = cls


def _get_optimizer(original):
    if getattr(original, '_ddsr_extra', False):
        return original

    @functools.wraps(original)
    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if optim_type in EXTRA_OPTIMIZERS:
            return EXTRA_OPTIMIZERS[optim_type](params, lr, **kwargs)
        return original(self, optim_type, params, lr, **kwargs)

    get_optimizer._ddsr_extra = True
    return get_optimizer


def _patch_basicsr_modules() -> None:
    import basicsr.models.base_model as base_model
    import basicsr.train
    import basicsr.utils.dist_util
    from basicsr.models.base_model import BaseModel
    base_model.torch = _TorchWithAtomicSave('torch')
    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.dist_util._init_dist_pytorch = _init_dist_pytorch
    BaseModel.model_to_device = _model_to_device
    BaseModel.get_optimizer = _get_optimizer(BaseModel.get_optimizer)


def apply_pre_import() -> None:
    """The shims basicsr needs before its first import (ddsr.registration runs this just before it)."""
    _alias_functional_tensor()


def apply() -> None:
    """Apply every patch once; safe to call again. Imports basicsr (see ddsr.registration for when it runs)."""
    global _APPLIED
    if _APPLIED:
        return
    apply_pre_import()
    _allow_training_state_types()
    _idempotent_registry()
    _patch_basicsr_modules()
    _APPLIED = True
