from .adapter_modules import ConvFFN, Extractor, Injector, InteractionBlock, SpatialPriorModule
from .deform_attn import DeformInputs, MSDeformAttn
from .bimamba import BiMambaMixer, MambaBlock, build_token_norm
from .layer_shuffle import (LayerShuffle, inverse_permutation, permute_tokens,
                            sample_permutation, shuffle_probs, shuffled_call)
from .pos_embed import PatchEmbed, register_layout, resize_pos_embed
from .token_layout import TOKEN_KINDS, TokenLayout

__all__ = [
    'ConvFFN', 'DeformInputs', 'Extractor', 'Injector', 'InteractionBlock',
    'MSDeformAttn', 'SpatialPriorModule',
    'BiMambaMixer', 'MambaBlock', 'build_token_norm',
    'LayerShuffle', 'inverse_permutation', 'permute_tokens', 'sample_permutation',
    'shuffle_probs', 'shuffled_call', 'PatchEmbed', 'register_layout',
    'resize_pos_embed', 'TOKEN_KINDS', 'TokenLayout'
]
