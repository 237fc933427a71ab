"""IterativePruneSRModel: DIPNet's iterative L2 filter pruning + fine-tuning inside one BasicSR run (step 5 of
the DIPNet pipeline); the schedule is :class:`ddsr.models.parts.iterative_prune.IterativePruner`.

Options (section ``prune``): ratio (fraction of the middle width removed per step, default 0.1), step_iters
(fine-tuning iterations between two steps, default 1000), steps (maximum number of steps, default: until
max_psnr_drop or width 1), max_psnr_drop (stop when the val PSNR is more than this many dB below the unpruned
network's and keep the last good step; default: never stop on PSNR). ``PruneSRModel`` with
``prune.mode: iterative`` builds this class.
"""
import copy
from os import path as osp

from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from ddsr.checkpoint import atomic_save
from ddsr.errors import DDSRError
from ddsr.models.parts.iterative_prune import IterativePruner
from ddsr.models.parts.self_describing import SelfDescribingSRModel


@MODEL_REGISTRY.register()
class IterativePruneSRModel(SelfDescribingSRModel):
    """Self-describing SRModel pruned every ``prune.step_iters`` iterations; the schedule resumes exactly."""

    def __init__(self, opt: dict):
        self.pruner: IterativePruner | None = None
        train_opt = copy.deepcopy(opt.get('train'))  # BasicSR pops optim_g/scheduler 'type' while setting up
        super().__init__(opt)
        if self.is_train:
            self.pruner = IterativePruner(self, dict(opt.get('prune') or {}), dict(train_opt or {}))

    def optimize_parameters(self, current_iter: int) -> None:
        if self.pruner is not None:
            self.pruner.before_step(current_iter)
        super().optimize_parameters(current_iter)
        if self.pruner is not None:
            self.pruner.after_step(current_iter)

    @master_only
    def save_training_state(self, epoch, current_iter):
        if self.pruner is None or current_iter == -1:
            return super().save_training_state(epoch, current_iter)
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], 'prune': self.pruner.state}
        atomic_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.pruner is not None:
            if 'prune' not in resume_state:
                raise DDSRError('resume: the training state has no pruning state (not saved by prune.mode: iterative)')
            self.pruner.state = resume_state['prune']
            get_root_logger().info(f"Resumed iterative pruning at step {self.pruner.state['step']} "
                                   f"(mid_channels {self.get_bare_model(self.net_g).mid_channels})")
