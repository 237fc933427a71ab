"""Multi-anchor feature distillation with channel-expansion adapters (DIPNet pipeline, step 2).

L_feat = sum_i w_i * crit(resize(A_i(s_i)), t_i): each student feature s_i (B, Cs_i, h, w) goes through a learnable
1x1 convolution A_i to the teacher width Ct_i, is resized (bilinear) to the teacher feature's spatial size if
they differ, and is compared to the teacher feature t_i (detached). The anchors (module paths) are given here
so that one YAML section describes the loss; the model records the features with
:class:`ddsr.models.parts.hooks.FeatureRecorder` and calls :meth:`build_adapters` once the widths are known.
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

_CRITERIA = {'l1': F.l1_loss, 'l2': F.mse_loss, 'mse': F.mse_loss}


class ChannelAdapters(nn.Module):
    """One 1x1 convolution per anchor, student width -> teacher width; forward maps a list to a list."""

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]):
        super().__init__()
        pairs = zip(student_channels, teacher_channels, strict=False)
        self.convs = nn.ModuleList(nn.Conv2d(cs, ct, 1) for cs, ct in pairs)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, feats, strict=False)]


@LOSS_REGISTRY.register()
class FeatureDistillLoss(nn.Module):
    """Weighted sum over anchors of crit(adapter(student feature), teacher feature).

    Args:
        student_anchors (list[str]): Module paths in the student (network_g), e.g. [B1, B2, B3, B4].
        teacher_anchors (list[str]): Module paths in the teacher (network_t), same length.
        loss_weight (float): Overall weight. Default: 1.0.
        anchor_weights (list[float] | None): Per-anchor weights. Default: 1 for each anchor.
        criterion (str): 'l1' or 'l2'. Default: 'l1'.
        reduction (str): 'mean' or 'sum'. Default: 'mean'.
        student_channels (list[int] | None): Student widths; with teacher_channels builds the adapters now
            (otherwise the model infers both with a probe forward and calls build_adapters).
        teacher_channels (list[int] | None): Teacher widths.
    """

    def __init__(self,
                 student_anchors: Sequence[str],
                 teacher_anchors: Sequence[str],
                 loss_weight: float = 1.0,
                 anchor_weights: Sequence[float] | None = None,
                 criterion: str = 'l1',
                 reduction: str = 'mean',
                 student_channels: Sequence[int] | None = None,
                 teacher_channels: Sequence[int] | None = None):
        super().__init__()
        if len(student_anchors) != len(teacher_anchors) or not student_anchors:
            raise ValueError(f'FeatureDistillLoss: student_anchors ({len(student_anchors)}) and teacher_anchors '
                             f'({len(teacher_anchors)}) must be non-empty lists of the same length')
        if anchor_weights is not None and len(anchor_weights) != len(student_anchors):
            raise ValueError(f'FeatureDistillLoss: anchor_weights has {len(anchor_weights)} entries, '
                             f'expected {len(student_anchors)}')
        if criterion not in _CRITERIA:
            raise ValueError(f"FeatureDistillLoss: unknown criterion '{criterion}' (use one of {list(_CRITERIA)})")
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"FeatureDistillLoss: unsupported reduction '{reduction}'")
        self.student_anchors = list(student_anchors)
        self.teacher_anchors = list(teacher_anchors)
        self.loss_weight = loss_weight
        self.anchor_weights = list(anchor_weights) if anchor_weights is not None else [1.] * len(student_anchors)
        self.criterion = _CRITERIA[criterion]
        self.reduction = reduction
        self.adapters: nn.Module | None = None
        if student_channels is not None and teacher_channels is not None:
            self.build_adapters(student_channels, teacher_channels)

    def build_adapters(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> ChannelAdapters:
        """Create the 1x1 adapters (student width -> teacher width per anchor)."""
        if len(student_channels) != len(self.student_anchors) or len(teacher_channels) != len(self.student_anchors):
            raise ValueError('FeatureDistillLoss: one student and one teacher width per anchor are needed')
        self.adapters = ChannelAdapters(student_channels, teacher_channels)
        return self.adapters

    def forward(self, student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
        if self.adapters is None:
            raise RuntimeError('FeatureDistillLoss: build_adapters() was not called')
        adapted = self.adapters(student_feats)
        total = torch.zeros(())
        for weight, s, t in zip(self.anchor_weights, adapted, teacher_feats, strict=False):
            if s.shape[-2:] != t.shape[-2:]:
                s = F.interpolate(s, size=t.shape[-2:], mode='bilinear', align_corners=False)
            total = total + weight * self.criterion(s, t.detach(), reduction=self.reduction)
        return self.loss_weight * total
