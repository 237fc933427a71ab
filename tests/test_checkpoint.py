"""ddsr.checkpoint: which entry is read (BasicSR's load_network rule + plain state dicts), atomic writes with the
umask's mode, self-describing checkpoints rebuilt in one read, and one-line errors naming the file."""
import os
import stat

import pytest
import torch

import ddsr  # noqa: F401  (registration)
from ddsr import checkpoint
from ddsr.errors import DDSRError

ARCH = {'type': 'EDSRmini', 'upscale': 2}


def _state(value: float) -> dict[str, torch.Tensor]:
    return {'conv.weight': torch.full((2, 2), value), 'conv.bias': torch.full((2, ), value)}


def test_select_params_follows_basicsr_load_network():
    raw = {'params': _state(1.), 'params_ema': _state(2.)}
    assert checkpoint.select_params(raw, 'params_ema')['conv.weight'][0, 0] == 2.
    assert checkpoint.select_params(raw, 'params')['conv.weight'][0, 0] == 1.
    only_params = {'params': _state(1.)}
    assert checkpoint.select_params(only_params, 'params_ema')['conv.weight'][0, 0] == 1.  # BasicSR's fallback
    with pytest.raises(DDSRError, match="no entry 'params_ema'"):
        checkpoint.select_params({'params_x': _state(1.)}, 'params_ema', 'f.pth', 'label')


def test_plain_state_dict_and_module_prefix():
    plain = {f'module.{k}': v for k, v in _state(3.).items()}
    got = checkpoint.select_params(plain, 'params_ema')
    assert sorted(got) == ['conv.bias', 'conv.weight'] and float(got['conv.bias'][0]) == 3.


def test_atomic_save_honours_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / 'a.pth'
        checkpoint.atomic_save({'params': _state(1.)}, str(path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


def test_self_describing_round_trip(tmp_path):
    net = checkpoint.build_network(ARCH)
    path = tmp_path / 'mini.pth'
    checkpoint.save_self_describing(path, net.state_dict(), checkpoint.network_arch(net, ARCH))
    assert checkpoint.checkpoint_arch(path)['type'] == 'EDSRmini'
    rebuilt, arch = checkpoint.build_from_checkpoint(path)
    assert arch['type'] == 'EDSRmini' and not rebuilt.training
    for key, value in net.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(DDSRError, match=r'--weights: cannot read checkpoint .*bad\.pth'):
        checkpoint.load_file(bad, '--weights')
    with pytest.raises(DDSRError, match='file not found'):
        checkpoint.load_file(tmp_path / 'missing.pth', '--weights')
    plain = tmp_path / 'plain.pth'
    torch.save(_state(1.), plain)
    with pytest.raises(DDSRError, match='not self-describing'):
        checkpoint.build_from_checkpoint(plain)
