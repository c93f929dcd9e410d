"""mmplugin_shufflemamba: ShuffleMamba backbones for OpenMMLab.

Importing the package registers the backbones in MMEngine's root ``MODELS`` registry,
which mmsegmentation's and mmdetection's registries fall back to.
"""
from . import compat  # noqa: F401  (torch.load allow-list for MMEngine checkpoints)
from .engine import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .version import __version__

__all__ = ['__version__', 'ShuffleMamba', 'ShuffleMambaAdapter', 'ShuffleMambaLayerDecayOptimWrapperConstructor']
