# ShuffleMamba-Reg-L2 tested at 256 x 256: paper Table 2, "256x256 Test" (341M
# parameters, 82.4G FLOPs, 83.6 top-1; 83.6 at 224 px). Evaluation only, of the model
# stage 3 (shufflemamba-reg-l2_8xb64-20e_in1k-224px-ft.py) fine-tunes: img_size stays
# 224 (the checkpoint loads as it is) and the 14x14 position embedding is interpolated
# bicubically to the 16x16 grid in the forward, as in the paper (the registers keep
# their own embeddings). Stage 3's crop ratio 1.0 is kept: short side 256, centre crop
# 256. tools/test.py reports the EMA weights (EMAHook). FLOPs at 256 px, paper
# convention: 82.35G.
#
#   tools/test.py configs/pretrain/shufflemamba-reg-l2_8xb64-20e_in1k-224px-ft-test-256px.py \
#       work_dirs/shufflemamba-reg-l2_8xb64-20e_in1k-224px-ft/epoch_20.pth
_base_ = ['./shufflemamba-reg-l2_8xb64-20e_in1k-224px-ft.py']

test_size = 256
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=test_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=test_size),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
