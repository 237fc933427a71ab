"""The forward function ``ddsr upscale`` runs: decided once per network and machine, then reused.

Steps (each done once per command):

1. **Source** (:func:`read_source`, no torch): the checkpoint's bytes are read once (the command parses and checks
   an option file once);
   the cache key is their content hash + arch config + threads + device + library versions + ddsr's arch sources.
2. **Cache** (:mod:`ddsr.deploy.cache`): on a hit the stored choice is used at once. On a miss (or a corrupt entry)
   :func:`probe` builds the network (one ``torch.load`` of the bytes already read, one build), exports it to ONNX,
   checks the export against PyTorch on a natural crop (max abs diff <= :data:`ONNX_TOL`), times PyTorch
   ``inference_mode`` + ``channels_last`` and onnxruntime on a natural :data:`PROBE_SIZE` px image (median of 3
   after a warm-up) and stores timings, export and check. ``--backend torch|onnxruntime`` forces a backend
   (``torch`` never touches the cache); CUDA runs PyTorch.
3. **Images in flight**: with onnxruntime, a folder of 2 or more images whose first image has at most
   :data:`PARALLEL_MAX_AREA` LR px runs two images at once, each forward on half the threads (one session, two
   concurrent runs): small ops and the serial parts of one forward overlap the other's (measured at 480x270 on 2
   cores: 9% less time per image for DIPNet, 12% for DDistill-SR; ``benchmarks/bench_forward_limits.py``).
4. **Choice** (``auto``): the backend with the lower estimated time for *this* command: the probe times scaled by
   the first image's area, times the number of images, plus the cost of importing torch (measured by the probe run)
   for the PyTorch path when torch is not imported yet. onnxruntime runs without importing torch at all (NumPy in,
   NumPy out) unless ``--tile`` is given (tiling is PyTorch code); tiled ESA nets (DIPNet, DDistill-SR) always run in
   PyTorch, whose tiling is exact for them.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ddsr import cpu_threads, zoo
from ddsr.deploy import cache
from ddsr.errors import DDSRError

PROBE_SIZE = 96  # side of the natural probe image (px, LR)
# Two images in flight only up to this LR area (px): each run holds its own activations, so larger images go one
# at a time (chosen here: bounds the second run's extra memory, not measured at this size).
PARALLEL_MAX_AREA = 1_000_000
ONNX_TOL = 1e-4  # max |ONNX - PyTorch| accepted for the export (float32 on [0, 1] images)
COUNTERS = {'probes': 0, 'cache_hits': 0, 'rebuilt': 0}  # this process (tests)
NpForward = Callable[[np.ndarray], np.ndarray]


@dataclass
class Source:
    """A network to run, as given on the command line, with its checkpoint's bytes (read once)."""
    label: str
    weights: Path
    data: bytes
    arch: dict | None  # given arch (``--arch`` / ``network_g``); None: the checkpoint's own ``arch`` entry
    param_key: str = 'params'
    strict: bool = True
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()


@dataclass
class Plan:
    """What runs each image: ``forward`` (NumPy (1, 3, h, w) float32 -> (1, 3, s*h, s*w)) and its description."""
    forward: NpForward
    scale: int
    info: dict
    workers: int = 1  # images in flight (step 3 of the module docstring)


def read_source(args: argparse.Namespace, arch: dict | None, opt: dict | None = None) -> Source:
    """The network source of ``-opt`` (``opt``: the option file, parsed and checked by the command) or ``--weights``
    (``arch``: of ``--arch``/``--arch-kwargs``; ``--param-key``)."""
    if args.opt:
        opt = opt or {}
        arch = opt.get('network_g')
        if not isinstance(arch, dict) or not isinstance(arch.get('type'), str):
            raise DDSRError(f'{args.opt}: network_g: expected a mapping with "type:" and the arch kwargs, got {arch!r}')
        paths: dict = opt['path'] if isinstance(opt.get('path'), dict) else {}
        weights = paths.get('pretrain_network_g')
        if not weights:
            raise DDSRError(f'{args.opt}: path.pretrain_network_g is not set')
        weights = zoo.resolve(weights) if zoo.is_model_ref(weights) else weights  # ddsr://NAME
        label, param_key, strict = f'{args.opt}: path.pretrain_network_g', paths.get('param_key_g', 'params'), \
            paths.get('strict_load_g', True) is not False
        if param_key is not None and not isinstance(param_key, str):
            raise DDSRError(f'{args.opt}: path.param_key_g must be a name (params, params_ema), got {param_key!r}')
    elif getattr(args, 'model', None):  # --model NAME: the zoo's file (downloaded on first use) and its arch
        model = zoo.lookup(args.model)
        weights, label, param_key, strict = str(zoo.fetch(model)), f'--model {args.model}', args.param_key, True
        arch = arch or dict(model.arch)
    else:
        weights, label, param_key, strict = args.weights, '--weights', args.param_key, True
    path = Path(str(weights))
    if not path.is_file():
        raise DDSRError(f'{label}: file not found: {weights}')
    return Source(label, path, path.read_bytes(), dict(arch) if arch else None, param_key, strict)


def load_network(source: Source):
    """``(net, arch)``: one ``torch.load`` of the bytes read, one build, the weights loaded; eval mode."""
    from ddsr import checkpoint
    from ddsr.archs.registry import arch_class
    from ddsr.errors import UnknownTypeError
    raw = checkpoint.load_file(source.weights, source.label, data=source.data)
    arch, where = source.arch, ('--arch' if source.label == '--weights' else source.label.split(':')[0] + ': network_g')
    if ': path.' not in source.label:  # --weights / --model (an option file names its network_g)
        # the arch given, else the checkpoint's own, else recognised from keys and shapes; a given arch that the
        # weights do not fit while they fit another form is one error line
        from ddsr.detect import resolve_arch
        if arch is None:
            where = f'{source.weights}: arch'
        arch = resolve_arch(raw, arch, source.param_key, str(source.weights))
    if arch is None:
        raise DDSRError(f'{source.label}: no network (network_g) to load {source.weights} into')
    kwargs = {k: v for k, v in arch.items() if k != 'type'}
    try:
        cls = arch_class(str(arch['type']))
    except UnknownTypeError as err:
        raise UnknownTypeError(f'{where}.type: {err}') from None
    try:
        net = cls(**kwargs)
    except Exception as err:  # noqa: B902  (any failure to build from these kwargs is a bad network option)
        raise DDSRError(f'{where}: cannot build {cls.__name__}({", ".join(map(str, kwargs))}): '
                        f'{type(err).__name__}: {err}') from None
    state = checkpoint.select_params(raw, source.param_key, str(source.weights), source.label)
    try:
        net.load_state_dict(state, strict=source.strict)
    except RuntimeError as err:
        raise DDSRError(f'{source.label}: {source.weights} does not fit {arch["type"]} (strict_load {source.strict}): '
                        f'{" ".join(str(err).split())[:300]}') from None
    return net.eval(), dict(arch)


def _arch_sources_sha() -> str:
    """Hash of ddsr's network code (an edited arch invalidates cached exports)."""
    digest = hashlib.sha256()
    folder = Path(__file__).resolve().parents[1] / 'archs'
    for path in sorted(folder.glob('*.py')):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def key_material(source: Source, args: argparse.Namespace) -> dict[str, Any]:
    from ddsr import __version__
    return {'weights_sha256': source.sha256, 'arch': source.arch, 'param_key': source.param_key,
            'strict': source.strict, 'threads': args.threads or f'default/{os.cpu_count()}', 'device': args.device,
            'machine': platform.machine(), 'python': platform.python_version(),
            'versions': {name: _version(name) for name in ('torch', 'onnxruntime', 'onnx', 'numpy')},
            'ddsr': __version__, 'ddsr_archs': _arch_sources_sha()}


def ort_session(path: str, threads: int | None):
    """An onnxruntime CPU session of ``path`` (``threads`` intra-op threads; default: onnxruntime's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DDSRError('onnxruntime is not installed: pip install onnxruntime') from None
    opts = ort.SessionOptions()
    cpu_threads.configure_ort(opts, threads)
    try:
        return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
    except Exception as err:  # onnxruntime raises its own (non-exported) exception types
        raise DDSRError(f'{path}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})') from None


def numpy_ort_forward(session, scale: int, min_size: int, multiple: int) -> NpForward:
    """Whole-image forward with onnxruntime on NumPy arrays, padded as :func:`ddsr.deploy.tiling.padded_forward`
    pads (bottom/right: reflect where the image is large enough, else replicate) and cropped back."""
    name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        ph = max(min_size - h, 0) + (-(max(h, min_size))) % multiple
        pw = max(min_size - w, 0) + (-(max(w, min_size))) % multiple
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode='reflect' if ph < h and pw < w else 'edge')
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0][..., :h * scale, :w * scale]

    return forward


def _import_torch() -> float | None:
    """Import torch; the seconds it took when this was the first import (else None)."""
    if 'torch' in sys.modules:
        return None
    start = time.perf_counter()
    import torch  # noqa: F401
    return time.perf_counter() - start


def probe(source: Source, args: argparse.Namespace, key: str):
    """Build, export, check and time the network; store the outcome under ``key``. ``(entry, net)``."""
    COUNTERS['probes'] += 1
    torch_import_s = _import_torch()
    import torch

    from ddsr.archs.esa_upsample import grid_stride
    from ddsr.deploy.backends import PROBE_SIDE, median_ms, to_inference_form, torch_upscaler
    from ddsr.deploy.export import export_onnx, natural_image, onnx_max_diff
    if args.threads:
        torch.set_num_threads(args.threads)
    net = to_inference_form(load_network(source)[0])
    up = torch_upscaler(net, 'cpu', channels_last=True)
    entry: dict[str, Any] = {'backend': 'torch', 'scale': up.scale, 'min_size': up.min_size,
                             'multiple': up.multiple, 'align': grid_stride(net), 'probe': PROBE_SIZE,
                             'torch_import_s': torch_import_s, 'onnx': None, 'material': key_material(source, args)}
    x = natural_image(PROBE_SIZE)
    timings = {'torch': median_ms(lambda: up(x))}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / 'model.onnx'
            export_onnx(net, path, size=PROBE_SIDE)  # sizes as ddsr.deploy.inference.auto_upscaler
            diff = onnx_max_diff(net, path, size=PROBE_SIDE + 8)
            if diff <= ONNX_TOL:
                entry['onnx'], entry['onnx_sha256'] = cache.store_onnx(key, path.read_bytes())
                entry['onnx_max_diff'] = diff
                session = ort_session(str(cache.entry_dir(key) / entry['onnx']), args.threads)
                fwd = numpy_ort_forward(session, up.scale, up.min_size, up.multiple)
                xn = x.numpy()
                timings['onnxruntime'] = median_ms(lambda: fwd(xn))
            else:
                entry['onnx_rejected'] = f'max |ONNX - PyTorch| {diff:.2e} > {ONNX_TOL}'
    except (DDSRError, ImportError, RuntimeError) as err:  # export/runtime trouble: the PyTorch path is always right
        entry['onnx'], entry['onnx_rejected'] = None, f'{type(err).__name__}: {str(err)[:200]}'
    entry['timings_ms'] = timings
    entry['backend'] = min(timings, key=lambda k: timings[k])
    cache.write_entry(key, entry)
    entry = cache.read_entry(key) or entry  # resolves onnx_path
    return entry, net


def _first_area(files: list[Path]) -> int | None:
    import cv2
    for path in files[:1]:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is not None:
            return int(img.shape[0] * img.shape[1])
    return None


def choose(entry: dict, n_images: int, area: int | None, tiled: bool) -> str:
    """``auto``'s backend for ``n_images`` images, the first of ``area`` px (see the module docstring, step 4)."""
    timings = entry.get('timings_ms') or {}
    if 'onnxruntime' not in timings or not entry.get('onnx_path'):
        return 'torch'
    if tiled or 'torch' in sys.modules or not entry.get('torch_import_s'):
        return min(timings, key=lambda k: timings[k])
    area = area or entry['probe'] ** 2
    per_image = area / entry['probe'] ** 2 * n_images / 1e3  # ms at the probe size -> s for all images
    cost = {'torch': entry['torch_import_s'] + timings['torch'] * per_image,
            'onnxruntime': timings['onnxruntime'] * per_image}
    return min(cost, key=lambda k: cost[k])


def _torch_plan(net, args: argparse.Namespace, info: dict) -> Plan:
    import torch

    from ddsr.deploy.backends import torch_upscaler
    channels_last = args.backend == 'auto' or args.channels_last
    up = torch_upscaler(net, args.device, channels_last=channels_last)
    tile, overlap = args.tile, args.tile_overlap

    def forward(x: np.ndarray) -> np.ndarray:
        return up(torch.from_numpy(x), tile, overlap).numpy()

    return Plan(forward, up.scale, {'backend': 'torch', 'device': args.device, 'channels_last': channels_last, **info})


def images_in_flight(n_images: int, area: int | None, threads: int | None, tiled: bool) -> int:
    """2 when ``n_images`` images, the first of ``area`` px, can run two at a time (step 3 of the module
    docstring), else 1."""
    cores = threads or os.cpu_count() or 1
    if tiled or cores < 2 or n_images < 2:
        return 1
    return 2 if area is not None and area <= PARALLEL_MAX_AREA else 1


def _ort_plan(path: str, meta: dict, args: argparse.Namespace, info: dict, workers: int = 1) -> Plan:
    threads = max(1, (args.threads or os.cpu_count() or 1) // workers) if workers > 1 else args.threads
    session = ort_session(path, threads)
    if args.tile:  # tiling is PyTorch code
        import torch

        from ddsr.deploy.backends import Upscaler
        fwd = numpy_ort_forward(session, meta['scale'], 1, 1)
        up = Upscaler(lambda x: torch.from_numpy(fwd(x.numpy())), meta['scale'], meta['min_size'], meta['multiple'])
        tile, overlap = args.tile, args.tile_overlap

        def tiled(x: np.ndarray) -> np.ndarray:
            return up(torch.from_numpy(x), tile, overlap).numpy()

        forward: NpForward = tiled
    else:
        forward = numpy_ort_forward(session, meta['scale'], meta['min_size'], meta['multiple'])
    return Plan(forward, meta['scale'], {'backend': 'onnxruntime', **info}, workers)


def onnx_file_meta(session, path: str) -> dict:
    meta = session.get_modelmeta().custom_metadata_map
    if 'scale' not in meta:
        raise DDSRError(f'{path}: no scale in the model metadata (export it with `ddsr export --out-onnx`)')
    multiple = int(meta.get('multiple', 1))
    return {'scale': int(meta['scale']), 'multiple': multiple, 'min_size': int(meta.get('min_size', max(16, multiple)))}


def make_plan(args: argparse.Namespace, arch: dict | None, files: list[Path], opt: dict | None = None) -> Plan:
    """The forward of ``ddsr upscale`` for ``args`` (``arch``: of ``--arch``/``--arch-kwargs``; ``opt``: the parsed
    option file of ``-opt``; ``files``: the inputs, for ``auto``'s estimate)."""
    if args.onnx:
        if not Path(args.onnx).is_file():
            raise DDSRError(f'ONNX model not found: {args.onnx}')
        meta = onnx_file_meta(ort_session(args.onnx, args.threads), args.onnx)
        workers = images_in_flight(len(files), _first_area(files), args.threads, bool(args.tile))
        return _ort_plan(args.onnx, meta, args, {'source': 'given'}, workers)
    source = read_source(args, arch, opt)
    if args.backend == 'torch' or args.device != 'cpu':  # --device: resolved and checked by ddsr.commands
        _import_torch()
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        return _torch_plan(load_network(source)[0], args, {'source': 'forced' if args.backend == 'torch' else 'cuda'})
    key = cache.key_of(key_material(source, args))
    net, rebuilt = None, None
    try:
        entry = cache.read_entry(key)
    except cache.CorruptEntry as err:
        entry, rebuilt = None, str(err)
        COUNTERS['rebuilt'] += 1
        print(f'ddsr: backend cache entry corrupt ({err}): rebuilding', file=sys.stderr)
    if entry is None:
        entry, net = probe(source, args, key)
        how = {'source': 'probe', 'timings_ms': entry['timings_ms'], 'cache': str(cache.entry_dir(key))}
    else:
        COUNTERS['cache_hits'] += 1
        how = {'source': 'cache', 'timings_ms': entry.get('timings_ms'), 'cache': str(cache.entry_dir(key))}
    if rebuilt:
        how['rebuilt'] = rebuilt
    tiled_esa = bool(args.tile) and int(entry.get('align', 1)) > 1
    area = _first_area(files)  # read once: the choice and the images in flight both scale with it
    if args.backend == 'onnxruntime':
        if not entry.get('onnx_path'):
            raise DDSRError(f'--backend onnxruntime: no usable ONNX export ({entry.get("onnx_rejected", "none")})')
        backend = 'onnxruntime'
    else:
        backend = 'torch' if tiled_esa else choose(entry, len(files), area, bool(args.tile))
    if backend == 'onnxruntime':
        workers = images_in_flight(len(files), area, args.threads, bool(args.tile))
        return _ort_plan(entry['onnx_path'], entry, args, how, workers)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    return _torch_plan(net if net is not None else load_network(source)[0], args, how)


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
    return f'{info["backend"]}{how}' + (f', {plan.workers} images at a time' if plan.workers > 1 else '')

