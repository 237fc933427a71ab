"""Knowledge distillation from a frozen teacher ``network_t`` into the student ``network_g``.

Covers the KD stage of Jiang et al. (L = L_dis(S, T) + 0.1 * L1(S, HR)) and DIPNet's pipeline (enhanced-HR
targets from the teacher's outputs, feature loss at anchors with 1x1 channel-expansion adapters, progressive
patch sizes). Losses under ``train`` (each optional, weighted, logged under its own name):
``pixel_opt`` (student vs GT, l_pix), ``enhanced_opt`` (student vs teacher output, l_enh), ``distill_opt``
(any output loss student vs teacher, e.g. LapPyramidLoss, l_distill), ``feature_opt`` (FeatureDistillLoss,
l_feat). The teacher target comes from the batch key ``enhanced`` when the dataset stores it
(EnhancedPairedImageDataset), otherwise from the teacher run online under ``torch.no_grad``.

The teacher is built from ``network_t`` (any registered arch), loaded from ``path.pretrain_network_t``
(``param_key_t``, ``strict_load_t``), frozen, kept in eval mode, never wrapped in DDP and never saved; ddsr.compat
keeps its path and param key on resume. The adapters train with the student (same optimizer, DDP-wrapped when
distributed) and are saved as ``net_adapters_<iter>.pth``, never inside ``net_g_<iter>.pth``.
"""
from collections import OrderedDict
from contextlib import nullcontext
from os import path as osp

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from ddsr.errors import DDSRError
from ddsr.models.parts.hooks import FeatureRecorder
from ddsr.models.parts.progressive import ProgressiveSchedule

PROBE_SIZE = 32  # LR side of the start-up probe (scale, range and feature widths)
RANGE_LIMIT = (-0.5, 1.5)  # a [0, 1] teacher's output on a [0, 1] probe stays well inside this


def _keep_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze(net: nn.Module) -> nn.Module:
    """No gradients, eval mode now and forever (``net.train()`` keeps it in eval)."""
    for param in net.parameters():
        param.requires_grad_(False)
    net.train = _keep_eval.__get__(net)  # type: ignore[method-assign]
    return net.eval()


def _declared_scale(net_opt: dict):
    return net_opt.get('upscale', net_opt.get('scale'))


@MODEL_REGISTRY.register()
class DistillSRModel(SRModel):
    """SRModel + frozen teacher; see the module docstring for the options."""

    LOSSES = (('pixel_opt', 'cri_pix', 'l_pix'), ('enhanced_opt', 'cri_enh', 'l_enh'),
              ('distill_opt', 'cri_distill', 'l_distill'), ('feature_opt', 'cri_feat', 'l_feat'))

    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        logger = get_root_logger()
        self._init_ema(logger)
        for key, attr, _ in self.LOSSES:
            setattr(self, attr, build_loss(train_opt[key]).to(self.device) if train_opt.get(key) else None)
        if not any(getattr(self, attr) for _, attr, _ in self.LOSSES):
            raise DDSRError('train: DistillSRModel needs at least one of pixel_opt, enhanced_opt, distill_opt, '
                            'feature_opt')
        self.net_t = self._build_teacher(logger)
        if self.cri_feat is not None and self.net_t is None:
            raise DDSRError('train.feature_opt needs a teacher: add network_t and path.pretrain_network_t')
        self._probe()
        self.progressive = ProgressiveSchedule.from_options(self.opt)
        self._stage = None
        self.enhanced = None
        self.setup_optimizers()
        self.setup_schedulers()

    def _init_ema(self, logger):
        self.ema_decay = self.opt['train'].get('ema_decay', 0)
        if self.ema_decay > 0:
            logger.info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            load_path = self.opt['path'].get('pretrain_network_g', None)
            if load_path is not None:
                self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
            else:
                self.model_ema(0)
            self.net_g_ema.eval()

    def _build_teacher(self, logger):
        if 'network_t' not in self.opt:
            logger.info('No network_t: distillation targets must come from the dataset (key "enhanced").')
            return None
        t_scale, s_scale = _declared_scale(self.opt['network_t']), _declared_scale(self.opt['network_g'])
        if t_scale is not None and s_scale is not None and t_scale != s_scale:
            raise DDSRError(f'network_t scale x{t_scale} differs from network_g scale x{s_scale}')
        net_t = build_network(self.opt['network_t']).to(self.device)  # no DDP: the teacher has no gradients
        load_path = self.opt['path'].get('pretrain_network_t')
        if load_path is None:
            raise DDSRError('path.pretrain_network_t is required with network_t (a teacher must be trained)')
        param_key = self.opt['path'].get('param_key_t', 'params')
        self.load_network(net_t, load_path, self.opt['path'].get('strict_load_t', True), param_key)
        logger.info(f'Teacher {type(net_t).__name__} frozen, from pretrain_network_t: {load_path} [{param_key}]')
        return freeze(net_t)

    @torch.no_grad()
    def _probe(self):
        """Check teacher/student scale and output range on a tiny ramp; infer the anchor widths."""
        if self.net_t is None:
            return
        channels = self.opt['network_g'].get('num_in_ch', 3)
        ramp = torch.linspace(0.1, 0.9, PROBE_SIZE, device=self.device)
        probe = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).expand(1, channels, PROBE_SIZE, PROBE_SIZE)
        student = self.get_bare_model(self.net_g)
        was_training = student.training
        student.eval()
        rec_s, rec_t = self._recorders(student)
        with rec_s:
            out_s = student(probe)
        with rec_t:
            out_t = self.net_t(probe)
        student.train(was_training)
        expected = PROBE_SIZE * self.opt['scale']
        if out_t.shape[-2:] != out_s.shape[-2:] or out_t.shape[-1] != expected:
            raise DDSRError(f'scale mismatch: on a {PROBE_SIZE}x{PROBE_SIZE} input the teacher (network_t) gives '
                            f'{tuple(out_t.shape[-2:])}, the student (network_g) {tuple(out_s.shape[-2:])}, '
                            f'scale x{self.opt["scale"]} expects {expected}x{expected}')
        if out_t.shape[1] != out_s.shape[1]:
            raise DDSRError(f'network_t outputs {out_t.shape[1]} channels, network_g {out_s.shape[1]}')
        lo, hi = float(out_t.min()), float(out_t.max())
        if lo < RANGE_LIMIT[0] or hi > RANGE_LIMIT[1]:
            raise DDSRError(f'output range mismatch: on a [0.1, 0.9] probe the teacher (network_t) outputs '
                            f'[{lo:.3g}, {hi:.3g}]; teacher and student must both work on images in [0, 1]')
        if self.cri_feat is not None:
            s_ch = [f.shape[1] for f in rec_s.features]
            t_ch = [f.shape[1] for f in rec_t.features]
            adapters = self.cri_feat.build_adapters(s_ch, t_ch).to(self.device)
            if self.opt['dist']:
                self.cri_feat.adapters = self.model_to_device(adapters)
            get_root_logger().info(f'Feature anchors: student widths {s_ch} -> teacher widths {t_ch} (1x1 adapters)')

    def _recorders(self, student):
        """(student, teacher) FeatureRecorders for the feature loss, or two no-op contexts without it."""
        if self.cri_feat is None:
            return nullcontext(), nullcontext()
        return (FeatureRecorder(student, self.cri_feat.student_anchors, 'train.feature_opt.student_anchors'),
                FeatureRecorder(self.net_t, self.cri_feat.teacher_anchors, 'train.feature_opt.teacher_anchors'))

    def setup_optimizers(self):
        super().setup_optimizers()
        if self.cri_feat is not None:
            self.optimizer_g.add_param_group({'params': list(self.cri_feat.adapters.parameters())})

    def feed_data(self, data):
        super().feed_data(data)
        self.enhanced = data['enhanced'].to(self.device) if 'enhanced' in data else None

    def _apply_progressive(self, current_iter):
        stage = self.progressive.stage(current_iter)
        if stage != self._stage:
            gt_size, batch_size = self.progressive.describe(stage)
            get_root_logger().info(f'Progressive stage {stage} at iter {current_iter}: gt_size {gt_size}, '
                                   f'batch_size {batch_size or "as loaded"}')
            self._stage = stage
        batch = self.progressive.crop({'lq': self.lq, 'gt': self.gt, 'enhanced': self.enhanced}, stage,
                                      self.opt['scale'])
        self.lq, self.gt, self.enhanced = batch['lq'], batch['gt'], batch['enhanced']

    def _teacher_target(self, rec_t):
        """Teacher output for the output losses (stored or online); runs the teacher only when needed."""
        need_output = self.cri_enh is not None or self.cri_distill is not None
        if self.cri_feat is None and (self.enhanced is not None or not need_output):
            return self.enhanced
        if self.net_t is None:
            raise DDSRError('enhanced_opt/distill_opt need targets: the batch has no "enhanced" (use '
                            'EnhancedPairedImageDataset) and there is no network_t')
        with torch.no_grad(), rec_t:
            out_t = self.net_t(self.lq)
        return self.enhanced if self.enhanced is not None else out_t

    def optimize_parameters(self, current_iter):
        if self.progressive is not None:
            self._apply_progressive(current_iter)
        self.optimizer_g.zero_grad()
        rec_s, rec_t = self._recorders(self.get_bare_model(self.net_g))
        target = self._teacher_target(rec_t)
        with rec_s:
            self.output = self.net_g(self.lq)

        l_total = 0
        loss_dict = OrderedDict()
        terms = {'l_pix': (self.cri_pix, (self.output, self.gt)),
                 'l_enh': (self.cri_enh, (self.output, target)),
                 'l_distill': (self.cri_distill, (self.output, target))}
        if self.cri_feat is not None:
            terms['l_feat'] = (self.cri_feat, (rec_s.features, rec_t.features))
        for name, (loss_fn, args) in terms.items():
            if loss_fn is not None:
                loss_dict[name] = loss_fn(*args)
                l_total = l_total + loss_dict[name]
        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def save(self, epoch, current_iter):
        super().save(epoch, current_iter)
        if self.is_train and self.cri_feat is not None:
            self.save_network(self.cri_feat.adapters, 'net_adapters', current_iter)

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.cri_feat is not None:
            path = osp.join(self.opt['path']['models'], f'net_adapters_{resume_state["iter"]}.pth')
            if not osp.isfile(path):
                raise DDSRError(f'resume: feature adapters not found: {path}')
            self.load_network(self.cri_feat.adapters, path, True, 'params')
