"""Two-node launch, on one machine: two tools/dist_train.sh invocations with NNODES=2 and
NODE_RANK 0 / 1, one CPU process each (gloo), train the tiny UperNet together and write
one checkpoint."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k

from helpers.dist import free_port, tiny_overrides
from helpers.tools import ROOT

CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


@pytest.mark.slow
def test_two_nodes_train_together(tmp_path):
    data_root = str(tmp_path / 'data')
    generate_synthetic_ade20k(data_root, num_train=8, num_val=4, size=(64, 64))
    work = tmp_path / 'work'  # the shared file system of a real cluster
    port = str(free_port())
    procs = []
    for node in (0, 1):
        env = dict(os.environ, PYTHON=sys.executable, NNODES='2', NODE_RANK=str(node),
                   MASTER_ADDR='127.0.0.1', PORT=port, OMP_NUM_THREADS='1')
        cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CONFIG, '1',
               '--work-dir', str(work), '--cfg-options'] + tiny_overrides(data_root, 3)
        log = open(tmp_path / f'node{node}.log', 'w')
        procs.append((subprocess.Popen(cmd, cwd=str(tmp_path), env=env, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    rcs = []
    for proc, log in procs:
        try:
            rcs.append(proc.wait(timeout=900))
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    logs = [(tmp_path / f'node{n}.log').read_text() for n in (0, 1)]
    assert rcs == [0, 0], '\n=====\n'.join(log[-3000:] for log in logs)
    assert 'world_size: 2' in logs[0] or 'Distributed launcher: pytorch' in logs[0]
    assert 'Iter(train) [3/3]' in logs[0], logs[0][-3000:]
    assert '[rank 0] process group destroyed, no communication thread left' in logs[0]
    assert '[rank 1] process group destroyed, no communication thread left' in logs[1]
    ckpts = sorted(p.name for p in work.iterdir() if p.suffix == '.pth')
    assert ckpts == ['iter_3.pth'], ckpts
