from .timm_shufflemamba import TIMM_ARCHS, ShuffleMambaClassifier

__all__ = ['ShuffleMambaClassifier', 'TIMM_ARCHS']
