from .runtime import prepare_runtime

__all__ = ['prepare_runtime']
