"""MPII Human Pose, in the two JSON layouts the reference reads.

- HRNet layout (``train.json`` / ``valid.json``): a list of ``{"image", "center", "scale", "joints",
  "joints_vis"}`` in MATLAB's 1-based pixels, scale = person height / 200. Crops follow HRNet and the
  reference's evaluation: :func:`~locllm.data.geometry.mpii_center_scale` (center down by 15 x scale,
  scale x 1.25, 0-based). In evaluation mode every entry is kept, in file order, because the PCKh ground
  truth (``gt_valid.mat``) is matched by position.
- COCO layout (the reference's ``annot_mpii.json`` for mixed 3D training): boxes clipped to the image
  (:func:`~locllm.data.geometry.clip_box`), pixel scales x 1.25, as its ``MPII3DDataset``.

MPII has no depth: samples have ``has_depth=False``, so a mixed 2D/3D trainer can leave the depth out
of their answers (the reference supervises a fake depth of 0 instead; docs/differences.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...keypoints import MPII_KEYPOINTS, KeypointSet
from ..augment import NO_AUGMENTATION, AugmentationConfig
from ..geometry import (
    MPII_SCALE_FACTOR,
    PIXEL_STD,
    box_to_center_scale,
    clip_box,
    matlab_to_zero_based,
    mpii_center_scale,
)
from .base import PoseDataset, PoseRecord
from .coco import load_coco, person_annotations, person_record


class MpiiDataset(PoseDataset):
    """Person crops from an MPII annotation file (HRNet list layout or COCO layout; detected).

    Args:
        annotation_file: the JSON file.
        image_root: folder the image names are relative to.
        scale_factor: crop enlargement, 1.25 in both layouts as in the reference.
        Other arguments: see :class:`~locllm.data.datasets.base.PoseDataset`. The reference trains its
        MPII part without augmentation, hence the default.

    ``meta`` holds ``file_name``, and for the HRNet layout ``annotation_center`` / ``annotation_scale``;
    for the COCO layout ``annotation_id`` and ``bbox``. ``image_id`` is the entry's position in the file
    (HRNet layout) or the COCO image id.
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        *,
        train: bool = False,
        keypoints: KeypointSet | None = None,
        crop_size: int | tuple[int, int] = 224,
        scale_factor: float = MPII_SCALE_FACTOR,
        augmentation: AugmentationConfig = NO_AUGMENTATION,
        exclude_keypoints: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        path = Path(annotation_file)
        if not path.is_file():
            raise FileNotFoundError(f"MPII annotation file not found: {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        self.layout = "hrnet" if isinstance(data, list) else "coco"
        if self.layout == "coco" and not (isinstance(data, dict) and {"images", "annotations"} <= set(data)):
            raise ValueError(f"{path}: expected the HRNet MPII list or a COCO-layout dict with images and "
                             "annotations")
        super().__init__(
            image_root, MPII_KEYPOINTS if keypoints is None else keypoints, train=train, crop_size=crop_size,
            augmentation=augmentation,
            exclude_keypoints=exclude_keypoints, seed=seed,
            # HRNet scales are in 200-px units; the reference's COCO-layout loader keeps pixels
            pixel_std=PIXEL_STD if self.layout == "hrnet" else 1.0,
        )
        self.scale_factor = scale_factor
        records = self._parse_hrnet(data, path) if self.layout == "hrnet" else self._parse_coco(path)
        self._set_records(records, str(path))

    def _parse_hrnet(self, entries: list, path: Path) -> list[PoseRecord]:
        num_keypoints = len(self.keypoints)
        records = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not {"image", "center", "scale"} <= entry.keys():
                raise ValueError(f"{path}: entry {index} needs image, center and scale; got {entry!r:.200}")
            joints = np.zeros((num_keypoints, 3))
            labelled = np.zeros(num_keypoints, dtype=bool)
            if "joints" in entry:  # test-split files have no joints
                annotated = np.asarray(entry["joints"], dtype=np.float64)
                visibility = np.asarray(entry.get("joints_vis", np.ones(len(annotated))), dtype=np.float64)
                if annotated.shape != (num_keypoints, 2) or visibility.shape != (num_keypoints,):
                    raise ValueError(
                        f"{path}: entry {index} has joints {annotated.shape} / joints_vis "
                        f"{visibility.shape}; the keypoint set {self.keypoints.name!r} needs "
                        f"({num_keypoints}, 2) / ({num_keypoints},)"
                    )
                joints[:, :2] = matlab_to_zero_based(annotated)
                labelled = visibility > 0
            center, scale = mpii_center_scale(entry["center"], entry["scale"], self.scale_factor)
            records.append(PoseRecord(
                image_path=Path(entry["image"]),
                image_id=index,
                center=center,
                scale=scale,
                joints=joints,
                labelled=labelled,
                meta={
                    "file_name": entry["image"],
                    "annotation_center": tuple(float(v) for v in entry["center"]),
                    "annotation_scale": float(entry["scale"]),
                },
            ))
        return records

    def _parse_coco(self, path: Path) -> list[PoseRecord]:
        records = []
        for image_info, annotation, keypoints in person_annotations(
            load_coco(path), len(self.keypoints), self._skip_annotation
        ):
            box = clip_box(annotation["bbox"], image_info["width"], image_info["height"])
            if box[2] <= 0 or box[3] <= 0:
                self._skip_annotation("with an empty box")
                continue
            center, scale = box_to_center_scale(box, self.aspect_ratio, self.scale_factor, pixel_std=1.0)
            records.append(person_record(image_info, annotation, keypoints, center, scale))
        return records
