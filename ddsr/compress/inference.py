"""Deploy-time inference: load a network (option file, arch + weights, self-describing checkpoint or ONNX model),
run it on image files of any size, mode and bit depth.

Fastest CPU path: it depends on the network (``benchmarks/bench_deploy_paths.py``, README table: at 256x256 LR
with 2 threads onnxruntime runs DDistill-SR at 0.50x and SwinIRmini at 0.28x of PyTorch eager latency, while
``inference_mode`` + ``channels_last`` runs DIPNet at 0.62x and EDSRmini at 0.44x, ahead of onnxruntime's 0.69x /
0.55x), so :func:`auto_upscaler` times both on a natural probe image and keeps the faster; CUDA uses PyTorch, and
so do tiled ESA nets (DIPNet, DDistill-SR), whose exact tiling needs PyTorch.

Images: 8/16-bit, gray/RGB/RGBA. Gray runs through the net as 3 equal channels and the output is their mean; alpha
is upscaled separately by bicubic interpolation (networks are trained on RGB only).
"""
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from ddsr.archs.esa_upsample import grid_stride, tile_geometry
from ddsr.archs.reparam import Reparameterizable, switch_to_deploy
from ddsr.bench.models import ModelSpec, build_network, spec_from_option_file
from ddsr.compress.compact import checkpoint_arch
from ddsr.compress.tiling import tiled_forward
from ddsr.errors import DDSRError

PROBE_SIZE = 96  # side of the natural image on which auto_upscaler times its candidate paths
MIN_INPUT = 16  # ESA (RFDN/RLFN/DIPNet/DDistill-SR) needs >= 15 px: stride-2 conv 3x3 then max-pool 7
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


@dataclass
class Upscaler:
    """A network as a function LR (1, 3, h, w) float [0, 1] -> SR (1, 3, s*h, s*w) with its input constraints."""
    forward: Callable[[Tensor], Tensor]
    scale: int
    min_size: int = MIN_INPUT
    multiple: int = 1
    info: dict = field(default_factory=dict)
    align: int = 1  # tile origins: multiples of the net's coarse grid (ESA), see ddsr.archs.esa_upsample
    tile_context: Callable | None = None

    def __call__(self, x: Tensor, tile: int | None = None, overlap: int = 16, progress=None) -> Tensor:
        return tiled_forward(self.forward, x, self.scale, tile, overlap, self.min_size, self.multiple, progress,
                             self.align, self.tile_context)


def load_checkpoint_network(weights: str, arch: Mapping | None = None,
                            param_key: str = 'params') -> tuple[nn.Module, dict]:
    """``(net, arch)`` of a checkpoint: ``arch`` (``type`` + kwargs) or the checkpoint's own ``arch`` entry."""
    if not Path(weights).is_file():
        raise DDSRError(f'weights not found: {weights}')
    if arch is None:
        arch = checkpoint_arch(weights)
        if arch is None or 'type' not in arch:
            raise DDSRError(f'{weights}: no arch entry (not self-describing); give --arch TYPE [--arch-kwargs]')
    arch = dict(arch)
    return build_network(ModelSpec(name=str(weights), network=arch, weights=str(weights), param_key=param_key)), arch


def load_option_network(opt_path: str) -> tuple[nn.Module, dict]:
    """``(net, network_g)`` of a BasicSR (test) option file with its ``path.pretrain_network_g`` weights."""
    spec = spec_from_option_file(opt_path)
    if not spec.weights:
        raise DDSRError(f'{opt_path}: path.pretrain_network_g is not set')
    return build_network(spec), dict(spec.network)


def to_deploy(net: nn.Module) -> nn.Module:
    """Eval mode, reparameterizable branches fused (a no-op for nets already in deploy form)."""
    net.eval()
    if any(isinstance(m, Reparameterizable) and not getattr(m, 'deploy', True) for m in net.modules()):
        switch_to_deploy(net)
    return net


def probe_scale(forward: Callable[[Tensor], Tensor], size: int) -> int:
    with torch.inference_mode():
        out = forward(torch.zeros(1, 3, size, size))
    return out.shape[-1] // size


def torch_upscaler(net: nn.Module, device: str = 'cpu', channels_last: bool = False) -> Upscaler:
    """Upscaler of a PyTorch network (converted to deploy form) under ``torch.inference_mode``."""
    net = to_deploy(net).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    multiple = int(getattr(net, 'window_size', 1) or 1)

    def forward(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return net(x.to(device).contiguous(memory_format=memory_format)).float().cpu()

    min_size = max(MIN_INPUT, multiple)
    align = grid_stride(net)
    return Upscaler(forward, probe_scale(forward, min_size), min_size, multiple,
                    {'backend': 'torch', 'device': device, 'channels_last': channels_last}, align,
                    tile_geometry if align > 1 else None)


def auto_upscaler(net: nn.Module, device: str = 'cpu', threads: int | None = None, tol: float = 1e-4,
                  probe: int = PROBE_SIZE) -> Upscaler:
    """Fastest correct path, measured for this network: on CPU, PyTorch ``inference_mode`` + ``channels_last``
    and onnxruntime (a temporary ONNX export checked to ``tol`` on a natural crop) are both timed on a natural
    ``probe`` x ``probe`` image and the faster one is kept (``info['timings_ms']``); on CUDA, or when the export
    fails or differs, PyTorch."""
    net = to_deploy(net)
    candidates = [torch_upscaler(net, device, channels_last=True)]
    if device == 'cpu':
        import tempfile

        from ddsr.compress.export import export_onnx, onnx_max_diff
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = f'{tmp}/model.onnx'
                export_onnx(net, path, size=MIN_INPUT)
                if onnx_max_diff(net, path, size=MIN_INPUT + 8) <= tol:
                    candidates.append(onnx_upscaler(path, threads))  # the session keeps the graph in memory
        except (DDSRError, ImportError, RuntimeError):  # export/runtime trouble: the PyTorch path is always right
            pass
    if len(candidates) == 1:
        return candidates[0]
    from ddsr.compress.export import natural_image
    x = natural_image(probe)
    timings = {up.info['backend']: _median_ms(lambda up=up: up(x)) for up in candidates}
    best = min(candidates, key=lambda up: timings[up.info['backend']])
    best.info.update(auto=True, timings_ms=timings)
    return best


def _median_ms(fn: Callable[[], object], runs: int = 3) -> float:
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
    if threads:
        opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
    except Exception as err:  # onnxruntime raises its own (non-exported) exception types
        raise DDSRError(f'{path}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})') from None
    meta = session.get_modelmeta().custom_metadata_map
    name = session.get_inputs()[0].name

    def forward(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {name: x.cpu().numpy().astype(np.float32)})[0])

    multiple = int(meta.get('multiple', 1))
    min_size = int(meta.get('min_size', max(MIN_INPUT, multiple)))
    scale = int(meta['scale']) if 'scale' in meta else probe_scale(forward, min_size)
    return Upscaler(forward, scale, min_size, multiple, {'backend': 'onnxruntime'})


def read_image(path: str) -> np.ndarray:
    """``cv2.IMREAD_UNCHANGED`` read (BGR[A] or gray, uint8/uint16); DDSRError when unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DDSRError(f'{path}: unreadable image')
    if img.dtype not in (np.uint8, np.uint16):
        raise DDSRError(f'{path}: unsupported pixel type {img.dtype} (8- or 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        raise DDSRError(f'{path}: unsupported channel count {img.shape[2]}')
    return img


def upscale_array(up: Upscaler, img: np.ndarray, tile: int | None = None, overlap: int = 16,
                  progress=None) -> np.ndarray:
    """Super-resolve a cv2 image (gray, BGR or BGRA; uint8 or uint16); same mode and bit depth out."""
    peak = float(np.iinfo(img.dtype).max)
    gray = img.ndim == 2
    rgb = np.repeat(img[..., None], 3, axis=2) if gray else img[..., 2::-1]
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / peak)[None]
    sr = up(x, tile, overlap, progress)[0].clamp(0, 1).numpy()
    out = sr.mean(axis=0) if gray else sr[::-1].transpose(1, 2, 0)
    if not gray and img.shape[2] == 4:
        alpha = cv2.resize(img[..., 3].astype(np.float32) / peak, (out.shape[1], out.shape[0]),
                           interpolation=cv2.INTER_CUBIC)
        out = np.concatenate([out, np.clip(alpha, 0, 1)[..., None]], axis=2)
    return np.round(out * peak).astype(img.dtype)


def write_png(path: str, img: np.ndarray) -> None:
    """Write ``img`` as PNG via a temporary file (no half-written outputs)."""
    path = Path(path)
    tmp = path.with_name(f'.{path.stem}.tmp.png')
    if not cv2.imwrite(str(tmp), img):
        raise DDSRError(f'{path}: could not write')
    tmp.replace(path)
