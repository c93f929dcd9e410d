# ShuffleMamba-L1, paper Table 6 ([CLS] token in the shuffle), Large1 without the cls
# token in the shuffle: 82.8 top-1 (with it, shufflemamba-l1_8xb128-200e_in1k.py: 82.9
# there). The L1 recipe with shuffle_cls=False: SLWS permutes the patch tokens only, the
# cls token stays in front.
_base_ = ['./shufflemamba-l1_8xb128-200e_in1k.py']

model = dict(backbone=dict(shuffle_cls=False))
