"""ESA's coarse-map upsampling: identical to F.interpolate for whole images, the whole image's sampling in tiles."""
import pytest
import torch
import torch.nn.functional as F

from ddsr.archs.esa_upsample import ESA_STRIDE, coarse_size, tile_geometry, upsample_coarse


@pytest.mark.parametrize('length', [15, 16, 27, 61, 100])
def test_coarse_size_is_the_pooled_size(length):
    x = torch.zeros(1, 1, length, length)
    pooled = F.max_pool2d(F.conv2d(x, torch.zeros(1, 1, 3, 3), stride=2), kernel_size=7, stride=3)
    assert pooled.shape[-1] == coarse_size(length)


def test_without_geometry_it_is_interpolate():
    low = torch.randn(2, 4, 5, 7)
    ref = F.interpolate(low, size=(37, 45), mode='bilinear', align_corners=False)
    assert torch.equal(upsample_coarse(low, (37, 45)), ref)


@pytest.mark.parametrize('origin', [(0, 0), (6, 12), (18, 0)])
def test_tile_samples_the_whole_image_resize(origin):
    """A tile's slice of the whole coarse map, upsampled under tile_geometry, equals the whole resize cropped to
    the tile (interior pixels: the tile's coarse map lacks the cells just outside its edges)."""
    torch.manual_seed(0)
    full = (61, 73)
    low = torch.randn(1, 3, coarse_size(full[0]), coarse_size(full[1]))
    whole = F.interpolate(low, size=full, mode='bilinear', align_corners=False)
    (y0, x0), (th, tw) = origin, (31, 37)
    c0, c1 = y0 // ESA_STRIDE, x0 // ESA_STRIDE
    tile_low = low[..., c0:c0 + coarse_size(th), c1:c1 + coarse_size(tw)]
    with tile_geometry(full, origin):
        tiled = upsample_coarse(tile_low, (th, tw))
    inner = (slice(None), slice(None), slice(12, th - 12), slice(12, tw - 12))
    torch.testing.assert_close(tiled[inner], whole[..., y0:y0 + th, x0:x0 + tw][inner], rtol=0, atol=1e-6)
    plain = F.interpolate(tile_low, size=(th, tw), mode='bilinear', align_corners=False)
    assert (plain[inner] - whole[..., y0:y0 + th, x0:x0 + tw][inner]).abs().max() > 1e-2  # the tile's own ratio


def test_origin_off_the_grid_is_refused():
    with pytest.raises(ValueError, match='multiple of 6'):
        with tile_geometry((60, 60), (3, 0)):
            pass
