"""Arch capability protocol (ddsr.archs.capabilities): size requirements, deploy state and config() of every arch."""
import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

import ddsr  # noqa: F401  (registration)
from ddsr.archs.capabilities import (
    ArchCapabilities,
    SizeRequirements,
    capabilities_of,
    implements_protocol,
)
from ddsr.archs.esa_upsample import ESA_MIN_INPUT, coarse_size, grid_stride
from ddsr.archs.reparam import Reparameterizable

# Small instances of every ddsr arch (fast to build and run on a CPU).
SMALL = {
    'DDistillSR': dict(num_feat=16, dyn_dim=4, upscale=2),
    'DIPNet': dict(num_feat=12, num_mid=8, num_block=2, esa_channels=4, upscale=2, expand_width=16, deploy=False),
    'EDSRmini': dict(num_feat=8, num_block=2, upscale=2),
    'SwinIRmini': dict(embed_dim=12, depths=[2], num_heads=[2], img_size=16, window_size=4, upscale=2),
}
# Pruned / compacted widths, as ddsr.compress writes them into self-describing checkpoints.
PRUNED = {
    'DDistillSR': dict(SMALL['DDistillSR'], deploy=True, fold_bn=True),
    'DIPNet': dict(SMALL['DIPNet'], deploy=True, mid_channels=[5, 3]),
    'EDSRmini': dict(SMALL['EDSRmini'], block_channels=[3, 6], upsample_channels=[5]),
    'SwinIRmini': dict(SMALL['SwinIRmini'], depths=[2, 1], num_heads=[2, 2], head_dim=5, layer_heads=[[1, 2], [0]],
                       layer_mlp_hidden=[[7, 3], [9]]),
}
EXPECTED = {'DDistillSR': (15, 1, 6), 'DIPNet': (15, 1, 6), 'EDSRmini': (1, 1, 1), 'SwinIRmini': (1, 4, 1)}


def ddsr_archs() -> list[str]:
    return sorted(name for name, cls in ARCH_REGISTRY if cls.__module__.startswith('ddsr.'))


def build(arch: dict) -> nn.Module:
    return ARCH_REGISTRY.get(arch['type'])(**{k: v for k, v in arch.items() if k != 'type'})


def layout(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_every_ddsr_arch_implements_the_protocol():
    assert ddsr_archs() == sorted(SMALL)  # a new arch must be added to SMALL / PRUNED / EXPECTED
    for name in ddsr_archs():
        net = build({'type': name, **SMALL[name]})
        assert isinstance(net, ArchCapabilities) and implements_protocol(ARCH_REGISTRY.get(name)), name


@pytest.mark.parametrize('name', sorted(SMALL))
def test_size_requirements(name):
    net = build({'type': name, **SMALL[name]})
    req = net.size_requirements()
    assert (req.min_size, req.multiple, req.grid) == EXPECTED[name]
    assert req.grid == grid_stride(net)  # the tile-origin grid is the one tiled inference aligns to
    assert capabilities_of(net).size == req == capabilities_of({'type': name, **SMALL[name]}).size


@pytest.mark.parametrize('name', ['DIPNet', 'DDistillSR'])
def test_esa_min_size_is_the_real_limit(name):
    assert ESA_MIN_INPUT == 15 and coarse_size(15) == 1 and coarse_size(14) == 0
    net = build({'type': name, **SMALL[name]}).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 15, 17)).shape == (1, 3, 30, 34)
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 3, 14, 17))


def test_swinirmini_multiple_is_its_window():
    assert build({'type': 'SwinIRmini', **SMALL['SwinIRmini'], 'window_size': 2}).size_requirements().multiple == 2
    assert SizeRequirements(15, 4, 6).smallest == 16 and SizeRequirements(1, 8).smallest == 8
    assert SizeRequirements(15).smallest == 15
    assert [SizeRequirements(15, 4).fit(side) for side in (1, 16, 17, 24)] == [16, 16, 20, 24]


@pytest.mark.parametrize('arch', [dict(SMALL[n], type=n) for n in sorted(SMALL)]
                         + [dict(PRUNED[n], type=n) for n in sorted(PRUNED)], ids=lambda a: a['type'])
def test_config_rebuilds_the_same_network(arch):
    net = build(arch)
    config = net.config()
    assert config['type'] == arch['type']
    assert all(config[k] == (list(v) if isinstance(v, tuple) else v) for k, v in arch.items())
    rebuilt = build(config)
    assert layout(rebuilt) == layout(net)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    assert rebuilt.config() == config


def test_config_carries_pruned_widths():
    dip = build({'type': 'DIPNet', **PRUNED['DIPNet']})
    assert dip.config()['mid_channels'] == [5, 3] and dip.block_1.c1_r.weight.shape[0] == 5
    edsr = build({'type': 'EDSRmini', **PRUNED['EDSRmini']})
    assert [b.conv1.out_channels for b in edsr.body] == edsr.config()['block_channels'] == [3, 6]
    swin = build({'type': 'SwinIRmini', **PRUNED['SwinIRmini']})
    heads = [[blk.attn.num_heads for blk in layer.residual_group.blocks] for layer in swin.layers]
    assert heads == swin.config()['layer_heads'] == [[1, 2], [0]]
    assert swin.layers[0].residual_group.blocks[1].attn.qkv.out_features == 3 * 2 * 5


@pytest.mark.parametrize('name', ['DDistillSR', 'DIPNet'])
def test_is_deployed_follows_switch_to_deploy(name):
    net = build({'type': name, **SMALL[name]})
    assert net.is_deployed is False and capabilities_of(net).is_deployed is False
    train_keys = set(net.state_dict())
    net.switch_to_deploy()
    assert net.is_deployed is True and capabilities_of(net).is_deployed is True
    assert net.config()['deploy'] is True
    rebuilt = build(net.config())  # the config now builds the deploy form
    assert layout(rebuilt) == layout(net) and set(rebuilt.state_dict()) != train_keys
    assert capabilities_of({'type': name, **SMALL[name]}).is_deployed is False
    assert capabilities_of({'type': name, **SMALL[name], 'deploy': True}).is_deployed is True


def test_single_form_archs_are_deployed():
    for name in ('EDSRmini', 'SwinIRmini'):
        assert build({'type': name, **SMALL[name]}).is_deployed is True
        assert capabilities_of({'type': name}).is_deployed is True


def test_defaults_for_basicsr_archs():
    edsr = capabilities_of({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3})
    built = capabilities_of(build({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1}))
    assert (built.size, built.is_deployed, built.config) == (edsr.size, True, None)
    assert (edsr.size, edsr.is_deployed) == (SizeRequirements(1, 1, 1), True)
    assert edsr.config == {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3}
    msr = capabilities_of(build({'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1}))
    assert (msr.size, msr.is_deployed, msr.config) == (SizeRequirements(1, 1, 1), True, None)
    assert capabilities_of({'type': 'SwinIR'}).size == SizeRequirements(1, 7, 1)  # BasicSR's default window
    swin = capabilities_of(build({'type': 'SwinIR', 'window_size': 4, 'img_size': 8, 'embed_dim': 6,
                                  'depths': [1], 'num_heads': [1]}))
    assert swin.size == SizeRequirements(1, 4, 1)


def test_defaults_for_other_networks():
    class Foreign(Reparameterizable):  # a train/deploy net without the protocol and without a deploy flag
        def __init__(self) -> None:
            super().__init__()
            self.esa = nn.Conv2d(3, 3, 1)
            self.esa.grid_stride = 6

        def switch_to_deploy(self) -> None:
            pass

    caps = capabilities_of(Foreign())
    assert caps == caps.__class__(SizeRequirements(1, 1, 6), False, None)
    net = Foreign()
    net.deploy = True
    assert capabilities_of(net).is_deployed is True
    assert capabilities_of(nn.Conv2d(3, 3, 3)).is_deployed is True
    wrapper = nn.Sequential(build({'type': 'DIPNet', **SMALL['DIPNet']}))  # holds a train-form DIPNet
    assert capabilities_of(wrapper) == caps.__class__(SizeRequirements(15, 1, 6), False, None)
    wrapper[0].switch_to_deploy()
    assert capabilities_of(wrapper).is_deployed is True


def test_consumers_ask_the_protocol():
    from ddsr.bench.efficiency import forms
    from ddsr.checks.networks import min_input_size
    from ddsr.deploy.backends import to_deploy, torch_upscaler
    from ddsr.deploy.export import arch_config
    for name in sorted(SMALL):
        need = EXPECTED[name]
        up = torch_upscaler(build({'type': name, **SMALL[name]}))
        assert (up.min_size, up.multiple, up.align, up.scale) == (*need, 2), name
        assert (up.tile_context is not None) == (need[2] > 1)
        assert min_input_size({'type': name, **SMALL[name]}) == need[0]
    assert min_input_size({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3}) == 1
    dip = build({'type': 'DIPNet', **SMALL['DIPNet']})
    assert [form for form, _ in forms(dip)] == ['train', 'deploy'] and not dip.is_deployed
    assert to_deploy(dip) is dip and dip.is_deployed and arch_config(dip) == dip.config()
    assert [form for form, _ in forms(dip)] == ['deploy']
    assert [form for form, _ in forms(build({'type': 'EDSRmini', **SMALL['EDSRmini']}))] == ['-']
    assert arch_config(nn.Conv2d(3, 3, 1), {'type': 'X', 'deploy': False}) == {'type': 'X', 'deploy': True}
