"""Progressive patch sizes (DIPNet pipeline, step 3: 64 -> 128 -> 256 -> 384) inside BasicSR's train loop.

BasicSR builds the dataloader once, and dataloader workers hold their own copy of the dataset options, so the
patch size cannot be changed at the data side. Instead the dataset loads the largest stage's patch
(``datasets.train.gt_size`` >= max(gt_size)) and the model re-crops every batch to the current stage's size
(one random LR-aligned window shared by lq, gt and enhanced) and keeps the first ``batch_size`` samples.
The stage is a pure function of the iteration, so a resumed run is in the same stage without any stored state.

YAML (under ``train``)::

    progressive:
      milestones: [1000, 2000, 3000]   # iterations where stages 1, 2, 3 begin (stage 0 from the start)
      gt_size: [64, 128, 256, 384]     # one per stage
      batch_size: [32, 16, 8, 4]       # optional, one per stage, each <= batch_size_per_gpu
"""
import bisect
from typing import Optional

import torch

from ddsr.errors import DDSRError


class ProgressiveSchedule:
    """Stage lookup and batch re-cropping for ``train.progressive``.

    Args:
        milestones (list[int]): Increasing iterations where stage i+1 begins.
        gt_size (list[int]): GT patch size per stage (len(milestones) + 1 entries).
        batch_size (list[int] | None): Batch size per stage (same length as gt_size).
    """

    def __init__(self, milestones, gt_size, batch_size=None):
        key = 'train.progressive'
        self.milestones = [int(m) for m in milestones]
        self.gt_size = [int(s) for s in gt_size]
        self.batch_size = [int(b) for b in batch_size] if batch_size is not None else None
        if len(self.gt_size) != len(self.milestones) + 1:
            raise DDSRError(f'{key}: gt_size needs len(milestones) + 1 = {len(self.milestones) + 1} entries '
                            f'(one per stage), got {len(self.gt_size)}')
        if self.milestones != sorted(self.milestones):
            raise DDSRError(f'{key}.milestones must increase: {self.milestones}')
        if self.batch_size is not None and len(self.batch_size) != len(self.gt_size):
            raise DDSRError(f'{key}.batch_size needs {len(self.gt_size)} entries (one per stage)')

    @classmethod
    def from_options(cls, opt: dict) -> Optional['ProgressiveSchedule']:
        """Schedule of ``opt['train']['progressive']`` checked against the train dataset, or None."""
        prog = opt['train'].get('progressive')
        if not prog:
            return None
        unknown = set(prog) - {'milestones', 'gt_size', 'batch_size'}
        if unknown or 'milestones' not in prog or 'gt_size' not in prog:
            raise DDSRError(f'train.progressive needs milestones and gt_size (optional batch_size); '
                            f'unexpected: {sorted(unknown)}')
        sched = cls(prog['milestones'], prog['gt_size'], prog.get('batch_size'))
        scale = opt['scale']
        bad = [s for s in sched.gt_size if s % scale]
        if bad:
            raise DDSRError(f'train.progressive.gt_size {bad} not divisible by scale {scale}')
        ds = opt.get('datasets', {}).get('train', {})
        if ds.get('gt_size') is not None and ds['gt_size'] < max(sched.gt_size):
            raise DDSRError(f'datasets.train.gt_size ({ds["gt_size"]}) must be >= the largest progressive '
                            f'gt_size ({max(sched.gt_size)}): the model crops smaller patches from it')
        if sched.batch_size and ds.get('batch_size_per_gpu') and ds['batch_size_per_gpu'] < max(sched.batch_size):
            raise DDSRError(f'datasets.train.batch_size_per_gpu ({ds["batch_size_per_gpu"]}) must be >= the '
                            f'largest progressive batch_size ({max(sched.batch_size)})')
        return sched

    def stage(self, current_iter: int) -> int:
        """Stage index at (1-based) iteration ``current_iter``."""
        return bisect.bisect_right(self.milestones, current_iter - 1)

    def describe(self, stage: int) -> tuple[int, int | None]:
        return self.gt_size[stage], self.batch_size[stage] if self.batch_size else None

    def crop(self, batch: dict[str, torch.Tensor], stage: int, scale: int) -> dict[str, torch.Tensor]:
        """Crop lq (LR) and every HR-sized tensor of ``batch`` to the stage's size at one random position."""
        gt_size, batch_size = self.describe(stage)
        lq = batch['lq']
        lq_size = gt_size // scale
        h, w = lq.shape[-2:]
        if lq_size > min(h, w):
            raise DDSRError(f'progressive gt_size {gt_size} exceeds the loaded patch ({h * scale}x{w * scale})')
        top = int(torch.randint(0, h - lq_size + 1, ()))
        left = int(torch.randint(0, w - lq_size + 1, ()))
        out = {}
        for key, value in batch.items():
            if value is None:
                out[key] = None
                continue
            if key == 'lq':
                value = value[..., top:top + lq_size, left:left + lq_size]
            else:
                value = value[..., top * scale:top * scale + gt_size, left * scale:left * scale + gt_size]
            out[key] = value[:batch_size] if batch_size else value
        return out
