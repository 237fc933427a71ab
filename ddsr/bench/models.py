"""Networks to benchmark, described as BasicSR does: a ``network_g`` dict (``type`` + kwargs) and optional weights.

Sources: a BasicSR option file (``network_g``, ``path.pretrain_network_g``, ``path.param_key_g``,
``path.strict_load_g``, ``scale``), an arch name + kwargs, or a model list file (YAML: ``models:`` entries with
``name``, ``network_g``, optional ``pretrain``, ``deploy_pretrain``, ``param_key``, ``strict``, ``scale``).
``deploy_pretrain`` is a checkpoint of the deploy form (e.g. an official reparameterized release): the network is
built as given (train form, for the efficiency table) and quality is measured on its deploy form with these weights.
"""
from dataclasses import dataclass, field
from os import path as osp

from torch import nn

from ddsr import checkpoint
from ddsr.archs.capabilities import capabilities_of
from ddsr.archs.reparam import switch_to_deploy
from ddsr.errors import DDSRError, UnknownTypeError
from ddsr.option_file import load_options


@dataclass
class ModelSpec:
    """One network to benchmark."""
    name: str
    network: dict
    weights: str | None = None
    deploy_weights: str | None = None
    param_key: str = 'params'
    strict: bool = True
    scale: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def upscale(self) -> int:
        return int(self.scale or self.network.get('upscale') or self.network.get('scale') or 4)


def is_registered(arch_type: str) -> bool:
    from basicsr.utils.registry import ARCH_REGISTRY
    return arch_type in ARCH_REGISTRY


def build_network(spec: ModelSpec) -> nn.Module:
    """Instantiate ``spec.network`` and load ``spec.weights`` (if any), in eval mode."""
    arch_type = spec.network.get('type')
    if arch_type is None:
        raise DDSRError(f'{spec.name}: network has no "type"')
    if not is_registered(arch_type):
        raise UnknownTypeError(f'{spec.name}: network type {arch_type!r} is not registered')
    net = checkpoint.build_network(spec.network)
    if spec.weights:
        checkpoint.load_weights(net, spec.weights, spec.param_key, spec.strict, label=spec.name)
    return net.eval()


def build_for_quality(spec: ModelSpec) -> nn.Module:
    """The network whose outputs are scored: with ``weights``, or its deploy form with ``deploy_weights``."""
    net = build_network(spec)
    if spec.deploy_weights:
        if not hasattr(net, 'switch_to_deploy'):
            raise DDSRError(f'{spec.name}: deploy_pretrain given but {spec.network["type"]} has no deploy form')
        if not capabilities_of(net).is_deployed:
            switch_to_deploy(net)
        checkpoint.load_weights(net, spec.deploy_weights, spec.param_key, spec.strict, label=spec.name)
    return net.eval()


def spec_from_option_file(path: str, opt: dict | None = None) -> ModelSpec:
    """ModelSpec of the ``network_g`` (and its pretrained weights, if set) of a BasicSR option file; ``opt``: the
    file already parsed (parsed here otherwise). The network's source is resolved by :mod:`ddsr.deploy.source`."""
    from ddsr.deploy.source import from_options
    if not osp.isfile(path):
        raise DDSRError(f'option file not found: {path}')
    opt = load_options(path) if opt is None else opt
    if 'network_g' not in opt:
        raise DDSRError(f'{path}: no network_g')
    source = from_options(path, opt, require_weights=False)  # ddsr://NAME -> the cached file
    return ModelSpec(name=opt.get('name', osp.splitext(osp.basename(path))[0]), network=dict(source.arch),
                     weights=str(source.weights) if source.weights else None, param_key=source.param_key or 'params',
                     strict=source.strict, scale=source.scale_hint)


def specs_from_model_list(path: str, root: str | None = None, doc: dict | None = None) -> list[ModelSpec]:
    """ModelSpecs of a model list file (``doc``: already parsed, else parsed here); ``pretrain`` paths are relative
    to ``root`` (default: the file's folder). Entries whose arch is not registered, or whose weights are missing,
    are kept with a note (callers skip them or drop the weights)."""
    if not osp.isfile(path):
        raise DDSRError(f'model list not found: {path}')
    doc = load_options(path) if doc is None else doc
    root = osp.dirname(osp.abspath(path)) if root is None else root
    specs = []
    for idx, entry in enumerate(doc.get('models') or []):
        if 'network_g' not in entry or 'name' not in entry:
            raise DDSRError(f'{path}: models[{idx}] needs name and network_g')
        spec = ModelSpec(name=entry['name'], network=entry['network_g'], param_key=entry.get('param_key', 'params'),
                         strict=entry.get('strict', True), scale=entry.get('scale', doc.get('scale')))
        for key, attr in (('pretrain', 'weights'), ('deploy_pretrain', 'deploy_weights')):
            if entry.get(key):
                weights = osp.join(root, entry[key])
                if osp.isfile(weights):
                    setattr(spec, attr, weights)
                else:
                    spec.notes.append(f'{key} {weights} missing: no quality numbers')
        specs.append(spec)
    return specs
