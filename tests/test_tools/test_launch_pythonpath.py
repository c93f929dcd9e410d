"""tools/pythonpath.sh (sourced by dist_*.sh and slurm_*.sh): the checkout goes on
PYTHONPATH only for an interpreter that cannot import the package, so an installed build
(with its compiled kernels) is not shadowed by the checkout's sources."""
import os
import subprocess
import sys

from helpers.tools import ROOT, tool_path

SNIPPET = 'source "$ROOT/tools/pythonpath.sh"; printf %s "${PYTHONPATH-<unset>}"'


def _pythonpath(python: str, cwd: str, env_path=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    if env_path is not None:
        env['PYTHONPATH'] = env_path
    env.update(ROOT=ROOT, PYTHON=python)
    return subprocess.run(['bash', '-c', SNIPPET], env=env, cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def test_installed_package_is_not_shadowed(tmp_path):
    # This interpreter imports the package without the checkout on PYTHONPATH.
    assert _pythonpath(sys.executable, str(tmp_path)) == '<unset>'
    assert _pythonpath(sys.executable, str(tmp_path), '/x') == '/x'


def test_checkout_added_when_the_package_is_not_importable(tmp_path):
    fake = tmp_path / 'python'  # an interpreter that cannot find the package
    # (but passes the torch check, which is tested below)
    fake.write_text('#!/bin/sh\n[ "$2" = "import torch" ] && exit 0\n'
                    f'exec {sys.executable} -S -I "$@"\n')
    fake.chmod(0o755)
    assert _pythonpath(str(fake), str(tmp_path)) == ROOT
    assert _pythonpath(str(fake), str(tmp_path), '/x') == f'{ROOT}:/x'
    # Run from the checkout itself, the current directory does not count as installed.
    assert _pythonpath(str(fake), ROOT) == ROOT


def test_every_launch_script_sources_it():
    for name in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh'):
        with open(tool_path(name)) as f:
            text = f.read()
        assert 'source "$ROOT/tools/pythonpath.sh"' in text, name
        assert 'PYTHONPATH="$ROOT' not in text, name


def test_an_interpreter_without_torch_is_named(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -S -I "$@"\n')  # no site-packages
    fake.chmod(0o755)
    run = subprocess.run(['bash', tool_path('dist_train.sh'), 'CONFIG', '2'],
                         env=dict(os.environ, PYTHON=str(fake)), capture_output=True,
                         text=True, cwd=str(tmp_path))
    assert run.returncode == 2
    assert f"'{fake}' cannot import torch (ModuleNotFoundError: No module named" in run.stderr
    assert 'source .venv/bin/activate' in run.stderr and 'PYTHON=' in run.stderr
    # The slurm scripts run the interpreter on the compute nodes: no check on this host.
    run = subprocess.run(['bash', tool_path('slurm_train.sh'), 'P', 'J', 'CONFIG'],
                         env=dict(os.environ, PYTHON=str(fake), GPUS='0'),
                         capture_output=True, text=True, cwd=str(tmp_path))
    assert run.returncode == 2 and 'cannot import torch' not in run.stderr
    assert "GPUS must be a positive integer" in run.stderr


def test_process_counts_must_be_positive_integers(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    for script, args, extra, bad in (
            ('dist_train.sh', ['CONFIG', '0'], {}, "GPUS must be a positive integer"),
            ('dist_train.sh', ['CONFIG', '00'], {}, "got '00'"),
            ('dist_test.sh', ['CONFIG', 'CKPT', 'two'], {}, "GPUS must be a positive integer"),
            ('slurm_train.sh', ['P', 'J', 'CONFIG'], dict(GPUS='-1'), "got '-1'"),
            ('slurm_test.sh', ['P', 'J', 'CONFIG', 'CKPT'], dict(GPUS_PER_NODE='x'),
             "GPUS_PER_NODE must be a positive integer")):
        run = subprocess.run(['bash', tool_path(script)] + args, env=dict(env, **extra),
                             capture_output=True, text=True, cwd=str(tmp_path))
        assert run.returncode == 2, (script, run.stderr[-500:])
        assert bad in run.stderr, (script, run.stderr[-500:])
