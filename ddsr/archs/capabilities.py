"""What a network needs and what it is: the one place every consumer asks (deploy runtime, export, option checks,
benchmarks).

Every ddsr arch (DDistillSR, DIPNet, EDSRmini, SwinIRmini) implements :class:`ArchCapabilities`:

- ``size_requirements()`` -> :class:`SizeRequirements`: the smallest LR side the forward accepts, the multiple an
  input side must be (Swin window), and the grid that tile origins must lie on (ESA's coarse grid, see
  :mod:`ddsr.archs.esa_upsample`);
- ``is_deployed``: True when the network is in its inference form: fused (after ``switch_to_deploy``) or an arch
  with a single form;
- ``config()``: ``{'type': ..., **kwargs}`` that rebuilds this network's form and widths (pruned / compacted ones
  included), the ``arch`` entry of a self-describing checkpoint.

:func:`capabilities_of` answers for any network or arch dict: ddsr archs answer themselves; other archs
(BasicSR's EDSR, MSRResNet, SwinIR, ...) get the defaults written here and their arch unit's requirements.
"""
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from ddsr.archs.esa_upsample import grid_stride
from ddsr.archs.registry import arch_class, build_network
from ddsr.archs.sizes import ANY_SIZE, ESA_REQUIREMENTS, SizeRequirements
from ddsr.archs.units import known_requirements

__all__ = ['ANY_SIZE', 'ESA_REQUIREMENTS', 'ArchCapabilities', 'Capabilities', 'ReparamESACapabilities',
           'SizeRequirements', 'capabilities_of', 'implements_protocol', 'is_deployed', 'size_requirements',
           'window_multiple']


class ReparamESACapabilities:
    """Capabilities shared by the reparameterized ESA nets (DDistillSR, DIPNet): ESA's size requirements (LR
    sides >= 15 px, tile origins on the stride-6 coarse grid), and deployed when built with ``deploy=True`` or
    converted by ``switch_to_deploy``. Mixed in before the ``nn.Module`` base."""
    deploy: bool

    @property
    def is_deployed(self) -> bool:
        return self.deploy

    def size_requirements(self) -> SizeRequirements:
        return ESA_REQUIREMENTS


@runtime_checkable
class ArchCapabilities(Protocol):
    """The capability protocol of ddsr archs (module docstring)."""

    @property
    def is_deployed(self) -> bool: ...

    def size_requirements(self) -> SizeRequirements: ...

    def config(self) -> dict: ...


@dataclass(frozen=True)
class Capabilities:
    """Answer of :func:`capabilities_of`.

    Attributes:
        size: Input constraints.
        is_deployed: The network is in its inference form (nothing to fuse).
        config: ``{'type': ..., **kwargs}`` that rebuilds it; None for a network of another package (no
            ``config()``), whose kwargs are unknown.
    """
    size: SizeRequirements
    is_deployed: bool
    config: dict | None


def implements_protocol(net_or_cls: Any) -> bool:
    """Whether a network (or arch class) implements :class:`ArchCapabilities` itself."""
    return all(hasattr(net_or_cls, name) for name in ('is_deployed', 'size_requirements', 'config'))


def capabilities_of(net_or_arch: nn.Module | Mapping) -> Capabilities:
    """Capabilities of a network, or of an arch dict ``{'type': ..., **kwargs}`` (type from BasicSR's registry).

    Other packages' archs: size from their arch unit (:func:`ddsr.archs.units.known_requirements`, else any
    size), ``multiple`` = their attention window (:func:`window_multiple`; BasicSR's SwinIR does not pad),
    ``grid`` = the net's ESA grid (:func:`ddsr.archs.esa_upsample.grid_stride`); deployed unless they have a
    ``switch_to_deploy`` and no true ``deploy`` flag (in doubt: not deployed, since converting is the safe side:
    ddsr's conversions are idempotent) or hold a ddsr arch that is not deployed; a ddsr arch inside adds its size
    requirements.
    """
    if isinstance(net_or_arch, Mapping):
        return _arch_capabilities(net_or_arch)
    net = net_or_arch
    if isinstance(net, ArchCapabilities):
        return Capabilities(net.size_requirements(), bool(net.is_deployed), dict(net.config()))
    parts = [m for m in net.modules() if m is not net and isinstance(m, ArchCapabilities)]  # ddsr archs inside
    sizes = [known_requirements().get(type(net).__name__, ANY_SIZE), SizeRequirements(1, window_multiple(net),
                                                                                   grid_stride(net))]
    sizes += [m.size_requirements() for m in parts]
    size = SizeRequirements(max(s.min_size for s in sizes), math.lcm(*(s.multiple for s in sizes)),
                            math.lcm(*(s.grid for s in sizes)))
    own = not hasattr(net, 'switch_to_deploy') or bool(getattr(net, 'deploy', False))
    config = getattr(net, 'config', None)  # a net of another package may still describe itself
    return Capabilities(size, own and all(m.is_deployed for m in parts), dict(config()) if callable(config) else None)


def window_multiple(net: nn.Module) -> int:
    """Attention window of a Swin-type net (its own ``window_size``, else its blocks' largest int one), or 1."""
    own = getattr(net, 'window_size', None)
    if isinstance(own, int):
        return max(own, 1)
    return max((size for m in net.modules() if isinstance(size := getattr(m, 'window_size', None), int)), default=1)


def _arch_capabilities(arch: Mapping) -> Capabilities:
    """Capabilities of an arch dict: ddsr archs are built (meta device when possible) and asked; others are
    answered from the class signature, without building (BasicSR's SwinIR builds slowly)."""
    kwargs = {k: v for k, v in arch.items() if k != 'type'}
    cls = arch_class(arch['type'])  # ddsr's archs without importing basicsr (ddsr.archs.registry)
    if implements_protocol(cls):
        return capabilities_of(build_network(arch, meta=True))
    params = inspect.signature(cls).parameters

    def value(name: str, default: Any) -> Any:
        if name in kwargs:
            return kwargs[name]
        return params[name].default if name in params and params[name].default is not inspect.Parameter.empty \
            else default

    known = known_requirements().get(arch['type'], ANY_SIZE)
    size = SizeRequirements(known.min_size, max(known.multiple, int(value('window_size', 1) or 1)), known.grid)
    deployed = not hasattr(cls, 'switch_to_deploy') or bool(value('deploy', False))
    return Capabilities(size, deployed, {'type': arch['type'], **kwargs})


def size_requirements(net_or_arch: nn.Module | Mapping) -> SizeRequirements:
    """Shorthand: :func:`capabilities_of` ``(net_or_arch).size``."""
    return capabilities_of(net_or_arch).size


def is_deployed(net_or_arch: nn.Module | Mapping) -> bool:
    """Shorthand: :func:`capabilities_of` ``(net_or_arch).is_deployed``."""
    return capabilities_of(net_or_arch).is_deployed
