"""Issue 26: what ``ddsr upscale`` writes (--outscale, --ext/--quality, --alpha, --compare), the same in
ImageUpscaler: output sizes, decoded formats, alpha kept or converted, the comparison picture."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ddsr import ImageUpscaler
from ddsr.archs.registry import arch_class
from ddsr.cli import ddsr_main
from ddsr.data.side_by_side import CAPTION_HEIGHT, GAP, centre_crop
from ddsr.deploy.output import COMPARE_MAX_SIDE, OutputSettings, output_format, resize_to

DIPNET = {'num_feat': 8, 'num_mid': 8, 'num_block': 1, 'esa_channels': 4, 'upscale': 4}


@pytest.fixture(scope='module')
def weights(tmp_path_factory) -> Path:
    """A small random DIPNet x4 (plain state dict, recognised from its keys)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('net') / 'net.pth'
    torch.save(arch_class('DIPNet')(**DIPNET).state_dict(), path)
    return path


def rgba(h: int = 20, w: int = 24, dtype=np.uint8) -> np.ndarray:
    """A BGRA picture with a non-trivial alpha (a soft disc on a gradient)."""
    rng = np.random.default_rng(0)
    peak = np.iinfo(dtype).max
    img = rng.integers(0, peak + 1, (h, w, 4), dtype=np.int64).astype(dtype)
    yy, xx = np.mgrid[:h, :w]
    img[..., 3] = (np.clip(1.2 - np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 3), 0, 1) * peak).astype(dtype)
    return img


def inputs(tmp_path: Path, **images: np.ndarray) -> Path:
    """The folder ``tmp_path/in`` holding ``images`` (file name -> cv2 image)."""
    folder = tmp_path / 'in'
    folder.mkdir()
    for name, img in images.items():
        cv2.imwrite(str(folder / name.replace('_', '.')), img)
    return folder


def one_input(tmp_path: Path, name: str, img: np.ndarray) -> Path:
    """``img`` written as ``tmp_path/in/name`` (the folder holds only it)."""
    return inputs(tmp_path, **{name.replace('.', '_'): img}) / name


def upscale(weights: Path, src: Path, out: Path, *flags: str) -> int:
    return ddsr_main(['upscale', '--weights', str(weights), '--backend', 'torch', '--device', 'cpu', '-i', str(src),
                      '-o', str(out), *flags])


def test_outscale_sizes_and_net_scale_is_the_network_output(weights, tmp_path, capsys):
    src = one_input(tmp_path, 'a.png', np.random.default_rng(1).integers(0, 256, (20, 23, 3), dtype=np.uint8))
    shapes = {}
    for flag in ('none', '2', '3.5', '4', '4.0'):
        assert upscale(weights, src, tmp_path / flag, *(() if flag == 'none' else ('--outscale', flag))) == 0
        out = capsys.readouterr().out
        assert ('images x4 resized to x' in out) == (flag in ('2', '3.5')), out
        shapes[flag] = cv2.imread(str(tmp_path / flag / 'a.png'), cv2.IMREAD_UNCHANGED)
    assert shapes['none'].shape == (80, 92, 3)
    assert shapes['2'].shape == (40, 46, 3)
    assert shapes['3.5'].shape == (70, round(3.5 * 23), 3)  # round(80.5) = 80: Python's round, as documented
    np.testing.assert_array_equal(shapes['4'], shapes['none'])
    np.testing.assert_array_equal(shapes['4.0'], shapes['none'])
    # shrinking is an area average of the network output, enlarging Lanczos
    np.testing.assert_array_equal(shapes['2'], cv2.resize(shapes['none'], (46, 40), interpolation=cv2.INTER_AREA))


def test_resize_to_clips_floats_and_keeps_equal_sizes():
    out = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    assert resize_to(out, (10, 10), 4) is out
    big = resize_to(out, (10, 10), 7)
    assert big.shape == (70, 70, 3) and big.min() >= 0 and big.max() <= 1


@pytest.mark.parametrize('ext,channels', [('png', 4), ('webp', 4), ('jpg', 3)])
def test_ext_writes_that_format_and_keeps_alpha_where_it_can(weights, tmp_path, ext, channels, capsys):
    src = one_input(tmp_path, 'cut.png', rgba())
    assert upscale(weights, src, tmp_path / 'out', '--ext', ext, '--quality', '90') == 0
    written = sorted(p.name for p in (tmp_path / 'out').iterdir())
    assert written == [f'cut.{ext}']
    data = (tmp_path / 'out' / f'cut.{ext}').read_bytes()
    magic = {'png': data[:8] == b'\x89PNG\r\n\x1a\n', 'jpg': data[:3] == b'\xff\xd8\xff',
             'webp': data[:4] == b'RIFF' and data[8:12] == b'WEBP'}
    assert magic[ext]
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (80, 96, channels)
    err = capsys.readouterr().err
    assert ('alpha composited onto white' in err) == (ext == 'jpg')
    if ext != 'jpg':  # alpha is kept (webp is lossy in colour; its alpha stays close)
        bicubic = cv2.resize(rgba()[..., 3], (96, 80), interpolation=cv2.INTER_CUBIC)
        assert np.abs(decoded[..., 3].astype(int) - bicubic).max() <= (0 if ext == 'png' else 8)


def test_ext_auto_keeps_the_input_format_unless_it_cannot_hold_the_image(weights, tmp_path):
    rng = np.random.default_rng(2)
    folder = inputs(tmp_path, p_jpg=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), w_webp=rgba(16, 16),
                    deep_tif=rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16))
    assert upscale(weights, folder, tmp_path / 'out', '--ext', 'auto') == 0
    out = tmp_path / 'out'
    assert sorted(p.name for p in out.iterdir()) == ['deep.png', 'p.jpg', 'w.webp']
    assert cv2.imread(str(out / 'deep.png'), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(out / 'w.webp'), cv2.IMREAD_UNCHANGED).shape == (64, 64, 4)
    assert output_format(Path('x.jpg'), rgba(), 'auto') == 'png'  # alpha does not fit a jpg
    assert output_format(Path('x.webp'), rgba(dtype=np.uint16), 'auto') == 'png'  # nor 16 bits a webp


def test_16_bit_into_jpg_is_converted_with_a_note(weights, tmp_path, capsys):
    src = one_input(tmp_path, 'deep.png', np.random.default_rng(3).integers(0, 65536, (16, 16, 3), dtype=np.uint16))
    assert upscale(weights, src, tmp_path / 'out', '--ext', 'jpg') == 0
    assert cv2.imread(str(tmp_path / 'out' / 'deep.jpg'), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert 'note: 16-bit reduced to 8-bit (jpg holds 8 bits): 1 image(s)' in capsys.readouterr().err


def test_alpha_network_and_bicubic(weights, tmp_path):
    img = rgba()
    src = one_input(tmp_path, 'cut.png', img)
    outs = {}
    for mode in ('bicubic', 'network'):
        assert upscale(weights, src, tmp_path / mode, '--alpha', mode) == 0
        outs[mode] = cv2.imread(str(tmp_path / mode / 'cut.png'), cv2.IMREAD_UNCHANGED)
        assert outs[mode].shape == (80, 96, 4)
    np.testing.assert_array_equal(outs['bicubic'][..., :3], outs['network'][..., :3])  # colour untouched
    diff = np.abs(outs['bicubic'][..., 3].astype(int) - outs['network'][..., 3])
    assert diff.max() > 10  # a random net on the alpha is far from bicubic
    up = ImageUpscaler.from_file(weights, alpha='network')
    sr = up.runner(torch.from_numpy(np.repeat(img[None, None, :, :, 3], 3, axis=1).astype(np.float32) / 255))
    expected = np.round(sr[0].clamp(0, 1).mean(0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(outs['network'][..., 3], expected)


def test_compare_writes_bicubic_next_to_the_network(weights, tmp_path):
    rng = np.random.default_rng(4)
    folder = inputs(tmp_path, small_png=rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
                    big_png=rng.integers(0, 256, (140, 150, 3), dtype=np.uint8))
    assert upscale(weights, folder, tmp_path / 'out', '--compare', '--suffix', '_x4') == 0
    out = tmp_path / 'out'
    assert sorted(p.name for p in out.iterdir()) == ['big_x4.png', 'big_x4_compare.png', 'small_x4.png',
                                                      'small_x4_compare.png']
    small = cv2.imread(str(out / 'small_x4_compare.png'))
    assert small.shape == (80 + CAPTION_HEIGHT, 2 * 96 + GAP, 3)
    lr = cv2.imread(str(folder / 'small.png'))
    np.testing.assert_array_equal(small[:80, :96], cv2.resize(lr, (96, 80), interpolation=cv2.INTER_CUBIC))
    np.testing.assert_array_equal(small[:80, 96 + GAP:], cv2.imread(str(out / 'small_x4.png')))
    big = cv2.imread(str(out / 'big_x4_compare.png'))
    side = COMPARE_MAX_SIDE
    assert big.shape == (side + CAPTION_HEIGHT, 2 * side + GAP, 3)
    np.testing.assert_array_equal(big[:side, side + GAP:], centre_crop(cv2.imread(str(out / 'big_x4.png')), side))
    assert (big[:side, side:side + GAP] == 255).all()  # the white gap between the two panels
    assert (big[side:, :side] < 128).any() and (big[side:, side + GAP:] < 128).any()  # a caption under each


def test_bad_output_flags_are_one_error_line(weights, tmp_path, capsys):
    from ddsr.cli import main
    src = tmp_path / 'a.png'
    cv2.imwrite(str(src), np.zeros((8, 8, 3), np.uint8))
    for flags, needle in ((['--outscale', '0'], '--outscale 0.0: must be > 0'),
                          (['--quality', '101'], '--quality 101: must be 1-100')):
        assert main(['upscale', '--weights', str(weights), '-i', str(src), '-o', str(tmp_path / 'o'), *flags]) == 2
        assert f'error: {needle}' in capsys.readouterr().err
    folder = inputs(tmp_path, a_png=np.zeros((8, 8, 3), np.uint8), a_compare_png=np.zeros((8, 8, 3), np.uint8))
    (folder / 'a.compare.png').rename(folder / 'a_compare.png')
    assert main(['upscale', '--weights', str(weights), '-i', str(folder), '-o', str(tmp_path / 'o'), '--compare']) == 2
    assert 'a_compare.png is both an output and a comparison picture' in capsys.readouterr().err


def test_image_upscaler_takes_the_same_options(weights, tmp_path):
    img = rgba()
    rgba_rgb_order = np.ascontiguousarray(img[..., [2, 1, 0, 3]])
    plain = ImageUpscaler.from_file(weights)
    up = ImageUpscaler.from_file(weights, outscale=2, alpha='network', ext='webp')
    assert up(rgba_rgb_order).shape == (40, 48, 4)
    assert up(rgba_rgb_order.astype(np.float32) / 255).shape == (40, 48, 4)
    assert up(torch.rand(2, 3, 20, 24)).shape == (2, 3, 40, 48)
    assert ImageUpscaler.from_file(weights, outscale=4)(rgba_rgb_order).tobytes() == plain(rgba_rgb_order).tobytes()
    src = tmp_path / 'cut.png'
    cv2.imwrite(str(src), img)
    written = up.upscale_file(src, tmp_path / 'cut_x2.png')
    assert written == tmp_path / 'cut_x2.webp' and written.is_file()
    assert cv2.imread(str(written), cv2.IMREAD_UNCHANGED).shape == (40, 48, 4)
    with pytest.raises(Exception, match='--ext gif'):
        ImageUpscaler.from_file(weights, ext='gif')
    assert OutputSettings().ext == 'png'


def test_an_output_with_nan_is_an_error_for_that_image_only(tmp_path):
    """A network output with NaN/Inf fails its image with one message (not written as black pixels); the other
    images of the folder are written."""
    from ddsr.deploy.pipeline import finish, run_folder
    from ddsr.errors import DDSRError
    img = np.full((6, 8, 3), 128, np.uint8)
    sr = np.full((1, 3, 24, 32), 0.5, np.float32)
    assert finish(sr, img).shape == (24, 32, 3)
    sr[0, 1, 2, 3], sr[0, 0, 0, 0] = np.nan, np.inf
    with pytest.raises(DDSRError, match='NaN/Inf at 2 of 2,304 values: not written'):
        finish(sr, img)
    files = []
    for name, value in (('fine', 100), ('bright', 250)):
        files.append(tmp_path / f'{name}.png')
        cv2.imwrite(str(files[-1]), np.full((6, 8, 3), value, np.uint8))
    targets = [tmp_path / 'out' / p.name for p in files]
    targets[0].parent.mkdir()

    def forward(x: np.ndarray) -> np.ndarray:  # overflows on bright inputs
        out = np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)
        return out * np.float32('inf') if x.mean() > 0.9 else out

    failed = run_folder(forward, files, targets)
    assert list(failed) == [files[1]] and 'not written' in str(failed[files[1]])
    assert targets[0].is_file() and not targets[1].exists()
