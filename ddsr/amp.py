"""``train.amp: bf16`` and ``train.channels_last``: mixed precision and memory format of a ``basicsr train`` run
started by ddsr (issue 23).

BasicSR 1.4.2 has neither. With ``train.amp: bf16`` the run hook :class:`MixedPrecision` enters ``torch.autocast``
(bfloat16; CPU, or CUDA when the model runs there) around each ``model.optimize_parameters`` call, which holds the
network's forward (the teacher's too, in distillation), the loss, the backward and the optimizer step of every model
class (BasicSR's SRModel and ddsr's). The loss modules (every ``cri_*`` attribute of the model: pixel, perceptual,
distillation, feature losses) run outside autocast on float32 copies of their inputs, so every loss is computed in
float32 (under autocast alone, e.g. Charbonnier of two bf16 tensors stays bf16). The parameters, the optimizer
state and so every checkpoint stay float32 (autocast casts copies for the ops that run in bf16); validation and its
metrics run outside ``optimize_parameters``, in float32. bf16 needs no loss scaling (its exponent range is
float32's).

``fp16`` is refused: on a CPU it has no fast path, and on CUDA it needs a GradScaler, which ddsr does not provide
yet. Without ``train.amp`` (the default) nothing changes.

With ``train.channels_last: true`` the hook :class:`ChannelsLast` converts every network of the model (``net_g``,
``net_g_ema``, ``net_t``) to the channels_last memory format before its first ``optimize_parameters`` call, and the
4-D inputs of each iteration (``lq``, ``gt``, ``enhanced``) before every call: oneDNN's and cuDNN's fast
convolutions use that layout. The saved weights are made contiguous (a state_dict hook), so checkpoints are laid out
as without the option. Off by default (``false`` or absent: nothing changes); works with and without ``train.amp``.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ddsr.errors import DDSRError
from ddsr.run_state import RunHook, RunState

CHOICES = ('bf16',)
NETWORKS = ('net_g', 'net_g_ema', 'net_t')  # the networks of BasicSR's and ddsr's models
INPUTS = ('lq', 'gt', 'enhanced')  # the per-iteration input tensors (feed_data)


def amp_of(opt: dict) -> str | None:
    """``train.amp`` of an option file (None: off)."""
    value = (opt.get('train') or {}).get('amp')
    return None if value in (None, False, 'none', 'off') else value


def channels_last_of(opt: dict) -> bool:
    """``train.channels_last`` of an option file (False when absent)."""
    return (opt.get('train') or {}).get('channels_last') is True


def check_amp(path: str, opt: dict) -> None:
    """One :class:`DDSRError` line for a ``train.amp`` the run cannot honour or a ``train.channels_last`` that is
    not a bool."""
    value = (opt.get('train') or {}).get('channels_last', False)
    if not isinstance(value, bool):
        raise DDSRError(f'{path}: train.channels_last must be true or false, got {value!r}')
    amp = amp_of(opt)
    if amp is None or amp in CHOICES:
        return
    if amp == 'fp16':
        import torch
        why = ('needs a CUDA GPU (none here; fp16 has no fast CPU path)' if not torch.cuda.is_available() else
               'needs a GradScaler, which ddsr does not provide yet')
        raise DDSRError(f'{path}: train.amp: fp16 {why}; use train.amp: bf16')
    raise DDSRError(f'{path}: train.amp: {amp!r} is not supported (bf16, or leave it out for float32)')


def _fp32(value: Any) -> Any:
    """``value`` with every floating tensor in it (also inside lists and tuples) as float32."""
    import torch
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_fp32(v) for v in value) if type(value) in (list, tuple) else value
    return value


def _fp32_forward(forward: Callable, device: str) -> Callable:
    """``forward`` run outside autocast on float32 copies of its tensor arguments."""
    def fp32_forward(*args: Any, **kwargs: Any) -> Any:
        import torch
        with torch.autocast(device, enabled=False):
            return forward(*_fp32(args), **{key: _fp32(value) for key, value in kwargs.items()})
    return fp32_forward


class MixedPrecision(RunHook):
    """bf16 autocast around each ``optimize_parameters`` call, the losses in float32 (see the module docstring)."""

    def __init__(self) -> None:
        self._context: AbstractContextManager | None = None
        self._losses: list[Any] = []  # the loss modules whose forward is wrapped (instance attribute) now

    def before_optimize(self, state: RunState, model: Any, current_iter: int) -> None:
        import torch
        device = 'cuda' if getattr(getattr(model, 'device', None), 'type', 'cpu') == 'cuda' else 'cpu'
        for name, loss in vars(model).items():
            if name.startswith('cri_') and isinstance(loss, torch.nn.Module) and 'forward' not in vars(loss):
                loss.forward = _fp32_forward(loss.forward, device)
                self._losses.append(loss)
        self._context = torch.autocast(device, dtype=torch.bfloat16)
        self._context.__enter__()

    def _leave(self) -> None:
        while self._losses:
            del self._losses.pop().forward  # the class's forward again
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)

    def after_optimize(self, state: RunState, model: Any, current_iter: int) -> None:
        self._leave()

    def on_optimize_error(self, state: RunState, model: Any, current_iter: int, err: BaseException) -> None:
        self._leave()

    def exit(self, state: RunState, success: bool) -> None:
        self._leave()


def _contiguous_state(module: Any, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict hook: the saved tensors laid out contiguously (as without channels_last)."""
    if not prefix:  # the top-level call: every entry is in the dict
        for key, value in state_dict.items():
            state_dict[key] = value.contiguous()


class ChannelsLast(RunHook):
    """Networks and 4-D inputs in the channels_last memory format (see the module docstring)."""

    def __init__(self) -> None:
        self._converted: weakref.WeakSet = weakref.WeakSet()  # networks already converted (a swapped one is new)
        self._handles: list[Any] = []

    def before_optimize(self, state: RunState, model: Any, current_iter: int) -> None:
        import torch
        for name in NETWORKS:
            net = getattr(model, name, None)
            if isinstance(net, torch.nn.Module) and net not in self._converted:
                net.to(memory_format=torch.channels_last)
                bare = model.get_bare_model(net) if hasattr(model, 'get_bare_model') else net  # what save_network saves
                self._handles.append(bare.register_state_dict_post_hook(_contiguous_state))
                self._converted.add(net)
        for name in INPUTS:
            value = getattr(model, name, None)
            if isinstance(value, torch.Tensor) and value.dim() == 4:
                setattr(model, name, value.contiguous(memory_format=torch.channels_last))

    def exit(self, state: RunState, success: bool) -> None:
        while self._handles:
            self._handles.pop().remove()
