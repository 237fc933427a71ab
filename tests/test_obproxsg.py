"""OBProxSG (ddsr.compress.obproxsg) against an independent element-by-element re-implementation of the update
rules of Jiang et al.'s pruning stage, its phase counters in the state dict, and its construction by BasicSR's and
ddsr's models from ``train.optim_g``."""
import copy
import math

import pytest
import torch
from torch import nn

from ddsr.compress.obproxsg import OBProxSG


class Reference:
    """The update rules written out per scalar, with their own epoch / step counters (no torch ops on tensors)."""

    def __init__(self, lr, lam, epoch_size, n_prox, n_orth=math.inf, eps=0.0):
        self.lr, self.lam, self.epoch_size, self.n_prox, self.n_orth, self.eps = lr, lam, epoch_size, n_prox, \
            n_orth, eps
        self.steps = 0  # total steps taken

    def phase(self):
        epoch = self.steps // self.epoch_size
        cycle = self.n_prox + self.n_orth
        return 'proximal' if (epoch if cycle == math.inf else epoch % cycle) < self.n_prox else 'orthant'

    def step(self, tensors: list[list[float]], grads: list[list[float]]) -> list[list[float]]:
        """One step of every parameter tensor (flattened to lists of floats)."""
        prox = self.phase() == 'proximal'
        out = [self._update(w, g, prox) for w, g in zip(tensors, grads, strict=True)]
        self.steps += 1
        return out

    def _update(self, weights: list[float], grads: list[float], prox: bool) -> list[float]:
        out = []
        for w, g in zip(weights, grads, strict=True):
            if prox:
                y = w - self.lr * g
                if y > self.lr * self.lam:
                    out.append(y - self.lr * self.lam)
                elif y < -self.lr * self.lam:
                    out.append(y + self.lr * self.lam)
                else:
                    out.append(0.0)
            else:
                sign = 1.0 if w > 0 else (-1.0 if w < 0 else 0.0)
                if sign == 0.0:
                    out.append(0.0)  # zeros stay zero
                    continue
                w_hat = w - self.lr * (g + self.lam * sign)
                out.append(w_hat if w_hat * sign > self.eps else 0.0)  # projection onto the orthant of w
        return out


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1))


def _grads(net, x, y):
    net.zero_grad()
    ((net(x) - y) ** 2).mean().backward()


def test_matches_reference_across_the_phase_switch():
    """Proximal steps for Np=2 epochs of 3 steps, then orthant steps: parameters equal the reference's to 1e-6."""
    lr, lam, eps = 0.05, 0.02, 1e-3
    net = _net()
    opt = OBProxSG(net.parameters(), lr=lr, lambda_=lam, epochSize=3, Np=2, eps=eps)
    ref = Reference(lr, lam, 3, 2, eps=eps)
    ref_w = [p.detach().flatten().tolist() for p in net.parameters()]
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    phases, zeros = [], []
    for _ in range(12):
        _grads(net, x, y)
        grads = [p.grad.flatten().tolist() for p in net.parameters()]
        phases.append(opt.phase)
        assert ref.phase() == opt.phase
        opt.step()
        ref_w = ref.step(ref_w, grads)
        for p, w in zip(net.parameters(), ref_w, strict=True):
            assert torch.allclose(p.detach().flatten(), torch.tensor(w), atol=1e-6, rtol=0)
            assert torch.equal(p.detach().flatten() == 0, torch.tensor(w) == 0)  # the same exact zeros
        zeros.append(sum(int((p == 0).sum()) for p in net.parameters()))
    assert phases == ['proximal'] * 6 + ['orthant'] * 6
    assert opt.counters() == {'epoch': 4, 'step_in_epoch': 0, 'phase': 'orthant'}
    assert 0 < zeros[5] < zeros[-1]  # both phases zero weights (shrinkage, then projection)
    assert zeros[5:] == sorted(zeros[5:])  # orthant steps never revive a zero


def test_orthant_steps_never_revive_zeros_and_finite_no_cycles():
    net = _net()
    opt = OBProxSG(net.parameters(), lr=0.05, lambda_=0.05, epochSize=2, Np=1, No=1, eps=1e-3)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    phases = []
    for _ in range(8):
        phases.append(opt.phase)
        before = [p.detach().clone() for p in net.parameters()]
        _grads(net, x, y)
        opt.step()
        if phases[-1] == 'orthant':
            for b, p in zip(before, net.parameters(), strict=True):
                assert bool((p[b == 0] == 0).all())
                assert bool((p * b >= 0).all())  # no sign change
    assert phases == ['proximal', 'proximal', 'orthant', 'orthant'] * 2


def test_counters_live_in_the_state_dict():
    """A fresh optimizer loaded from a state saved in the orthant phase takes the same next step."""
    net = _net()
    opt = OBProxSG(net.parameters(), lr=0.05, lambda_=0.02, epochSize=2, Np=1, eps=1e-3)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    for _ in range(3):
        _grads(net, x, y)
        opt.step()
    state = copy.deepcopy(opt.state_dict())
    assert state['obproxsg'] == {'epoch': 1, 'step_in_epoch': 1}
    net2 = copy.deepcopy(net)
    opt2 = OBProxSG(net2.parameters(), lr=1.0, lambda_=0.0, epochSize=2, Np=1)  # lr, lambda_, eps come from the state
    opt2.load_state_dict(state)
    assert opt2.counters() == opt.counters() == {'epoch': 1, 'step_in_epoch': 1, 'phase': 'orthant'}
    for n, o in ((net, opt), (net2, opt2)):
        _grads(n, x, y)
        o.step()
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match='phase counters'):
        opt2.load_state_dict(torch.optim.SGD(net2.parameters(), lr=1).state_dict())


@pytest.mark.parametrize('kwargs,match', [({'epochSize': 0}, 'epochSize'), ({'Np': -1}, 'Np'),
                                          ({'No': 'forever'}, 'No'), ({'lr': -1.0}, 'lr'), ({'Np': 1.5}, 'Np')])
def test_bad_arguments(kwargs, match):
    args = dict(lr=0.1, lambda_=1e-4, epochSize=4, Np=1) | kwargs
    with pytest.raises(ValueError, match=match):
        OBProxSG(_net().parameters(), **args)


def test_no_inf_spellings():
    for no in ('inf', None, math.inf, float('inf')):
        opt = OBProxSG(_net().parameters(), lr=0.1, lambda_=1e-4, epochSize=1, Np=0, No=no)
        assert opt.n_orth == math.inf and opt.phase == 'orthant'


def test_basicsr_and_ddsr_models_build_it(tmp_path, demo_root):
    """SRModel (BasicSR's own get_optimizer, patched in ddsr.compat), PruneSRModel and DistillSRModel build OBProxSG
    from train.optim_g with the authors' keys."""
    from basicsr.models import build_model
    optim = {'type': 'OBProxSG', 'lr': 5e-3, 'lambda_': 1e-4, 'epochSize': 2560, 'Np': 60, 'eps': 1e-4}
    net = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}
    torch.save({'params': _edsr_state(net)}, tmp_path / 't.pth')
    for model_type, extra in (('SRModel', {}), ('PruneSRModel', {'prune': {'mode': 'proximal'}}),
                              ('DistillSRModel', {'network_t': net})):
        opt = {'model_type': model_type, 'is_train': True, 'dist': False, 'num_gpu': 0, 'scale': 2, 'rank': 0,
               'name': 't', 'network_g': dict(net), 'logger': {'print_freq': 1},
               'path': {'pretrain_network_t': str(tmp_path / 't.pth'), 'experiments_root': str(tmp_path),
                        'models': str(tmp_path)},
               'train': {'optim_g': dict(optim), 'scheduler': {'type': 'MultiStepLR', 'milestones': [20000],
                                                                 'gamma': 0.5},
                         'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0}},
               **copy.deepcopy(extra)}
        model = build_model(opt)
        assert isinstance(model.optimizer_g, OBProxSG), model_type
        group = model.optimizer_g.param_groups[0]
        assert (group['lr'], group['lambda_'], group['eps']) == (5e-3, 1e-4, 1e-4)
        assert (model.optimizer_g.epoch_size, model.optimizer_g.n_prox, model.optimizer_g.n_orth) == \
            (2560, 60, math.inf)
        assert sum(p.numel() for g in model.optimizer_g.param_groups for p in g['params']) == \
            sum(p.numel() for p in model.net_g.parameters())  # every trainable parameter, biases included


def _edsr_state(net_opt):
    from ddsr.checkpoint import build_network as build
    return build(net_opt).state_dict()


def test_authors_schedule_and_the_released_runs():
    """epochSize / Np as the authors' prune script computes them (epochSize in samples); on DIV2K's 32,592 sub-images
    at batch 16 both released runs stay in the proximal phase to the end (Np * epochSize > total_iter)."""
    from ddsr.compress.obproxsg import authors_schedule
    assert authors_schedule(3, 3, 1, 12) == (3, 1)  # 1 iteration per pass: 12 passes, Np = int(1.2)
    assert authors_schedule(100, 16, 2, 1000) == (128, 25)  # ceil(100 / 32) = 4 per pass, 250 passes
    assert authors_schedule(10, 4, 1, 30, enlarge=2) == (20, 0)  # 5 per pass, 6 passes: orthant from the start
    edsr, swin = authors_schedule(32592, 16, 1, 100000), authors_schedule(32592, 16, 1, 500000)
    assert edsr == (32592, 5) and swin == (32592, 24)
    assert edsr[0] * edsr[1] >= 100000 and swin[0] * swin[1] >= 500000


def test_auto_needs_the_prune_model():
    with pytest.raises(ValueError, match='epochSize: auto is computed from the data set'):
        OBProxSG(_net().parameters(), lr=0.1, lambda_=1e-4, epochSize='auto', Np=1)
