"""setup.py: a build without torch stops with the fix (pip's isolated build has no torch),
metadata and the sdist need no torch, and the sdist carries the kernel sources."""
import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_torch_env(tmp_path):
    """An environment in which ``import torch`` fails, as in pip's isolated build."""
    fake = tmp_path / 'no_torch' / 'torch'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text("raise ImportError('torch is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent))
    env.pop('SHUFFLEMAMBA_NO_EXT', None)
    return env


def run_setup(args, env, cwd=ROOT):
    return subprocess.run([sys.executable, 'setup.py', *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_wheel_build_without_torch_names_the_fix(no_torch_env):
    proc = run_setup(['bdist_wheel'], no_torch_env)
    assert proc.returncode != 0
    assert 'needs torch in the build environment' in proc.stderr
    assert '--no-build-isolation' in proc.stderr
    assert 'SHUFFLEMAMBA_NO_EXT=1' in proc.stderr
    assert 'torch is not installed here' in proc.stderr


def test_metadata_without_torch(no_torch_env):
    proc = run_setup(['--version'], no_torch_env)
    assert proc.returncode == 0, proc.stderr
    from mmplugin_shufflemamba import __version__
    assert proc.stdout.strip().splitlines()[-1] == __version__


def test_sdist_without_torch_has_kernel_sources_and_no_tests(no_torch_env, tmp_path):
    out = tmp_path / 'dist'
    proc = run_setup(['-q', 'egg_info', '--egg-base', str(tmp_path), 'sdist', '--dist-dir',
                      str(out)], no_torch_env)
    assert proc.returncode == 0, proc.stderr
    (archive, ) = out.glob('*.tar.gz')
    with tarfile.open(archive) as tar:
        names = [n.split('/', 1)[1] for n in tar.getnames() if '/' in n]
    assert 'setup.py' in names
    assert 'mmplugin_shufflemamba/ops/csrc/bindings.cpp' in names
    assert 'mmplugin_shufflemamba/ops/csrc/isa/selective_scan_avx2.cpp' in names
    assert 'configs/upernet_shufflemamba_b.py' in names
    assert not [n for n in names if n.startswith('tests/')]


def test_the_package_list_holds_the_kernel_sources_folder():
    """The data-only csrc folders are packages of the distribution (their sources ship in
    the wheel without setuptools' 'absent from packages' warning)."""
    code = ('import runpy, setuptools, sys; captured = {}\n'
            'setuptools.setup = lambda **kw: captured.update(kw)\n'
            "sys.argv = ['setup.py', '--version']\n"
            "runpy.run_path('setup.py', run_name='__main__')\n"
            "print(sorted(captured['packages']))")
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, SHUFFLEMAMBA_NO_EXT='1'))
    assert proc.returncode == 0, proc.stderr
    packages = eval(proc.stdout.strip().splitlines()[-1])
    assert 'mmplugin_shufflemamba.ops.csrc' in packages
    assert 'mmplugin_shufflemamba.ops.csrc.isa' in packages
    assert not [p for p in packages if not p.startswith('mmplugin_shufflemamba')]
