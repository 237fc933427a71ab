"""Inference backends: a network as a function LR -> SR with its input constraints (:class:`Upscaler`), run by
PyTorch (``inference_mode``, optionally ``channels_last``, any device) or by onnxruntime (an exported model).

Images of any size go through :func:`ddsr.deploy.tiling.tiled_forward` (padding to the net's minimum size and
multiple; tiles aligned on the coarse grid of ESA nets, see :mod:`ddsr.archs.esa_upsample`).
"""
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ddsr.archs.capabilities import capabilities_of
from ddsr.archs.esa_upsample import tile_geometry
from ddsr.archs.reparam import switch_to_deploy
from ddsr.deploy import onnx_runtime
from ddsr.deploy.onnx_runtime import PROBE_SIDE, OnnxMeta
from ddsr.deploy.tiling import tiled_forward
from ddsr.errors import DDSRError


@dataclass
class Upscaler:
    """A network as a function LR (1, 3, h, w) float [0, 1] -> SR (1, 3, s*h, s*w) with its input constraints."""
    forward: Callable[[Tensor], Tensor]
    scale: int
    min_size: int = 1
    multiple: int = 1
    info: dict = field(default_factory=dict)
    align: int = 1  # tile origins: multiples of the net's coarse grid (ESA), see ddsr.archs.esa_upsample
    tile_context: Callable | None = None

    def __call__(self, x: Tensor, tile: int | None = None, overlap: int = 16, progress=None) -> Tensor:
        return tiled_forward(self.forward, x, self.scale, tile, overlap, self.min_size, self.multiple, progress,
                             self.align, self.tile_context)


def to_deploy(net: nn.Module) -> nn.Module:
    """Eval mode, reparameterizable branches fused (a no-op for nets already in deploy form)."""
    net.eval()
    if not capabilities_of(net).is_deployed:
        switch_to_deploy(net)
    return net


def to_inference_form(net: nn.Module) -> nn.Module:
    """:func:`to_deploy`, then the folds that only inference allows, each exact up to float rounding: DDistill-SR's
    dynamic-branch BNs folded, which runs every RDU as one per-sample conv (``DDistillSR.fold_dynamic_bn``). The
    form every ``ddsr upscale`` path runs (PyTorch and the cached ONNX export)."""
    net = to_deploy(net)
    fold = getattr(net, 'fold_dynamic_bn', None)
    if callable(fold) and not getattr(net, 'fold_bn', True):
        fold()
    return net


def probe_scale(forward: Callable[[Tensor], Tensor], size: int) -> int:
    with torch.inference_mode():
        out = forward(torch.zeros(1, 3, size, size))
    return out.shape[-1] // size


def _cast(net: nn.Module, device: str, dtype: torch.dtype) -> nn.Module:
    """``net`` moved to ``device`` and ``dtype``. In bfloat16: the children it names in ``bf16_float32`` keep their
    float32 weights (converted from the original values, not rounded through bf16), and every module with weights of
    its own receives its floating inputs in its weights' dtype (:func:`_inputs_in_weight_dtype`)."""
    if dtype != torch.bfloat16:
        return net.to(device, dtype)
    keep = set(getattr(net, 'bf16_float32', ()))
    for name, child in net.named_children():
        child.to(device, torch.float32 if name in keep else dtype)
    for tensor in [*net.parameters(recurse=False), *net.buffers(recurse=False)]:
        tensor.data = tensor.data.to(device, dtype)
    for module in net.modules():
        if next(module.parameters(recurse=False), None) is not None:
            module.register_forward_pre_hook(_inputs_in_weight_dtype, with_kwargs=True)
    return net


def _inputs_in_weight_dtype(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook of the bf16 copy: floating tensor arguments in the dtype of the module's own weights. A
    float32 tensor a network makes at run time would otherwise promote bf16 activations to float32 and stop the
    next bf16 matmul (BasicSR's SwinIR: the attention mask computed for an image size other than ``img_size``)."""
    dtype = next(module.parameters(recurse=False)).dtype

    def cast(value: object) -> object:
        if isinstance(value, Tensor) and value.is_floating_point() and value.dtype != dtype:
            return value.to(dtype)
        return value

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def torch_upscaler(net: nn.Module, device: str = 'cpu', channels_last: bool = False,
                   dtype: torch.dtype = torch.float32) -> Upscaler:
    """Upscaler of a PyTorch network (converted to deploy form) under ``torch.inference_mode``. ``dtype``
    ``torch.bfloat16``: weights and activations in bf16 (a bf16 copy of the network; :mod:`ddsr.deploy.precision`)
    except the children the network names in ``bf16_float32`` (e.g. DDistill-SR's fusion tail),
    input converted on entry, output returned in float32."""
    net = to_inference_form(net)
    net = _cast(copy.deepcopy(net) if dtype != torch.float32 else net, device, dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    need = capabilities_of(net).size

    def forward(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return net(x.to(device, dtype).contiguous(memory_format=memory_format)).float().cpu()

    return Upscaler(forward, probe_scale(forward, need.fit(PROBE_SIDE)), need.min_size, need.multiple,
                    {'backend': 'torch', 'device': device, 'channels_last': channels_last,
                     'precision': 'bf16' if dtype == torch.bfloat16 else 'fp32'}, need.grid,
                    tile_geometry if need.grid > 1 else None)


def min_ms(fn: Callable[[], object], runs: int = 3) -> float:
    """Fastest wall time of ``runs`` calls of ``fn`` after one warm-up call, in ms. The minimum, not the median:
    other processes on the machine only ever add time, so the fastest run is the best estimate of the network's
    own cost (issues 26 and 28: one probe measured 919 ms once and 4184 ms another time under load)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def onnx_upscaler(path: str, threads: int | None = None) -> Upscaler:
    """Upscaler of an ONNX model (written by ``ddsr export``) run by onnxruntime (optional dependency): the session
    and the size metadata of :mod:`ddsr.deploy.onnx_runtime`, on tensors."""
    if not Path(path).is_file():
        raise DDSRError(f'ONNX model not found: {path}')
    sess = onnx_runtime.session(path, threads)
    meta = onnx_runtime.read_meta(sess)
    run = onnx_runtime.numpy_forward(sess, OnnxMeta(meta.scale, 1, 1))  # padded by the Upscaler (tensors)

    def forward(x: Tensor) -> Tensor:
        return torch.from_numpy(run(x.cpu().numpy()))

    return Upscaler(forward, meta.scale, meta.min_size, meta.multiple, {'backend': 'onnxruntime'})
