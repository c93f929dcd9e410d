"""Bad arguments to the launch scripts (tools/dist_*.sh, tools/slurm_*.sh) stop them
before torchrun or srun starts anything: exit status 2 and a line that names the problem;
--help / -h print the usage line. Paths with spaces reach the tools as one argument.

``srun`` and ``python -m torch.distributed.run`` are fakes that record their arguments
(one per line would split nothing here, so NUL-separated) and start nothing."""
import os
import subprocess
import sys

import pytest

from helpers.tools import tool_path


@pytest.fixture
def launch(tmp_path):
    """``launch(script, *args, **env)``: run tools/<script> in ``tmp_path`` (which holds
    'my config.py' and 'my ckpt.pth') with a fake srun first on PATH and a fake torchrun
    behind PYTHON; returns (exit status, stdout, stderr, the launcher's argv or None)."""
    (tmp_path / 'my config.py').write_text('x = 1\n')
    (tmp_path / 'my ckpt.pth').write_bytes(b'')
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    argv_file = tmp_path / 'launcher_argv'
    record = f'printf "%s\\0" "$@" > "{argv_file}"; exit 0'
    (bin_dir / 'srun').write_text(f'#!/bin/sh\n{record}\n')
    (bin_dir / 'python').write_text(
        '#!/bin/sh\n'
        f'if [ "$1" = -m ] && [ "$2" = torch.distributed.run ]; then {record}; fi\n'
        f'exec "{sys.executable}" "$@"\n')
    for fake in bin_dir.iterdir():
        fake.chmod(0o755)

    def run(script, *args, **env):
        if argv_file.exists():
            argv_file.unlink()
        env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
                   PYTHON=str(bin_dir / 'python'), **env)
        res = subprocess.run(['bash', tool_path(script)] + list(args), env=env,
                             cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
        argv = argv_file.read_text().split('\0')[:-1] if argv_file.exists() else None
        return res.returncode, res.stdout, res.stderr, argv

    return run


@pytest.mark.parametrize('script, args', [
    ('slurm_train.sh', ['PART', 'JOB', 'my config.py']),
    ('slurm_test.sh', ['PART', 'JOB', 'my config.py', 'my ckpt.pth']),
])
def test_slurm_usage(launch, script, args):
    for flag in ('--help', '-h'):
        rc, out, _, argv = launch(script, flag)
        assert (rc, argv) == (0, None)
        assert out.startswith('usage: ') and ' PARTITION JOB_NAME CONFIG ' in out
    for missing in range(len(args)):  # no srun -p --job-name= ... with missing arguments
        rc, _, err, argv = launch(script, *args[:missing])
        assert (rc, argv) == (2, None), err
        assert 'usage: ' in err
    rc, _, err, argv = launch(script, '--partition=gpu', *args[1:])
    assert (rc, argv) == (2, None)
    assert "PARTITION '--partition=gpu' looks like an option" in err
    assert 'SRUN_ARGS' in err


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_counts_say_what_they_count(launch, script):
    args = ['PART', 'JOB', 'my config.py', 'my ckpt.pth'][:4 if 'test' in script else 3]
    for env, words in (('GPUS', 'GPUS must be a positive integer (the total number of '
                                'tasks, one per GPU)'),
                       ('GPUS_PER_NODE', 'GPUS_PER_NODE must be a positive integer (tasks, '
                                         'one per GPU, on each node)')):
        rc, _, err, argv = launch(script, *args, **{env: '4x'})
        assert (rc, argv) == (2, None) and words in err, err


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_jobs_fill_their_nodes(launch, script):
    args = ['PART', 'JOB', 'my config.py', 'my ckpt.pth'][:4 if 'test' in script else 3]
    rc, _, err, argv = launch(script, *args, CPUS_PER_TASK='0')
    assert (rc, argv) == (2, None)
    assert 'CPUS_PER_TASK must be a positive integer (CPU cores per task' in err, err
    rc, _, err, argv = launch(script, *args, GPUS='12')
    assert (rc, argv) == (2, None)
    assert (f'{script}: GPUS=12 is not a multiple of GPUS_PER_NODE=8: each node holds 8 '
            'GPUs (--gres) and the last would use 4 of them; use GPUS=16 or a '
            'GPUS_PER_NODE that divides 12') in err, err
    rc, _, err, argv = launch(script, *args, GPUS='2')
    assert rc == 0, err
    assert '--gres=gpu:2' in argv and '--ntasks-per-node=2' in argv, argv
    assert 'GPUS=2: one node with 2 GPUs (not GPUS_PER_NODE=8)' in err
    rc, _, err, argv = launch(script, *args, GPUS='012', GPUS_PER_NODE='4',
                              CPUS_PER_TASK='10')
    assert rc == 0, err
    assert {'--gres=gpu:4', '--ntasks=12', '--ntasks-per-node=4',
            '--cpus-per-task=10'} <= set(argv), argv


def test_dist_gpus_count_message_reads_as_one_line(launch, tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text('x = 1\n')
    rc, _, err, argv = launch('dist_train.sh', str(cfg), 'x')
    assert (rc, argv) == (2, None)
    assert err.strip() == ("dist_train.sh: GPUS must be a positive integer (processes per "
                           "node: GPUs, or CPU processes without CUDA), got 'x'")


def test_slurm_test_names_the_missing_checkpoint(launch):
    rc, _, err, argv = launch('slurm_test.sh', 'PART', 'JOB', 'my config.py')
    assert (rc, argv) == (2, None)
    assert err.splitlines()[0] == 'slurm_test.sh: CHECKPOINT is missing'


MISSING_CONFIG = "config file 'nowhere.py' does not exist (relative to TMP)"
MISSING_CKPT = "checkpoint 'no.pth' does not exist (relative to TMP)"


@pytest.mark.parametrize('script, args, words', [
    ('slurm_train.sh', ['P', 'J', 'nowhere.py'], MISSING_CONFIG),
    ('slurm_train.sh', ['P', 'J', '.'], "config file '.' is a directory, not a file"),
    ('slurm_test.sh', ['P', 'J', 'nowhere.py', 'my ckpt.pth'], MISSING_CONFIG),
    ('slurm_test.sh', ['P', 'J', 'my config.py', 'no.pth'], MISSING_CKPT),
    ('dist_train.sh', ['nowhere.py', '2'], MISSING_CONFIG),
    ('dist_test.sh', ['nowhere.py', 'my ckpt.pth', '2'], MISSING_CONFIG),
    ('dist_test.sh', ['my config.py', 'no.pth', '2'], MISSING_CKPT),
])
def test_missing_files_stop_before_launching(launch, tmp_path, script, args, words):
    rc, _, err, argv = launch(script, *args)
    assert (rc, argv) == (2, None), err
    assert err.strip() == f'{script}: ' + words.replace('TMP', str(tmp_path))


@pytest.mark.parametrize('args', [['my config.py', '8', '--tta'], ['my config.py', '8']])
def test_dist_test_names_a_forgotten_checkpoint(launch, args):
    rc, _, err, argv = launch('dist_test.sh', *args)
    assert (rc, argv) == (2, None)
    assert err.startswith("dist_test.sh: CHECKPOINT is missing ('8' is the GPU count); "
                          'usage: ')
    assert 'CONFIG CHECKPOINT GPUS' in err


def test_dist_test_names_a_swapped_gpu_count_and_checkpoint(launch):
    rc, _, err, argv = launch('dist_test.sh', 'my config.py', '2', 'my ckpt.pth')
    assert (rc, argv) == (2, None)
    assert err.startswith("dist_test.sh: the checkpoint comes before the GPU count ('2' is "
                          "the GPU count, 'my ckpt.pth' the checkpoint)"), err


def test_dist_usage(launch):
    for script in ('dist_train.sh', 'dist_test.sh'):
        rc, out, _, argv = launch(script, '--help')
        assert (rc, argv) == (0, None) and out.startswith('usage: ')


def test_paths_with_spaces_reach_the_tools_whole(launch, tmp_path):
    rc, _, err, argv = launch('slurm_test.sh', 'PART', 'my job', 'my config.py',
                              'my ckpt.pth', '--tta', GPUS='4', SRUN_ARGS='--time=1:00 -x n1')
    assert rc == 0, err
    assert argv[:2] == ['-p', 'PART'] and '--job-name=my job' in argv
    assert '--ntasks=4' in argv and argv.index('--time=1:00') + 2 == argv.index('n1')
    assert argv[-5:] == [tool_path('test.py'), 'my config.py', 'my ckpt.pth',
                         '--launcher=slurm', '--tta']
    rc, _, err, argv = launch('slurm_train.sh', 'PART', 'JOB', 'my config.py', '--amp')
    assert rc == 0, err
    assert argv[-4:] == [tool_path('train.py'), 'my config.py', '--launcher=slurm', '--amp']
    rc, _, err, argv = launch('dist_test.sh', 'my config.py', 'my ckpt.pth', '2', '--tta')
    assert rc == 0, err
    assert '--nproc_per_node=2' in argv
    assert argv[-6:] == [tool_path('test.py'), 'my config.py', 'my ckpt.pth', '--launcher',
                         'pytorch', '--tta']
