"""Human3.6M MPJPE / PA-MPJPE (mm) from a 3D checkpoint's answers (image position + root-relative depth)."""

from __future__ import annotations

import logging

import numpy as np

from ...data.datasets import Human36MDataset
from ...keypoints import H36M_KEYPOINTS, KeypointSet
from ..h36m import action_from_file_name, image_to_camera
from ..metrics import H36mMPJPEMetric
from .base import EvaluationTask, check_keypoints, items_from_dataset, predicted_points

logger = logging.getLogger(__name__)


class H36mTask(EvaluationTask):
    """Human3.6M MPJPE / PA-MPJPE (mm): each answer is lifted to camera coordinates with the ground-truth
    camera and root depth, then compared with the true pose."""

    name = "h36m"
    ndim = 3

    def __init__(self, annotation_file, image_root, *, keypoints: KeypointSet | None = None):
        keypoints = check_keypoints(keypoints, H36M_KEYPOINTS)
        dataset = Human36MDataset(annotation_file, image_root, keypoints=keypoints)
        self.root_index = dataset.root_index
        self.cameras = [record.meta for record in dataset.records]  # focal, principal, joints_cam, root_cam
        super().__init__(annotation_file, image_root, keypoints, items_from_dataset(dataset, ("bbox",)),
                         dataset.skip_counts["annotations"])
        try:
            self.actions = [action_from_file_name(item.file_name) for item in self.items]
        except ValueError as error:
            logger.warning("no per-action errors: %s", error)
            self.actions = None
        ground_truth = np.array([camera["joints_cam"] for camera in self.cameras])
        self.metric = H36mMPJPEMetric(ground_truth, self.actions, self.root_index)

    def protocol(self) -> dict:
        return {"boxes": "annotated boxes clipped to the image (the reference)",
                "lifting": "ground-truth camera and root depth", "joints": len(self.keypoints),
                "per_action": self.actions is not None}

    def metrics(self, records: list[dict]) -> dict:
        answers = predicted_points(records)  # (N, J, 3): image pixels and root-relative depth
        predicted = image_to_camera(
            answers[..., :2], answers[..., 2],
            root_depth=np.array([camera["root_cam"][2] for camera in self.cameras]),
            focal=np.array([camera["focal"] for camera in self.cameras]),
            principal_point=np.array([camera["principal"] for camera in self.cameras]),
            root_index=self.root_index,
        )
        return self.metric.compute(predicted)
