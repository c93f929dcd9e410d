from . import checked_coco, checked_datasets  # noqa: F401  (register the Checked* datasets)
from .data_checks import CheckImageSize, CheckSegLabels, DataError, probe_image_file
from .generators.ade20k import (SYNTHETIC_CLASSES, ade20k_semantic_map,
                                generate_synthetic_ade20k, render_sample)
from .generators.coco import (SYNTHETIC_COCO_CLASSES, generate_synthetic_coco, mask_to_bbox,
                              mask_to_polygons, synthetic_coco_metainfo)
from .generators.imagenet import (SYNTHETIC_IMAGENET_CLASSES, dominant_class,
                                  generate_synthetic_imagenet)
from .generators.scenes import (SHAPE_CLASSES, SceneInstance, SyntheticScene, render_scene,
                                scene_rng, semantic_map)

__all__ = [
    'DataError', 'CheckSegLabels', 'CheckImageSize', 'probe_image_file',
    'SYNTHETIC_CLASSES', 'generate_synthetic_ade20k', 'render_sample', 'ade20k_semantic_map',
    'SYNTHETIC_COCO_CLASSES', 'generate_synthetic_coco', 'synthetic_coco_metainfo',
    'mask_to_polygons', 'mask_to_bbox', 'SHAPE_CLASSES', 'SceneInstance', 'SyntheticScene',
    'render_scene', 'scene_rng', 'semantic_map', 'SYNTHETIC_IMAGENET_CLASSES',
    'dominant_class', 'generate_synthetic_imagenet'
]
