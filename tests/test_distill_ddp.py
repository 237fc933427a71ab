"""DistillSRModel under BasicSR's distributed launcher: 2 CPU processes (gloo) started by torchrun.

The test runs this file as the torchrun entry (``python -m torch.distributed.run --nproc_per_node=2
tests/test_distill_ddp.py -opt X.yml --launcher pytorch``): it registers ``DumpingDistillSRModel``, a
DistillSRModel that additionally writes what each rank holds (student, adapters, teacher, wrapper types) at every
checkpoint, and then runs the same pipeline as ``python -m ddsr.train``.
"""
import hashlib
import socket
import subprocess
import sys
from pathlib import Path

import torch

ITERS = 4


def _register_dumping_model() -> None:
    from basicsr.utils.registry import MODEL_REGISTRY

    from ddsr.models.distill_model import DistillSRModel

    class DumpingDistillSRModel(DistillSRModel):
        """DistillSRModel + a per-rank dump of the networks at every save (for the test only)."""

        def save(self, epoch, current_iter):
            super().save(epoch, current_iter)
            bare = self.get_bare_model
            torch.save({
                'net_g': bare(self.net_g).state_dict(),
                'adapters': bare(self.cri_feat.adapters).state_dict(),
                'teacher': self.net_t.state_dict(),
                'types': {'net_g': type(self.net_g).__name__, 'net_t': type(self.net_t).__name__,
                          'adapters': type(self.cri_feat.adapters).__name__},
                'teacher_training': self.net_t.training,
            }, Path(self.opt['path']['models']) / f'rank{self.opt["rank"]}_{current_iter}.pth')

    MODEL_REGISTRY.register(DumpingDistillSRModel)


def _options(teacher_path: str) -> dict:
    """The end-to-end options of tests/test_distill.py (all four losses), as 2 ranks x batch 2, checkpoint at end."""
    from tests.test_distill import _train_options  # pytest side only: this file is also the torchrun entry
    opt = _train_options(teacher_path, ITERS)
    opt.update(name='kd_ddp', model_type='DumpingDistillSRModel')
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['train']['progressive'] = {'milestones': [2], 'gt_size': [32, 64]}
    opt['val']['val_freq'] = ITERS
    opt['logger'] = {'print_freq': 1, 'save_checkpoint_freq': ITERS, 'use_tb_logger': False}
    return opt


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _digest(state: dict) -> str:
    sha = hashlib.sha256()
    for key in sorted(state):
        sha.update(key.encode())
        sha.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def test_distill_two_process_ddp(workdir):
    import os

    from basicsr.archs import build_network

    from tests.conftest import write_options
    from tests.test_distill import TEACHER

    torch.manual_seed(3)
    teacher = workdir / 'teacher_edsr.pth'
    torch.save({'params': build_network(dict(TEACHER)).state_dict()}, teacher)
    teacher_bytes = teacher.read_bytes()
    yml = write_options(workdir / 'kd_ddp.yml', _options(str(teacher)))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get('PYTHONPATH')])))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--nproc_per_node=2',
           f'--master_port={_free_port()}', str(Path(__file__).resolve()), '-opt', str(yml), '--launcher', 'pytorch']
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])

    models = workdir / 'experiments' / 'kd_ddp' / 'models'
    log = ''.join(p.read_text() for p in (workdir / 'experiments' / 'kd_ddp').glob('train_*.log'))
    assert 'world_size: 2' in log and 'dist: True' in log
    for name in ('l_pix', 'l_enh', 'l_distill', 'l_feat'):
        assert f'{name}: ' in log, name
    assert '# psnr:' in log  # rank-0 validation ran
    dumps = [torch.load(models / f'rank{rank}_{ITERS}.pth', weights_only=True) for rank in (0, 1)]
    for dump in dumps:
        assert dump['types'] == {'net_g': 'DistributedDataParallel', 'net_t': 'EDSR',
                                 'adapters': 'DistributedDataParallel'}
        assert dump['teacher_training'] is False
    # ranks trained on different patches: identical weights mean the gradients were all-reduced
    for part in ('net_g', 'adapters'):
        assert _digest(dumps[0][part]) == _digest(dumps[1][part]), part
    saved_g = torch.load(models / f'net_g_{ITERS}.pth', weights_only=True)['params']
    saved_adapters = torch.load(models / f'net_adapters_{ITERS}.pth', weights_only=True)['params']
    assert _digest(saved_g) == _digest(dumps[1]['net_g'])
    assert _digest(saved_adapters) == _digest(dumps[1]['adapters'])
    original = torch.load(teacher, weights_only=True)['params']
    for dump in dumps:
        assert set(dump['teacher']) == set(original)
        assert all(torch.equal(dump['teacher'][k], original[k]) for k in original)
    assert teacher.read_bytes() == teacher_bytes
    assert not list(models.glob('net_t*'))


if __name__ == '__main__':
    import ddsr  # noqa: F401  (compat + registration)
    from ddsr.cli import run_pipeline

    _register_dumping_model()
    sys.exit(run_pipeline('train', sys.argv[1:]))
