"""Reduced-precision inference on CPU: which precisions the hardware runs natively, the int8 quantization of a
checked ONNX export, and the quality check a reduced precision must pass before ``--precision auto`` uses it.

- ``bf16``: PyTorch weights and activations in bfloat16, channels_last (oneDNN runs the convolutions on AMX or
  AVX512-BF16 tiles), except the children a network names in ``bf16_float32`` (DDistill-SR: its fusion tail);
  input converted on entry, output returned in float32, so the clamp/round to 8 or 16 bit stays in float32
  (:func:`ddsr.deploy.backends.torch_upscaler` with ``dtype``).
- ``int8``: onnxruntime static QDQ quantization (``onnxruntime.quantization.quantize_static``: int8 activations,
  per-channel int8 weights, min/max calibration) of the float32 export, calibrated on crops of the demo training
  photos (:data:`ddsr.data.demo.TRAIN_PHOTOS`, the photos the demo networks train on).
- fp16 is not offered on CPU: it has no fast path there (issue 23: 1.7x slower than fp32 for a 3x3 conv).

``auto`` uses a reduced precision only when :func:`native` says the CPU executes it natively, the network is not
known to miss the quality contract in it (its class's ``precision_misses``, :func:`misses_contract`), the probe
timed it faster, and its output on the probe photo is within :data:`MIN_PSNR_VS_FP32` of the float32 output.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ddsr.deploy.backends import Upscaler

PRECISIONS = ('auto', 'fp32', 'bf16', 'int8')
# CPU flags (Linux /proc/cpuinfo names) of native execution; any one suffices
NATIVE_FLAGS = {'bf16': ('amx_bf16', 'avx512_bf16'), 'int8': ('amx_int8', 'avx512_vnni')}
# Output PSNR vs the float32 output (8-bit levels) a reduced precision must reach on the probe photo to be chosen by
# auto (chosen here from the official x4 weights on eval photos: bf16 reached 53-55 dB vs fp32 and moved the PSNR vs
# ground truth by at most a few 0.01 dB per photo; int8 (static QDQ) reached 38-43 dB and moved it by -0.3 to
# -1.5 dB, far outside the 0.05 dB contract. 45 dB separates the two; the contract itself is measured by
# benchmarks/bench_precision.py)
MIN_PSNR_VS_FP32 = 45.0
CALIB_CROPS, CALIB_SIZE = 8, 96  # calibration crops of the demo photos (chosen here: min/max settle by 8 crops)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere, so auto stays at fp32)."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith('flags'):
            return set(line.split(':', 1)[1].split())
    return set()


def native(precision: str, flags: set[str] | None = None) -> bool:
    """Whether this CPU executes ``precision`` natively (fp32 always; bf16 also needs PyTorch's oneDNN)."""
    if precision == 'fp32':
        return True
    flags = cpu_flags() if flags is None else flags
    if not flags & set(NATIVE_FLAGS[precision]):
        return False
    if precision == 'bf16':
        import torch
        return bool(torch.backends.mkldnn.is_available())
    return True


def misses_contract(net: object, precision: str) -> bool:
    """Whether ``net``'s class declares ``precision`` measured outside issue 23's quality contract (mean PSNR on the
    13-photo eval split within 0.02 dB of fp32 for bf16, 0.05 dB for int8; benchmarks/bench_precision.py with the
    official weights). A network declares it where it is defined: ``precision_misses = {'int8': -0.805}`` (the
    mean PSNR change in dB), next to ``bf16_float32``."""
    return precision in getattr(net, 'precision_misses', {})


def auto_may_use(net: object, precision: str) -> bool:
    """Whether ``auto`` may try ``precision`` for ``net``: native here and not known to miss the quality contract
    (:func:`misses_contract`)."""
    return not misses_contract(net, precision) and native(precision)


def psnr_vs(ref: np.ndarray, out: np.ndarray) -> float:
    """PSNR (dB) of ``out`` vs ``ref`` (float [0, 1] images), both clamped and rounded to 8-bit levels as written."""
    a = np.round(np.clip(ref, 0, 1) * 255)
    b = np.round(np.clip(out, 0, 1) * 255)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def calibration_images(n: int = CALIB_CROPS, size: int = CALIB_SIZE) -> list[np.ndarray]:
    """``n`` RGB crops (1, 3, size, size) float32 of the demo training photos, spread over the photos."""
    from ddsr.data.demo import TRAIN_PHOTOS
    crops = []
    loaders = list(TRAIN_PHOTOS.values())
    for i in range(n):
        img = np.asarray(loaders[i % len(loaders)]())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        h, w = img.shape[:2]
        side = min(size, h, w)
        k = i // len(loaders)  # later rounds take other places of the same photo
        y, x = (h - side) * (k % 3) // 2, (w - side) * ((k + 1) % 3) // 2
        crop = img[y:y + side, x:x + side].astype(np.float32) / (65535. if img.dtype == np.uint16 else 255.)
        crops.append(np.ascontiguousarray(crop.transpose(2, 0, 1))[None])
    return crops


def quantize_int8(src: str | Path, dst: str | Path, images: list[np.ndarray] | None = None) -> Path:
    """Write the int8 QDQ model of the float32 ONNX model ``src`` to ``dst`` (static quantization, per-channel
    weights, calibrated on ``images``, default :func:`calibration_images`); returns ``dst``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    calib: list[np.ndarray] = calibration_images() if images is None else images

    import onnx
    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self) -> dict | None:
            x = next(self.items, None)
            return None if x is None else {name: x}

    reader = Reader()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs advice (pre-processing) and per-tensor notes as warnings
    try:
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    _copy_metadata(src, dst)
    return Path(dst)


def _copy_metadata(src: str | Path, dst: str | Path) -> None:
    """Keep the export's size metadata (scale, min_size, multiple) in the quantized model."""
    import onnx
    model = onnx.load(str(dst))
    have = {p.key for p in model.metadata_props}
    for prop in onnx.load(str(src), load_external_data=False).metadata_props:
        if prop.key not in have:
            model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(dst))


PICK_SIZE = 96  # side of the natural image :func:`pick` times and checks on (the runner's probe size)


def upscaler(net: Any, device: str = 'cpu', precision: str = 'fp32') -> Upscaler:
    """The :class:`ddsr.deploy.backends.Upscaler` of ``net`` in ``precision`` (``ImageUpscaler``'s runner): fp32 and
    bf16 PyTorch (channels_last on CPU), int8 onnxruntime (CPU only), auto :func:`pick` (CPU; fp32 elsewhere)."""
    import torch

    from ddsr.deploy.backends import torch_upscaler
    from ddsr.errors import DDSRError
    if precision not in PRECISIONS:
        raise DDSRError(f'precision {precision!r}: expected one of {", ".join(PRECISIONS)}')
    if precision == 'fp32' or (precision == 'auto' and device != 'cpu'):
        return torch_upscaler(net, device, channels_last=device == 'cpu')
    if precision == 'bf16':
        return torch_upscaler(net, device, channels_last=True, dtype=torch.bfloat16)
    if device != 'cpu':
        raise DDSRError('precision int8 runs onnxruntime on the CPU: device must be cpu')
    return int8_upscaler(net) if precision == 'int8' else pick(net)


def int8_upscaler(net: Any, threads: int | None = None) -> Upscaler:
    """onnxruntime Upscaler of the int8 quantization (:func:`quantize_int8`) of ``net``'s ONNX export."""
    import tempfile

    from ddsr.deploy.backends import onnx_upscaler, to_inference_form
    from ddsr.deploy.export import export_onnx
    from ddsr.deploy.onnx_runtime import PROBE_SIDE
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'model.onnx'
        export_onnx(to_inference_form(net), path, size=PROBE_SIDE)
        up = onnx_upscaler(str(quantize_int8(path, Path(tmp) / 'model-int8.onnx')), threads)  # session in memory
    up.info['precision'] = 'int8'
    return up


def pick(net: Any) -> Upscaler:
    """``auto`` for one network without the runner's cache: fp32 PyTorch, or the fastest reduced precision that
    this CPU runs natively and whose output on a natural :data:`PICK_SIZE` px image reaches
    :data:`MIN_PSNR_VS_FP32` vs fp32."""
    from ddsr.deploy.backends import min_ms, torch_upscaler
    from ddsr.deploy.export import natural_image
    best = torch_upscaler(net, 'cpu', channels_last=True)
    x = natural_image(PICK_SIZE)
    ref = best(x).numpy()
    best_ms = min_ms(lambda: best(x), 3)
    for precision in ('bf16', 'int8'):
        if not auto_may_use(net, precision):
            continue
        cand = upscaler(net, 'cpu', precision)
        if psnr_vs(ref, cand(x).numpy()) < MIN_PSNR_VS_FP32:
            continue
        ms = min_ms(lambda: cand(x), 3)  # noqa: B023  # timed before the next candidate
        if ms < best_ms:
            best, best_ms = cand, ms
    return best
