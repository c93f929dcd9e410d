from .encoder import ShuffleMambaEncoder
from .shuffle_mamba import OutType, ShuffleMamba
from .shuffle_mamba_adapter import ShuffleMambaAdapter

__all__ = ['OutType', 'ShuffleMamba', 'ShuffleMambaAdapter', 'ShuffleMambaEncoder']
