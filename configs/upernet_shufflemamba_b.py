# ShuffleMamba-B + UperNet on ADE20K, the paper's recipe (Table 3: 131M parameters,
# 477 GFLOPs, 47.0 mIoU single-scale / 48.3 multi-scale):
# 160k iterations, 8 GPUs x 2 images, 512x512 crops, AdamW lr 6e-5 wd 0.01,
# poly schedule with 1500-iteration linear warmup, drop path 0.2, four stride-16
# levels from blocks 5/11/17/23 without a neck, UPerHead (512 channels) with an FCN
# auxiliary head on the last level, sliding-window test 512/341.
#
# The backbone matches the ShuffleMamba-B ImageNet checkpoint (mambar_base_patch16_224:
# RMSNorm, one cls token in front, dropped at load), so the official training checkpoint
# loads with only the path set; its raw 'model' weights are used (use_ema=True in
# init_cfg for 'model_ema'). No weights were released upstream: pretrain with the
# official code and point to the file, e.g. (path/to/... is a placeholder and refused):
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/shufflemamba_b_in1k.pth')))
# or on the command line:
#   tools/dist_train.sh configs/upernet_shufflemamba_b.py 8 \
#       --cfg-options model.backbone.init_cfg.type=Pretrained \
#       model.backbone.init_cfg.checkpoint=/data/shufflemamba_b_in1k.pth
# Single-scale test / multi-scale + flip test (paper "MS"):
#   tools/test.py configs/upernet_shufflemamba_b.py WORK_DIR/iter_160000.pth [--tta]
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
# mmplugin_shufflemamba.compat: MMEngine's loaders read MMEngine and official checkpoints
# with the safe torch.load (load_from, --resume, Pretrained) in any tool.
custom_imports = dict(
    imports=['mmplugin_shufflemamba', 'mmplugin_shufflemamba.datasets',
             'mmplugin_shufflemamba.compat'],
    allow_failed_imports=False)
# Stop at the first NaN / inf loss (tools/train.py --no-finite-check turns it off);
# keep torch's generator state in checkpoints (exact resumes, also without the tools).
custom_hooks = [dict(type='FiniteLossHook'), dict(type='RNGStateHook')]

crop_size = (512, 512)
embed_dims = 768
num_classes = 150
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)

model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ShuffleMamba',
        arch='b',
        img_size=224,  # resolution of the ImageNet position embedding
        patch_size=16,
        # The checkpoint's norm: ShuffleMamba-B was pretrained with RMSNorm.
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.2,
        # The official fine-tuning recipe does not shuffle; SLWS is a pretraining
        # regularizer (see upernet_shufflemamba_b-slws.py for fine-tuning with it).
        shuffle_rate=0.0,
        out_indices=(5, 11, 17, 23),
        # The official downstream code feeds the blocks' mixer outputs to UperNet.
        out_type='mixer',
        final_norm=True,
        # The paper discards [CLS] / register tokens for segmentation.
        num_registers=0,
        with_cp=False),
    decode_head=dict(
        in_channels=[embed_dims] * 4,
        in_index=[0, 1, 2, 3],
        channels=512,
        num_classes=num_classes,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=embed_dims,
        in_index=3,
        channels=256,
        num_classes=num_classes,
        norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# AdamW without weight decay on what the backbone marks _no_weight_decay: position
# embedding, tokens, its norms, the SSM's A_log / D (and the adapter's level embeddings,
# injector gammas and norms). MMEngine's default constructor, reading the mark.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    constructor='ShuffleMambaOptimWrapperConstructor')

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# mmseg's ADE20K pipelines with the data checks of this package: label values against
# the classes (CheckSegLabels), files named when they cannot be read
# (CheckedADE20KDataset) and no metric computed over unlabeled images (CheckedIoUMetric).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels', num_classes=num_classes),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels', num_classes=num_classes),
    dict(type='PackSegInputs'),
]
# 8 GPUs x 2 images = batch 16.
train_dataloader = dict(
    batch_size=2, dataset=dict(type='CheckedADE20KDataset', pipeline=train_pipeline))
# The learning rates are for 8 GPUs x 2 images: tools/train.py --auto-scale-lr rescales
# them to another total batch (MMEngine's linear rule).
auto_scale_lr = dict(enable=False, base_batch_size=16)
val_dataloader = dict(
    batch_size=1, dataset=dict(type='CheckedADE20KDataset', pipeline=test_pipeline))
val_evaluator = dict(type='CheckedIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
test_dataloader = val_dataloader
# Multi-scale + flip testing (tools/test.py --tta) uses mmseg's ADE20K `tta_pipeline`
# (scales 0.5-1.75, horizontal flip) and `tta_model = dict(type='SegTTAModel')` from
# the base configs.
