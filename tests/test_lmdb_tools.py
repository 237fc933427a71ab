"""make-lmdb: pixels round-trip through BasicSR's LMDB backend, LR = MATLAB imresize of the modcropped HR,
sub-images follow BasicSR's grid, and existing LMDBs are never touched without --overwrite."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from basicsr.utils import FileClient, imfrombytes
from basicsr.utils.matlab_functions import imresize
from skimage import data as skdata

from ddsr.cli import main
from ddsr.data.lmdb_tools import make_lmdbs, read_meta_info
from ddsr.errors import DDSRError
from tests.conftest import run_cli

SOURCES = {  # odd sizes so modcrop matters; a dotted name (key must lose the dot); a grey image
    'astro.v2': skdata.astronaut()[:101, :87, ::-1],
    'coffee': skdata.coffee()[:75, :130, ::-1],
    'camera': skdata.camera()[:64, :50],
}


@pytest.fixture
def hr_dir(tmp_path: Path) -> Path:
    folder = tmp_path / 'hr'
    folder.mkdir()
    for name, img in SOURCES.items():
        cv2.imwrite(str(folder / f'{name}.png'), np.ascontiguousarray(img))
    return folder


def _read_all(lmdb_path: Path) -> dict:
    client = FileClient('lmdb', db_paths=[str(lmdb_path)])
    return {key: imfrombytes(client.get(key), float32=False) for key, _ in read_meta_info(str(lmdb_path))}


def _source(name: str) -> np.ndarray:
    img = np.ascontiguousarray(SOURCES[name])
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


def _matlab_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    return np.clip(np.round(imresize(hr.astype(np.float64) / 255., 1 / scale) * 255.), 0, 255).astype(np.uint8)


def test_whole_images_round_trip(hr_dir: Path, tmp_path: Path):
    out = tmp_path / 'out'
    summary = make_lmdbs(str(hr_dir), str(out), scales=(2, 3, 4), progress=False)
    assert [row['images'] for row in summary] == [3, 3, 3, 3]
    assert sorted(os.listdir(out)) == ['HR.lmdb', 'LR_bicubic_X2.lmdb', 'LR_bicubic_X3.lmdb', 'LR_bicubic_X4.lmdb']
    hr = _read_all(out / 'HR.lmdb')
    assert sorted(hr) == ['astro_v2', 'camera', 'coffee']
    for key, name in (('astro_v2', 'astro.v2'), ('coffee', 'coffee'), ('camera', 'camera')):
        src = _source(name)
        h, w = src.shape[0] // 12 * 12, src.shape[1] // 12 * 12  # modcrop to lcm(2, 3, 4)
        np.testing.assert_array_equal(hr[key], src[:h, :w])
    for scale in (2, 3, 4):
        lr = _read_all(out / f'LR_bicubic_X{scale}.lmdb')
        assert list(lr) == list(hr)  # same keys, same order
        for key in hr:
            np.testing.assert_array_equal(lr[key], _matlab_lr(hr[key], scale))
    meta = dict(read_meta_info(str(out / 'LR_bicubic_X4.lmdb')))
    assert meta['coffee'] == (72 // 4, 120 // 4, 3)


def test_subimages_follow_basicsr_grid(hr_dir: Path, tmp_path: Path):
    out = tmp_path / 'sub'
    make_lmdbs(str(hr_dir), str(out), scales=(2, 4), crop_size=32, step=16, thresh_size=4, progress=False)
    hr, lr = _read_all(out / 'HR.lmdb'), _read_all(out / 'LR_bicubic_X4.lmdb')
    # coffee 72x128 (modcrop 4): rows 0,16,32 + 40 (8 > 4 left), cols 0..96 step 16 = 7 -> 4 x 7 = 28 sub-images
    assert len([k for k in hr if k.startswith('coffee_s')]) == 28
    assert list(lr) == list(hr) and 'coffee_s001' in hr and 'coffee_s028' in hr
    src = _source('coffee')[:72, :128]
    np.testing.assert_array_equal(hr['coffee_s028'], src[40:72, 96:128])
    np.testing.assert_array_equal(lr['coffee_s028'], _matlab_lr(src, 4)[10:18, 24:32])  # crop of the whole LR
    assert all(img.shape == (8, 8, 3) for img in lr.values())


def test_given_lr_folder_is_checked(hr_dir: Path, tmp_path: Path):
    lr_dir = tmp_path / 'lr'
    lr_dir.mkdir()
    for name in SOURCES:
        cv2.imwrite(str(lr_dir / f'{name}.png'), np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(DDSRError, match='LR x4 is 5x5'):
        make_lmdbs(str(hr_dir), str(tmp_path / 'o'), scales=(4, ), lr_dirs={4: str(lr_dir)}, progress=False)
    assert os.listdir(tmp_path / 'o') == []  # nothing half-written left behind


def test_existing_lmdb_untouched_without_overwrite(hr_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / 'sets'
    args = ['make-lmdb', '--hr', hr_dir, '-o', out, '--preset', 'Set5', '--quiet']
    assert main(list(map(str, args))) == 0
    assert 'LR_bicubic_X4.lmdb: 3 images' in capsys.readouterr().out
    files = [out / 'Set5' / name / part for name in ('HR.lmdb', 'LR_bicubic_X4.lmdb')
             for part in ('data.mdb', 'meta_info.txt')]
    before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]
    again = run_cli(args, tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [f'error: {out / "Set5" / "HR.lmdb"} already exists '
                                                 '(pass --overwrite to replace it)']
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before
    assert sorted(os.listdir(out / 'Set5')) == ['HR.lmdb', 'LR_bicubic_X2.lmdb', 'LR_bicubic_X3.lmdb',
                                                'LR_bicubic_X4.lmdb']
    assert main(list(map(str, args + ['--overwrite']))) == 0
    assert (out / 'Set5' / 'HR.lmdb' / 'data.mdb').stat().st_mtime_ns > before[0][1]
