from .synthetic_ade20k import (SYNTHETIC_CLASSES, generate_synthetic_ade20k,
                               render_sample)

__all__ = ['SYNTHETIC_CLASSES', 'generate_synthetic_ade20k', 'render_sample']
