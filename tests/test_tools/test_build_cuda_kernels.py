"""tools/build_cuda_kernels.py: the setup.py patch that builds for one GPU architecture,
and the messages on a machine without a GPU or without the sources."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from helpers.tools import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'build_cuda_kernels.py')

# The shape of mamba-ssm's and causal-conv1d's setup.py: flags appended per CUDA version.
SETUP = '''
import os
bare = (13, 0)
cc_flag = []
if os.environ.get("ROCM"):
    cc_flag.append("-DBUILD_PYTHON_PACKAGE")
else:
    cc_flag.append("-gencode")
    cc_flag.append("arch=compute_75,code=sm_75")
    cc_flag.append("-gencode")
    cc_flag.append("arch=compute_80,code=sm_80")
    if bare >= (11, 8):
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_90,code=sm_90")
    if bare >= (13, 0):
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_121,code=sm_121")
cc_flag.append("--use_fast_math")

# HACK: a comment at the outer level
FLAGS = cc_flag
'''


def _tool():
    return load_tool('build_cuda_kernels.py')


def _flags(text):
    scope = {}
    exec(compile(text, 'setup.py', 'exec'), scope)
    return scope['FLAGS']


def test_patch_builds_for_one_architecture_and_keeps_other_flags():
    tool = _tool()
    assert _flags(SETUP).count('-gencode') == 4
    patched = tool.patch_gencode(SETUP, '9.0')
    flags = _flags(patched)
    assert flags == ['-gencode', 'arch=compute_90,code=sm_90', '--use_fast_math']
    assert tool.patch_gencode(patched, '9.0') == patched  # idempotent
    assert _flags(tool.patch_gencode(SETUP, '8.6'))[:2] == ['-gencode',
                                                            'arch=compute_86,code=sm_86']


def test_patch_refuses_a_setup_without_gencode_flags():
    with pytest.raises(ValueError, match='no cc_flag -gencode flags'):
        _tool().patch_gencode('cc_flag = []\nprint(1)\n', '9.0')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-GPU message')
def test_without_a_gpu_it_says_so_and_fails(tmp_path):
    run = subprocess.run([sys.executable, TOOL, '--cache', str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert 'no CUDA GPU visible' in run.stderr and '--arch' in run.stderr


def test_missing_source_offline_names_the_file_to_copy(tmp_path, monkeypatch):
    tool = _tool()
    # An unreachable index: pip download fails fast.
    monkeypatch.setenv('PIP_INDEX_URL', 'http://127.0.0.1:9/simple')
    monkeypatch.setenv('PIP_NO_INDEX', '1')
    with pytest.raises(RuntimeError, match='mamba_ssm-2.3.2.post1.tar.gz'):
        tool.find_source(str(tmp_path), 'mamba-ssm', '2.3.2.post1', 'mamba_ssm')


def test_bad_arguments_are_refused(tmp_path):
    run = subprocess.run([sys.executable, TOOL, '--arch', 'sm90', '--cache', str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and '--arch must look like 9.0' in run.stderr
