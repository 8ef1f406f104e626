"""Metric objects: a protocol's settings and ground truth held once, ``compute(predictions) -> dict`` over the
pure functions.

In the spirit of MMPose 1.x's metric classes (without registries): the data set side (which persons,
which ground truth) lives in :mod:`.tasks`, the arithmetic in :mod:`.coco`, :mod:`.mpii`, :mod:`.h36m` and
:mod:`.pck`; a metric object says how they combine into a report and knows no model. Every one is built
with the ground truth and called the same way, with the predictions in the form its class documents:

    metric = PCKMetric(["neck", "pelvis"], truth=truth, labelled=labelled, normalizers=crop_sides)
    metric.compute(predicted)  # {"pck@0.1", "pck@0.05", "num_keypoints", ...}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO

from ..keypoints import COCO_KEYPOINTS, MPII_KEYPOINTS
from .coco import evaluate_coco_keypoints, oks_nms, rescore_instances
from .h36m import evaluate_h36m
from .mpii import MpiiGroundTruth, evaluate_mpii_pckh, pckh_per_joint
from .pck import pck

# The detector-box protocol of HRNet / MMPose / ViTPose: keypoint scores above this count towards the
# instance score, which is then multiplied by the box score; duplicates above this OKS are removed.
DETECTION_KEYPOINT_SCORE_THRESHOLD = 0.2
DETECTION_OKS_NMS_THRESHOLD = 0.9
# HRNet and the reference print "Mean@0.1" from row 11 of np.arange(0, 0.51, 0.01): a threshold of 0.11.
REFERENCE_LOW_THRESHOLD = 0.11


class KeypointMetric(ABC):
    """What every metric object keeps: built with a data set's ground truth, ``compute(predictions) -> dict``."""

    @abstractmethod
    def compute(self, predictions) -> dict:
        """The predictions for the ground truth's persons, in the order it holds them -> the metrics."""


class CocoKeypointMetric(KeypointMetric):
    """OKS keypoint AP / AR (pycocotools) of COCO result dicts, optionally also over held-out keypoint types.

    Args:
        ground_truth: the loaded COCO keypoint annotations.
        boxes: ``"gt"``: results are scored as given (the reference: mean keypoint score, no NMS);
            ``"detections"``: rescored and deduplicated as HRNet / MMPose do (see :meth:`protocol`).
        held_out: COCO keypoint names left out of training, also scored on their own next to the others.
    """

    def __init__(self, ground_truth: COCO, *, boxes: str = "gt", held_out: Sequence[str] = ()):
        self.ground_truth = ground_truth
        self.boxes = boxes
        self.held_out = list(held_out)

    def protocol(self) -> dict:
        """How persons are scored and deduplicated, for the report."""
        if self.boxes == "gt":
            return {"instance_score": "mean of all keypoint scores (the reference)", "oks_nms": None}
        return {"instance_score": f"mean of keypoint scores > {DETECTION_KEYPOINT_SCORE_THRESHOLD} "
                                  "x box score (HRNet / MMPose)",
                "oks_nms": DETECTION_OKS_NMS_THRESHOLD}

    def compute(self, predictions: Sequence[Mapping]) -> dict:
        """``predictions``: COCO result dicts (``image_id``, ``keypoints`` [x, y, s] * 17, ``score``, and with
        detector boxes ``bbox`` and ``box_score``) -> the COCO stats (``"AP"``, ...) and, with held-out
        types, ``"novel_keypoints": {"held_out", "seen", "unseen"}``."""
        results = list(predictions)
        if self.boxes == "detections":
            results = rescore_instances(results, use_box_score=True,
                                        keypoint_score_threshold=DETECTION_KEYPOINT_SCORE_THRESHOLD)
            results = oks_nms(results, COCO_KEYPOINTS.sigmas, DETECTION_OKS_NMS_THRESHOLD)
        metrics = self._evaluate(results)
        if self.held_out:
            unseen = [COCO_KEYPOINTS.index(n) for n in self.held_out]
            seen = [i for i in range(len(COCO_KEYPOINTS)) if i not in unseen]
            metrics["novel_keypoints"] = {"held_out": self.held_out, "seen": self._evaluate(results, seen),
                                          "unseen": self._evaluate(results, unseen)}
        return metrics

    def _evaluate(self, results: list[dict], keypoint_indices: list[int] | None = None) -> dict:
        return evaluate_coco_keypoints(self.ground_truth, results, boxes=self.boxes, keypoint_indices=keypoint_indices)


class MpiiPCKhMetric(KeypointMetric):
    """MPII PCKh at 0.5 and 0.1: joint groups, both means, the novel keypoints, per joint, and the reference's
    ``Mean@0.1`` (its threshold is 0.11)."""

    thresholds = (0.5, 0.1)

    def __init__(self, ground_truth: MpiiGroundTruth):
        self.ground_truth = ground_truth

    def compute(self, predictions: np.ndarray) -> dict:
        """``predictions``: (N, 16, 2) joints in 0-based image pixels, ``MPII_KEYPOINTS`` order; percentages."""
        metrics: dict = evaluate_mpii_pckh(predictions, self.ground_truth, thresholds=self.thresholds)
        metrics["per_joint"] = {
            f"PCKh@{t:g}": dict(zip(MPII_KEYPOINTS.names, pckh_per_joint(predictions, self.ground_truth, t).tolist(),
                                    strict=True))
            for t in self.thresholds
        }
        low = evaluate_mpii_pckh(predictions, self.ground_truth, thresholds=(REFERENCE_LOW_THRESHOLD,))
        metrics[f"reference_Mean@0.1 (threshold {REFERENCE_LOW_THRESHOLD})"] = (
            low[f"PCKh@{REFERENCE_LOW_THRESHOLD:g}"]["mean_coco_joints"])
        return metrics


class H36mMPJPEMetric(KeypointMetric):
    """Human3.6M MPJPE and PA-MPJPE in mm, root-relative, per action where the actions are known.

    Args:
        ground_truth: (N, J, 3) true poses in camera coordinates, mm.
        actions: N action names, or None for no per-action errors.
        root_index: the joint both poses are made relative to.
    """

    def __init__(self, ground_truth: np.ndarray, actions: Sequence[str] | None, root_index: int):
        self.ground_truth = ground_truth
        self.actions = actions
        self.root_index = root_index

    def compute(self, predictions: np.ndarray) -> dict:
        """``predictions``: (N, J, 3) poses in camera coordinates, mm -> see :func:`~.h36m.evaluate_h36m`."""
        return evaluate_h36m(predictions, self.ground_truth, self.actions, root_index=self.root_index)


class PCKMetric(KeypointMetric):
    """PCK at a few thresholds of a per-person length, overall and per keypoint, optionally next to a baseline's.

    Args:
        keypoint_names: the K keypoints' names, which key ``"per_keypoint"``.
        truth: (N, K, 2) true positions, in the units of the predictions.
        labelled: (N, K) bool, the keypoints that count.
        normalizers: (N,) each person's length (e.g. the crop side).
        thresholds: fractions of each person's normalizer.
        mean_pose: (N, K, 2) a baseline's answers for the same persons (e.g. a mean pose placed in each crop),
            reported next to the predictions' PCK; None for none.
    """

    def __init__(self, keypoint_names: Sequence[str], *, truth: np.ndarray, labelled: np.ndarray,
                 normalizers: np.ndarray, thresholds: Sequence[float] = (0.1, 0.05), mean_pose: np.ndarray | None = None):
        self.thresholds = tuple(thresholds)
        self.keypoint_names = list(keypoint_names)
        self.truth, self.labelled, self.normalizers, self.mean_pose = truth, labelled, normalizers, mean_pose

    @property
    def keys(self) -> list[str]:
        """The report's names of the thresholds: ``"pck@0.1"``, ..."""
        return [f"pck@{t:g}" for t in self.thresholds]

    def compute(self, predictions: np.ndarray) -> dict:
        """PCK of ``predictions`` (N, K, 2) (NaN: no answer, a miss) and, when the metric has one, of the mean-pose
        baseline's answers.

        Returns:
            ``{"pck@T": fraction, ..., "num_keypoints": counted keypoints, "per_keypoint": {"pck@T": {name:
            fraction, NaN where none counts}}}``, and ``"mean_pose_baseline": {"pck@T": fraction}`` with ``mean_pose``.
        """
        truth, labelled, normalizers, mean_pose = self.truth, self.labelled, self.normalizers, self.mean_pose
        model = pck(predictions, truth, labelled, normalizers, self.thresholds)
        metrics = {
            **{key: model[key] for key in self.keys},
            "num_keypoints": model["num_keypoints"],
            "per_keypoint": {key: dict(zip(self.keypoint_names, model["per_keypoint"][key], strict=True))
                             for key in self.keys},
        }
        if mean_pose is not None:
            blind = pck(mean_pose, truth, labelled, normalizers, self.thresholds)
            metrics["mean_pose_baseline"] = {key: blind[key] for key in self.keys}
        return metrics


__all__ = ["CocoKeypointMetric", "H36mMPJPEMetric", "KeypointMetric", "MpiiPCKhMetric", "PCKMetric"]
