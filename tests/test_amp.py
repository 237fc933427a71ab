"""Issue 23 (training): ``train.amp: bf16`` trains a few iterations on the CPU under bf16 autocast with the losses
in float32 (BasicSR's SRModel and ddsr's DistillSRModel, teacher included) and validation in float32, saves float32
checkpoints and training states that ``--auto_resume`` continues from; ``train.channels_last`` trains, saves
contiguous checkpoints equal to the trained weights and resumes, with and without bf16; fp16 without CUDA, unknown
values and a non-bool ``channels_last`` are one ``error:`` line (exit 2); without the keys no hook is added."""
import pytest
import torch
from basicsr.archs import build_network
from basicsr.losses.basic_loss import L1Loss
from basicsr.models.sr_model import SRModel

from ddsr import amp, run_seam
from ddsr.losses.feature_distill_loss import FeatureDistillLoss
from ddsr.losses.lap_pyramid_loss import LapPyramidLoss
from ddsr.models.distill_model import DistillSRModel
from ddsr.run_state import RunState
from tests.conftest import run_cli_inprocess, write_options
from tests.test_distill import _model_opt, _save_teacher
from tests.test_preempt import _opt


def _spy_forward(monkeypatch, cls, calls: list) -> None:
    """Record, for each call of ``cls.forward``: the floating input dtypes (lists flattened), whether autocast was
    on, the output dtype."""
    forward = cls.forward

    def spy(self, *args, **kwargs):
        flat = [t for a in args for t in (a if isinstance(a, (list, tuple)) else [a])]
        out = forward(self, *args, **kwargs)
        calls.append(({t.dtype for t in flat if isinstance(t, torch.Tensor)}, torch.is_autocast_enabled('cpu'),
                      out.dtype))
        return out

    monkeypatch.setattr(cls, 'forward', spy)


def test_bf16_autocast_trains_saves_fp32_and_resumes(tmp_path, one_thread, monkeypatch):
    seen: list[torch.dtype] = []
    enter = amp.MixedPrecision.before_optimize

    def spy(self, state, model, current_iter):
        enter(self, state, model, current_iter)
        with torch.no_grad():  # what the network's convolutions compute in, inside the hook's context
            seen.append(model.net_g(model.lq).dtype)

    monkeypatch.setattr(amp.MixedPrecision, 'before_optimize', spy)
    losses: list[tuple] = []
    _spy_forward(monkeypatch, L1Loss, losses)
    validated: list[tuple] = []
    test = SRModel.test

    def spy_test(self):
        test(self)
        validated.append((self.output.dtype, torch.is_autocast_enabled('cpu')))

    monkeypatch.setattr(SRModel, 'test', spy_test)
    opt = _opt(tmp_path, 'amp')
    opt['train'].update(total_iter=3, amp='bf16')
    opt['logger'].update(save_checkpoint_freq=3)
    train_set = opt['datasets']['train']
    opt['datasets']['val'] = {'name': 'val', 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                              'dataroot_gt': train_set['dataroot_gt'], 'dataroot_lq': train_set['dataroot_lq']}
    opt['val'] = {'val_freq': 3, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    yml = write_options(tmp_path / 'amp.yml', opt)
    code, _, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml], tmp_path)
    assert code == 0, err[-2000:]
    assert seen == [torch.bfloat16] * 3
    assert losses == [({torch.float32}, False, torch.float32)] * 3  # the bf16 output reaches L1 as float32
    assert validated and set(validated) == {(torch.float32, False)}  # validation: float32, no autocast
    models = tmp_path / 'experiments' / 'amp' / 'models'
    params = torch.load(models / 'net_g_3.pth', map_location='cpu')
    assert {v.dtype for v in params['params'].values()} == {torch.float32}
    assert {v.dtype for v in params['params_ema'].values()} == {torch.float32}
    state = torch.load(tmp_path / 'experiments' / 'amp' / 'training_states' / '3.state', map_location='cpu',
                       weights_only=False)
    exp_avg = [s['exp_avg'] for s in state['optimizers'][0]['state'].values()]
    assert exp_avg and {t.dtype for t in exp_avg} == {torch.float32}
    code, _, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml, '--auto_resume', '--force_yml',
                                      'train:total_iter=5'], tmp_path)
    assert code == 0, err[-2000:]
    assert (models / 'net_g_latest.pth').is_file() and len(seen) == 5  # resumed at 4: two more iterations


def test_bf16_distillation_losses_in_fp32_teacher_in_bf16(tmp_path, one_thread, monkeypatch):
    """DistillSRModel under the hook: student and teacher forward in bf16, every loss (pixel, enhanced, Laplacian
    distillation, feature) on float32 inputs outside autocast; the loss modules are plain again afterwards."""
    calls: dict[str, list] = {'l1': [], 'lap': [], 'feat': []}
    for cls, key in ((L1Loss, 'l1'), (LapPyramidLoss, 'lap'), (FeatureDistillLoss, 'feat')):
        _spy_forward(monkeypatch, cls, calls[key])
    torch.manual_seed(0)
    model = DistillSRModel(_model_opt(_save_teacher(tmp_path / 't.pth'), enhanced_opt={'type': 'L1Loss'},
                                      feature_opt={'type': 'FeatureDistillLoss', 'student_anchors': ['body.0'],
                                                   'teacher_anchors': ['body.1']}))
    teacher: list[torch.dtype] = []
    # the teacher's convolutions (its EDSR output is float32 again: it adds the float32 image mean)
    model.net_t.conv_first.register_forward_hook(lambda module, args, out: teacher.append(out.dtype))
    hook, state = amp.MixedPrecision(), RunState(phase='train', stage='training')
    for it in (1, 2):
        model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 64, 64)})
        hook.before_optimize(state, model, it)
        model.optimize_parameters(it)
        hook.after_optimize(state, model, it)
        assert model.output.dtype == torch.bfloat16 and not torch.is_autocast_enabled('cpu')
        assert set(model.log_dict) == {'l_pix', 'l_enh', 'l_distill', 'l_feat'}
    assert teacher == [torch.bfloat16] * 2
    fp32 = ({torch.float32}, False, torch.float32)
    assert calls == {'l1': [fp32] * 4, 'lap': [fp32] * 2, 'feat': [fp32] * 2}
    assert not any('forward' in vars(loss) for loss in (model.cri_pix, model.cri_enh, model.cri_distill,
                                                         model.cri_feat))
    assert {p.dtype for p in model.net_g.parameters()} == {torch.float32}


@pytest.mark.parametrize('precision', [None, 'bf16'])
def test_channels_last_trains_saves_contiguous_and_resumes(tmp_path, one_thread, monkeypatch, precision):
    models_seen: list = []
    layouts: list[tuple[bool, bool]] = []
    enter = amp.ChannelsLast.before_optimize

    def spy(self, state, model, current_iter):
        enter(self, state, model, current_iter)
        models_seen.append(model)
        weight = model.net_g.conv_first.weight
        layouts.append((weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous(),
                        model.lq.is_contiguous(memory_format=torch.channels_last) and not model.lq.is_contiguous()))

    monkeypatch.setattr(amp.ChannelsLast, 'before_optimize', spy)
    opt = _opt(tmp_path, 'cl')
    opt['train'].update(total_iter=3, channels_last=True, **({'amp': precision} if precision else {}))
    opt['logger'].update(save_checkpoint_freq=3)
    yml = write_options(tmp_path / 'cl.yml', opt)
    code, _, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml], tmp_path)
    assert code == 0, err[-2000:]
    assert layouts == [(True, True)] * 3
    trained = models_seen[-1]
    saved = torch.load(tmp_path / 'experiments' / 'cl' / 'models' / 'net_g_3.pth', map_location='cpu')
    for key, net in (('params', trained.net_g), ('params_ema', trained.net_g_ema)):
        values = saved[key]
        assert all(v.is_contiguous() and v.dtype == torch.float32 for v in values.values())
        assert all(torch.equal(values[k], v) for k, v in net.state_dict().items())
        fresh = build_network(dict(opt['network_g']))
        fresh.load_state_dict(values, strict=True)
        x = torch.rand(1, 3, 8, 8)
        with torch.no_grad():
            assert torch.allclose(fresh(x), net.eval()(x), atol=1e-5)
    code, _, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml, '--auto_resume', '--force_yml',
                                      'train:total_iter=5'], tmp_path)
    assert code == 0, err[-2000:]
    assert len(layouts) == 5 and layouts[-1] == (True, True)
    assert (tmp_path / 'experiments' / 'cl' / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('key, value, message', [
    ('amp', 'fp16', 'train.amp: fp16 needs a CUDA GPU (none here; fp16 has no fast CPU path); use train.amp: bf16'),
    ('amp', 'int8', "train.amp: 'int8' is not supported (bf16, or leave it out for float32)"),
    ('channels_last', 'yes', "train.channels_last must be true or false, got 'yes'"),
])
def test_bad_amp_is_one_error_line(tmp_path, key, value, message):
    if value == 'fp16' and torch.cuda.is_available():
        pytest.skip('this machine has CUDA: the fp16 refusal names the GradScaler instead')
    opt = _opt(tmp_path, 'bad')
    opt['train'][key] = value
    yml = write_options(tmp_path / 'bad.yml', opt)
    code, out, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml], tmp_path)
    lines = [line for line in (out + err).splitlines() if line.startswith('error:')]
    assert code == 2 and len(lines) == 1 and message in lines[0], out + err


def test_no_amp_no_hook():
    opt = {'train': {}}
    assert not any(isinstance(h, amp.MixedPrecision) for h in run_seam.default_hooks('train', opt))
    opt['train'].update(channels_last=False)
    assert not any(isinstance(h, amp.ChannelsLast) for h in run_seam.default_hooks('train', opt))
    opt['train'].update(amp='bf16', channels_last=True)
    hooks = [type(h) for h in run_seam.default_hooks('train', opt)]
    assert hooks.index(amp.ChannelsLast) + 1 == hooks.index(amp.MixedPrecision)
    hook = amp.MixedPrecision()
    hook.exit(RunState(phase='train', stage='setup'), True)  # leaving without entering is harmless
    amp.ChannelsLast().exit(RunState(phase='train', stage='setup'), True)
