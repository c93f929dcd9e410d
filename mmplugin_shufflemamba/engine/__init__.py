"""Training components: the layer-wise lr decay optimizer-wrapper constructor."""
from .optimizers import *  # noqa: F401,F403
from .optimizers import __all__ as _optimizers_all

__all__ = list(_optimizers_all)
