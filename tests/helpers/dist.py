"""The end-to-end training tests' shared pieces (test_dist_train, test_dist_pretrain,
test_dist_train_detection, test_two_node, test_strict_load): a free port, the tiny
segmentation quickstart's overrides (``tools/analysis/stress_dist_exit.py``'s) and a
tools/test.py run."""
import os.path as osp
import subprocess
import sys

from helpers.tools import ROOT, load_tool

_stress = load_tool('analysis', 'stress_dist_exit.py')
free_port = _stress.free_port
tiny_overrides = _stress.tiny_overrides


def overrides(data_root, iters):
    """--cfg-options shrinking the segmentation quickstart config to ``iters`` iterations
    (two of warm-up) of a 4-block, width-32 model on ``data_root``."""
    return tiny_overrides(data_root, iters, warmup=2)


def run_test_tool(config, ckpt, tmp_path, env, cfg_options, args=()):
    """Run tools/test.py (with ``args``) on a checkpoint in ``tmp_path``; return its log
    (exit 0 checked)."""
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, ckpt, '--work-dir',
           str(tmp_path / 'test'), *args, '--cfg-options'] + cfg_options
    run = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]
    return log
