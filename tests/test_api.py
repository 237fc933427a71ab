"""Python API: ddsr.ImageUpscaler on PIL images, numpy arrays and tensors, from files and by name, tiled."""
import numpy as np
import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from PIL import Image

from ddsr import ImageUpscaler, zoo
from ddsr.errors import DDSRError
from ddsr.fileio import sha256_file

ARCH = {'type': 'DIPNet', 'num_feat': 8, 'num_mid': 6, 'num_block': 1, 'esa_channels': 4, 'upscale': 2,
        'deploy': False, 'expand_width': 8}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A small train-form DIPNet x2 saved as a plain state dict, and its network in eval mode."""
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('DIPNet')(**{k: v for k, v in ARCH.items() if k != 'type'}).eval()
    path = tmp_path_factory.mktemp('api') / 'tiny.pth'
    torch.save(net.state_dict(), path)
    return path, net


def _image(h=20, w=26, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_from_file_recognises_the_network_and_matches_it(tiny):
    path, net = tiny
    up = ImageUpscaler.from_file(path)
    assert up.scale == 2 and up.arch['type'] == 'DIPNet' and up.arch['deploy'] is False
    x = torch.from_numpy(_image()).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        ref = net(x).clamp(0, 1)
    out = up(x[0])
    assert out.shape == (3, 40, 52) and out.dtype == torch.float32
    assert torch.allclose(out, ref[0], atol=1e-5)  # deploy form (fused branches) == train form
    assert torch.allclose(up(torch.cat([x, x])), torch.cat([ref, ref]), atol=1e-5)


def test_numpy_pil_and_float_inputs_agree(tiny):
    up = ImageUpscaler.from_file(tiny[0])
    img = _image()
    out = up(img)
    assert out.shape == (40, 52, 3) and out.dtype == np.uint8
    pil = up(Image.fromarray(img))
    assert pil.mode == 'RGB' and pil.size == (52, 40)
    assert np.array_equal(np.asarray(pil), out)
    flt = up(img.astype(np.float32) / 255)
    assert flt.dtype == np.float32 and np.abs(flt * 255 - out).max() <= 0.5 + 1e-3  # rounding only
    tensor = up(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    # the tensor path runs RGB straight through: equal outputs mean the numpy path keeps RGB order too
    assert np.abs(tensor.permute(1, 2, 0).numpy() * 255 - out).max() <= 0.5 + 1e-3
    assert np.abs(tensor.permute(1, 2, 0).numpy()[..., ::-1] * 255 - out).max() > 10


def test_gray_rgba_and_16_bit(tiny):
    up = ImageUpscaler.from_file(tiny[0])
    gray = up(_image()[..., 0])
    assert gray.shape == (40, 52) and gray.dtype == np.uint8
    assert up(Image.fromarray(_image()[..., 0])).mode == 'L'
    rgba = np.dstack([_image(), np.full((20, 26), 77, np.uint8)])
    out = up(rgba)
    assert out.shape == (40, 52, 4) and (out[..., 3] == 77).all()
    deep = up(_image().astype(np.uint16) * 257)
    assert deep.dtype == np.uint16 and np.abs(deep / 257 - up(_image())).max() <= 1.0


def test_tiling_options_and_file_round_trip(tiny, tmp_path):
    up = ImageUpscaler.from_file(tiny[0], tile=24, tile_overlap=12)
    img = _image(60, 70, seed=1)
    whole = up(img, tile=None)
    tiled = up(img)  # the instance's tile default
    assert np.abs(tiled.astype(int) - whole).max() <= 1
    Image.fromarray(img).save(tmp_path / 'in.png')
    written = up.upscale_file(tmp_path / 'in.png', tmp_path / 'out.png', tile=None)
    assert np.array_equal(np.asarray(Image.open(written)), whole)


def test_bad_inputs_are_clear(tiny, tmp_path):
    up = ImageUpscaler.from_file(tiny[0])
    with pytest.raises(TypeError, match='PIL image, a numpy array or a tensor'):
        up([1, 2, 3])
    with pytest.raises(ValueError, match='got shape'):
        up(np.zeros((4, 5, 6, 7), np.uint8))
    with pytest.raises(DDSRError, match='weights not found'):
        ImageUpscaler.from_file(tmp_path / 'missing.pth')
    with pytest.raises(DDSRError, match='unknown pretrained model'):
        ImageUpscaler.from_pretrained('no-such-model')


def test_from_pretrained_uses_the_cache(tiny, tmp_path, monkeypatch):
    """A registered model whose file is already in the cache (verified by sha256) loads without any download."""
    path, _ = tiny
    model = zoo.PretrainedModel('Tiny-x2', {k: v for k, v in ARCH.items()}, 'https://example.invalid/tiny.pth',
                                sha256_file(path), 'MIT', 'train', 'a test')
    monkeypatch.setitem(zoo.MODELS, 'Tiny-x2', model)
    monkeypatch.setenv('DDSR_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('DDSR_MODEL_MIRROR', 'http://127.0.0.1:9/unreachable')  # a download would fail
    zoo.copy_into_cache('Tiny-x2', path)
    up = ImageUpscaler.from_pretrained('Tiny-x2', quiet=True)
    assert up.name == 'Tiny-x2' and up.scale == 2
    assert np.array_equal(up(_image()), ImageUpscaler.from_file(path)(_image()))
