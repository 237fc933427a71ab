"""OBProxSG: the orthant-based proximal stochastic gradient method (Chen et al.) as Jiang et al. run it to prune.

The pruning stage of "Compressing Deep Image Super-resolution Models" minimises ``f(w) + lambda * ||w||_1`` over
every trainable parameter with plain SGD steps (no momentum, no weight decay) in two phases:

- **proximal phase**, the first ``Np`` "epochs" of ``epochSize`` steps: a gradient step, then the proximal
  operator of ``lr * lambda * ||.||_1`` (soft threshold):
  ``w <- sign(y) * max(|y| - lr * lambda, 0)`` with ``y = w - lr * g``;
- **orthant phase**, the next ``No`` epochs (default: for ever): with ``zeta = sign(w)``, a gradient step on the
  orthant face fixed by ``zeta``, ``w_hat = w - lr * (g + lambda * zeta)`` (``w_hat = 0`` where ``zeta = 0``),
  then the projection onto that orthant: ``w = w_hat`` where ``w_hat * zeta > eps``, else exactly ``0``. A weight
  that would change sign or ends at ``|w| <= eps`` becomes zero, and zeros stay zero.

With a finite ``No`` the two phases alternate (``Np`` proximal epochs, ``No`` orthant epochs, ...). The option
keys are the authors' (``optim_g: {type: OBProxSG, lr, lambda_, epochSize, Np, No, eps}``); importing this module
makes BasicSR's ``BaseModel.get_optimizer`` build it (:func:`ddsr.compat.register_optimizer`), so any model
(``SRModel``, ``SwinIRModel``, ``PruneSRModel``, ``DistillSRModel``, ...) takes it from ``train.optim_g``.

Units, as the authors' code has them: their OBProxSG class counts ``epochSize`` in optimizer *steps* (one epoch =
``epochSize`` calls of ``step``), while their prune script (``basicsr/prune.py``) overwrites ``epochSize`` and
``Np`` from the data set before building it, with ``epochSize`` in *samples*: iterations per pass x batch size x
world size, and ``Np = int(total_epochs / 10)`` with ``total_epochs = ceil(total_iter / iterations per pass)``
(:func:`authors_schedule`). One optimizer "epoch" therefore lasts batch size x world size passes over the data, and
the switch to orthant steps comes after ``Np * epochSize`` steps. ddsr takes numbers as given (steps, like their
class) and ``epochSize: auto`` / ``Np: auto`` as their script computes them
(:class:`ddsr.models.proximal_prune_model.ProximalPruneSRModel` resolves them from ``datasets.train``).

Unlike the authors' class, the phase counters (completed epochs, step within the epoch) are part of
:meth:`OBProxSG.state_dict`, so a run resumed from a training state (``--auto_resume``) continues in the same
phase at the same step. Only numbers are stored (training states load with ``weights_only=True``).
"""
import math
from collections.abc import Iterable

import torch

from ddsr.compat import register_optimizer

PROXIMAL, ORTHANT = 'proximal', 'orthant'
AUTO = 'auto'


def authors_schedule(samples: int, batch_size: int, world_size: int, total_iter: int,
                     enlarge: float = 1) -> tuple[int, int]:
    """``(epochSize, Np)`` as the authors' prune script sets them from the data set.

    Args:
        samples (int): Training samples (``len(train_set)``).
        batch_size (int): ``batch_size_per_gpu``.
        world_size (int): Number of processes.
        total_iter (int): ``train.total_iter``.
        enlarge (float): ``dataset_enlarge_ratio``. Default: 1.

    Returns:
        tuple: ``epochSize`` = iterations per pass x batch size x world size (a number of samples, used by the
        optimizer as a number of steps) and ``Np = int(ceil(total_iter / iterations per pass) / 10)``.
    """
    per_pass = math.ceil(samples * enlarge / (batch_size * world_size))
    return per_pass * batch_size * world_size, int(math.ceil(total_iter / per_pass) / 10)


def _count(value, name: str, allow_inf: bool = False) -> float:
    """A non-negative whole number of epochs / steps (``inf``, ``'inf'`` or None = infinite where allowed)."""
    if allow_inf and (value is None or (isinstance(value, str) and value.strip().lower() == 'inf')):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError(f'OBProxSG: {name} must be a number >= 0, got {value!r}')
    if math.isinf(value):
        if not allow_inf:
            raise ValueError(f'OBProxSG: {name} must be finite, got {value!r}')
        return math.inf
    if not float(value).is_integer():
        raise ValueError(f'OBProxSG: {name} must be a whole number, got {value!r}')
    return int(value)


class OBProxSG(torch.optim.Optimizer):
    """Orthant-based proximal SGD for ``f(w) + lambda_ * ||w||_1`` (see the module docstring).

    Args:
        params: Parameters (or parameter groups) to optimise; every one is L1-regularised.
        lr (float): Step size.
        lambda_ (float): L1 weight.
        epochSize (int): Steps per "epoch" (the authors' class counts steps; their prune script sets it to a number
            of samples, see the module docstring).
        Np (int): Epochs of proximal steps at the start of each cycle.
        No (int | float | str | None): Epochs of orthant steps per cycle; ``inf`` / ``'inf'`` / None: no end.
            Default: infinite.
        eps (float): Projection threshold of the orthant step. Default: 0.
    """

    def __init__(self, params: Iterable, lr: float, lambda_: float, epochSize: int | str, Np: int | str,  # noqa: N803
                 No: float | int | str | None = math.inf, eps: float = 0.0) -> None:  # noqa: N803
        for key, count in (('epochSize', epochSize), ('Np', Np)):
            if count == AUTO:
                raise ValueError(f"OBProxSG: {key}: auto is computed from the data set by model_type PruneSRModel "
                                 f"(prune.mode: proximal); give a number for other models")
        for name, value in (('lr', lr), ('lambda_', lambda_), ('eps', eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f'OBProxSG: {name} must be a number >= 0, got {value!r}')
        self.epoch_size = _count(epochSize, 'epochSize')
        if self.epoch_size < 1:
            raise ValueError(f'OBProxSG: epochSize must be >= 1, got {epochSize!r}')
        self.n_prox = _count(Np, 'Np')
        self.n_orth = _count(No, 'No', allow_inf=True)
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0  # steps done in the current epoch
        super().__init__(params, dict(lr=float(lr), lambda_=float(lambda_), eps=float(eps)))

    @property
    def phase(self) -> str:
        """Phase of the next step: 'proximal' for the first ``Np`` epochs of each cycle, else 'orthant'."""
        cycle = self.n_prox + self.n_orth
        position = self.epoch if math.isinf(cycle) else self.epoch % cycle
        return PROXIMAL if position < self.n_prox else ORTHANT

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        proximal = self.phase == PROXIMAL
        for group in self.param_groups:
            lr, lam, eps = group['lr'], group['lambda_'], group['eps']
            for p in group['params']:
                if p.grad is None:
                    continue
                if proximal:
                    y = p - lr * p.grad
                    p.copy_(y.sign() * (y.abs() - lr * lam).clamp_min(0))
                else:
                    zeta = p.sign()
                    w_hat = (p - lr * (p.grad + lam * zeta)) * zeta.abs()
                    p.copy_(torch.where(w_hat * zeta > eps, w_hat, torch.zeros_like(w_hat)))
        self.step_in_epoch += 1
        if self.step_in_epoch >= self.epoch_size:
            self.epoch += 1
            self.step_in_epoch = 0
        return loss

    def counters(self) -> dict:
        """``{'epoch', 'step_in_epoch', 'phase'}``: where the schedule is (for logs and resume checks)."""
        return {'epoch': self.epoch, 'step_in_epoch': self.step_in_epoch, 'phase': self.phase}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state['obproxsg'] = {'epoch': int(self.epoch), 'step_in_epoch': int(self.step_in_epoch)}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        counters = state_dict.pop('obproxsg', None)
        if counters is None:
            raise ValueError('OBProxSG: the optimizer state has no phase counters (saved by another optimizer?)')
        super().load_state_dict(state_dict)
        self.epoch, self.step_in_epoch = int(counters['epoch']), int(counters['step_in_epoch'])


register_optimizer('OBProxSG', OBProxSG)
