"""Training components: the optimizer-wrapper constructors that read the models'
``_no_weight_decay`` mark (MMEngine's default one and mmpretrain's layer-wise lr decay),
the CPU bf16 AMP optimizer wrapper, the RNG-state hook for exact resumes and the hook that
stops training at the first non-finite loss."""
from .hooks import *  # noqa: F401,F403
from .hooks import __all__ as _hooks_all
from .optimizers import *  # noqa: F401,F403
from .optimizers import __all__ as _optimizers_all

__all__ = list(_optimizers_all) + list(_hooks_all)
