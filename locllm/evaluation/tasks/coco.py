"""COCO-format keypoint AP (COCO val2017, Human-Art, SynthPose) from ground-truth or detector boxes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...data.detections import read_detections
from ...data.geometry import PIXEL_STD, box_to_center_scale
from ...keypoints import COCO_KEYPOINTS, PAPER_HELD_OUT, KeypointSet
from ..metrics import CocoKeypointMetric
from .base import EvalItem, EvaluationTask, check_keypoints, items_from_dataset
from .coco_file import persons_dataset, read_coco_file


class CocoTask(EvaluationTask):
    """COCO-format keypoint AP (COCO val2017, Human-Art, SynthPose) from ground-truth or detector boxes.

    Args:
        boxes: ``"gt"`` or the path of COCO detection results (``[{"image_id", "bbox", "score"}]``).
        detection_score_threshold: detections scored below it are not asked about.
        held_out: keypoint types left out of training, scored on their own (``"paper"``: the paper's four).
        keypoints: the 17 keypoints as asked (names, descriptions); default our COCO set.
        name: ``"coco"`` or ``"humanart"``, for the report.

    Detector boxes are cropped like ground-truth ones (padded to a square, no enlargement), the crops
    the model was trained on.
    """

    def __init__(self, annotation_file, image_root, *, boxes: str | Path = "gt", detection_score_threshold: float = 0.0,
                 held_out: Sequence[str] | str = (), keypoints: KeypointSet | None = None, name: str = "coco"):
        self.name = name
        keypoints = check_keypoints(keypoints, COCO_KEYPOINTS)
        coco_file = read_coco_file(annotation_file, len(keypoints))
        self.coco = coco_file.ground_truth
        self.ground_truth_repairs = coco_file.repairs
        self.boxes = "gt" if str(boxes) == "gt" else "detections"
        self.detections_file = None if self.boxes == "gt" else Path(boxes)
        self.detection_score_threshold = float(detection_score_threshold)
        held_out = PAPER_HELD_OUT if held_out == "paper" else tuple(held_out)
        self.held_out = [COCO_KEYPOINTS.names[COCO_KEYPOINTS.index(n)] for n in held_out]  # KeyError if unknown
        self.metric = CocoKeypointMetric(self.coco, boxes=self.boxes, held_out=self.held_out)
        if self.boxes == "gt":
            dataset = persons_dataset(coco_file, annotation_file, image_root, keypoints=keypoints)
            items = items_from_dataset(dataset, ("annotation_id", "bbox"))
            skipped = dict(coco_file.skipped + Counter(dataset.skip_counts["annotations"]))
        else:
            items, skipped = self._detection_items(), {}
        super().__init__(annotation_file, image_root, keypoints, items, skipped)

    def _detection_items(self) -> list[EvalItem]:
        detections: dict[int, list] = {}
        for detection in read_detections(self.detections_file, self.detection_score_threshold):
            if detection["image_id"] is None:
                raise ValueError(f"{self.detections_file}: a detection names its image by file_name only; "
                                 "evaluation matches detections to the ground truth by image_id")
            detections.setdefault(detection["image_id"], []).append((detection["bbox"], detection["score"]))
        unknown = set(detections) - set(self.coco.getImgIds())
        if unknown:
            raise ValueError(f"{self.detections_file}: detections for image ids not in the ground truth: "
                             f"{sorted(unknown)[:10]}")
        items = []
        for image_id in sorted(self.coco.getImgIds()):
            image = self.coco.imgs[image_id]
            for box, score in detections.get(image_id, []):
                center, scale = box_to_center_scale(box, 1.0, 1.0, PIXEL_STD)
                items.append(EvalItem(len(items), image["file_name"], image_id, center, scale, PIXEL_STD,
                                      {"bbox": box, "box_score": score},
                                      _box_problem(box, image.get("width"), image.get("height"))))
        return items

    def protocol(self) -> dict:
        protocol: dict = {"boxes": self.boxes}
        if self.boxes == "detections":
            protocol.update(detections_file=str(self.detections_file),
                            detection_score_threshold=self.detection_score_threshold)
        protocol.update(self.metric.protocol())
        if self.held_out:
            protocol["held_out"] = self.held_out
        if self.ground_truth_repairs:
            protocol["ground_truth_repairs"] = self.ground_truth_repairs
        return protocol

    def metrics(self, records: list[dict]) -> dict:
        """Each answered person as a COCO result (a person without any answer is a missed person)."""
        results = []
        for item, record in zip(self.items, records, strict=True):
            if record["error"]:
                continue
            scores = np.where(record["valid"], record["scores"], 0.0)
            keypoints = np.column_stack([np.asarray(record["keypoints"])[:, :2], scores])
            results.append({"image_id": item.image_id, "category_id": 1, "keypoints": keypoints.reshape(-1).tolist(),
                            "score": float(scores.mean()), **item.identity})
        return self.metric.compute(results)


def _box_problem(box: list[float], width: int | None, height: int | None) -> str | None:
    """Why a detection box cannot be used (empty, not finite, outside the image), or None."""
    x, y, w, h = box
    if not np.isfinite(box).all() or w <= 0 or h <= 0:
        return f"box {box} is empty"
    if width is not None and height is not None and (x >= width or y >= height or x + w <= 0 or y + h <= 0):
        return f"box {box} lies outside the {width}x{height} image"
    return None
