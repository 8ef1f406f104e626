"""Metrics as pure functions: predictions + ground truth in, a report dict out. No model in sight.

``coco``: OKS keypoint AP (COCO, Human-Art); ``mpii``: PCKh; ``h36m``: MPJPE / PA-MPJPE.
"""

from .coco import COCO_STAT_NAMES, evaluate_coco_keypoints, instance_score, oks_nms, rescore_instances
from .h36m import (
    H36M_ACTIONS,
    action_from_file_name,
    evaluate_h36m,
    image_to_camera,
    procrustes_align,
)
from .mpii import MpiiGroundTruth, evaluate_mpii_pckh, head_sizes, load_mpii_ground_truth, pckh_per_joint

__all__ = [
    "COCO_STAT_NAMES", "evaluate_coco_keypoints", "instance_score", "oks_nms", "rescore_instances",
    "H36M_ACTIONS", "action_from_file_name", "evaluate_h36m", "image_to_camera", "procrustes_align",
    "MpiiGroundTruth", "evaluate_mpii_pckh", "head_sizes", "load_mpii_ground_truth", "pckh_per_joint",
]
