from .encoder import ShuffleMambaEncoder
from .official_init import ShuffleMambaOfficialInit, official_init
from .shuffle_mamba import OutType, ShuffleMamba
from .shuffle_mamba_adapter import ShuffleMambaAdapter

__all__ = ['OutType', 'ShuffleMamba', 'ShuffleMambaAdapter', 'ShuffleMambaEncoder',
           'ShuffleMambaOfficialInit', 'official_init']
