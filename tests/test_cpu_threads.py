"""The CPU threading policy (ddsr.cpu_threads): applied by every entry point before torch loads its OpenMP runtime
(seen in the runtime's own report, ``OMP_DISPLAY_ENV``), the user's settings win, ``DDSR_THREADS=off`` restores the
runtimes' defaults. Each check runs in a fresh interpreter: the runtime reads its settings once, when it loads."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ddsr import cpu_threads
from tests.conftest import PRETRAINED, REPO_ROOT

POLICY_SPIN = f"GOMP_SPINCOUNT = '{cpu_threads.GOMP_SPINCOUNT}'"
DEFAULT_SPIN = "GOMP_SPINCOUNT = '300000'"  # libgomp's default
USER_VARS = ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME', 'DDSR_THREADS')


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in USER_VARS}
    env.update(PYTHONPATH=str(REPO_ROOT), OMP_DISPLAY_ENV='VERBOSE', **extra)
    return env


def _python(code: str, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                          env=_env(**extra), cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _cli(args: list, cwd, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'ddsr.cli', *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=_env(**extra), cwd=str(cwd))


def _report(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


ONE_CPU = 'import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); '  # affinity: 1 CPU
QUOTA_1 = 'import ddsr.cpu_threads as c; c.cgroup_cpu_limit = lambda: 1.0; '  # a cgroup quota of 1 CPU
PROBE = ('import json, torch, ddsr.cpu_threads as c; torch.ones(256, 256).matmul(torch.ones(256, 256)); '
         'print(json.dumps({"threads": torch.get_num_threads(), "adapter": "adapter" in c._state, '
         '"env": c._state.get("env")}))')


def test_torch_ships_libgomp():
    """The spin limit chosen is libgomp's (GOMP_SPINCOUNT): the runtime of the installed torch."""
    assert cpu_threads.openmp_runtime() == 'gomp'


def test_policy_reaches_the_openmp_runtime_before_it_loads():
    applied = _python('from ddsr import cpu_threads; cpu_threads.apply(); ' + PROBE)
    assert POLICY_SPIN in applied.stderr
    off = _python('from ddsr import cpu_threads; cpu_threads.apply(); ' + PROBE, DDSR_THREADS='off')
    assert DEFAULT_SPIN in off.stderr and _report(off)['env'] == {}
    late = _python('import torch; from ddsr import cpu_threads; cpu_threads.apply(); ' + PROBE)
    assert DEFAULT_SPIN in late.stderr and _report(late)['env'] == {}  # too late: nothing set, nothing claimed


def test_applied_once():
    code = ('import os; from ddsr import cpu_threads as c; first = c.apply(); os.environ["GOMP_SPINCOUNT"] = "7"; '
            'assert c.apply() is first and c.apply(threads=1) is first; print(first["env"])')
    assert _python(code).stdout.strip() == f"{{'GOMP_SPINCOUNT': '{cpu_threads.GOMP_SPINCOUNT}'}}"


@pytest.mark.skipif(cpu_threads.machine_cores() < 2, reason='needs a machine with 2+ cores')
def test_thread_count_from_the_cpus_this_process_may_use():
    mine = _report(_python(QUOTA_1 + 'c.apply(); ' + PROBE))
    assert mine['threads'] == 1 and mine['env']['OMP_NUM_THREADS'] == '1' and not mine['adapter']
    today = _report(_python(QUOTA_1 + 'c.apply(); ' + PROBE, DDSR_THREADS='off'))
    plain = _python('import torch; print(torch.get_num_threads())', DDSR_THREADS='off')  # PyTorch without ddsr
    assert today['threads'] == int(plain.stdout.split()[-1])  # off: PyTorch's own count, the quota ignored
    assert _report(_python(ONE_CPU + 'import ddsr.cpu_threads as c; c.apply(); ' + PROBE))['threads'] == 1


def test_user_settings_win():
    user = _python('from ddsr import cpu_threads; cpu_threads.apply(); ' + PROBE, OMP_NUM_THREADS='1',
                   OMP_WAIT_POLICY='ACTIVE')
    assert _report(user) == {'threads': 1, 'adapter': False, 'env': {}}
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in user.stderr and POLICY_SPIN not in user.stderr
    spin = _python('from ddsr import cpu_threads; cpu_threads.apply(); ' + PROBE, GOMP_SPINCOUNT='5')
    assert "GOMP_SPINCOUNT = '5'" in spin.stderr and 'GOMP_SPINCOUNT' not in _report(spin)['env']
    threads = _report(_python('from ddsr import cpu_threads; cpu_threads.apply(threads=1); ' + PROBE))
    assert not threads['adapter'] and 'OMP_NUM_THREADS' not in threads['env']  # the command's --threads rules


def test_adapter_changes_the_count_in_the_thread_that_runs_the_network():
    code = ('import time, torch, ddsr.cpu_threads as c; from torch.nn.modules import module; wanted = [1]; '
            'c.decide = lambda *args: wanted[0]; c.INTERVAL_S = 0.1; a = c.Adapter(2); '
            'conv = torch.nn.Conv2d(3, 3, 3); time.sleep(1); conv(torch.ones(1, 3, 8, 8)); '
            'n1 = torch.get_num_threads(); wanted[0] = 2; time.sleep(1); conv(torch.ones(1, 3, 8, 8)); '
            'print(n1, torch.get_num_threads(), a.changes, len(module._global_forward_pre_hooks))')
    assert _python(code).stdout.split() == ['1', '2', '2', '0']  # the hook is gone once it made the change


def test_decide():
    s = 1e9  # ns in a second
    assert cpu_threads.decide(2, 2, run_ns=1.8 * s, wait_ns=0.1 * s, idle_cpu_s=0.1, wall_s=1) == 2  # alone
    assert cpu_threads.decide(2, 2, run_ns=0.7 * s, wait_ns=1.2 * s, idle_cpu_s=0, wall_s=1) == 1  # crowded
    assert cpu_threads.decide(2, 2, run_ns=0.01 * s, wait_ns=0.01 * s, idle_cpu_s=0, wall_s=1) == 2  # not computing
    assert cpu_threads.decide(1, 2, run_ns=0.5 * s, wait_ns=0.5 * s, idle_cpu_s=0.1, wall_s=1) == 1  # still crowded
    assert cpu_threads.decide(1, 2, run_ns=1.0 * s, wait_ns=0, idle_cpu_s=0.95, wall_s=1) == 2  # room again


def test_cgroup_quota(tmp_path):
    (tmp_path / 'cpu.max').write_text('150000 100000\n')
    assert cpu_threads.cgroup_cpu_limit(str(tmp_path)) == 1.5
    (tmp_path / 'cpu.max').write_text('max 100000\n')
    assert cpu_threads.cgroup_cpu_limit(str(tmp_path)) is None
    assert cpu_threads.cgroup_cpu_limit(str(tmp_path / 'none')) is None


def test_onnxruntime_options():
    ort = pytest.importorskip('onnxruntime')
    opts = ort.SessionOptions()
    cpu_threads.configure_ort(opts, 3)
    assert opts.intra_op_num_threads == 3 and opts.get_session_config_entry(cpu_threads.ORT_SPINNING) == '0'
    os.environ[cpu_threads.SWITCH] = 'off'
    try:
        today = ort.SessionOptions()
        cpu_threads.configure_ort(today, None)
        assert today.intra_op_num_threads == 0  # onnxruntime's default
        with pytest.raises(RuntimeError, match='does not have configuration'):
            today.get_session_config_entry(cpu_threads.ORT_SPINNING)
    finally:
        del os.environ[cpu_threads.SWITCH]


def _write_image(folder) -> None:
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8))


def test_basicsr_pipeline_applies_it(tmp_path):
    (tmp_path / 'bad.yml').write_text('name: t\nmodel_type: SRModel\nscale: 4\nnum_gpu: 0\n'
                                      'network_g: {type: DIPNet}\npath: {}\n')
    for extra, spin in (({}, POLICY_SPIN), ({'DDSR_THREADS': 'off'}, DEFAULT_SPIN)):
        proc = _cli(['basicsr', 'test', '-opt', 'bad.yml'], tmp_path, **extra)
        assert proc.returncode == 2 and spin in proc.stderr, proc.stderr[-2000:]


def test_ddsr_commands_apply_it(tmp_path):
    _write_image(tmp_path / 'in')
    args = ['upscale', '--weights', PRETRAINED / 'DIPNet_x4.pth', '-i', 'in', '--backend', 'torch']
    proc = _cli([*args, '-o', 'out'], tmp_path)
    assert proc.returncode == 0 and POLICY_SPIN in proc.stderr, proc.stderr[-2000:]
    proc = _cli([*args, '-o', 'out2'], tmp_path, DDSR_THREADS='off')
    assert proc.returncode == 0 and DEFAULT_SPIN in proc.stderr, proc.stderr[-2000:]


def test_threads_flag_wins(tmp_path):
    _write_image(tmp_path / 'in')
    code = ('import json, sys, torch; from ddsr.cli import ddsr_main; import ddsr.cpu_threads as c; '
            f'code = ddsr_main(["upscale", "--weights", "{PRETRAINED / "DIPNet_x4.pth"}", "-i", "{tmp_path / "in"}", '
            f'"-o", "{tmp_path / "out"}", "--backend", "torch", "--threads", "1"]); '
            'print(json.dumps({"code": code, "threads": torch.get_num_threads(), "adapter": "adapter" in c._state}))')
    assert _report(_python(code)) == {'code': 0, 'threads': 1, 'adapter': False}


def test_image_upscaler_applies_it_and_a_users_count_wins():
    weights = PRETRAINED / 'DIPNet_x4.pth'
    early = _python(f'from ddsr import ImageUpscaler; up = ImageUpscaler.from_file("{weights}"); ' + PROBE)
    assert POLICY_SPIN in early.stderr and not _report(early)['adapter']
    if cpu_threads.machine_cores() >= 2:  # torch imported first: the count only, lowered to the CPUs allowed
        late = _report(_python(QUOTA_1 + f'import torch; from ddsr import ImageUpscaler; '
                                         f'up = ImageUpscaler.from_file("{weights}"); ' + PROBE))
        assert late['threads'] == 1
        users = _report(_python(QUOTA_1 + f'import torch; torch.set_num_threads(3); from ddsr import ImageUpscaler; '
                                          f'up = ImageUpscaler.from_file("{weights}"); ' + PROBE))
        assert users['threads'] == 3
