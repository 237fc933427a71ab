"""Checkpoint auto-detection (ddsr.detect): arch, scale, widths and form recovered from keys and shapes."""
import json

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from ddsr.detect import detect, detect_file, resolve_arch
from ddsr.errors import DDSRError
from tests.conftest import PRETRAINED, run_cli

SWIN_LIGHT = {'img_size': 48, 'window_size': 8, 'embed_dim': 60, 'depths': [6, 6], 'num_heads': [6, 6],
              'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect'}
SWIN_CLASSIC = {'img_size': 32, 'window_size': 8, 'embed_dim': 60, 'depths': [2, 2], 'num_heads': [6, 3],
                'mlp_ratio': 2, 'upsampler': 'pixelshuffle', 'resi_connection': '3conv'}
CASES = (
    [{'type': 'DDistillSR', 'upscale': s, 'deploy': d, 'num_feat': 24, 'dyn_dim': 8} for s in (2, 3, 4)
     for d in (False, True)]
    + [{'type': 'DDistillSR', 'upscale': 4, 'deploy': False}, {'type': 'DDistillSR', 'upscale': 4, 'deploy': True},
       {'type': 'DDistillSR', 'upscale': 3, 'deploy': True, 'fold_bn': True, 'num_feat': 24, 'dyn_dim': 8}]
    + [{'type': 'DIPNet', 'upscale': s, 'deploy': d} for s in (2, 3, 4) for d in (False, True)]
    + [{'type': 'DIPNet', 'upscale': 4, 'deploy': d, 'mid_channels': [30, 20, 38, 12]} for d in (False, True)]
    + [{'type': 'DIPNet', 'upscale': 2, 'deploy': False, 'num_feat': 16, 'num_mid': 12, 'num_block': 2,
        'expand_width': 32}]
    + [{'type': 'EDSRmini', 'upscale': s} for s in (2, 3, 4)]
    + [{'type': 'EDSRmini', 'upscale': 4, 'block_channels': [16, 8, 4, 16, 16, 3, 2, 1], 'upsample_channels': [8, 5]},
       {'type': 'EDSRmini', 'upscale': 3, 'block_channels': [12] * 8}]
    + [{'type': 'SwinIRmini', 'upscale': s} for s in (2, 3, 4)]
    + [{'type': 'SwinIRmini', 'upscale': 2, 'layer_heads': [[6, 5, 0, 6], [6] * 4, [1, 2, 3, 4]],
        'layer_mlp_hidden': [[48, 40, 48, 48], [48] * 4, [10, 20, 30, 40]]},
       {'type': 'SwinIRmini', 'upscale': 4, 'layer_mlp_hidden': [[30] * 4, [20] * 4, [48] * 4]}]
    + [{'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 16, 'upscale': s}
       for s in (2, 3, 4)]
    + [{'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 256, 'num_block': 32, 'upscale': 2,
        'res_scale': 0.1}]
    + [{'type': 'SwinIR', 'upscale': s, **SWIN_LIGHT} for s in (2, 3, 4)]
    + [{'type': 'SwinIR', 'upscale': s, **SWIN_CLASSIC} for s in (2, 3, 4)]
    + [{'type': 'MSRResNet', 'upscale': s} for s in (2, 3, 4)]
)


def _net(arch: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return ARCH_REGISTRY.get(arch['type'])(**{k: v for k, v in arch.items() if k != 'type'})


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return list(a) == list(b)
    return a == b


@pytest.mark.parametrize('arch', CASES, ids=lambda a: json.dumps(a, separators=(',', ':'))[:80])
def test_detects_arch_scale_widths_and_form(arch):
    state = _net(arch).state_dict()
    found = detect({f'module.{k}': v for k, v in state.items()} if arch['type'] == 'MSRResNet' else state)
    assert found.arch['type'] == arch['type'], found.describe()
    for key, value in arch.items():  # every kwarg that shapes the weights is recovered
        assert _same(found.arch.get(key, value), value), (key, found.describe())
    rebuilt = _net(found.arch)
    rebuilt.load_state_dict(state, strict=True)  # the detected config holds the weights exactly
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in _net(arch).parameters())
    if arch['type'] in ('DDistillSR', 'DIPNet'):
        assert found.arch['deploy'] == arch['deploy']
        assert found.form.startswith('deploy' if arch['deploy'] else 'train')


def test_detected_network_computes_the_same_output():
    arch = {'type': 'SwinIRmini', 'upscale': 3, 'layer_heads': [[6, 5, 0, 6], [6] * 4, [1, 2, 3, 4]]}
    net = _net(arch).eval()
    rebuilt = _net(detect(net.state_dict()).arch).eval()
    rebuilt.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), rebuilt(x))


def test_ambiguous_weights_list_the_candidates():
    state = _net({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 4,
                  'upscale': 2}).state_dict()
    with pytest.raises(DDSRError, match=r'fit 2 networks: EDSR\(.*res_scale=1\).*; EDSR\(.*res_scale=0.1\)'):
        detect(state, 'x.pth')


def test_unknown_weights_are_one_clear_line():
    with pytest.raises(DDSRError, match='x.pth: not a checkpoint of a known arch .*give --arch'):
        detect({'foo.weight': torch.zeros(3, 3)}, 'x.pth')


def test_other_form_of_the_named_arch_says_so():
    deploy = _net({'type': 'DDistillSR', 'upscale': 4, 'deploy': True, 'num_feat': 24, 'dyn_dim': 8}).state_dict()
    named = {'type': 'DDistillSR', 'upscale': 4, 'num_feat': 24, 'dyn_dim': 8}
    with pytest.raises(DDSRError) as err:
        resolve_arch(deploy, named, label='w.pth')
    text = str(err.value)
    assert '\n' not in text and 'w.pth holds the deploy form of DDistillSR' in text
    assert 'set {"deploy": true} in --arch-kwargs' in text
    assert resolve_arch(deploy, {**named, 'deploy': True}) == {**named, 'deploy': True}  # fits: kept as given
    assert resolve_arch({'params': {}, 'params_ema': deploy}, None, 'params_ema')['deploy'] is True  # BasicSR layout
    train = _net({'type': 'DIPNet', 'deploy': False}).state_dict()
    with pytest.raises(DDSRError, match=r'the train form of DIPNet .*set \{"deploy": false\} in'):
        resolve_arch(train, {'type': 'DIPNet'}, label='d.pth')
    with pytest.raises(DDSRError, match='d.pth holds DIPNet.*not a EDSR'):
        resolve_arch(train, {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3}, label='d.pth')


def test_self_describing_checkpoint_is_taken_at_its_word():
    arch = {'type': 'DIPNet', 'num_feat': 8, 'num_mid': 6, 'num_block': 1, 'esa_channels': 4, 'upscale': 2}
    raw = {'params': _net(arch).state_dict(), 'arch': arch}
    assert resolve_arch(raw) == arch


@pytest.mark.parametrize('name', ['DDistill-SRx4_inference.pth', 'DIPNet_x4.pth'])
def test_official_files_are_recognised(name):
    path = PRETRAINED / name
    if not path.is_file():
        pytest.skip(f'official weights not available at {PRETRAINED}')
    found = detect_file(str(path))
    expected = {'DDistill-SRx4_inference.pth': {'type': 'DDistillSR', 'num_in_ch': 3, 'num_out_ch': 3,
                                                'num_feat': 56, 'dyn_dim': 16, 'upscale': 4, 'deploy': True},
                'DIPNet_x4.pth': {'type': 'DIPNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 44, 'num_mid': 38,
                                  'num_block': 4, 'esa_channels': 16, 'upscale': 4, 'deploy': True}}[name]
    assert found.arch == expected and found.form == 'deploy form'
    net = _net(found.arch)
    net.load_state_dict(torch.load(path, map_location='cpu', weights_only=True), strict=True)
    assert sum(p.numel() for p in net.parameters()) == {'DIPNet_x4.pth': 243252}.get(name, sum(
        p.numel() for p in net.parameters()))


def test_cli_issue_command_is_one_line_and_weights_alone_work(tmp_path):
    path = PRETRAINED / 'DDistill-SRx4_inference.pth'
    if not path.is_file():
        pytest.skip(f'official weights not available at {PRETRAINED}')
    import cv2
    import numpy as np
    cv2.imwrite(str(tmp_path / 'p.png'), np.full((20, 24, 3), 90, np.uint8))
    env = {'OMP_NUM_THREADS': '1'}
    res = run_cli(['upscale', '-i', tmp_path / 'p.png', '-o', tmp_path / 'out', '--weights', path, '--arch',
                   'DDistillSR', '--arch-kwargs', '{"upscale": 4}'], tmp_path, env=env)
    assert res.returncode == 2 and res.stderr.count('\n') == 1, res.stderr
    assert 'deploy form of DDistillSR' in res.stderr and '"deploy": true' in res.stderr
    res = run_cli(['upscale', '-i', tmp_path / 'p.png', '-o', tmp_path / 'out', '--weights', path, '--backend',
                   'torch'], tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert cv2.imread(str(tmp_path / 'out' / 'p.png')).shape == (80, 96, 3)
