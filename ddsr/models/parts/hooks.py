"""Forward hooks that record intermediate features of a network by module path (feature-distillation anchors).

``with FeatureRecorder(net, ['body.3', 'body.7']) as rec: net(x)`` leaves ``rec.features`` = the outputs of
those modules, in the order of ``paths``, as (B, C, H, W) tensors:

- a module returning a tuple (e.g. a block returning (out, residual)) contributes its first element;
- token outputs (B, H*W, C) of SwinIR-style layers called as ``layer(x, x_size)`` are reshaped to
  (B, C, H, W) with the ``x_size`` the layer received.
"""
import difflib
from collections.abc import Sequence

import torch
from torch import nn

from ddsr.errors import DDSRError


def resolve_modules(net: nn.Module, paths: Sequence[str], label: str = 'network') -> list[nn.Module]:
    """The submodules of ``net`` at ``paths``; an unknown path is a DDSRError listing close valid names."""
    named = dict(net.named_modules())
    modules = []
    for path in paths:
        if path not in named:
            close = difflib.get_close_matches(str(path), [n for n in named if n], n=6, cutoff=0.4)
            hint = f' Close names: {", ".join(close)}.' if close else ''
            raise DDSRError(f"{label}: no module named '{path}' in {type(net).__name__}.{hint}")
        modules.append(named[path])
    return modules


def as_feature_map(output, inputs) -> torch.Tensor:
    """(B, C, H, W) view of a module output (first element of tuples; tokens reshaped with the input x_size)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() == 4:
        return output
    if output.dim() == 3:
        size = inputs[1] if len(inputs) > 1 else None
        if isinstance(size, (tuple, list)) and len(size) == 2:
            b, n, c = output.shape
            h, w = int(size[0]), int(size[1])
            if h * w == n:
                return output.transpose(1, 2).reshape(b, c, h, w)
    raise DDSRError(f'feature anchor output of shape {tuple(output.shape)} is neither (B, C, H, W) nor '
                    'tokens (B, H*W, C) of a layer called with x_size')


class FeatureRecorder:
    """Context manager registering forward hooks on ``paths`` of ``net``; features land in ``self.features``.

    Args:
        net (nn.Module): The (bare, not DDP-wrapped) network.
        paths (list[str]): Module paths as in ``net.named_modules()``.
        label (str): Name used in error messages (e.g. 'feature_opt.student_anchors').
    """

    def __init__(self, net: nn.Module, paths: Sequence[str], label: str = 'network'):
        self.paths = list(paths)
        self.modules = resolve_modules(net, self.paths, label)
        self.features: list[torch.Tensor | None] = [None] * len(self.paths)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, index: int):

        def record(module, inputs, output):
            self.features[index] = as_feature_map(output, inputs)

        return record

    def __enter__(self) -> 'FeatureRecorder':
        self.features = [None] * len(self.paths)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        missing = [p for p, f in zip(self.paths, self.features, strict=False) if f is None]
        if missing and exc[0] is None:
            raise DDSRError(f'feature anchors never ran in the forward pass: {", ".join(missing)}')
