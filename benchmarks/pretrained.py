"""Where the benchmarks look for the official pretrained weights (DDistill-SRx4_inference.pth, DIPNet_x4.pth):
``$DDSR_PRETRAINED_DIR`` when set, else ``experiments/pretrained_models/`` of this repository (BasicSR's place
for them; see its README for the sources and sha256)."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pretrained_dir() -> Path:
    return Path(os.environ.get('DDSR_PRETRAINED_DIR') or REPO / 'experiments' / 'pretrained_models')
