"""Inference backends: a network as a function LR -> SR with its input constraints (:class:`Upscaler`), run by
PyTorch (``inference_mode``, optionally ``channels_last``, any device) or by onnxruntime (an exported model).

Images of any size go through :func:`ddsr.deploy.tiling.tiled_forward` (padding to the net's minimum size and
multiple; tiles aligned on the coarse grid of ESA nets, see :mod:`ddsr.archs.esa_upsample`).
"""
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ddsr import cpu_threads
from ddsr.archs.capabilities import ESA_REQUIREMENTS, SizeRequirements, capabilities_of
from ddsr.archs.esa_upsample import tile_geometry
from ddsr.archs.reparam import switch_to_deploy
from ddsr.deploy.tiling import tiled_forward
from ddsr.errors import DDSRError

PROBE_SIDE = 16  # side of the zeros image that measures a net's scale (raised to what the net accepts)
# An ONNX model without ddsr's metadata: padded to the strictest minimum of the ddsr archs (ESA's 15 px).
UNKNOWN_MIN_SIZE = ESA_REQUIREMENTS.min_size


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


def torch_upscaler(net: nn.Module, device: str = 'cpu', channels_last: bool = False) -> Upscaler:
    """Upscaler of a PyTorch network (converted to deploy form) under ``torch.inference_mode``."""
    net = to_inference_form(net).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    need = capabilities_of(net).size

    def forward(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return net(x.to(device).contiguous(memory_format=memory_format)).float().cpu()

    return Upscaler(forward, probe_scale(forward, need.fit(PROBE_SIDE)), need.min_size, need.multiple,
                    {'backend': 'torch', 'device': device, 'channels_last': channels_last}, need.grid,
                    tile_geometry if need.grid > 1 else None)


def median_ms(fn: Callable[[], object], runs: int = 3) -> float:
    """Median wall time of ``runs`` calls of ``fn`` after one warm-up call, in ms."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def onnx_upscaler(path: str, threads: int | None = None) -> Upscaler:
    """Upscaler of an ONNX model (written by ``ddsr export``) run by onnxruntime (optional dependency)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DDSRError('--onnx needs onnxruntime: pip install onnxruntime') from None
    if not Path(path).is_file():
        raise DDSRError(f'ONNX model not found: {path}')
    opts = ort.SessionOptions()
    cpu_threads.configure_ort(opts, threads)
    try:
        session = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
    except Exception as err:  # onnxruntime raises its own (non-exported) exception types
        raise DDSRError(f'{path}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})') from None
    meta = session.get_modelmeta().custom_metadata_map
    name = session.get_inputs()[0].name

    def forward(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {name: x.cpu().numpy().astype(np.float32)})[0])

    need = SizeRequirements(int(meta.get('min_size', UNKNOWN_MIN_SIZE)), int(meta.get('multiple', 1)))
    scale = int(meta['scale']) if 'scale' in meta else probe_scale(forward, need.fit(PROBE_SIDE))
    return Upscaler(forward, scale, need.min_size, need.multiple, {'backend': 'onnxruntime'})


