"""Where a network comes from: every way of naming one, turned into one :class:`NetworkSource`.

The ways (``ddsr upscale``, ``export``, ``bench``, ``make-enhanced-hr`` and :class:`ddsr.ImageUpscaler` all come
here): ``-opt X.yml`` (``network_g`` or, for a teacher, ``network_t`` and its ``path.pretrain_network_*``,
``param_key_*``, ``strict_load_*``), ``--model NAME`` / ``ddsr://NAME`` (the zoo's file and arch), ``--weights FILE``
(``--arch`` given, else the checkpoint's own ``arch`` entry, else recognised from its keys and shapes by
:mod:`ddsr.detect`) and ``--onnx FILE``.

Each file is read once: the option file is parsed once (:func:`ddsr.option_file.load_options`, unless the caller
passes the dict it parsed), the checkpoint's bytes are read once (hashed for the backend cache and loaded from
memory), and everything else (arch, state dict, network, size requirements) is derived from what was read, on
first use. No torch until the checkpoint is loaded: a cached onnxruntime choice needs only the bytes' hash.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsr import zoo
from ddsr.errors import DDSRError, UnknownTypeError
from ddsr.fileio import sha256_bytes

if TYPE_CHECKING:
    from torch import nn

    from ddsr.archs.capabilities import SizeRequirements


@dataclass
class NetworkSource:
    """A network to run, as named, with its files read once.

    Attributes:
        label: How it was named, for messages (``--weights``, ``--model DIPNet-x4``, ``X.yml: path.pretrain_...``).
        origin: Where the arch comes from (``recognised from the weights``, ``network_g of X.yml``, ...).
        weights: The checkpoint file (None for an ONNX model).
        given_arch: The arch as given (``--arch``, ``network_g``, the zoo's); None: the checkpoint says or is
            recognised.
        param_key, strict: Which entry of the checkpoint is loaded and how (BasicSR's ``param_key_g``,
            ``strict_load_g``).
        onnx: An ONNX model (``--onnx``) instead of a checkpoint.
        check_fit: Whether the given arch is checked against the weights (``--weights``/``--model``; an option
            file's ``network_g`` is loaded as BasicSR would, its misfit reported by the loader).
        scale_hint: The option file's ``scale`` (benchmarks), None otherwise.
    """
    label: str
    origin: str = ''
    weights: Path | None = None
    given_arch: dict | None = None
    param_key: str | None = 'params'
    strict: bool = True
    onnx: Path | None = None
    check_fit: bool = True
    scale_hint: int | None = None

    @cached_property
    def data(self) -> bytes:
        """The checkpoint's bytes, read on first use and kept (the file is read once)."""
        if self.weights is None:
            raise DDSRError(f'{self.label}: no checkpoint file')
        try:
            return self.weights.read_bytes()
        except OSError as err:
            raise DDSRError(f'{self.label}: cannot read {self.weights}: {err.strerror}') from None

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the checkpoint's bytes (the backend cache's key)."""
        return sha256_bytes(self.data)

    @cached_property
    def raw(self) -> dict:
        """The checkpoint as read (one ``torch.load`` of :attr:`data`)."""
        from ddsr import checkpoint
        if self.weights is None:
            raise DDSRError(f'{self.label}: an ONNX model has no checkpoint')
        return checkpoint.load_file(self.weights, self.label, data=self.data)

    @cached_property
    def arch(self) -> dict:
        """The network option (``type`` + kwargs) the weights are loaded into."""
        if not self.check_fit:
            assert self.given_arch is not None  # an option file's network_g (checked when the source was made)
            return dict(self.given_arch)
        from ddsr.detect import resolve_arch  # the given arch, else the checkpoint's own, else recognised
        return resolve_arch(self.raw, self.given_arch, self.param_key, str(self.weights))

    @cached_property
    def state(self) -> dict:
        """The state dict BasicSR's ``load_network`` would load (:func:`ddsr.checkpoint.select_params`)."""
        from ddsr import checkpoint
        return checkpoint.select_params(self.raw, self.param_key, str(self.weights), self.label)

    def _where(self) -> str:
        if self.given_arch is None:
            return f'{self.weights}: arch'
        return '--arch' if self.label == '--weights' else self.label.split(':')[0] + ': network_g'

    def build(self) -> nn.Module:
        """A new network of :attr:`arch` with the weights loaded (eval mode); one error line when it cannot be."""
        from ddsr.archs.registry import build_network  # the one builder (ddsr's archs without basicsr)
        arch = self.arch
        try:
            net = build_network(arch)
        except UnknownTypeError as err:
            raise UnknownTypeError(f'{self._where()}.type: {err}') from None
        except DDSRError:
            raise
        except Exception as err:  # noqa: B902  (any failure to build from these kwargs is a bad network option)
            kwargs = ', '.join(k for k in arch if k != 'type')
            raise DDSRError(f'{self._where()}: cannot build {arch["type"]}({kwargs}): {type(err).__name__}: {err}') \
                from None
        try:
            net.load_state_dict(self.state, strict=self.strict)
        except RuntimeError as err:
            raise DDSRError(f'{self.label}: {self.weights} does not fit {arch["type"]} (strict_load {self.strict}): '
                            f'{" ".join(str(err).split())[:300]}') from None
        return net.eval()

    @cached_property
    def network(self) -> nn.Module:
        """:meth:`build`, once per source (the probe and the run share it; the runtime may convert it in place to
        its inference form, so :attr:`form` is taken here, as loaded)."""
        from ddsr.archs.capabilities import capabilities_of
        net = self.build()
        self.__dict__['form'] = 'deploy form' if capabilities_of(net).is_deployed else 'train form'
        return net

    @property
    def size_requirements(self) -> SizeRequirements:
        from ddsr.archs.capabilities import capabilities_of
        return capabilities_of(self.network).size

    @property
    def scale(self) -> int | None:
        """The upscale factor the arch declares (``upscale``/``scale`` kwarg; the option file's ``scale``)."""
        value = self.arch.get('upscale', self.arch.get('scale', self.scale_hint))
        return int(value) if isinstance(value, int) else None

    @cached_property
    def form(self) -> str:
        """``deploy form`` or ``train form`` of the checkpoint as loaded (set by :attr:`network`)."""
        self.network  # noqa: B018  (loading sets it)
        return str(self.__dict__['form'])

    @property
    def num_params(self) -> int:
        return sum(int(p.numel()) for p in self.network.parameters())

    @cached_property
    def summary(self) -> dict[str, Any]:
        """What :func:`describe` prints, as plain values (stored with a cached backend choice); taken once, before
        the runtime converts the network to its inference form."""
        origin = self.origin
        if not origin:
            stored = self.raw.get('arch')
            origin = 'its own arch entry' if isinstance(stored, Mapping) else 'recognised from the weights'
        return {'type': self.arch['type'], 'scale': self.scale, 'form': self.form, 'params': self.num_params,
                'origin': origin}


def describe(summary: Mapping[str, Any]) -> str:
    """``network: DIPNet x4, deploy form, 243,252 parameters (recognised from the weights)``."""
    scale = f' x{summary["scale"]}' if summary.get('scale') else ''
    origin = f' ({summary["origin"]})' if summary.get('origin') else ''
    return f'network: {summary["type"]}{scale}, {summary["form"]}, {summary["params"]:,} parameters{origin}'


def _existing(path: str | Path, label: str) -> Path:
    path = Path(str(path))
    if not path.is_file():
        raise DDSRError(f'{label}: file not found: {path}')
    return path


def from_options(opt_path: str, options: Mapping | None = None, net: str = 'g',
                 require_weights: bool = True) -> NetworkSource:
    """The network ``network_<net>`` (``g``, or ``t`` for a teacher) of an option file and its pretrained weights;
    ``options``: the file already parsed by the caller (it is parsed here otherwise); ``require_weights`` False:
    an option file without ``pretrain_network_<net>`` is a network without weights (benchmarks)."""
    if options is None:
        from ddsr.option_file import load_options
        options = load_options(opt_path)
    arch = options.get(f'network_{net}')
    if not isinstance(arch, dict) or not isinstance(arch.get('type'), str):
        raise DDSRError(f'{opt_path}: network_{net}: expected a mapping with "type:" and the arch kwargs, got {arch!r}')
    paths: Mapping = options['path'] if isinstance(options.get('path'), dict) else {}
    weights = paths.get(f'pretrain_network_{net}')
    if not weights and not require_weights:
        weights = None
    elif not weights:
        raise DDSRError(f'{opt_path}: path.pretrain_network_{net} is not set')
    param_key = paths.get(f'param_key_{net}', 'params')
    if param_key is not None and not isinstance(param_key, str):
        raise DDSRError(f'{opt_path}: path.param_key_{net} must be a name (params, params_ema), got {param_key!r}')
    label = f'{opt_path}: path.pretrain_network_{net}'
    path = _existing(zoo.resolve(weights), label) if weights else None
    scale = options.get('scale')
    return NetworkSource(label, f'network_{net} of {opt_path}', path, dict(arch), param_key,
                         paths.get(f'strict_load_{net}', True) is not False, check_fit=False,
                         scale_hint=scale if isinstance(scale, int) else None)


def from_model(name: str, arch: Mapping | None = None, param_key: str | None = 'params',
               quiet: bool = False) -> NetworkSource:
    """A network of ``ddsr models`` by name (``ddsr://`` prefix allowed), downloaded on first use."""
    model = zoo.lookup(name)
    path = _existing(zoo.fetch(model, quiet=quiet), f'--model {model.name}')
    return NetworkSource(f'--model {name}', f'ddsr models {model.name}', path,
                         dict(arch) if arch else dict(model.arch), param_key)


def from_weights(weights: str | Path, arch: Mapping | None = None, param_key: str | None = 'params',
                 label: str = '--weights') -> NetworkSource:
    """A checkpoint: ``arch`` if given (checked against the weights), else its own ``arch`` entry, else recognised."""
    if zoo.is_model_ref(str(weights)):
        return from_model(str(weights), arch, param_key)
    return NetworkSource(label, '--arch' if arch else '', _existing(weights, label), dict(arch) if arch else None,
                         param_key)


def from_onnx(path: str | Path) -> NetworkSource:
    if not Path(path).is_file():
        raise DDSRError(f'ONNX model not found: {path}')
    return NetworkSource('--onnx', 'ONNX model', onnx=Path(path))


def resolve(opt: str | None = None, weights: str | None = None, model: str | None = None, onnx: str | None = None,
            arch: Mapping | None = None, param_key: str | None = 'params', options: Mapping | None = None,
            net: str = 'g') -> NetworkSource:
    """The one entry point: exactly one of ``opt`` (``options``: already parsed), ``model``, ``weights``, ``onnx``."""
    if opt:
        return from_options(opt, options, net)
    if onnx:
        return from_onnx(onnx)
    if model:
        return from_model(model, arch, param_key)
    if weights:
        return from_weights(weights, arch, param_key)
    raise DDSRError('no network given: -opt OPTION.yml, --model NAME, --weights FILE or --onnx FILE')
