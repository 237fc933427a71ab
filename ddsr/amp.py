"""``train.amp: bf16``: mixed-precision training of a ``basicsr train`` run started by ddsr (issue 23).

BasicSR 1.4.2 has no mixed precision. With ``train.amp: bf16`` the run hook :class:`MixedPrecision` enters
``torch.autocast`` (bfloat16; CPU, or CUDA when the model runs there) around each ``model.optimize_parameters`` call,
which holds the network's forward, the loss, the backward and the optimizer step of every model class (BasicSR's
SRModel and ddsr's). The parameters, the optimizer state and so every checkpoint stay float32 (autocast casts
copies for the ops that run in bf16); validation runs outside ``optimize_parameters``, in float32. bf16 needs no
loss scaling (its exponent range is float32's).

``fp16`` is refused: on a CPU it has no fast path, and on CUDA it needs a GradScaler, which ddsr does not provide
yet. Without ``train.amp`` (the default) nothing changes.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from ddsr.errors import DDSRError
from ddsr.run_state import RunHook, RunState

CHOICES = ('bf16',)


def amp_of(opt: dict) -> str | None:
    """``train.amp`` of an option file (None: off)."""
    value = (opt.get('train') or {}).get('amp')
    return None if value in (None, False, 'none', 'off') else value


def check_amp(path: str, opt: dict) -> None:
    """One :class:`DDSRError` line for a ``train.amp`` the run cannot honour."""
    amp = amp_of(opt)
    if amp is None or amp in CHOICES:
        return
    if amp == 'fp16':
        import torch
        why = ('needs a CUDA GPU (none here; fp16 has no fast CPU path)' if not torch.cuda.is_available() else
               'needs a GradScaler, which ddsr does not provide yet')
        raise DDSRError(f'{path}: train.amp: fp16 {why}; use train.amp: bf16')
    raise DDSRError(f'{path}: train.amp: {amp!r} is not supported (bf16, or leave it out for float32)')


class MixedPrecision(RunHook):
    """bf16 autocast around each ``optimize_parameters`` call (see the module docstring)."""

    def __init__(self) -> None:
        self._context: AbstractContextManager | None = None

    def before_optimize(self, state: RunState, model: Any, current_iter: int) -> None:
        import torch
        device = getattr(getattr(model, 'device', None), 'type', 'cpu')
        self._context = torch.autocast('cuda' if device == 'cuda' else 'cpu', dtype=torch.bfloat16)
        self._context.__enter__()

    def _leave(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)

    def after_optimize(self, state: RunState, model: Any, current_iter: int) -> None:
        self._leave()

    def on_optimize_error(self, state: RunState, model: Any, current_iter: int, err: BaseException) -> None:
        self._leave()

    def exit(self, state: RunState, success: bool) -> None:
        self._leave()
