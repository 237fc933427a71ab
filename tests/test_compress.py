"""EDSRmini / SwinIRmini, the compressors, PruneSRModel's proximal stage and the demo chain (Jiang et al.)."""
import json

import pytest
import torch
from basicsr.archs.edsr_arch import EDSR

from ddsr.archs.edsr.edsrmini_arch import EDSRmini
from ddsr.archs.swinir.swinirmini_arch import SwinIRmini
from ddsr.bench.efficiency import count_macs_activations, count_params
from ddsr.checkpoint import build_network as build
from ddsr.compress.compact import compress_state
from ddsr.compress.importance import density_by_group
from tests.conftest import load_yaml, run_cli

SWINIR_LIGHT = dict(type='SwinIR', img_size=64, window_size=8, img_range=1., depths=[6, 6, 6, 6], embed_dim=60,
                    num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler='pixelshuffledirect', resi_connection='1conv')


def _max_diff(a, b, size=(1, 3, 16, 16)):
    x = torch.rand(*size)
    with torch.no_grad():
        return (a.eval()(x) - b.eval()(x)).abs().max().item()


@pytest.mark.parametrize('scale,edsr,swin', [(2, 49603, 98868), (3, 61203, 102123), (4, 58883, 106680)])
def test_default_params(scale, edsr, swin):
    assert count_params(EDSRmini(upscale=scale)) == edsr
    assert count_params(SwinIRmini(upscale=scale)) == swin


def _linear_conv_macs(net, size=32):
    """MACs of Conv2d / Linear layers (hooks), the paper's FLOPs; attention matmuls are excluded."""
    total = [0]

    def hook(m, _inp, out):
        per_out = m.in_features if isinstance(m, torch.nn.Linear) else m.weight[0].numel()
        total[0] += out.numel() * per_out

    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        net.eval()(torch.rand(1, 3, size, size))
    for h in handles:
        h.remove()
    return total[0]


def test_flops_reduction_x2():
    macs = _linear_conv_macs
    mini_macs, dense_macs = (count_macs_activations(net, (32, 32))[0] for net in (EDSRmini(), EDSR(3, 3, upscale=2)))
    edsr_all = 1 - mini_macs / dense_macs
    assert edsr_all >= 0.96  # ddsr.bench counter (no attention in EDSR)
    edsr = 1 - macs(EDSRmini(upscale=2)) / macs(EDSR(3, 3, upscale=2))
    swin = 1 - macs(SwinIRmini(upscale=2)) / macs(build(dict(SWINIR_LIGHT, upscale=2)))
    assert count_params(EDSR(3, 3, upscale=2)) == 1369859
    assert count_params(build(dict(SWINIR_LIGHT, upscale=2))) == 910152
    assert edsr >= 0.96 and swin >= 0.89, (edsr, swin)


def _edsr(scale=4):
    arch = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=16, num_block=4, upscale=scale)
    torch.manual_seed(0)
    return arch, build(arch)


def test_torch_pruning_groups_of_edsr():
    """The trunk and block-middle groups the EDSR compressor slices come from Torch-Pruning's dependency graph."""
    from basicsr.archs.edsr_arch import EDSR

    from ddsr.compress.dependency import coupled_slices
    groups = coupled_slices(EDSR(3, 3, num_feat=8, num_block=3, upscale=2), ['conv_first', 'body.1.conv1'],
                            torch.zeros(1, 3, 8, 8))
    prod, cons = groups['conv_first']
    producers = ['conv_first', 'conv_after_body', 'body.0.conv2', 'body.1.conv2', 'body.2.conv2']
    consumers = ['conv_after_body', 'upsample.0', 'body.0.conv1', 'body.1.conv1', 'body.2.conv1']
    assert prod == sorted((f'{m}.{p}', 0) for m in producers for p in ('weight', 'bias'))
    assert cons == sorted((f'{m}.weight', 1) for m in consumers)
    assert groups['body.1.conv1'] == ([('body.1.conv1.bias', 0), ('body.1.conv1.weight', 0)],
                                      [('body.1.conv2.weight', 1)])


def test_edsr_nothing_pruned_is_identical():
    arch, net = _edsr()
    state, compact = compress_state(net.state_dict(), arch, target=dict(arch, type='EDSRmini', res_scale=2))
    mini = build(compact)
    mini.load_state_dict(state)
    assert _max_diff(net, mini) <= 1e-5  # conv2 folded by res_scale 1/2


def test_edsr_zero_channels_pruned_exactly():
    arch, net = _edsr()
    sd = net.state_dict()
    with torch.no_grad():
        for k in ['conv_first', 'conv_after_body'] + [f'body.{i}.conv2' for i in range(4)]:  # trunk channel 3
            sd[f'{k}.weight'][3] = 0
            sd[f'{k}.bias'][3] = 0
        sd['body.2.conv1.weight'][[1, 7]] = 0  # mid channels of block 2
        sd['body.2.conv1.bias'][[1, 7]] = 0
        sd['upsample.2.weight'][20:24] = 0  # post-shuffle channel 5 of stage 2 (PixelShuffle group of 4)
        sd['upsample.2.bias'][20:24] = 0
    net.load_state_dict(sd)
    state, compact = compress_state(sd, arch, ratio=1.0)
    assert compact['num_feat'] == 15 and compact['block_channels'] == [16, 16, 14, 16]
    assert compact['upsample_channels'] == [16, 15]
    mini = build(compact)
    mini.load_state_dict(state)
    assert _max_diff(net, mini) <= 1e-5


def _swin():
    arch = dict(SWINIR_LIGHT, upscale=2, embed_dim=24, depths=[2, 2], num_heads=[4, 4], img_size=16)
    torch.manual_seed(0)
    net = build(arch)
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    return arch, net


def test_swinir_nothing_pruned_is_identical():
    arch, net = _swin()
    state, compact = compress_state(net.state_dict(), arch, target=dict(arch, type='SwinIRmini'))
    mini = build(compact)
    mini.load_state_dict(state)
    assert _max_diff(net, mini) <= 1e-5


def test_swinir_zero_heads_and_units_pruned_exactly():
    arch, net = _swin()
    sd = net.state_dict()
    hd, dim = 6, 24
    with torch.no_grad():
        pre = 'layers.1.residual_group.blocks.0'
        rows = [t * dim + 2 * hd + d for t in range(3) for d in range(hd)]  # head 2: its q, k and v rows
        sd[f'{pre}.attn.qkv.weight'][rows] = 0
        sd[f'{pre}.attn.qkv.bias'][rows] = 0
        sd[f'{pre}.attn.proj.weight'][:, 2 * hd:3 * hd] = 0
        pre = 'layers.0.residual_group.blocks.1'
        sd[f'{pre}.mlp.fc1.weight'][[0, 5, 9]] = 0  # MLP units 0, 5, 9
        sd[f'{pre}.mlp.fc1.bias'][[0, 5, 9]] = 0
        sd[f'{pre}.mlp.fc2.weight'][:, [0, 5, 9]] = 0
    net.load_state_dict(sd)
    state, compact = compress_state(sd, arch, ratio=1.0)
    assert compact['layer_heads'] == [[4, 4], [3, 4]]
    assert compact['layer_mlp_hidden'] == [[48, 45], [48, 48]]
    mini = build(compact)
    mini.load_state_dict(state)
    assert _max_diff(net, mini) <= 1e-5
    for size in [(1, 3, 16, 16), (1, 3, 13, 21), (2, 3, 9, 7)]:  # not multiples of the window (8)
        with torch.no_grad():
            assert mini.eval()(torch.rand(*size)).shape == (size[0], 3, 2 * size[2], 2 * size[3])


def test_swinir_teacher_to_paper_mini():
    torch.manual_seed(0)
    arch = dict(SWINIR_LIGHT, upscale=2)
    state, compact = compress_state(build(arch).state_dict(), arch, target='SwinIRmini-default')
    mini = build(compact)
    mini.load_state_dict(state)
    assert count_params(mini) == 98868 and compact['embed_dim'] == 24 and compact['depths'] == [4, 4, 4]


def _demo(workdir, net, stage, name, extra=()):
    yml = workdir / 'options' / 'demo' / net / f'{stage}_x2.yml'
    res = run_cli(['basicsr', 'train', '-opt', yml, '--force_yml', *extra], workdir) if extra else run_cli(
        ['basicsr', 'train', '-opt', yml], workdir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return workdir / 'experiments' / name


def _teacher(workdir, net, extra=()):
    """Stage 0 of a demo chain, shortened: the dense network stage 1 prunes and stage 3 (as released) distils."""
    return _demo(workdir, net, '00_teacher', f'demo_{net}_x2_00_teacher',
                 ['train:total_iter=4', 'val:val_freq=1000', *extra])


# Stage 1 shortened: epochs of 2 iterations, 1 proximal epoch, then orthant steps (the demo file: 25 and 2).
SHORT_EPOCHS = ['train:optim_g:epochSize=2', 'train:optim_g:Np=1', 'val:val_freq=1000', 'logger:print_freq=2']


def test_stage1_paper_lambda_prunes(workdir):
    """The demo's stage 1 with the paper's lr 5e-3, lambda 1e-4 and eps 1e-4: the orthant projection zeroes weights
    (density < 1), counted on net_g, reported per group and with the optimizer's phase counters."""
    _teacher(workdir, 'EDSRmini')
    exp = _demo(workdir, 'EDSRmini', '01_prune', 'demo_EDSRmini_x2_01_prune', ['train:total_iter=6', *SHORT_EPOCHS])
    report = json.loads((exp / 'sparsity_report.json').read_text())
    assert report['optimizer'] == {'epoch': 3, 'step_in_epoch': 0, 'phase': 'orthant', 'lr': 5e-3, 'lambda_': 1e-4}
    net = build(load_yaml(workdir / 'options/demo/EDSRmini/01_prune_x2.yml')['network_g'])
    net.load_state_dict(torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params'])
    direct = density_by_group(net)
    assert report['density'] == pytest.approx(direct, abs=1e-9)
    assert 0.5 < direct['total'] < 1.0
    assert (exp / 'sparsity_report.png').stat().st_size > 1000
    log = next(exp.glob('train_*.log')).read_text()
    assert 'OBProxSG: orthant steps from iteration 3 (epoch 1)' in log


def test_stage1_large_lambda_kills_channels_and_compact_removes_them(workdir):
    """With lambda_ 1.0 whole middle channels reach exact zero in 12 iterations; the report lists them and the
    compact step removes exactly those first (ratio 1: only they go, the output is unchanged)."""
    from ddsr.compress import edsr_compress
    from ddsr.compress.importance import keep_top
    _teacher(workdir, 'EDSRmini')
    exp = _demo(workdir, 'EDSRmini', '01_prune', 'demo_EDSRmini_x2_01_prune',
                ['train:total_iter=12', 'train:optim_g:lambda_=1.0', *SHORT_EPOCHS])
    structure = json.loads((exp / 'sparsity_report.json').read_text())['structure']
    arch = load_yaml(workdir / 'options/demo/EDSRmini/01_prune_x2.yml')['network_g']
    state = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    dead = [m['dead'] for m in structure['mid']]
    assert sum(map(len, dead)) > 0 and all(len(d) < 32 for d in dead), dead
    for i, channels in enumerate(dead):  # dead = conv1 row and bias exactly zero, or the conv2 column that reads it
        w, b, w2 = (state[f'body.{i}.conv{k}'] for k in ('1.weight', '1.bias', '2.weight'))
        assert [c for c in range(32) if not (w[c].any() or b[c].any()) or not w2[:, c].any()] == channels
    kept, compact = compress_state(state, arch, ratio=1.0)
    assert compact['block_channels'] == [32 - len(d) for d in dead]
    dense, mini = build(arch), build(compact)
    dense.load_state_dict(state)
    mini.load_state_dict(kept)
    assert _max_diff(dense, mini, (1, 3, 24, 24)) <= 1e-4
    sc = edsr_compress.scores(state, edsr_compress.normalize(arch))
    for i, channels in enumerate(dead):  # any smaller width drops the dead channels before a live one
        width = 32 - len(channels) - 1
        assert set(keep_top(sc['mid'][i]['score'], width)).isdisjoint(channels)


def test_stage1_resume_in_the_orthant_phase(workdir):
    """Kill stage 1 after the switch to orthant steps; --auto_resume continues with the saved counters and zeros."""
    import signal
    import subprocess
    import sys
    import time
    _teacher(workdir, 'EDSRmini')
    exp = workdir / 'experiments' / 'demo_EDSRmini_x2_01_prune'
    yml = workdir / 'options' / 'demo' / 'EDSRmini' / '01_prune_x2.yml'
    args = ['-opt', str(yml), '--force_yml', *SHORT_EPOCHS, 'logger:save_checkpoint_freq=4']
    proc = subprocess.Popen([sys.executable, '-m', 'ddsr.cli', 'basicsr', 'train', *args, 'train:total_iter=100000'],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not list((exp / 'training_states').glob('*.state')) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    states = sorted(int(p.stem) for p in (exp / 'training_states').glob('*.state'))
    assert states, 'no training state written before the deadline'
    saved_iter = states[-1]
    saved = torch.load(exp / 'training_states' / f'{saved_iter}.state', weights_only=True)['optimizers'][0]
    assert saved['obproxsg'] == {'epoch': saved_iter // 2, 'step_in_epoch': 0}  # orthant from epoch 1 on
    zeros = {k: v == 0 for k, v in torch.load(exp / 'models' / f'net_g_{saved_iter}.pth',
                                               weights_only=True)['params'].items()}
    res = run_cli(['basicsr', 'train', *args, f'train:total_iter={saved_iter + 4}', '--auto_resume'], workdir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = sorted(exp.glob('train_*.log'))[-1].read_text()
    assert f'Resumed OBProxSG in the orthant phase: epoch {saved_iter // 2}, step 0 of the epoch' in log
    report = json.loads((exp / 'sparsity_report.json').read_text())
    assert report['optimizer']['epoch'] == (saved_iter + 4) // 2 and report['optimizer']['phase'] == 'orthant'
    final = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    for k, was_zero in zeros.items():  # orthant steps never revive a zero (proximal steps would)
        assert bool((final[k][was_zero] == 0).all()), k


def test_demo_chain_edsr(workdir):
    """Stage 0 (teacher) -> 1 (OBProxSG) -> 2 (compress via basicsr train) -> 3 as released and ddsr's variant ->
    basicsr test."""
    _teacher(workdir, 'EDSRmini')
    exp1 = _demo(workdir, 'EDSRmini', '01_prune', 'demo_EDSRmini_x2_01_prune', ['train:total_iter=4', *SHORT_EPOCHS])
    net = build(load_yaml(workdir / 'options/demo/EDSRmini/01_prune_x2.yml')['network_g'])
    net.load_state_dict(torch.load(exp1 / 'models' / 'net_g_latest.pth', weights_only=True)['params'])
    logged = next(exp1.glob('train_*.log')).read_text().split('iter:       4,')[1].split('\n')[0]
    assert f"density_body.0: {density_by_group(net)['body.0']:.4e}" in logged

    yml1 = workdir / 'options/demo/EDSRmini/01_prune_x2.yml'
    res = run_cli(['compress', '--ckpt', exp1 / 'models/net_g_latest.pth', '--arch-opt', yml1, '--ratio', '0.3',
                   '-o', workdir / 'ratio.pth'], workdir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    arch = torch.load(workdir / 'ratio.pth', weights_only=True)['arch']
    assert 0.2 * count_params(net) < count_params(build(arch)) <= 0.3 * count_params(net)

    exp2 = _demo(workdir, 'EDSRmini', '02_compress', 'demo_EDSRmini_x2_02_compress')
    ckpt = torch.load(exp2 / 'models' / 'net_g_compact.pth', weights_only=True)
    assert ckpt['arch']['type'] == 'EDSRmini' and count_params(build(ckpt['arch'])) == 49603
    for stage in ('03_distill_released', '03_distill_from_pruned'):
        exp3 = _demo(workdir, 'EDSRmini', stage, f'demo_EDSRmini_x2_{stage}', ['train:total_iter=4', 'val:val_freq=4'])
        final = torch.load(exp3 / 'models' / 'net_g_latest.pth', weights_only=True)['params']
        assert sum(v.numel() for v in final.values()) == 49603
    for test_file in ('04_test_x2.yml', '04_test_from_pruned_x2.yml'):  # both stage-3 variants
        res = run_cli(['basicsr', 'test', '-opt', workdir / 'options/demo/EDSRmini' / test_file], workdir)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert 'psnr' in (res.stdout + res.stderr)


def test_demo_chain_swinir(workdir):
    """SwinIR-light-like teacher -> OBProxSG stage -> SwinIRmini (paper config) -> distillation -> basicsr test."""
    small = ['datasets:train:batch_size_per_gpu=2', 'datasets:train:gt_size=64']
    _teacher(workdir, 'SwinIRmini', small)
    exp1 = _demo(workdir, 'SwinIRmini', '01_prune', 'demo_SwinIRmini_x2_01_prune',
                 ['train:total_iter=4', *SHORT_EPOCHS, *small])
    report = json.loads((exp1 / 'sparsity_report.json').read_text())
    assert 0 < report['density']['total'] < 1 and 'layers.0' in report['density']
    heads = report['structure']['layers'][0]['heads']
    assert len(heads) == 4 and heads[0]['total'] == 6 and report['structure']['embed']['total'] == 36
    exp2 = _demo(workdir, 'SwinIRmini', '02_compress', 'demo_SwinIRmini_x2_02_compress')
    ckpt = torch.load(exp2 / 'models' / 'net_g_compact.pth', weights_only=True)
    assert ckpt['arch']['type'] == 'SwinIRmini' and count_params(build(ckpt['arch'])) == 98868
    exp3 = _demo(workdir, 'SwinIRmini', '03_distill_released', 'demo_SwinIRmini_x2_03_distill_released',
                 ['train:total_iter=2', 'val:val_freq=1000', *small])
    final = torch.load(exp3 / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert sum(v.numel() for k, v in final.items() if 'relative_position_index' not in k and 'attn_mask' not in k) \
        == 98868
    res = run_cli(['basicsr', 'test', '-opt', workdir / 'options/demo/SwinIRmini/04_test_x2.yml'], workdir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'psnr' in (res.stdout + res.stderr)


def test_authors_density_counts_layernorm_scales():
    """The authors' get_density: every `weight` under layers (SwinIR) / body (EDSR), LayerNorm scales included,
    conv_first excluded; ddsr's density_by_group counts conv / linear kernels only. EDSR: "body" also matches
    conv_after_body (their substring test)."""
    from ddsr.compress.importance import authors_density
    swin = build(dict(SWINIR_LIGHT, upscale=2, embed_dim=24, depths=[2], num_heads=[4], img_size=16))
    with torch.no_grad():
        swin.layers[0].residual_group.blocks[0].norm1.weight.zero_()  # 24 LayerNorm scales
        swin.conv_first.weight.zero_()
    scope = [p for n, p in swin.named_parameters() if 'weight' in n and 'layers' in n]
    assert authors_density(swin, 'SwinIR') == pytest.approx(1 - 24 / sum(p.numel() for p in scope))
    assert density_by_group(swin)['layers.0'] == 1.0
    edsr = EDSR(3, 3, num_feat=8, num_block=2, upscale=2)
    with torch.no_grad():
        edsr.body[1].conv2.weight[0].zero_()
    assert authors_density(edsr, 'EDSR') == pytest.approx(1 - 72 / (5 * 576)) and authors_density(edsr, 'X') is None
