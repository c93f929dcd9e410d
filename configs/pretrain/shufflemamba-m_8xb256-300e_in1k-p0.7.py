# ShuffleMamba-M, paper Table 5 (probability assignment), row "Layer-Dependent 0.7":
# 82.4 top-1 (the table's P = 0.5 row, shufflemamba-m_8xb256-300e_in1k.py, reads 82.7).
# The M recipe with SLWS P = 0.7: block l shuffles with probability linspace(0, 0.7, 32)[l].
_base_ = ['./shufflemamba-m_8xb256-300e_in1k.py']

model = dict(backbone=dict(shuffle_rate=0.7))
