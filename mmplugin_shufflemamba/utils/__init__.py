from .runtime import load_config, prepare_runtime

__all__ = ['load_config', 'prepare_runtime']
