"""Issue 27 (5): scale-out over several machines as docs/training.md describes it, emulated on one machine.

Two torchrun agents, each one "node" (``--nnodes=2 --nproc_per_node=1``), meet through the c10d rendezvous on
127.0.0.1 (``--rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:PORT --rdzv-id=...``), exactly the command a second
machine would run with the first machine's address. ``python -m ddsr.train --launcher pytorch`` then trains one
job of world size 2 (gloo on CPU): both agents exit 0, BasicSR logs world size 2, rank 0 saves the checkpoint.
"""
import subprocess
import sys

import torch

from ddsr import checkpoint
from tests.conftest import write_options
from tests.test_preempt import ENV, _free_port, _opt

ITERS = 6


def test_two_nodes_meet_through_the_c10d_rendezvous(tmp_path):
    opt = _opt(tmp_path, 'nodes')
    opt['train']['total_iter'] = ITERS
    opt['logger']['save_checkpoint_freq'] = ITERS
    yml = write_options(tmp_path / 'nodes.yml', opt)
    port = _free_port()
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', '--nproc_per_node=1',
           '--rdzv-backend=c10d', f'--rdzv-endpoint=127.0.0.1:{port}', '--rdzv-id=ddsr-test', '--max-restarts=0',
           '-m', 'ddsr.train', '-opt', str(yml), '--launcher', 'pytorch']
    nodes = [subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    try:
        outs = [node.communicate(timeout=300)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    assert [node.returncode for node in nodes] == [0, 0], [out[-3000:] for out in outs]
    exp = tmp_path / 'experiments' / 'nodes'
    log = ''.join(p.read_text() for p in exp.glob('train_*.log'))
    assert 'World size (gpu number): 2' in log and 'End of training' in log
    state = checkpoint.load_training_state(str(exp / 'training_states' / f'{ITERS}.state'), 'cpu')
    assert state['iter'] == ITERS
    net = torch.load(exp / 'models' / f'net_g_{ITERS}.pth', map_location='cpu', weights_only=True)
    assert set(net) == {'params', 'params_ema'}
