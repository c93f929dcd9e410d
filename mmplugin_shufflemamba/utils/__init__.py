from .runtime import load_config, prepare_runtime, shutdown_distributed

__all__ = ['load_config', 'prepare_runtime', 'shutdown_distributed']
