"""Evaluate a checkpoint with the framework's own metrics (mIoU, box/mask AP).

    python tools/test.py CONFIG CHECKPOINT [--tta] [--work-dir DIR] [--show-dir DIR]
        [--out PATH] [--allow-partial-load] [--allow-nonfinite-checkpoint]
    tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]

The checkpoint must fit the config's model: before evaluating, every rank compares its
keys and shapes with the model and refuses NaN / inf weights; otherwise the tool stops
(exit status 1) with a short report (missing / unexpected keys and mismatched shapes by
module, and the experiment the file came from). ``--allow-partial-load`` evaluates
anyway with what fits (and lists what was not loaded); ``--allow-nonfinite-checkpoint``
loads NaN / inf weights.

``--out``: the predictions, as mmseg's, mmdet's and mmpretrain's own test tools write
them: for a segmentation config a directory of label PNGs (``IoUMetric``'s
``output_dir``), otherwise a ``.pkl`` file (mmdet's ``DumpDetResults``, MMEngine's
``DumpResults``). ``--show-dir``: the test images with their predictions painted on
(mmseg's: under DIR/vis_data; mmdet's: under the work dir's DIR; mmpretrain's: under
DIR; both by image name).

``--tta``: multi-scale + flip testing (the paper's "MS" mIoU) with the framework's
test-time-augmentation model: the config's ``tta_model`` (mmseg's ``SegTTAModel``,
from mmseg's default runtime) wraps the model and the test set runs the config's
``tta_pipeline`` (mmseg's ADE20K base: scales 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 x no flip /
horizontal flip; the softmax scores of the 12 views are averaged). Each view is
inferred with the config's ``test_cfg`` (sliding window 512/341 for the zoo configs).
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction

import mmplugin_shufflemamba  # noqa: F401  (registers the backbones)
from mmplugin_shufflemamba.checkpoint import check_runner_checkpoint
from mmplugin_shufflemamba.utils import (STOP_ERRORS, ConfigError, build_runner,
                                         check_run_values, load_config, log_kernels,
                                         prepare_runtime, shutdown_distributed, stop_message)
from mmplugin_shufflemamba.utils.cli import existing_file, key_value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', type=existing_file('config file'),
                        help='test config file path')
    parser.add_argument('checkpoint', type=existing_file('checkpoint'),
                        help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--show-dir', help='directory where painted predictions '
                        'are saved (mmseg/mmdet visualization hook)')
    parser.add_argument('--out', help='save the predictions: a directory of label PNGs '
                        '(segmentation configs) or a .pkl file (detection, classification)')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation (multi-scale + flip) with the "
                        "config's tta_model and tta_pipeline")
    parser.add_argument('--allow-partial-load', action='store_true',
                        help='evaluate a checkpoint that does not fit the model: what '
                        'fits is loaded, the rest keeps its initialisation and is listed '
                        '(default: stop with a report)')
    parser.add_argument('--allow-nonfinite-checkpoint', action='store_true',
                        help='load a checkpoint whose weights hold NaN / inf (default: '
                        'stop with a report)')
    parser.add_argument('--cfg-options', nargs='+', type=key_value, action=DictAction,
                        metavar='KEY=VALUE', help='override settings in the config')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def predicts_masks(model_cfg) -> bool:
    """Whether an mmdet model config predicts instance masks: a ``mask_head`` at any
    depth (Mask R-CNN's roi_head, SOLO, CondInst) or an instance-segmentation bbox head
    (RTMDet-Ins)."""
    if isinstance(model_cfg, dict):
        if model_cfg.get('mask_head', None) is not None:
            return True
        kind = str(model_cfg.get('type', ''))
        if 'Ins' in kind and kind.endswith('Head'):  # RTMDetInsSepBNHead, ...
            return True
        return any(predicts_masks(v) for v in model_cfg.values())
    if isinstance(model_cfg, (list, tuple)):
        return any(predicts_masks(v) for v in model_cfg)
    return False


def enable_tta(cfg) -> int:
    """Switch ``cfg`` to test-time augmentation, as mmseg's and mmdet's own test tools
    do; return the number of views per image."""
    if predicts_masks(cfg.model):
        raise ConfigError(
            "--tta on an instance-segmentation model: mmdet's DetTTAModel merges boxes "
            "only (it stops with 'TTA of instance segmentation does not support now'), so "
            'the Mask R-CNN configs test single-scale, as the paper reports their AP; '
            'run without --tta.')
    missing = [k for k in ('tta_model', 'tta_pipeline') if cfg.get(k, None) is None]
    if missing:
        raise ConfigError(
            f'--tta needs {" and ".join(missing)} in the config. mmseg provides both '
            "through its ADE20K dataset base and default runtime (tta_model = "
            "dict(type='SegTTAModel')); an mmdet config sets them itself (tta_model = "
            "dict(type='DetTTAModel', tta_cfg=...) and a TestTimeAug tta_pipeline, for "
            'box-only detectors).')
    views = 1
    for step in cfg.tta_pipeline:
        if step.get('type') == 'TestTimeAug':
            for choices in step['transforms']:
                views *= len(choices)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    return views


def output_metric(cfg, out: str):
    """``--out``: for mmseg, set ``cfg``'s ``IoUMetric`` to write label PNGs into the
    directory ``out`` and return None; otherwise return the metric that dumps the
    predictions to the pickle file ``out`` (added to the runner's test evaluator), as
    mmseg's, mmdet's and mmpretrain's own test tools do."""
    if cfg.get('default_scope') == 'mmseg':
        if osp.isfile(out) or (out.endswith(('.pkl', '.pickle')) and not osp.isdir(out)):
            raise ConfigError(f'--out {out}: a segmentation config saves its predictions '
                              'as label PNGs in a directory: give a directory (new or '
                              'existing), not a file.')
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [
            cfg.test_evaluator]
        for evaluator in evaluators:
            evaluator.update(output_dir=out, keep_results=True)
        return None
    if not out.endswith(('.pkl', '.pickle')):
        raise ConfigError(f'--out {out}: the predictions of a {cfg.get("default_scope")} '
                          'config are saved as a pickle file: give a .pkl path')
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out)


def show_predictions(cfg, show_dir: str) -> None:
    """``--show-dir``: the visualization hook paints every test image, as the
    frameworks' own test tools set it (mmdet's and mmpretrain's hooks name their files
    by image; mmseg's writes through the visualizer into ``show_dir``)."""
    # (mmdet's hook writes a relative one under the work dir's run directory)
    if osp.isfile(show_dir) and (osp.isabs(show_dir) or cfg.get('default_scope') != 'mmdet'):
        raise ConfigError(f'--show-dir {show_dir} is a file: give a directory (new or '
                          'existing) for the painted predictions.')
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ConfigError('--show-dir needs a visualization hook in default_hooks, as '
                          "mmseg's, mmdet's and mmpretrain's default runtimes define")
    if cfg.get('default_scope') == 'mmpretrain':  # its hook: enable / out_dir
        hook.update(enable=True, interval=1, show=False, out_dir=show_dir)
        return
    hook.update(draw=True, interval=1, show=False)
    if cfg.get('default_scope') == 'mmdet':
        hook['test_out_dir'] = show_dir
    else:
        cfg.visualizer.setdefault('vis_backends', [dict(type='LocalVisBackend')])
        cfg.visualizer['save_dir'] = show_dir


def test(args):
    # (parse_args checked that the config and the checkpoint exist: existing_file)
    cfg = load_config(args.config, args.launcher, args.work_dir, args.cfg_options)
    cfg.load_from = args.checkpoint
    # Nothing of the training: its data need not exist (mmseg 1.2.2's visualization
    # hook reads runner.iter, which would build the training loop and data loader).
    cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
    check_run_values(cfg, loaders=('test_dataloader', ))
    if args.show_dir:
        show_predictions(cfg, args.show_dir)
    dump = output_metric(cfg, args.out) if args.out else None
    if args.tta:
        views = enable_tta(cfg)
        print(f"Test-time augmentation: {cfg.model.type} over {views} views per image "
              '(tta_pipeline)', flush=True)
    prepare_runtime(cfg, args.launcher)
    runner = build_runner(cfg)
    if dump is not None:
        runner.test_evaluator.metrics.append(dump)
    log_kernels()
    # On every rank, before anything is evaluated: the checkpoint must fit the model.
    check_runner_checkpoint(runner, allow_partial=args.allow_partial_load,
                            allow_nonfinite=args.allow_nonfinite_checkpoint, mode='test')
    runner.test()  # the Runner is released (on return) before the process group ends


def main(argv=None):
    args = parse_args(argv)
    try:
        test(args)
    except STOP_ERRORS as e:  # the checkpoint check stopped it: its report, no traceback
        sys.exit(stop_message(e, 'tools/test.py'))
    if args.launcher != 'none':
        # End the process group while Python is fully alive (see shutdown_distributed).
        shutdown_distributed()


if __name__ == '__main__':
    main()
