"""Evaluation, one job per module (the CLI is ``locllm eval``; its printed report is ``cli/eval_report.py``).

- pure functions, predictions + ground truth in, a report dict out, no model in sight: ``coco`` (OKS keypoint
  AP, COCO and Human-Art), ``mpii`` (PCKh), ``h36m`` (MPJPE / PA-MPJPE), ``pck`` (PCK of any length);
- ``metrics``: metric objects over them, each built with a protocol's settings and ground truth, all called
  ``compute(predictions) -> dict`` (:class:`KeypointMetric`: :class:`CocoKeypointMetric`,
  :class:`MpiiPCKhMetric`, :class:`H36mMPJPEMetric`, :class:`PCKMetric`);
- ``tasks``: a data set with its protocol: the persons to ask and the metric object that scores them
  (``build_task``; a new data set is a module there);
- ``loop``: ``run_evaluation``, a localizer over every person of a task (several processes: ``distributed``),
  each answer written to the resumable predictions file (``predictions_log``).
"""

from .coco import COCO_STAT_NAMES, evaluate_coco_keypoints, instance_score, oks_nms, rescore_instances
from .h36m import (
    H36M_ACTIONS,
    action_from_file_name,
    evaluate_h36m,
    image_to_camera,
    procrustes_align,
)
from .metrics import CocoKeypointMetric, H36mMPJPEMetric, KeypointMetric, MpiiPCKhMetric, PCKMetric
from .mpii import MpiiGroundTruth, evaluate_mpii_pckh, head_sizes, load_mpii_ground_truth, pckh_per_joint
from .pck import pck

__all__ = [
    "COCO_STAT_NAMES", "evaluate_coco_keypoints", "instance_score", "oks_nms", "rescore_instances",
    "H36M_ACTIONS", "action_from_file_name", "evaluate_h36m", "image_to_camera", "procrustes_align",
    "MpiiGroundTruth", "evaluate_mpii_pckh", "head_sizes", "load_mpii_ground_truth", "pckh_per_joint",
    "pck", "CocoKeypointMetric", "H36mMPJPEMetric", "KeypointMetric", "MpiiPCKhMetric", "PCKMetric",
]
