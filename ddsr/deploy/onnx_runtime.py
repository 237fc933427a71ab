"""onnxruntime for ddsr: the one session builder, the one reader of an ONNX model's size metadata, and the NumPy
forward (no torch import: ``ddsr upscale`` on a cached onnxruntime choice starts without torch).

Metadata (written by :func:`ddsr.deploy.export.export_onnx`): ``scale``, ``min_size``, ``multiple``. A model without
them (not written by ddsr) still runs: the scale is measured with one forward of a blank image (exact: it is the
ratio of output to input side), the multiple defaults to 1 and the minimum side to :data:`UNKNOWN_MIN_SIZE`, the
strictest minimum of ddsr's archs (ESA's 15 px; an earlier copy of this reader used 16, a round number with no
source, and required the scale instead of measuring it).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddsr import cpu_threads
from ddsr.deploy.padding import pad_numpy
from ddsr.errors import DDSRError

UNKNOWN_MIN_SIZE = 15  # = ddsr.archs.esa_upsample.ESA_MIN_INPUT (tests/test_deploy.py checks they agree)
PROBE_SIDE = 16  # side of the blank image that measures a model's scale when its metadata lacks it
NpForward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OnnxMeta:
    """What a padded forward needs to know of an ONNX model (LR px)."""
    scale: int
    min_size: int
    multiple: int


def session(path: str, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``path``; ``threads`` intra-op threads (None: onnxruntime's default). Every
    ddsr session is built here, so the session options (threads, spinning) are set in this one place."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DDSRError('onnxruntime is not installed: pip install onnxruntime') from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: an int8 model's unused-initializer notes are not the user's concern
    cpu_threads.configure_ort(opts, threads)  # threads and spinning under ddsr's CPU policy (docs/threads.md)
    try:
        return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
    except Exception as err:  # onnxruntime raises its own (non-exported) exception types
        raise DDSRError(f'{path}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})') from None


def _run(sess: Any, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def read_meta(sess: Any) -> OnnxMeta:
    """The size metadata of a session's model, with the defaults of the module docstring where it has none."""
    meta = sess.get_modelmeta().custom_metadata_map
    multiple = int(meta.get('multiple', 1))
    min_size = int(meta.get('min_size', UNKNOWN_MIN_SIZE))
    if 'scale' in meta:
        return OnnxMeta(int(meta['scale']), min_size, multiple)
    side = max(PROBE_SIDE, min_size)
    side += (-side) % multiple
    out = _run(sess, np.zeros((1, 3, side, side), np.float32))
    return OnnxMeta(int(out.shape[-1]) // side, min_size, multiple)


def numpy_forward(sess: Any, meta: OnnxMeta) -> NpForward:
    """Whole-image forward on NumPy (1, 3, h, w) float32: padded (:mod:`ddsr.deploy.padding`), run, cropped back."""
    def forward(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        return _run(sess, pad_numpy(x, meta.min_size, meta.multiple))[..., :h * meta.scale, :w * meta.scale]

    return forward
