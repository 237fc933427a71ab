"""Channel dependency groups from Torch-Pruning's dependency graph, as (state-dict key, channel axis) slices.

Torch-Pruning traces a network and couples every layer whose channels must be removed together (residual adds
tie a trunk's producers and consumers into one group). ddsr uses it where it is right: the convolutional groups
of EDSR-family nets (trunk, block middles). It is not used where it is wrong or blind: PixelShuffle is treated as
element-wise (an upsampler conv's r^2 output channels feed one shuffled channel, mapped by
:func:`ddsr.compress.slicing.shuffle_groups`) and attention heads are unknown to it (Swin slicing is in
:mod:`ddsr.compress.swinir_compress`).
"""
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

Slice = tuple[str, int]  # (state-dict key, channel axis)


def coupled_slices(net: nn.Module, layers: Sequence[str],
                   example: torch.Tensor) -> dict[str, tuple[list[Slice], list[Slice]]]:
    """Producers and consumers of the output channels of each conv in ``layers``, from one traced graph.

    Args:
        net (nn.Module): The network (only its structure matters).
        layers (list[str]): Module names of Conv2d layers, e.g. ``conv_first``, ``body.3.conv1``.
        example (Tensor): An input to trace the graph with.

    Returns:
        dict: layer -> ``(producers, consumers)``: producers are (weight and bias key, axis 0) of the layers whose
        outputs are the channels, consumers (weight key, axis 1) of the layers that read them; sorted by key.
    """
    modules = dict(net.named_modules())
    names = {m: n for n, m in modules.items()}
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    out = {}
    for layer in layers:
        producers, consumers = set(), set()
        for dep, _ in graph.get_pruning_group(modules[layer], tp.prune_conv_out_channels, idxs=[0]):
            target = dep.target.module
            if not isinstance(target, nn.Conv2d):
                continue  # element-wise ops (the residual adds) carry no weights
            name = names[target]
            if dep.handler == tp.prune_conv_out_channels:
                producers.add((f'{name}.weight', 0))
                if target.bias is not None:
                    producers.add((f'{name}.bias', 0))
            elif dep.handler == tp.prune_conv_in_channels:
                consumers.add((f'{name}.weight', 1))
        out[layer] = (sorted(producers), sorted(consumers))
    return out
