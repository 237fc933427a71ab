"""Export of a network for deployment: a deploy checkpoint (fused, inference weights + arch) and an ONNX model.

ONNX: TorchScript-based exporter (``dynamo=False``; the dynamo exporter needs onnxscript, which is not a
dependency), opset 17, dynamic batch/height/width; metadata ``scale``, ``min_size``, ``multiple`` tell
``ddsr upscale --onnx`` how to pad. Swin-type nets (``window_size``): a Swin block reuses its stored shift mask
when the input has the size it was built for (``input_resolution``) and otherwise computes the mask from the
input size; the export is traced at a window multiple that differs from the stored size, so the graph computes
the mask from the (dynamic) input size and is right at every window multiple. The export is checked against
PyTorch on a natural image (scikit-image photo).
"""
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddsr.archs.capabilities import capabilities_of
from ddsr.checkpoint import atomic_save
from ddsr.deploy.backends import PROBE_SIDE, onnx_upscaler, to_deploy
from ddsr.errors import DDSRError

OPSET = 17
PathLike = str | Path


def arch_config(net: nn.Module, arch: dict | None = None) -> dict:
    """Self-describing arch dict: the net's own ``config()`` (:mod:`ddsr.archs.capabilities`) when it has one,
    else ``arch`` with ``deploy: True`` for nets that take a ``deploy`` kwarg."""
    config = capabilities_of(net).config
    if config is not None:
        return config
    if arch is None:
        raise DDSRError(f'{type(net).__name__}: no config(); give the arch (type + kwargs)')
    arch = dict(arch)
    if 'deploy' in arch or hasattr(net, 'deploy'):
        arch['deploy'] = True
    return arch


def fold_dynamic_bn(net: nn.Module) -> None:
    """Fold DDistillSR's dynamic-branch BNs into their convolutions (its own key layout, ``fold_bn: true``)."""
    fold = getattr(net, 'fold_dynamic_bn', None)
    if not callable(fold):
        raise DDSRError(f'{type(net).__name__} has no BN folding (fold_bn / --fold-bn is for DDistillSR)')
    fold()


def export_checkpoint(net: nn.Module, path: PathLike, arch: dict | None = None, fold_bn: bool = False) -> dict:
    """Write ``{'params': deploy state_dict, 'arch': {...}}`` (fused, eval, CPU tensors); returns it."""
    net = to_deploy(net)
    if fold_bn:
        fold_dynamic_bn(net)
    ckpt = {'params': {k: v.detach().cpu() for k, v in net.state_dict().items()}, 'arch': arch_config(net, arch)}
    atomic_save(ckpt, str(path))
    return ckpt


def natural_image(size: int = 64, offset=(96, 160)) -> torch.Tensor:
    """An RGB crop (1, 3, size, size) in [0, 1] of scikit-image's astronaut photo (no download)."""
    from skimage import data
    img = data.astronaut()[offset[0]:offset[0] + size, offset[1]:offset[1] + size]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None] / 255.


def stored_mask_sizes(net: nn.Module) -> set:
    """Input sides for which a Swin block of ``net`` would use its stored attention mask instead of computing it."""
    return {side for m in net.modules() if getattr(m, 'attn_mask', None) is not None
            for side in getattr(m, 'input_resolution', ())}


def export_onnx(net: nn.Module, path: PathLike, size: int = 64, opset: int = OPSET) -> dict:
    """Export the deploy form of ``net`` to ONNX with dynamic H/W and metadata; returns the metadata."""
    import onnx
    net = to_deploy(net).cpu()
    need = capabilities_of(net).size
    size = need.fit(max(size, PROBE_SIDE))
    if need.multiple > 1 and size in stored_mask_sizes(net):
        size += need.multiple  # trace the size-dependent mask computation, not the stored mask of that one size
    x = natural_image(size)
    with torch.no_grad():
        scale = net(x).shape[-1] // size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: 'batch', 2: 'height', 3: 'width'}
    if getattr(net, 'per_sample_weights', False):  # weights that depend on the sample (DDistill-SR's folded form):
        del axes[0]  # the traced graph is right for batch 1 only
    with warnings.catch_warnings():  # the tracer's notes on Python-side shape arithmetic (checked below instead)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(net, (x, ), str(path), input_names=['lr'], output_names=['sr'], opset_version=opset,
                          dynamic_axes={'lr': axes, 'sr': axes}, dynamo=False)
    model = onnx.load(str(path))
    meta = {'scale': scale, 'min_size': need.min_size, 'multiple': need.multiple}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))
    return meta


def onnx_max_diff(net: nn.Module, path: PathLike, size: int = 64) -> float:
    """max |ONNX - PyTorch| on a natural ``size`` x ``size`` crop (onnxruntime, CPU; padded as the model needs)."""
    x = natural_image(size)
    up = onnx_upscaler(str(path))
    with torch.no_grad():
        ref = to_deploy(net).cpu()(x)
    return float((up(x) - ref).abs().max())
