"""Folder inference with decode and encode overlapping the forward passes (``ddsr upscale``).

Three stages, one thread each: a reader decodes image *i + 1* (``cv2.imread``) and turns it into the network input
while the main thread runs the forward of image *i* and a writer converts the output of image *i - 1* and encodes
it (``cv2.imwrite``). OpenCV and NumPy release the GIL in these calls, so on a 2-core machine decode/encode hide
behind the forward instead of adding to it. Queues hold at most 2 items per stage (bounded memory). Errors of one
image (unreadable file, failed write) are collected per file; the rest go on.

Pixel conversions equal :func:`ddsr.api.upscale_array` bit for bit (same NumPy operations): gray
runs as 3 equal channels and its output is their mean; alpha is upscaled by bicubic interpolation (or by the
network: ``alpha_input``); 8/16-bit in and out, rounded. What is written (format, output scale, comparison
picture) is the caller's ``save`` (:mod:`ddsr.deploy.output` for ``ddsr upscale``; PNG by default).

PNG encoding (:data:`PNG_LEVEL`, chosen here for speed): OpenCV's own default settings, which are faster than any
explicit zlib level with OpenCV 5. Measured on a 1920x1080 photo (opencv-python 5.0.0, 2-core machine, load ~2,
median of 5): default 71 ms / 2.27 MiB; explicit level 1 114 ms / 2.26 MiB, level 3 207 ms / 2.13 MiB, level 6
640 ms / 1.99 MiB, level 0 (stored) 56 ms but 5.9 MiB. PNG is lossless: the settings change file size and time,
never pixels.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ddsr.data.image_io import read_image, write_png
from ddsr.errors import DDSRError

PNG_LEVEL: int | None = None  # zlib level of the written PNGs; None: OpenCV's default (module docstring)
Forward = Callable[[np.ndarray], np.ndarray]  # (1, 3, h, w) float32 in [0, 1] -> (1, 3, s*h, s*w) float32
# save(src, dst, sr, alpha_sr, img): write the output of ``img`` (``alpha_sr``: the network's output on its alpha)
Save = Callable[[Path, Path, np.ndarray, 'np.ndarray | None', np.ndarray], None]
AlphaInput = Callable[[np.ndarray], 'np.ndarray | None']  # the network input of an image's alpha, or None
_DONE = object()


def prepare(img: np.ndarray) -> np.ndarray:
    """Network input (1, 3, h, w) float32 RGB in [0, 1] of a cv2 image (gray, BGR or BGRA; uint8 or uint16)."""
    peak = float(np.iinfo(img.dtype).max)
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., 2::-1]
    return (np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / peak)[None]


def finish(sr: np.ndarray, img: np.ndarray) -> np.ndarray:
    """cv2 image of the network output ``sr`` (1, 3, H, W) for the input ``img``: same mode and bit depth.

    An output with NaN/Inf is a :class:`DDSRError` (the image is not written), not black pixels: finite weights can
    overflow on some inputs (a DDistill-SR demo checkpoint did, on one photo: docs/errors.md)."""
    finite = np.isfinite(sr)
    if not finite.all():
        raise DDSRError(f'the network output has NaN/Inf at {finite.size - int(finite.sum()):,} of {finite.size:,} '
                        'values: not written (the network overflows on this input; another checkpoint may not)')
    peak = float(np.iinfo(img.dtype).max)
    sr = np.clip(sr[0], 0, 1)
    gray = img.ndim == 2
    if not gray and img.shape[2] == 3:  # the common case in fewer passes: the same arithmetic, planes merged by cv2
        sr *= peak
        planes = np.rint(sr, out=sr).astype(img.dtype)
        return cv2.merge([planes[2], planes[1], planes[0]])
    out = sr.mean(axis=0) if gray else sr[::-1].transpose(1, 2, 0)
    if not gray and img.shape[2] == 4:
        alpha = cv2.resize(img[..., 3].astype(np.float32) / peak, (out.shape[1], out.shape[0]),
                           interpolation=cv2.INTER_CUBIC)
        out = np.concatenate([out, np.clip(alpha, 0, 1)[..., None]], axis=2)
    return np.round(out * peak).astype(img.dtype)


def _reader(files: Sequence[Path], out: queue.Queue, stop: threading.Event) -> None:
    for src in files:
        if stop.is_set():
            break
        try:
            img = read_image(src, 'unchanged')
            item: tuple = (src, img, prepare(img), None)
        except DDSRError as err:
            item = (src, None, None, err)
        out.put(item)
    out.put(_DONE)


def save_png(src: Path, dst: Path, sr: np.ndarray, alpha_sr: np.ndarray | None, img: np.ndarray) -> None:
    """The default ``save``: the output as PNG, same mode and bit depth (alpha by bicubic interpolation)."""
    write_png(dst, finish(sr, img), compression=PNG_LEVEL)


def _writer(jobs: queue.Queue, failed: dict, lock: threading.Lock, save: Save) -> None:
    while (job := jobs.get()) is not _DONE:
        src, dst, sr, alpha_sr, img = job
        try:
            save(src, dst, sr, alpha_sr, img)
        except (DDSRError, cv2.error, OSError) as err:
            with lock:
                failed[src] = err


def run_folder(forward: Forward, files: Sequence[Path], targets: Sequence[Path],
               on_image: Callable[[Path, tuple[int, ...]], None] | None = None,
               on_done: Callable[[Path], None] | None = None, workers: int = 1, save: Save = save_png,
               alpha_input: AlphaInput | None = None) -> dict[Path, Exception]:
    """Super-resolve ``files`` into ``targets`` (``save``: PNG by default); ``{file: error}`` of the images that
    failed. ``alpha_input(img)``: the network input of the image's alpha when the network upscales it too.

    ``on_image(src, shape)`` is called before each forward, ``on_done(src)`` after it (progress display; called
    under a lock). ``workers`` > 1 runs that many forwards at once (threads: ``forward`` must be thread-safe and
    release the GIL, as an onnxruntime session does), one image each; the main thread is one of them.
    """
    decoded: queue.Queue = queue.Queue(maxsize=max(2, workers))
    jobs: queue.Queue = queue.Queue(maxsize=max(2, workers))
    failed: dict[Path, Exception] = {}
    lock = threading.Lock()
    stop = threading.Event()
    crashed: list[BaseException] = []
    reader = threading.Thread(target=_reader, args=(files, decoded, stop), daemon=True, name='ddsr-decode')
    writer = threading.Thread(target=_writer, args=(jobs, failed, lock, save), daemon=True, name='ddsr-encode')
    reader.start()
    writer.start()
    dst_of = dict(zip(files, targets, strict=True))

    def work() -> None:
        while not crashed:  # another worker's crash ends this one too (raised by the main thread)
            item = decoded.get()
            if item is _DONE:
                decoded.put(_DONE)  # the end, for the next worker (the reader has stopped: there is room)
                return
            src, img, x, err = item
            if err is None:
                if on_image:
                    with lock:
                        on_image(src, img.shape)
                try:
                    x_alpha = alpha_input(img) if alpha_input else None
                    jobs.put((src, dst_of[src], forward(x), None if x_alpha is None else forward(x_alpha), img))
                except DDSRError as fwd_err:
                    err = fwd_err
            with lock:
                if err is not None:
                    failed[src] = err
                if on_done:
                    on_done(src)

    def helper() -> None:
        try:
            work()
        except BaseException as err:  # noqa: B902  (re-raised in the main thread)
            crashed.append(err)

    helpers = [threading.Thread(target=helper, daemon=True, name=f'ddsr-forward-{i + 1}') for i in range(workers - 1)]
    try:
        for thread in helpers:
            thread.start()
        work()
        for thread in helpers:
            thread.join()
        if crashed:
            raise crashed[0]
    finally:
        stop.set()
        while reader.is_alive():  # a reader blocked on a full queue after a failure: make room until it stops
            try:
                decoded.get_nowait()
            except queue.Empty:
                pass
            reader.join(0.01)
        jobs.put(_DONE)
        writer.join()
    return {src: failed[src] for src in files if src in failed}
