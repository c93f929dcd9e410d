"""mmplugin_shufflemamba: ShuffleMamba backbones for OpenMMLab.

Importing the package registers the backbones in MMEngine's root ``MODELS`` registry,
which mmsegmentation's and mmdetection's registries fall back to, and changes nothing
else in the process beyond importing timm and mmpretrain
(:mod:`mmplugin_shufflemamba.compat` is the opt-in for MMEngine's checkpoint loading).
"""
from .engine import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .version import __version__

__all__ = ['__version__', 'ShuffleMamba', 'ShuffleMambaAdapter',  # noqa: F405
           'ShuffleMambaLayerDecayOptimWrapperConstructor']
