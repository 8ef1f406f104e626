"""PCK of your own keypoints in a COCO-format file (SynthPose's ``extra_keypoints``, or any set of K)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from ...keypoints import KeypointSet
from ..metrics import PCKMetric
from .base import EvaluationTask, items_from_dataset, predicted_points
from .coco_file import persons_dataset, read_coco_file


class CustomTask(EvaluationTask):
    """PCK of your own keypoints in a COCO-format file (SynthPose's ``extra_keypoints``, or any set of K).

    Args:
        keypoints: the K keypoints in the order the annotations list them (a keypoint table).
        keypoint_field: the annotation key holding their ``[x, y, v] * K``.

    PCK@t counts a labelled keypoint (v >= 1) as correct when the answer lies within t x the crop side (the
    ground-truth person box padded to a square, in image pixels), as the demo reports; an answer that did not
    parse is a miss. OKS AP is not given: it needs a sigma per keypoint type, which new types do not have.
    The baseline answers, for every crop, each keypoint's mean position over the labelled crops of this same
    set (image-blind, but it has seen the answers' average: a slightly optimistic bar to beat).
    """

    name = "custom"

    def __init__(self, annotation_file, image_root, *, keypoints: KeypointSet, keypoint_field: str = "keypoints"):
        self.keypoint_field = keypoint_field
        coco_file = read_coco_file(annotation_file, len(keypoints), keypoint_field, with_ground_truth=False)
        dataset = persons_dataset(coco_file, annotation_file, image_root, keypoints=keypoints,
                                  keypoint_field=keypoint_field)
        self.truth = np.array([record.joints[:, :2] for record in dataset.records], dtype=np.float64)  # (N, K, 2)
        self.labelled = np.array([record.labelled for record in dataset.records])  # (N, K)
        super().__init__(annotation_file, image_root, keypoints, items_from_dataset(dataset, ("annotation_id", "bbox")),
                         dict(coco_file.skipped + Counter(dataset.skip_counts["annotations"])))
        self.centers = np.array([item.center for item in self.items], dtype=np.float64)  # (N, 2)
        self.crop_sides = np.array([item.scale[0] * item.pixel_std for item in self.items], dtype=np.float64)
        self.metric = PCKMetric(keypoints.names, truth=self.truth, labelled=self.labelled, normalizers=self.crop_sides,
                                thresholds=(0.1, 0.05), mean_pose=self.mean_pose())

    def protocol(self) -> dict:
        return {"boxes": "gt", "keypoint_field": self.keypoint_field,
                "normalizer": "the crop side in image pixels (the person box padded to a square)",
                "baseline": "each keypoint's mean position in the crop over this set's labelled crops, for every crop"}

    def mean_pose(self) -> np.ndarray:
        """(N, K, 2) the baseline's answers in image pixels."""
        in_crop = (self.truth - self.centers[:, None]) / self.crop_sides[:, None, None]  # (N, K, 2), crop centre 0
        weights = self.labelled[..., None]
        mean = (in_crop * weights).sum(axis=0) / np.maximum(weights.sum(axis=0), 1)  # (K, 2)
        return self.centers[:, None] + mean[None] * self.crop_sides[:, None, None]

    def metrics(self, records: list[dict]) -> dict:
        predictions = predicted_points(records)[..., :2]
        valid = np.array([r["valid"] for r in records], dtype=bool)
        predictions[~valid] = np.nan  # a miss, wherever the stand-in point happens to lie
        return self.metric.compute(predictions)
