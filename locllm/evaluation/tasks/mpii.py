"""MPII PCKh on the HRNet-layout validation list (``annot/valid.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...data.datasets import MpiiDataset
from ...keypoints import MPII_KEYPOINTS, KeypointSet
from ..metrics import MpiiPCKhMetric
from ..mpii import MpiiGroundTruth, load_mpii_ground_truth
from .base import EvaluationTask, check_keypoints, items_from_dataset, predicted_points


class MpiiTask(EvaluationTask):
    """MPII PCKh on the HRNet-layout validation list (``annot/valid.json``).

    Args:
        ground_truth_file: ``gt_valid.mat``; default the one beside the annotation file if there is one,
            else the head boxes in the entries (``head_box``, as SynthPose writes).
        keypoints: the 16 keypoints as asked; default our MPII set, whose pelvis, thorax, neck and head top
            a COCO-trained model knows only by their descriptions (the novel keypoints).
    """

    name = "mpii"

    def __init__(self, annotation_file, image_root, *, ground_truth_file: str | Path | None = None,
                 keypoints: KeypointSet | None = None):
        keypoints = check_keypoints(keypoints, MPII_KEYPOINTS)
        dataset = MpiiDataset(annotation_file, image_root, keypoints=keypoints)
        if dataset.layout != "hrnet":
            raise ValueError(f"{annotation_file}: MPII evaluation reads the HRNet list layout (valid.json), "
                             "not the COCO layout of the reference's mixed 3D training file")
        beside = Path(annotation_file).with_name("gt_valid.mat")
        if ground_truth_file is None and beside.is_file():
            ground_truth_file = beside
        self.ground_truth_file = ground_truth_file
        if ground_truth_file is not None:
            self.ground_truth = load_mpii_ground_truth(ground_truth_file)
        else:
            self.ground_truth = _ground_truth_from_entries(annotation_file, dataset)
        self.metric = MpiiPCKhMetric(self.ground_truth)
        items = items_from_dataset(dataset, ())
        if self.ground_truth.joints.shape[0] != len(items):
            raise ValueError(f"{ground_truth_file} holds {self.ground_truth.joints.shape[0]} persons, "
                             f"{annotation_file} {len(items)}: they must be the same list")
        super().__init__(annotation_file, image_root, keypoints, items, dataset.skip_counts["annotations"])

    def protocol(self) -> dict:
        return {"boxes": "annotated center and scale (HRNet: center y + 15 x scale, scale x 1.25)",
                "head_sizes": str(self.ground_truth_file or "head_box of each entry")}

    def metrics(self, records: list[dict]) -> dict:
        return self.metric.compute(predicted_points(records)[..., :2])


def _ground_truth_from_entries(annotation_file, dataset: MpiiDataset) -> MpiiGroundTruth:
    """The joints and head boxes of SynthPose-style entries, which carry a ``head_box`` each."""
    entries = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
    if not all("head_box" in entry for entry in entries):
        raise ValueError(f"{annotation_file}: PCKh needs head sizes: give the MPII ground truth (gt_valid.mat) "
                         "or entries with head_box [x1, y1, x2, y2]")
    head_boxes = np.array([entry["head_box"] for entry in entries], dtype=np.float64).reshape(-1, 2, 2) - 1.0
    return MpiiGroundTruth(
        joints=np.array([record.joints[:, :2] for record in dataset.records], dtype=np.float64),
        missing=np.array([~record.labelled for record in dataset.records]),
        head_boxes=head_boxes,  # 1-based (MATLAB) in the file, like the joints
    )
