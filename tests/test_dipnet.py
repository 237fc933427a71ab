"""DIPNet: official deploy layout and weights, exact train->deploy fusion, middle-width pruning."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr
from basicsr.utils.matlab_functions import imresize
from skimage import data

import ddsr  # noqa: F401  (compat + registration before basicsr imports)
from ddsr.archs import reparam
from ddsr.archs.dipnet.dipnet_arch import DIPNet
from ddsr.compress.dipnet_prune import importance, iterative_schedule, prune_dipnet, widths_after

SHARED = Path(__file__).resolve().parents[2] / 'shared'
WEIGHTS = SHARED / 'pretrained' / 'DIPNet_x4.pth'
KEYS_TSV = SHARED / 'reference' / 'dipnet_x4_deploy_keys.tsv'
# (photo, top, left) of 192x192 HR crops
CROPS = [('astronaut', 100, 150), ('chelsea', 60, 140), ('coffee', 120, 200)]


def natural_lr(size: int = 40, photo: str = 'astronaut') -> torch.Tensor:
    """A 1x3xSxS RGB [0, 1] tensor: MATLAB-bicubic /4 of a scikit-image photo, top-left crop."""
    lr = imresize(getattr(data, photo)() / 255., 1 / 4)[:size, :size]
    return torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float().clamp(0, 1)


def test_deploy_params_and_keys_match_official_release():
    model = DIPNet()
    assert sum(p.numel() for p in model.parameters()) == 243_252
    if not KEYS_TSV.is_file():
        pytest.skip(f'reference key list {KEYS_TSV} absent')
    ref = [line.split('\t') for line in KEYS_TSV.read_text().splitlines() if line]
    assert [(k, str(tuple(v.shape))) for k, v in model.state_dict().items()] == [(k, s) for k, s in ref]


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_train_form_fuses_exactly_into_deploy_form(scale):
    torch.manual_seed(scale)
    model = DIPNet(upscale=scale, deploy=False).eval()
    x = natural_lr()
    deploy_keys = list(DIPNet(upscale=scale).state_dict())
    assert list(model.state_dict()) != deploy_keys
    with torch.inference_mode():
        y_train = model(x)
    if scale == 3:  # the generic converter (outermost first) must work as well as the method
        reparam.switch_to_deploy(model)
    else:
        model.switch_to_deploy()
    assert model.deploy and list(model.state_dict()) == deploy_keys
    fresh = DIPNet(upscale=scale).eval()  # what a converter saving with deploy=True rebuilds
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.inference_mode():
        y_deploy, y_fresh = model(x), fresh(x)
    assert y_train.shape == (1, 3, 40 * scale, 40 * scale)
    assert y_train.abs().max() > 0.1  # a non-trivial output
    assert (y_train - y_deploy).abs().max() <= 1e-5
    assert torch.equal(y_deploy, y_fresh)


@pytest.fixture(scope='module')
def official():
    if not WEIGHTS.is_file():
        pytest.skip(f'official weights {WEIGHTS} absent (shared/pretrained not checked out next to the repo)')
    model = DIPNet().eval()
    model.load_state_dict(torch.load(WEIGHTS, map_location='cpu', weights_only=True), strict=True)
    return model


@pytest.mark.parametrize('photo,top,left', CROPS)
def test_official_weights_beat_bicubic(official, photo, top, left):
    hr = getattr(data, photo)()[top:top + 192, left:left + 192]
    lr = np.round(np.clip(imresize(hr / 255., 1 / 4), 0, 1) * 255) / 255  # an 8-bit LR image, as stored on disk
    bicubic = np.clip(imresize(lr, 4), 0, 1)
    with torch.inference_mode():
        sr = official(torch.from_numpy(lr).permute(2, 0, 1)[None].float())[0].clamp(0, 1).permute(1, 2, 0).numpy()

    def y_psnr(img: np.ndarray) -> float:  # BGR, 0..255, as basicsr's metrics expect
        return calculate_psnr(np.round(img * 255)[..., ::-1], hr[..., ::-1].astype(np.float64), 4,
                              test_y_channel=True)

    psnr_sr, psnr_bic = y_psnr(sr), y_psnr(bicubic)
    print(f'{photo}: DIPNet {psnr_sr:.2f} dB, bicubic {psnr_bic:.2f} dB, gain {psnr_sr - psnr_bic:+.2f} dB')
    assert psnr_sr - psnr_bic >= 0.8


def random_deploy(scale: int = 3, seed: int = 0) -> DIPNet:
    torch.manual_seed(seed)
    return DIPNet(upscale=scale).eval()


def test_pruning_zero_filters_is_exact():
    model = random_deploy()
    zeroed = {0: ([5, 20], [0, 37]), 1: ([11], [30]), 2: ([37], [2]), 3: ([0], [19])}  # block: (c1_r, c2_r) rows
    with torch.no_grad():
        for i, (rows1, rows2) in zeroed.items():
            model.blocks[i].c1_r.weight[rows1] = 0
            model.blocks[i].c2_r.weight[rows2] = 0
    widths = [38 - len(rows1) for rows1, _ in zeroed.values()]
    pruned = prune_dipnet(model, widths)
    assert pruned.mid_channels == [36, 37, 37, 37]
    assert [tuple(s.shape) for s in importance(pruned)] == [(2, 36), (2, 37), (2, 37), (2, 37)]
    keep = [r for r in range(38) if r not in (5, 20)]
    assert torch.equal(pruned.block_1.c1_r.weight, model.block_1.c1_r.weight[keep])
    x = natural_lr(32, 'coffee')
    with torch.inference_mode():
        y, y_pruned = model(x), pruned(x)
    assert y.abs().max() > 0.1
    assert (y - y_pruned).abs().max() <= 1e-5
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_iterative_schedule_and_steps():
    assert iterative_schedule(38, 0.1, 3) == [34, 30, 27]
    assert iterative_schedule(10, 0.3, 3) == [7, 4, 2]
    assert iterative_schedule(2, 0.9, 2) == [1, 1]
    assert [widths_after(38, 0.1, k) for k in range(4)] == [38, 34, 30, 27]
    with pytest.raises(ValueError):
        iterative_schedule(38, 1.0, 1)
    model = random_deploy(scale=2)
    for k in range(1, 4):
        model = prune_dipnet(model, ratio=0.1)
        assert model.mid_channels == [widths_after(38, 0.1, k)] * 4
        assert [block.c2_r.weight.shape[:2] for block in model.blocks] == [(widths_after(38, 0.1, k), ) * 2] * 4


def test_pruned_model_rebuilds_from_its_config():
    pruned = prune_dipnet(random_deploy(scale=4), [30, 25, 38, 12])
    config = json.loads(json.dumps(pruned.config()))  # plain data: fits YAML options and checkpoints
    assert config['type'] == 'DIPNet' and config['mid_channels'] == [30, 25, 38, 12]
    rebuilt = build_network(config).eval()
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    x = natural_lr(24, 'chelsea')
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), pruned(x))


def test_pruning_needs_deploy_form_and_valid_widths():
    with pytest.raises(ValueError, match='deploy form'):
        prune_dipnet(DIPNet(deploy=False, expand_width=8), 30)
    with pytest.raises(ValueError, match='widths'):
        prune_dipnet(random_deploy(), [39, 38, 38, 38])
    with pytest.raises(ValueError, match='exactly one'):
        prune_dipnet(random_deploy(), 30, ratio=0.1)
