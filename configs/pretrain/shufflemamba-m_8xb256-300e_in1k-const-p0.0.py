# ShuffleMamba-M, paper Table 5 (probability assignment), row "Constant 0": 81.8 top-1
# (layer-dependent P = 0.5 reads 82.7 there). The M recipe with no block shuffled
# (shuffle_rate 0: the plain Vim trained with the ShuffleMamba recipe); the constant
# schedule is kept to name the row, it gives the same all-zero probabilities.
_base_ = ['./shufflemamba-m_8xb256-300e_in1k.py']

model = dict(backbone=dict(shuffle_rate=0.0, shuffle_schedule='constant'))
