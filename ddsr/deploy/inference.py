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
import functools
import tempfile
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ddsr import checkpoint, zoo
from ddsr.data.image_io import IMAGE_EXTS, read_image, write_png  # noqa: F401  (the image side of inference)
from ddsr.deploy.backends import (  # noqa: F401  (to_deploy: part of this module's interface)
    PROBE_SIDE,
    Upscaler,
    median_ms,
    onnx_upscaler,
    to_deploy,
    to_inference_form,
    torch_upscaler,
)
from ddsr.deploy.export import export_onnx, natural_image, onnx_max_diff
from ddsr.deploy.pipeline import finish, prepare
from ddsr.errors import DDSRError
from ddsr.option_file import load_options

PROBE_SIZE = 96  # side of the natural image on which auto_upscaler times its candidate paths


def load_checkpoint_network(weights: str, arch: Mapping | None = None,
                            param_key: str | None = 'params') -> tuple[nn.Module, dict]:
    """``(net, arch)`` of a checkpoint: ``arch`` (``type`` + kwargs) or the checkpoint's own ``arch`` entry."""
    return checkpoint.build_from_checkpoint(weights, arch, param_key, label='--weights')


def load_option_network(opt_path: str) -> tuple[nn.Module, dict]:
    """``(net, network_g)`` of a BasicSR (test) option file with its ``path.pretrain_network_g`` weights."""
    opt = load_options(opt_path)
    paths = opt.get('path') or {}
    network = opt.get('network_g')
    if not isinstance(network, dict) or 'type' not in network:
        raise DDSRError(f'{opt_path}: network_g: expected a mapping with "type:" and the arch kwargs')
    weights = paths.get('pretrain_network_g')
    if not weights:
        raise DDSRError(f'{opt_path}: path.pretrain_network_g is not set')
    weights = zoo.resolve(weights)  # ddsr://NAME -> the cached file
    net = checkpoint.build_network(network)
    checkpoint.load_weights(net, weights, paths.get('param_key_g', 'params'), bool(paths.get('strict_load_g', True)),
                            label=f'{opt_path}: path.pretrain_network_g')
    return net.eval(), dict(network)


def auto_upscaler(net: nn.Module, device: str = 'cpu', threads: int | None = None, tol: float = 1e-4,
                  probe: int = PROBE_SIZE) -> Upscaler:
    """Fastest correct path, measured for this network: on CPU, PyTorch ``inference_mode`` + ``channels_last``
    and onnxruntime (a temporary ONNX export checked to ``tol`` on a natural crop) are both timed on a natural
    ``probe`` x ``probe`` image and the faster one is kept (``info['timings_ms']``); on CUDA, or when the export
    fails or differs, PyTorch."""
    net = to_inference_form(net)
    candidates = [torch_upscaler(net, device, channels_last=True)]
    if device == 'cpu':
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = f'{tmp}/model.onnx'
                export_onnx(net, path, size=PROBE_SIDE)
                if onnx_max_diff(net, path, size=PROBE_SIDE + 8) <= tol:
                    candidates.append(onnx_upscaler(path, threads))  # the session keeps the graph in memory
        except (DDSRError, ImportError, RuntimeError):  # export/runtime trouble: the PyTorch path is always right
            pass
    if len(candidates) == 1:
        return candidates[0]
    x = natural_image(probe)
    timings = {up.info['backend']: median_ms(functools.partial(up, x)) for up in candidates}
    best = min(candidates, key=lambda up: timings[up.info['backend']])
    best.info.update(auto=True, timings_ms=timings)
    return best


def upscale_array(up: Upscaler, img: np.ndarray, tile: int | None = None, overlap: int = 16,
                  progress=None) -> np.ndarray:
    """Super-resolve a cv2 image (gray, BGR or BGRA; uint8 or uint16); same mode and bit depth out (the pixel
    conversions of :mod:`ddsr.deploy.pipeline`, shared with ``ddsr upscale``'s folder pipeline)."""
    return finish(up(torch.from_numpy(prepare(img)), tile, overlap, progress).numpy(), img)
