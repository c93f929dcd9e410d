# VideoMamba-B + UperNet on ADE20K, from the published ImageNet weights of VideoMamba-B
# (model 'videomamba_base', self-distilled; not a row of the paper: a starting point from
# public weights, with the recipe of upernet_shufflemamba_b.py, whose backbone it shares:
# RMSNorm blocks, width 768, depth 24). VideoMamba's image models put one cls token in
# front (dropped at load), and the distillation head of its self-distilled models is
# dropped too. Its mixer sums the two directions (the others average them): the loader
# doubles out_proj, exactly. The official file names no model, so give its format:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained', ckpt_format='videomamba',
#                                            checkpoint='path/to/videomamba-b.pth')))
_base_ = ['./upernet_shufflemamba_b.py']
