# ShuffleMamba-B, paper Table 6 ([CLS] token in the shuffle), Base without the cls token
# in the shuffle: 82.6 top-1 (with it, shufflemamba-b_8xb256-300e_in1k.py: 82.6 there
# too). The B recipe with shuffle_cls=False: SLWS permutes the patch tokens only, the cls
# token stays in front.
_base_ = ['./shufflemamba-b_8xb256-300e_in1k.py']

model = dict(backbone=dict(shuffle_cls=False))
