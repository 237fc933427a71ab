"""Issue 23 (training): ``train.amp: bf16`` trains a few iterations on the CPU under bf16 autocast, saves float32
checkpoints and training states that ``--auto_resume`` continues from; fp16 without CUDA and unknown values are one
``error:`` line (exit 2); without ``train.amp`` no hook is added."""
import pytest
import torch

from ddsr import amp, run_seam
from ddsr.run_state import RunState
from tests.conftest import run_cli_inprocess, write_options
from tests.test_preempt import _opt


def test_bf16_autocast_trains_saves_fp32_and_resumes(tmp_path, one_thread, monkeypatch):
    seen: list[torch.dtype] = []
    enter = amp.MixedPrecision.before_optimize

    def spy(self, state, model, current_iter):
        enter(self, state, model, current_iter)
        with torch.no_grad():  # what the network's convolutions compute in, inside the hook's context
            seen.append(model.net_g(model.lq).dtype)

    monkeypatch.setattr(amp.MixedPrecision, 'before_optimize', spy)
    opt = _opt(tmp_path, 'amp')
    opt['train'].update(total_iter=3, amp='bf16')
    opt['logger'].update(save_checkpoint_freq=3)
    yml = write_options(tmp_path / 'amp.yml', opt)
    code, _, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml], tmp_path)
    assert code == 0, err[-2000:]
    assert seen == [torch.bfloat16] * 3
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


@pytest.mark.parametrize('value, message', [
    ('fp16', 'train.amp: fp16 needs a CUDA GPU (none here; fp16 has no fast CPU path); use train.amp: bf16'),
    ('int8', "train.amp: 'int8' is not supported (bf16, or leave it out for float32)"),
])
def test_bad_amp_is_one_error_line(tmp_path, value, message):
    if value == 'fp16' and torch.cuda.is_available():
        pytest.skip('this machine has CUDA: the fp16 refusal names the GradScaler instead')
    opt = _opt(tmp_path, 'bad')
    opt['train']['amp'] = value
    yml = write_options(tmp_path / 'bad.yml', opt)
    code, out, err = run_cli_inprocess(['basicsr', 'train', '-opt', yml], tmp_path)
    lines = [line for line in (out + err).splitlines() if line.startswith('error:')]
    assert code == 2 and len(lines) == 1 and message in lines[0], out + err


def test_no_amp_no_hook():
    opt = {'train': {}}
    assert not any(isinstance(h, amp.MixedPrecision) for h in run_seam.default_hooks('train', opt))
    opt['train']['amp'] = 'bf16'
    assert any(isinstance(h, amp.MixedPrecision) for h in run_seam.default_hooks('train', opt))
    hook = amp.MixedPrecision()
    hook.exit(RunState(phase='train', stage='setup'), True)  # leaving without entering is harmless
