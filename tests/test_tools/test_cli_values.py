"""Numeric command-line arguments: 0 is a value, not "unset". Each tool either honours it
or stops with argparse's exit status 2 and a message that names the argument and the
valid range (tools/quickstart.py, tools/convert_checkpoint.py, tools/analysis/*)."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from helpers.tools import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _usage_error(capsys, fn, argv):
    """Run ``fn(argv)``; return argparse's error line (exit status 2 asserted)."""
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_quickstart_max_iters_0_is_refused_command():
    # The command itself: refused before any data is generated or model built.
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    run = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'quickstart.py'),
                          '--max-iters', '0'], capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        'quickstart.py: error: argument --max-iters: must be an integer >= 1 (a training '
        'run needs at least one iteration), got 0')


@pytest.mark.parametrize('argv, words', [
    (['--finetune-iters', '0'], 'argument --finetune-iters: must be an integer >= 1 (a '
     'training run needs at least one iteration), got 0'),
    (['--max-iters', '-5'], 'argument --max-iters: must be an integer >= 1'),
    (['--max-iters', 'ten'], "argument --max-iters: 'ten' is not an integer"),
    (['--num-train', '0'], 'argument --num-train: must be an integer >= 1 (images of the '
     'training split), got 0'),
    (['--num-val', '0'], 'argument --num-val: must be an integer >= 1'),
    (['--num-overlays', '-1'], 'argument --num-overlays: must be an integer >= 0, got -1'),
    (['--work-dir', ''], 'argument --work-dir: must not be empty'),
    (['--data-root', ' '], 'argument --data-root: must not be empty'),
    (['--config', 'nowhere.py'], "argument --config: config file 'nowhere.py' does not "
     'exist'),
    (['--task', 'detection', '--config', 'SEG'], 'is a mmseg config; --task detection runs '
     'mmdet ones (give the matching --task)'),
    (['--task', 'detection', '--config', 'configs/mask-rcnn_shufflemamba_adapter-m.py',
      '--max-iters', '1'], 'argument --config: configs/mask-rcnn_shufflemamba_adapter-m.py '
     'does not train by iteration; the quickstart runs iteration-based configs'),
    (['--task', 'pretrain', '--config', 'configs/pretrain/shufflemamba-b_8xb256-300e_in1k.py'],
     'does not train by iteration'),
])
def test_quickstart_bad_values(capsys, monkeypatch, argv, words):
    monkeypatch.chdir(ROOT)
    qs = load_tool('quickstart.py')
    argv = [qs.TASKS['segmentation']['config'] if a == 'SEG' else a for a in argv]
    assert words in _usage_error(capsys, qs.parse_args, argv)


def test_quickstart_honours_small_values():
    qs = load_tool('quickstart.py')
    args = qs.parse_args(['--max-iters', '1', '--num-overlays', '0', '--num-train', '1'])
    assert (args.max_iters, args.num_overlays, args.num_train) == (1, 0, 1)
    assert args.num_val == qs.TASKS['segmentation']['num_val']  # unset: the task's
    from mmengine.config import Config
    cfg = Config.fromfile(qs.TASKS['segmentation']['config'])
    qs.shorten_schedule(cfg, 1)  # 1 iteration: no warmup, the decay over it
    assert len(cfg.param_scheduler) == 1
    assert (cfg.param_scheduler[0].begin, cfg.param_scheduler[0].end) == (0, 1)
    assert cfg.train_cfg.max_iters == 1
    cfg = Config.fromfile(qs.TASKS['detection']['config'])
    qs.shorten_schedule(cfg, 20)
    assert [(s.begin, s.end) for s in cfg.param_scheduler] == [(0, 2), (2, 20)]
    assert cfg.param_scheduler[-1].T_max == 18


@pytest.mark.parametrize('argv, words', [
    (['a', 'b', '--img-size', '0'], 'argument --img-size: must be an integer >= 1 (an '
     'image size in pixels), got 0'),
    (['a', 'b', '--patch-size', '0'], 'argument --patch-size: must be an integer >= 1'),
    (['a', 'b', '--num-registers', '-1'], 'argument --num-registers: must be an integer '
     '>= 0, got -1'),
    (['a', 'b', '--patch-size', '16'], '--patch-size is used with --img-size only'),
    (['a', 'b', '--img-size', '8', '--patch-size', '16'], '--img-size 8 is smaller than '
     '--patch-size 16: the position grid would be empty'),
    (['a', 'b', '--img-size', '50', '--patch-size', '16'], '--img-size 50 is not a '
     'multiple of --patch-size 16'),
    (['a', 'no/such/folder/b.pth'], "argument dst: 'no/such/folder/b.pth': the directory "
     f"{os.path.abspath('no/such/folder')} does not exist (create it first: mkdir -p "),
    (['a', '.'], "argument dst: '.' is a directory, not a file"),
    (['a', 'b', '--to', 'official', '--img-size', '224'], '--num-registers, --keep-neck, '
     '--img-size and --patch-size apply to --to backbone only'),
    (['a', 'b', '--keep-neck'], '--keep-neck keeps the neck that reduces the register tokens: '
     'give --num-registers R'),
    (['a', 'b', '--to', 'official', '--keep-neck'], 'apply to --to backbone only'),
    (['a', 'b', '--to', 'mmpretrain', '--num-registers', '1'], 'apply to --to backbone only'),
])
def test_convert_checkpoint_bad_values(capsys, argv, words):
    conv = load_tool('convert_checkpoint.py')
    assert words in _usage_error(capsys, conv.parse_args, argv)


def test_convert_checkpoint_honours_zero_registers():
    conv = load_tool('convert_checkpoint.py')
    args = conv.parse_args(['a', 'b', '--to', 'official', '--num-registers', '0'])
    assert args.num_registers == 0 and args.img_size is None


@pytest.mark.parametrize('argv, words', [
    (['cfg.py', '--num-iters', '0'], 'argument --num-iters: must be an integer >= 1 (timed '
     'iterations), got 0'),
    (['cfg.py', '--batch-size', '0'], 'argument --batch-size: must be an integer >= 1'),
    (['cfg.py', '--warmup', '-1'], 'argument --warmup: must be an integer >= 0, got -1'),
    (['cfg.py', '--num-workers', '-1'], 'argument --num-workers: must be an integer >= 0'),
    (['cfg.py', '--device', ''], "argument --device: '' is not 'cpu', 'cuda' or 'cuda:N'"),
    (['cfg.py', '--device', 'gpu'], "argument --device: 'gpu' is not 'cpu', 'cuda'"),
    (['cfg.py', '--json', 'no/dir/x.json'], "argument --json: 'no/dir/x.json': the "
     'directory'),
])
def test_benchmark_bad_values(capsys, tmp_path, argv, words):
    bench = load_tool('analysis', 'benchmark.py')
    cfg = tmp_path / 'cfg.py'  # the config must exist (checked at parsing)
    cfg.write_text('x = 1\n')
    argv = [str(cfg) if a == 'cfg.py' else a for a in argv]
    assert words in _usage_error(capsys, bench.parse_args, argv)
    args = bench.parse_args([str(cfg), '--warmup', '0', '--num-workers', '0'])
    assert (args.warmup, args.num_workers) == (0, 0)  # 0 honoured


@pytest.mark.parametrize('argv, words', [
    (['--reps', '0'], 'argument --reps: must be an integer >= 1 (timed repetitions), got 0'),
    (['--dim', '0'], 'argument --dim: must be an integer >= 1, got 0'),
    (['--len', '0'], 'argument --len: must be an integer >= 1'),
    (['--dstate', '0'], 'argument --dstate: must be an integer >= 1'),
    (['--batch', '0'], 'argument --batch: must be an integer >= 1'),
    (['--paths', 'avx3'], "argument --paths: invalid choice: 'avx3'"),
])
def test_benchmark_cpu_kernels_bad_values(capsys, argv, words):
    kernels = load_tool('analysis', 'benchmark_cpu_kernels.py')
    assert words in _usage_error(capsys, kernels.main, argv)


def test_get_flops_bad_shape(capsys, tmp_path):
    flops = load_tool('analysis', 'get_flops.py')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text('x = 1\n')
    assert 'argument --shape: must be an integer >= 1 (pixels), got 0' in _usage_error(
        capsys, flops.parse_args, [str(cfg), '--shape', '0', '512'])


def test_get_flops_stops_on_a_refused_setting():
    """The model is built after the config is read: a setting its checks refuse stops
    the tool with their message, as train.py and test.py do."""
    config = osp.join(ROOT, 'configs', 'quickstart',
                      'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')
    with pytest.raises(SystemExit) as e:
        load_tool('analysis', 'get_flops.py').main(
            [config, '--shape', '64', '--cfg-options', 'model.backbone.shuffle_rate=2'])
    assert str(e.value.code).startswith(
        'tools/analysis/get_flops.py: shuffle_rate must be in [0, 1], got 2'), e.value.code


def test_get_flops_shapes_the_model_refuses_or_memory_cannot_hold(capsys, monkeypatch):
    """A shape below the backbone's patch stops with the backbone's message (not a trace
    through the flop counter); one that does not fit in memory says so; a tiny model's
    count is printed with significant digits, not as 0.0."""
    config = osp.join(ROOT, 'configs', 'quickstart',
                      'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')
    flops = load_tool('analysis', 'get_flops.py')
    with pytest.raises(SystemExit) as e:
        flops.main([config, '--shape', '4', '4'])
    assert str(e.value.code).startswith('tools/analysis/get_flops.py: shape (4, 4): '
                                        'ShuffleMamba got a 4x4 image, smaller than its '
                                        'patch_size='), e.value.code

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 120000000000 bytes")
    monkeypatch.setattr(flops, 'model_complexity', no_memory)
    with pytest.raises(SystemExit) as e:
        flops.main([config, '--shape', '100000', '100000'])
    assert str(e.value.code).startswith(
        'tools/analysis/get_flops.py: --shape 100000 100000 does not fit in memory'), \
        e.value.code
    assert flops.gflops(1.234e7) == '0.0123' and flops.gflops(2.04e11) == '204.0' and \
        flops.gflops(0) == '0.0'


@pytest.mark.parametrize('tool, argv, words', [
    ('get_flops.py', ['nowhere.py'], "argument config: config file 'nowhere.py' does not "
     'exist'),
    ('benchmark.py', ['nowhere.py'], "argument config: config file 'nowhere.py' does not "
     'exist'),
    ('benchmark.py', ['CONFIG', 'nowhere.pth'],
     "argument checkpoint: checkpoint 'nowhere.pth' does not exist"),
    ('plot_logs.py', ['no/such/work_dir'], "argument runs: no such log file or directory: "
     "'no/such/work_dir' (give a work dir, a <timestamp> run dir or a vis_data/*.json "
     'file)'),
    ('plot_logs.py', ['DIR'], 'argument runs: DIR: no vis_data/scalars.json below it'),
    ('plot_logs.py', ['CONFIG'], 'argument runs: CONFIG:1: not a json line'),
])
def test_analysis_tools_name_a_missing_input(capsys, monkeypatch, tmp_path, tool, argv,
                                             words):
    """A missing config, checkpoint or log directory is a one-line usage error naming
    the argument, before any model is built (not a traceback from deep inside)."""
    config = tmp_path / 'config.py'
    config.write_text('x = 1\n')
    names = dict(CONFIG=str(config), DIR=str(tmp_path))
    argv = [names.get(a, a) for a in argv]
    for name, path in names.items():
        words = words.replace(name, path)
    mod = load_tool('analysis', tool)
    if tool == 'benchmark.py':  # the inputs are checked before anything is built
        monkeypatch.setattr(mod, 'run', lambda args: pytest.fail('ran before the check'))
    assert words in _usage_error(capsys, mod.main, argv)


@pytest.mark.parametrize('argv, words', [
    (['-n', '0'], 'argument -n/--runs: must be an integer >= 1, got 0'),
    (['--iters', '1'], 'argument --iters: must be an integer >= 2 (1 warmup iteration, then '
     'the decay), got 1'),
    (['--nproc', '0'], 'argument --nproc: must be an integer >= 1'),
    (['--omp-threads', '0'], 'argument --omp-threads: must be an integer >= 1'),
    (['--num-workers', '-1'], 'argument --num-workers: must be an integer >= 0'),
    (['--work-dir', ''], 'argument --work-dir: must not be empty'),
])
def test_stress_dist_exit_bad_values(capsys, argv, words):
    stress = load_tool('analysis', 'stress_dist_exit.py')
    assert words in _usage_error(capsys, stress.main, argv)


def test_plot_logs_names_a_file_that_is_not_a_scalars_log(capsys, tmp_path):
    """A json line that is not an object, or a binary file (a checkpoint given as a
    run): a usage error naming the file and line, no traceback."""
    plot = load_tool('analysis', 'plot_logs.py')
    log = tmp_path / 'scalars.json'
    log.write_text('{"loss": 1.0, "step": 1}\n[1, 2]\n')
    assert f'argument runs: {log}:2: a json list, not an object of MMEngine\'s scalars ' \
        'log ([1, 2])' in _usage_error(capsys, plot.main, [str(log)])
    ckpt = tmp_path / 'iter_2.json'
    ckpt.write_bytes(b'\x80\x02}q\x00(X\x05\x00\x00\x00')
    assert f'argument runs: {ckpt}:1: not a json line' in _usage_error(
        capsys, plot.main, [str(ckpt)])


def test_plot_logs_empty_out_dir(capsys, tmp_path):
    plot = load_tool('analysis', 'plot_logs.py')
    assert 'argument --out-dir: must not be empty' in _usage_error(
        capsys, plot.main, [str(tmp_path), '--out-dir', ''])
    (tmp_path / 'a_file').write_text('x')
    assert f"argument --out-dir: {tmp_path / 'a_file'} is a file, not a directory" in \
        _usage_error(capsys, plot.main, [str(tmp_path), '--out-dir',
                                         str(tmp_path / 'a_file' / 'sub')])


def test_devices_and_output_files_are_checked_when_parsed(capsys, tmp_path, monkeypatch):
    """--device and --json of the analysis tools: a device this machine lacks, a word
    that is no device, a file in a missing directory: usage errors, not tracebacks."""
    import torch
    flops = load_tool('analysis', 'get_flops.py')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text('x = 1\n')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert "argument --device: 'cuda:1': CUDA is not available on this machine" in \
        _usage_error(capsys, flops.parse_args, [str(cfg), '--device', 'cuda:1'])
    missing = tmp_path / 'nodir'
    assert f'the directory {missing} does not exist (create it first: mkdir -p {missing})' \
        in _usage_error(capsys, flops.parse_args, [str(cfg), '--json', str(missing / 'x')])
    assert 'is a directory, not a file' in _usage_error(
        capsys, flops.parse_args, [str(cfg), '--json', str(tmp_path)])
    args = flops.parse_args([str(cfg), '--device', 'cpu', '--json', str(tmp_path / 'f.json')])
    assert (args.device, args.json) == ('cpu', str(tmp_path / 'f.json'))
    monkeypatch.setenv('HOME', str(tmp_path))
    assert flops.parse_args([str(cfg), '--json', '~/g.json']).json == str(tmp_path / 'g.json')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert "argument --device: 'cuda:1': this machine has 1 CUDA device(s)" in \
        _usage_error(capsys, flops.parse_args, [str(cfg), '--device', 'cuda:1'])
    assert flops.parse_args([str(cfg), '--device', 'cuda:0']).device == 'cuda:0'


def test_quickstart_refuses_a_foreign_data_root(tmp_path):
    # The generated data never lands next to files it did not write.
    root = tmp_path / 'data'
    root.mkdir()
    (root / 'mine.txt').write_text('x')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    run = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'quickstart.py'),
                          '--data-root', str(root), '--max-iters', '1'],
                         capture_output=True, text=True, timeout=300, env=env,
                         cwd=str(tmp_path))
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f"quickstart --data-root: {root} is not empty (1 file(s)) and has no stamp "
        "'.synthetic_ade20k', so generate_synthetic_ade20k did not write it: 'mine.txt'. "
        'generate_synthetic_ade20k writes only into an empty directory or one it wrote before '
        '(it never deletes files it did not write, and the frameworks would read them '
        'together with the new ones): choose another directory or remove those files.')
    assert sorted(os.listdir(root)) == ['mine.txt']


@pytest.mark.parametrize('tool, argv, words', [
    ('train.py', ['nowhere.py'], "argument config: config file 'nowhere.py' does not exist"),
    ('train.py', ['CONFIG', '--resume', 'nowhere.pth'],
     "argument --resume: checkpoint 'nowhere.pth' does not exist"),
    ('test.py', ['nowhere.py', 'CKPT'],
     "argument config: config file 'nowhere.py' does not exist"),
    ('test.py', ['CONFIG', 'nowhere.pth'],
     "argument checkpoint: checkpoint 'nowhere.pth' does not exist"),
    ('test.py', ['CONFIG', 'DIR'], "argument checkpoint: checkpoint 'DIR' is a directory"),
    ('test.py', ['CONFIG', 'https://host/ckpt.pth'],  # tools/test.py reads local files
     "argument checkpoint: checkpoint 'https://host/ckpt.pth' does not exist"),
])
def test_train_and_test_name_a_missing_file(capsys, monkeypatch, tmp_path, tool, argv, words):
    """A missing config or checkpoint is a usage error naming the argument, before
    anything is imported or built (not a traceback from deep inside the run)."""
    config, ckpt = tmp_path / 'config.py', tmp_path / 'ckpt.pth'
    config.write_text('x = 1\n')
    ckpt.write_bytes(b'')
    names = dict(CONFIG=str(config), CKPT=str(ckpt), DIR=str(tmp_path))
    argv = [names.get(a, a) for a in argv]
    words = words.replace(repr('DIR'), repr(str(tmp_path)))
    parse = load_tool(tool).parse_args
    monkeypatch.setattr(sys, 'argv', [tool] + argv)
    with pytest.raises(SystemExit) as e:
        parse()
    assert e.value.code == 2
    assert words in capsys.readouterr().err.strip().splitlines()[-1]


def test_train_resume_values_and_home_paths(monkeypatch, tmp_path):
    """--resume alone is 'auto', a URI passes to MMEngine's loaders; a quoted ~ path is
    expanded for the tools."""
    monkeypatch.setenv('HOME', str(tmp_path))
    config, ckpt = tmp_path / 'config.py', tmp_path / 'ckpt.pth'
    config.write_text('x = 1\n')
    ckpt.write_bytes(b'')
    monkeypatch.setattr(sys, 'argv', ['train.py', str(config), '--resume'])
    assert load_tool('train.py').parse_args().resume == 'auto'
    monkeypatch.setattr(sys, 'argv', ['train.py', '~/config.py', '--resume', 's3://b/c.pth'])
    args = load_tool('train.py').parse_args()
    assert (args.config, args.resume) == (str(config), 's3://b/c.pth')
    monkeypatch.setattr(sys, 'argv', ['test.py', '~/config.py', '~/ckpt.pth'])
    args = load_tool('test.py').parse_args()
    assert (args.config, args.checkpoint) == (str(config), str(ckpt))


def test_quickstart_checks_the_settings_before_writing_data(tmp_path):
    """A refused --cfg-options stops the quickstart before it writes its data."""
    qs = load_tool('quickstart.py')
    root = tmp_path / 'data'
    with pytest.raises(SystemExit) as e:
        qs.main(['--data-root', str(root), '--work-dir', str(tmp_path / 'work'),
                 '--max-iters', '1', '--cfg-options', 'train_dataloader.batch_size=0'])
    assert 'train_dataloader.batch_size must be >= 1, got 0' in str(e.value.code)
    assert not root.exists()


def test_quickstart_stops_on_a_data_check_without_a_traceback(monkeypatch):
    from mmplugin_shufflemamba.datasets import DataError
    qs = load_tool('quickstart.py')

    def stopped(args, t0):
        raise DataError('data/x.png: empty file')

    monkeypatch.setattr(qs, 'main_segmentation', stopped)
    with pytest.raises(SystemExit) as e:
        qs.main([])
    assert str(e.value.code).startswith('tools/quickstart.py: data/x.png: empty file')


@pytest.mark.parametrize('option, value, words', [
    ('--out', 'preds.pkl', '--out preds.pkl: a segmentation config saves its predictions as '
     'label PNGs in a directory: give a directory (new or existing), not a file.'),
    ('--out', 'FILE', 'a segmentation config saves its predictions as label PNGs'),
    ('--show-dir', 'FILE', 'is a file: give a directory (new or existing) for the painted '
     'predictions.'),
])
def test_test_output_places_are_checked_before_the_run(tmp_path, monkeypatch, option, value,
                                                       words):
    """A segmentation --out is a directory of PNGs (a .pkl name would become one); a
    --show-dir or --out that is an existing file is refused, not a traceback later."""
    config = osp.join(ROOT, 'configs', 'quickstart',
                      'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')
    ckpt, existing = tmp_path / 'ckpt.pth', tmp_path / 'file.txt'
    ckpt.write_bytes(b'')
    existing.write_text('x')
    monkeypatch.chdir(tmp_path)
    value = str(existing) if value == 'FILE' else value
    with pytest.raises(SystemExit) as e:
        load_tool('test.py').main([config, str(ckpt), '--work-dir', str(tmp_path / 'wd'),
                                   option, value])
    assert words in str(e.value.code), e.value.code
    assert not osp.exists(tmp_path / 'preds.pkl')
