# ShuffleMamba-B + UperNet on ADE20K fine-tuned WITH stochastic layer-wise shuffle.
#
# Not a paper row: the paper (and the official configs) fine-tune every segmentation
# model with shuffle_rate=0, using SLWS only as an ImageNet pretraining regularizer.
# This variant keeps SLWS on during fine-tuning, with the pretraining rate P = 0.5
# (block l shuffles its token sequence with probability l / (L - 1) * 0.5 in training;
# inference never shuffles, so testing, FLOPs and parameters are those of the B row).
# Everything else is the B recipe (upernet_shufflemamba_b.py), and the ShuffleMamba-B
# checkpoint loads the same way:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/shufflemamba_b_in1k.pth')))
_base_ = ['./upernet_shufflemamba_b.py']

model = dict(backbone=dict(shuffle_rate=0.5))
