"""Opt-in: importing this module lets MMEngine's loaders read MMEngine and official
checkpoints with the safe ``torch.load`` (see
:func:`mmplugin_shufflemamba.checkpoint.safe_load.enable_mmengine_checkpoints`). The configs
import it through ``custom_imports``; the tools enable it themselves."""
from .checkpoint.safe_load import (checkpoint_safe_globals, enable_mmengine_checkpoints,
                                   safe_torch_load)

enable_mmengine_checkpoints()

__all__ = ['checkpoint_safe_globals', 'enable_mmengine_checkpoints', 'safe_torch_load']
