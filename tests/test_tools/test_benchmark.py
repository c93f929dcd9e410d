"""The backbone benchmark runs end to end and reports every figure the README records."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from mmplugin_shufflemamba.ops import has_selective_scan_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_benchmark_reports_all_figures(tmp_path):
    out = tmp_path / 'bench.json'
    run = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark_backbones.py', '--sizes', '32', '64',
         '--reps', '1', '--slws-reps', '1', '--slws-size', '64', '--adapter-size', '64',
         '--json', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert '| figure | value | target | ok |' in run.stdout
    res = json.loads(out.read_text())['results']
    for size in (32, 64):
        for key in (f'eval_fwd_ratio@{size}', f'train_step_ratio@{size}',
                    f'train_mem_ratio@{size}', f'sm_eval_s@{size}', f'vit_train_s@{size}'):
            assert key in res and math.isfinite(res[key]) and res[key] > 0, key
    assert math.isfinite(res['slws_overhead_pct'])
    for key in ('adapter_eval_fwd_ratio', 'adapter_train_step_ratio'):
        assert math.isfinite(res[key]) and res[key] > 0, key
    assert res['scan_speedup_vs_sequential_ref'] > 0
    if has_selective_scan_cpu():  # the compiled scan is far ahead of the sequential loop
        assert 'scan_fwd_s[compiled_cpu]' in res
        assert res['scan_speedup_vs_sequential_ref'] > 3


@pytest.mark.slow
def test_gpu_protocol_runs_on_the_cpu_with_tiny_cases(tmp_path):
    """The GPU protocol's code path (timm and mmseg ViT-B beside ShuffleMamba-B, the
    UperNet step of both configs, peak memory, targets, kernel report), on tiny cases."""
    out = tmp_path / 'gpu.json'
    run = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark_backbones.py', '--protocol', 'gpu',
         '--device', 'cpu', '--reps', '1', '--cases', 'backbone:32:1:float32',
         'upernet:32:2:bfloat16', 'mixer:32:2:float32', '--slws-case',
         'backbone:32:1:float32', '--json',
         str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'kernel: selective_scan:' in run.stdout
    data = json.loads(out.read_text())
    res = data['results']
    for key in ('step_ratio_vs_timm[backbone:32:1:float32]',
                'step_ratio_vs_mmseg[backbone:32:1:float32]',
                'mem_mib[timm-vit-b][backbone:32:1:float32]',
                'step_ratio_vs_mmseg[upernet:32:2:bfloat16]', 'slws_overhead_pct',
                'slws_device_draw_overhead_pct',
                'step_ratio_lean_vs_composed[mixer:32:2:float32]'):
        assert key in res and math.isfinite(res[key]), key
    assert res['step_s[shufflemamba-b][upernet:32:2:bfloat16]'] > 0
    assert 'selective_scan' in data['info']['kernels']


@pytest.mark.parametrize('args, words', [
    (['--sizes', '0'], '--sizes must be >= 16, got 0'),
    (['--slws-reps', '0'], '--slws-reps must be >= 1, got 0'),
    (['--protocol', 'gpu', '--cases', 'backbone:512:0:bfloat16'], 'bad case'),
    (['--protocol', 'gpu', '--cases', 'vit:512:2:float32'], 'bad case'),
    (['--protocol', 'gpu', '--slws-case', 'mixer:512:2:float32'], 'bad --slws-case'),
    (['--protocol', 'gpu', '--compile', '--compile-backend', 'aot_eager', '--compile-mode',
      'reduce-overhead'], '--compile-mode is a mode of the inductor backend'),
])
def test_benchmark_options_are_checked(args, words):
    run = subprocess.run([sys.executable, 'tools/analysis/benchmark_backbones.py', *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert words in run.stderr


def test_benchmark_upernet_case_needs_two_images():
    run = subprocess.run([sys.executable, 'tools/analysis/benchmark_backbones.py',
                          '--protocol', 'gpu', '--cases', 'upernet:64:1:float32'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and 'needs batch >= 2' in run.stderr


def _gpu_checks(tmp_path, *args):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop('OUT', None)
    return subprocess.run(['bash', 'tools/analysis/gpu_checks.sh', *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_gpu_checks_runs_every_step(tmp_path):
    """The one-command GPU check on a machine without a GPU: the kernel report, the GPU
    tests (skipped, with the reason), the protocol with the options given after -- (here
    also the compiled mixer)."""
    out = tmp_path / 'checks'
    run = _gpu_checks(tmp_path, str(out), '--', '--device', 'cpu', '--reps', '1',
                      '--cases', 'mixer:32:1:float32', '--slws-case', 'none', '--compile',
                      '--compile-backend', 'aot_eager')
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert 'kernel for cuda tensors: selective_scan:' in run.stdout
    assert '== GPU tests: exit 0' in run.stdout
    res = json.loads((out / 'gpu_protocol.json').read_text())['results']
    assert res['step_ratio_lean_vs_composed[mixer:32:1:float32]'] > 0
    assert res['step_ratio_compiled_vs_eager[mixer:32:1:float32]'] > 0
    assert {'kernels.txt', 'tests.log', 'benchmark.log'} <= set(os.listdir(out))
    if not torch.cuda.is_available():
        assert 'No GPU is visible' in run.stdout
        assert 'needs a GPU and mamba-ssm' in (out / 'tests.log').read_text()


def test_gpu_checks_fails_when_a_step_fails(tmp_path):
    run = _gpu_checks(tmp_path, str(tmp_path / 'checks'), '--', '--cases', 'vit:1:1:x')
    assert run.returncode == 1
    assert 'FAILED: GPU benchmark protocol' in run.stdout
    bad = _gpu_checks(tmp_path, str(tmp_path / 'checks'), '--reps', '1')
    assert bad.returncode == 2 and 'benchmark options go after --' in bad.stderr
