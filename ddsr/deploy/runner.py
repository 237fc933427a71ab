"""The forward function ``ddsr upscale`` runs: decided once per network and machine, then reused.

Steps (each done once per command):

1. **Source** (:mod:`ddsr.deploy.source`, no torch): the checkpoint's bytes are read once (an option file is
   parsed once); the cache key is their content hash + arch config + threads + device + library versions + ddsr's
   arch sources.
2. **Cache** (:mod:`ddsr.deploy.cache`): on a hit the stored choice is used at once, after one check (below). On a
   miss (or a corrupt entry) :func:`probe` says so in one line, builds the network (one ``torch.load`` of the bytes
   already read, one build), exports it to ONNX, checks the export against PyTorch on a natural crop (max abs diff
   <= :data:`ONNX_TOL`), times PyTorch ``inference_mode`` + ``channels_last`` and onnxruntime on a natural
   :data:`PROBE_SIZE` px image (the fastest of :data:`PROBE_RUNS` after a warm-up: load only adds time) and stores
   timings, export, check and the network's description. ``--backend torch|onnxruntime`` forces a backend
   (``torch`` never touches the cache); CUDA runs PyTorch.
   **Check of a cached choice**: the chosen backend is timed once more on a :data:`PROBE_SIZE` px image (fastest
   of 2 after a warm-up); when it is more than :data:`RECHECK_FACTOR` times (and :data:`RECHECK_MIN_MS`) slower
   than its record and slower than the other backend's record (the probe ran while something else slowed one backend
   down, so the choice may be wrong), the network is probed again and the new record replaces the old.
3. **Images in flight**: with onnxruntime, a folder of 2 or more images whose first image has at most
   :data:`PARALLEL_MAX_AREA` LR px runs two images at once, each forward on half the threads (one session, two
   concurrent runs): small ops and the serial parts of one forward overlap the other's (measured at 480x270 on 2
   cores: 9% less time per image for DIPNet, 12% for DDistill-SR; ``benchmarks/bench_forward_limits.py``).
4. **Choice** (``auto``): the backend with the lower estimated time for *this* command: the probe times scaled by
   the first image's area, times the number of images, plus the cost of importing torch (measured by the probe run)
   for the PyTorch path when torch is not imported yet. onnxruntime runs without importing torch at all (NumPy in,
   NumPy out) unless ``--tile`` is given (tiling is PyTorch code); tiled ESA nets (DIPNet, DDistill-SR) always run in
   PyTorch, whose tiling is exact for them.
5. **Precision** (``--precision``, :mod:`ddsr.deploy.precision`): ``fp32`` (default) as above; ``bf16`` runs PyTorch
   in bfloat16 (no probe); ``int8`` runs the int8 quantization of the checked export (made by the probe, cached);
   ``auto`` probes, besides the two float32 candidates, ``torch-bf16`` and ``onnxruntime-int8`` where the CPU runs
   them natively and the network is not known to miss the quality contract in them (``precision_misses`` of its
   class, :func:`ddsr.deploy.precision.misses_contract`), records each one's output PSNR vs the float32 output on the
   probe photo, and step 4 chooses among the candidates that reach :data:`ddsr.deploy.precision.MIN_PSNR_VS_FP32`.
   The precision is part of the cache key.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ddsr.deploy import cache, onnx_runtime
from ddsr.deploy.onnx_runtime import PROBE_SIDE
from ddsr.deploy.precision import auto_may_use, psnr_vs
from ddsr.deploy.source import NetworkSource
from ddsr.deploy.source import describe as describe_network
from ddsr.errors import DDSRError
from ddsr.fileio import sha256_bytes

PROBE_SIZE = 96  # side of the natural probe image (px, LR)
PROBE_RUNS = 5  # timed runs per backend in a probe (the fastest counts; chosen here: ~0.5 s per backend idle)
# A cached choice this many times slower than its record is probed again (chosen here: well above the idle
# run-to-run spread of a few %, below the 4.5x swing seen under load in issue 26)
RECHECK_FACTOR = 3.0
RECHECK_MIN_MS = 50.0  # ... and at least this much slower (chosen here: below it, timer and warm-up noise of tiny nets)
TILE_LINE_INTERVAL_S = 10.0  # a tiled image prints a tile progress line at most this often (chosen here)
# Two images in flight only up to this LR area (px): each run holds its own activations, so larger images go one
# at a time (chosen here: bounds the second run's extra memory, not measured at this size).
PARALLEL_MAX_AREA = 1_000_000
ONNX_TOL = 1e-4  # max |ONNX - PyTorch| accepted for the export (float32 on [0, 1] images)
COUNTERS = {'probes': 0, 'cache_hits': 0, 'rebuilt': 0, 'rechecked': 0}  # this process (tests)
NpForward = Callable[[np.ndarray], np.ndarray]
Notify = Callable[[str], None]


@dataclass(frozen=True)
class RunSettings:
    """How to run a network (plain values: the command line's flags, or ImageUpscaler's arguments).

    Attributes:
        backend: ``auto`` (probed once, cached), ``torch`` or ``onnxruntime``.
        device: ``cpu`` or a CUDA device (PyTorch).
        threads: CPU threads (None: the libraries' default).
        tile: Tile side in LR px (None: whole images); tile_overlap: context per tile side.
        channels_last: ``torch`` backend: channels_last memory format (``auto`` always uses it).
        precision: ``fp32``, ``bf16``, ``int8`` or ``auto`` (step 5 of the module docstring).
    """
    backend: str = 'auto'
    device: str = 'cpu'
    threads: int | None = None
    tile: int | None = None
    tile_overlap: int = 16
    channels_last: bool = False
    precision: str = 'fp32'


# candidate -> (backend, precision, cache entry field of its ONNX file or None)
CANDIDATES = {'torch': ('torch', 'fp32', None), 'onnxruntime': ('onnxruntime', 'fp32', 'onnx_path'),
              'torch-bf16': ('torch', 'bf16', None), 'onnxruntime-int8': ('onnxruntime', 'int8', 'onnx_int8_path')}


def _quiet(_: str) -> None:
    pass


@dataclass
class Plan:
    """What runs each image: ``forward`` (NumPy (1, 3, h, w) float32 -> (1, 3, s*h, s*w)) and its description."""
    forward: NpForward
    scale: int
    info: dict
    workers: int = 1  # images in flight (step 3 of the module docstring)


def _arch_sources_sha() -> str:
    """Hash of ddsr's network code (an edited arch invalidates cached exports)."""
    folder = Path(__file__).resolve().parents[1] / 'archs'
    return sha256_bytes(b''.join(str(path.relative_to(folder)).encode() + path.read_bytes()
                                 for path in sorted(folder.rglob('*.py'))))


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def key_material(source: NetworkSource, settings: RunSettings) -> dict[str, Any]:
    from ddsr import __version__
    return {'weights_sha256': source.sha256, 'arch': source.given_arch, 'param_key': source.param_key,
            'strict': source.strict, 'threads': settings.threads or f'default/{os.cpu_count()}',
            'device': settings.device, 'machine': platform.machine(), 'python': platform.python_version(),
            'versions': {name: _version(name) for name in ('torch', 'onnxruntime', 'onnx', 'numpy')},
            'ddsr': __version__, 'ddsr_archs': _arch_sources_sha(),
            **({'precision': settings.precision} if settings.precision != 'fp32' else {})}


def _import_torch() -> float | None:
    """Import torch; the seconds it took when this was the first import (else None)."""
    if 'torch' in sys.modules:
        return None
    start = time.perf_counter()
    import torch  # noqa: F401
    return time.perf_counter() - start


def _set_threads(settings: RunSettings) -> None:
    if settings.threads:
        import torch
        torch.set_num_threads(settings.threads)


def _ort_forward(path: str, entry: dict, threads: int | None) -> NpForward:
    """The whole-image onnxruntime forward of a cached export (size metadata from the cache entry)."""
    return onnx_runtime.numpy_forward(onnx_runtime.session(path, threads), _entry_meta(entry))


def probe_message(source: NetworkSource) -> str:
    return (f'ddsr: choosing a backend for {source.label} {source.weights} on this machine (once, cached): '
            'exporting to ONNX, then timing PyTorch and onnxruntime ...')


def probe(source: NetworkSource, settings: RunSettings, key: str, notify: Notify = _quiet) -> tuple[dict, Any]:
    """Build, export, check and time the network; store the outcome under ``key``. ``(entry, net)``."""
    COUNTERS['probes'] += 1
    torch_import_s = _import_torch()
    _set_threads(settings)
    summary = source.summary  # the network loaded (a bad arch or file is one error line, before any message)
    notify(describe_network(summary))
    notify(probe_message(source))
    from ddsr.archs.esa_upsample import grid_stride
    from ddsr.deploy.backends import min_ms, to_inference_form, torch_upscaler
    from ddsr.deploy.export import export_onnx, natural_image, onnx_max_diff
    net = to_inference_form(source.network)
    up = torch_upscaler(net, 'cpu', channels_last=True)
    entry: dict[str, Any] = {'backend': 'torch', 'scale': up.scale, 'min_size': up.min_size,
                             'multiple': up.multiple, 'align': grid_stride(net), 'probe': PROBE_SIZE,
                             'torch_import_s': torch_import_s, 'onnx': None, 'network': summary,
                             'material': key_material(source, settings)}
    x = natural_image(PROBE_SIZE)
    timings = {'torch': min_ms(lambda: up(x), PROBE_RUNS)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / 'model.onnx'
            export_onnx(net, path, size=PROBE_SIDE)
            diff = onnx_max_diff(net, path, size=PROBE_SIDE + 8)
            if diff <= ONNX_TOL:
                entry['onnx'], entry['onnx_sha256'] = cache.store_onnx(key, path.read_bytes())
                entry['onnx_max_diff'] = diff
                fwd = _ort_forward(str(cache.entry_dir(key) / entry['onnx']), entry, settings.threads)
                xn = x.numpy()
                timings['onnxruntime'] = min_ms(lambda: fwd(xn), PROBE_RUNS)
                if settings.precision in ('auto', 'int8'):
                    _probe_int8(key, path, entry, timings, settings, x.numpy(), net)
            else:
                entry['onnx_rejected'] = f'max |ONNX - PyTorch| {diff:.2e} > {ONNX_TOL}'
    except (DDSRError, ImportError, RuntimeError) as err:  # export/runtime trouble: the PyTorch path is always right
        entry['onnx'], entry['onnx_rejected'] = None, f'{type(err).__name__}: {str(err)[:200]}'
    if settings.precision == 'auto' and auto_may_use(net, 'bf16'):
        import torch
        bf16 = torch_upscaler(net, 'cpu', channels_last=True, dtype=torch.bfloat16)
        timings['torch-bf16'] = min_ms(lambda: bf16(x), PROBE_RUNS)
        entry.setdefault('psnr_vs_fp32', {})['torch-bf16'] = psnr_vs(up(x).numpy(), bf16(x).numpy())
    entry['timings_ms'] = timings
    entry['backend'] = min((k for k in timings if holds_quality(entry, k)), key=lambda k: timings[k])
    cache.write_entry(key, entry)
    entry = cache.read_entry(key) or entry  # resolves onnx_path
    return entry, net


def _probe_int8(key: str, onnx: Path, entry: dict, timings: dict, settings: RunSettings, x: np.ndarray,
                net: object) -> None:
    """Quantize the checked export to int8 (step 5), store it with the entry, time it and record its PSNR vs the
    float32 export's output on the probe photo; a quantization failure is recorded, never fatal."""
    if settings.precision == 'auto' and not auto_may_use(net, 'int8'):
        return
    from ddsr.deploy.backends import min_ms
    from ddsr.deploy.precision import quantize_int8
    try:
        int8 = quantize_int8(onnx, onnx.with_name('model-int8.onnx'))
        entry['onnx_int8'], entry['onnx_int8_sha256'] = cache.store_onnx(key, int8.read_bytes())
    except Exception as err:  # onnxruntime.quantization raises many types; the float32 paths stay usable
        entry['int8_rejected'] = f'{type(err).__name__}: {str(err)[:200]}'
        return
    fwd = _ort_forward(str(cache.entry_dir(key) / entry['onnx_int8']), entry, settings.threads)
    ref = _ort_forward(str(cache.entry_dir(key) / entry['onnx']), entry, settings.threads)(x)
    timings['onnxruntime-int8'] = min_ms(lambda: fwd(x), PROBE_RUNS)
    entry.setdefault('psnr_vs_fp32', {})['onnxruntime-int8'] = psnr_vs(ref, fwd(x))


def recheck_ms(entry: dict, backend: str, source: NetworkSource, settings: RunSettings) -> float:
    """The cached choice ``backend`` timed now at the probe size (fastest of 2 after a warm-up), in ms. A synthetic
    image (no torch, no image decoding on the onnxruntime path): these networks' cost does not depend on content."""
    from ddsr.deploy.backends import min_ms
    x = np.random.default_rng(0).random((1, 3, PROBE_SIZE, PROBE_SIZE), dtype=np.float32)
    kind, prec, onnx_field = CANDIDATES[backend]
    if onnx_field:
        fwd = _ort_forward(entry[onnx_field], entry, settings.threads)
        return min_ms(lambda: fwd(x), 2)
    _set_threads(settings)
    import torch

    from ddsr.deploy.backends import torch_upscaler
    up = torch_upscaler(source.network, 'cpu', channels_last=True, dtype=_dtype(prec))
    xt = torch.from_numpy(x)
    return min_ms(lambda: up(xt), 2)


def _first_area(files: list[Path]) -> int | None:
    import cv2
    for path in files[:1]:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is not None:
            return int(img.shape[0] * img.shape[1])
    return None


def holds_quality(entry: dict, name: str) -> bool:
    """Whether candidate ``name``'s output PSNR vs float32 on the probe photo (none recorded: a float32 candidate)
    reaches :data:`ddsr.deploy.precision.MIN_PSNR_VS_FP32` (step 5)."""
    from ddsr.deploy.precision import MIN_PSNR_VS_FP32
    return (entry.get('psnr_vs_fp32') or {}).get(name, MIN_PSNR_VS_FP32) >= MIN_PSNR_VS_FP32


def usable(entry: dict, allowed: Callable[[str], bool]) -> dict[str, float]:
    """The probe timings of the candidates that may run: ``allowed`` and their ONNX file present."""
    return {k: v for k, v in (entry.get('timings_ms') or {}).items()
            if k in CANDIDATES and allowed(k) and (CANDIDATES[k][2] is None or entry.get(CANDIDATES[k][2]))}


def choose(entry: dict, n_images: int, area: int | None, tiled: bool,
           allowed: Callable[[str], bool] | None = None) -> str:
    """``auto``'s candidate for ``n_images`` images, the first of ``area`` px (see the module docstring, steps 4-5)."""
    timings = usable(entry, allowed or (lambda k: holds_quality(entry, k))) or {'torch': 0.0}
    if not any(k.startswith('onnxruntime') for k in timings) or tiled or 'torch' in sys.modules \
            or not entry.get('torch_import_s'):
        return min(timings, key=lambda k: timings[k])
    area = area or entry['probe'] ** 2
    per_image = area / entry['probe'] ** 2 * n_images / 1e3  # ms at the probe size -> s for all images
    cost = {k: (entry['torch_import_s'] if k.startswith('torch') else 0.) + v * per_image for k, v in timings.items()}
    return min(cost, key=lambda k: cost[k])


def _tiled(up: Any, settings: RunSettings) -> NpForward:
    """Tiled forward of an Upscaler on NumPy arrays; an image of several tiles shows tile progress (plain lines off a
    terminal, :mod:`ddsr.progress`)."""
    import torch

    from ddsr.deploy.tiling import num_tiles
    from ddsr.progress import progress
    tile, overlap = settings.tile, settings.tile_overlap

    def forward(x: np.ndarray) -> np.ndarray:
        n = num_tiles(x.shape[-2], x.shape[-1], tile)
        if n == 1:
            return up(torch.from_numpy(x), tile, overlap).numpy()
        with progress(n, f'tiles of a {x.shape[-1]}x{x.shape[-2]} image', unit='tile', file=sys.stderr,
                      every=TILE_LINE_INTERVAL_S) as bar:
            return up(torch.from_numpy(x), tile, overlap, bar.update).numpy()

    return forward


def _dtype(precision: str) -> Any:
    import torch
    return torch.bfloat16 if precision == 'bf16' else torch.float32


def _torch_plan(net: Any, settings: RunSettings, info: dict, precision: str = 'fp32') -> Plan:
    from ddsr.deploy.backends import torch_upscaler
    channels_last = settings.backend == 'auto' or settings.channels_last or precision == 'bf16'
    up = torch_upscaler(net, settings.device, channels_last=channels_last, dtype=_dtype(precision))
    return Plan(_tiled(up, settings), up.scale, {'backend': 'torch', 'device': settings.device,
                                                 'channels_last': channels_last, 'precision': precision, **info})


def images_in_flight(n_images: int, area: int | None, threads: int | None, tiled: bool) -> int:
    """2 when ``n_images`` images, the first of ``area`` px, can run two at a time (step 3 of the module
    docstring), else 1."""
    cores = threads or os.cpu_count() or 1
    if tiled or cores < 2 or n_images < 2:
        return 1
    return 2 if area is not None and area <= PARALLEL_MAX_AREA else 1


def _ort_plan(path: str, meta: onnx_runtime.OnnxMeta, settings: RunSettings, info: dict, workers: int = 1) -> Plan:
    threads = max(1, (settings.threads or os.cpu_count() or 1) // workers) if workers > 1 else settings.threads
    session = onnx_runtime.session(path, threads)
    if settings.tile:  # tiling is PyTorch code
        import torch

        from ddsr.deploy.backends import Upscaler
        fwd = onnx_runtime.numpy_forward(session, onnx_runtime.OnnxMeta(meta.scale, 1, 1))
        up = Upscaler(lambda x: torch.from_numpy(fwd(x.numpy())), meta.scale, meta.min_size, meta.multiple)
        forward = _tiled(up, settings)
    else:
        forward = onnx_runtime.numpy_forward(session, meta)
    return Plan(forward, meta.scale, {'backend': 'onnxruntime', **info}, workers)


def _entry_meta(entry: dict) -> onnx_runtime.OnnxMeta:
    return onnx_runtime.OnnxMeta(int(entry['scale']), int(entry['min_size']), int(entry['multiple']))


def _cached_or_probed(source: NetworkSource, settings: RunSettings, key: str, notify: Notify) -> tuple[dict, Any, dict]:
    """``(entry, net or None, how)``: the cache entry of ``key``, probed when absent or corrupt."""
    rebuilt = None
    try:
        entry = cache.read_entry(key)
    except cache.CorruptEntry as err:
        entry, rebuilt = None, str(err)
        COUNTERS['rebuilt'] += 1
        notify(f'ddsr: backend cache entry corrupt ({err}): rebuilding')
    net = None
    if entry is None:
        entry, net = probe(source, settings, key, notify)
        how = {'source': 'probe', 'timings_ms': entry['timings_ms'], 'cache': str(cache.entry_dir(key))}
    else:
        COUNTERS['cache_hits'] += 1
        notify(describe_network(entry['network']))
        how = {'source': 'cache', 'timings_ms': entry.get('timings_ms'), 'cache': str(cache.entry_dir(key))}
    if rebuilt:
        how['rebuilt'] = rebuilt
    return entry, net, how


def make_plan(source: NetworkSource, settings: RunSettings, files: list[Path], notify: Notify = _quiet) -> Plan:
    """The forward that runs ``source`` on ``files`` (the inputs, for ``auto``'s estimate) with ``settings``;
    ``notify`` gets the one-line messages (the network recognised, the backend probe, a corrupt cache entry)."""
    prec = settings.precision
    if source.onnx is not None:
        if prec in ('bf16', 'int8'):
            raise DDSRError(f'--precision {prec} needs a network (-opt, --weights or --model); --onnx runs as given')
        meta = onnx_runtime.read_meta(onnx_runtime.session(str(source.onnx), settings.threads))
        workers = images_in_flight(len(files), _first_area(files), settings.threads, bool(settings.tile))
        return _ort_plan(str(source.onnx), meta, settings, {'source': 'given'}, workers)
    if prec == 'int8' and (settings.backend == 'torch' or settings.device != 'cpu'):
        raise DDSRError('--precision int8 runs onnxruntime on the CPU: not with --backend torch or --device cuda')
    if prec == 'bf16' and settings.backend == 'onnxruntime':
        raise DDSRError('--precision bf16 runs PyTorch: not with --backend onnxruntime (int8 runs onnxruntime)')
    if settings.backend == 'torch' or settings.device != 'cpu' or prec == 'bf16':  # --device: checked by ddsr.commands
        _import_torch()
        _set_threads(settings)
        notify(describe_network(source.summary))
        return _torch_plan(source.network, settings, {'source': 'forced' if settings.backend == 'torch' else
                                                      'cuda' if settings.device != 'cpu' else 'precision'},
                           'bf16' if prec == 'bf16' else 'fp32')
    key = cache.key_of(key_material(source, settings))
    entry, net, how = _cached_or_probed(source, settings, key, notify)
    tiled_esa = bool(settings.tile) and int(entry.get('align', 1)) > 1
    area = _first_area(files)  # read once: the choice and the images in flight both scale with it

    def allowed(name: str) -> bool:
        kind, precision, _ = CANDIDATES[name]
        return ((settings.backend == 'auto' or kind == settings.backend) and not (tiled_esa and kind != 'torch')
                and (holds_quality(entry, name) if prec == 'auto' else precision == prec))

    if prec == 'int8' and tiled_esa:
        raise DDSRError('--precision int8 with --tile on an ESA net (DIPNet, DDistill-SR): tiles of these nets run '
                        'PyTorch (exact tiling); use --precision bf16 or fp32, or no --tile')
    if settings.backend == 'onnxruntime' or prec == 'int8':
        if not usable(entry, allowed):
            reason = entry.get('int8_rejected') if prec == 'int8' else None
            raise DDSRError(f'--backend {settings.backend} --precision {prec}: no usable ONNX export '
                            f'({reason or entry.get("onnx_rejected", "none")})')
        backend = choose(entry, len(files), area, bool(settings.tile), allowed)
    else:
        backend = choose(entry, len(files), area, bool(settings.tile), allowed)
        timings = usable(entry, allowed)
        recorded, others = timings.get(backend), [v for k, v in timings.items() if k != backend]
        if how['source'] == 'cache' and recorded and others:  # with one candidate a new probe changes nothing
            now = recheck_ms(entry, backend, source, settings)
            if now > RECHECK_FACTOR * recorded and now - recorded >= RECHECK_MIN_MS and now > min(others):
                COUNTERS['rechecked'] += 1
                notify(f'ddsr: the cached choice {backend} took {now:.0f} ms, {now / recorded:.1f}x its record of '
                       f'{recorded:.0f} ms: probing again')
                cache.remove_entry(key)
                entry, net, how = _cached_or_probed(source, settings, key, notify)
                how['recheck'] = f'{backend} {now:.0f} ms vs {recorded:.0f} ms recorded'
                backend = choose(entry, len(files), area, bool(settings.tile), allowed)
    kind, precision, onnx_field = CANDIDATES[backend]
    how['precision'] = precision
    if onnx_field:
        workers = images_in_flight(len(files), area, settings.threads, bool(settings.tile))
        return _ort_plan(entry[onnx_field], _entry_meta(entry), settings, how, workers)
    _set_threads(settings)
    return _torch_plan(net if net is not None else source.network, settings, how, precision)


def describe(plan: Plan) -> str:
    """`` with <backend> (<how it was chosen>)`` for the summary line."""
    info = plan.info
    timings = info.get('timings_ms') or {}
    times = ', '.join(f'{k} {timings[k]:.0f} ms' for k in sorted(timings, key=lambda k: k != 'torch'))
    if info.get('source') == 'probe':
        how = f' (fastest of {times} on a probe; cached in {info["cache"]})' if times else ''
    elif info.get('source') == 'cache':
        how = f' (cached choice: {times} on a probe)' if times else ' (cached choice)'
    else:
        how = ''
    precision = f' {info["precision"]}' if info.get('precision', 'fp32') != 'fp32' else ''
    return f'{info["backend"]}{precision}{how}' + (f', {plan.workers} images at a time' if plan.workers > 1 else '')

