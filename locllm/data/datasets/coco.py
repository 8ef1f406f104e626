"""COCO-format keypoint datasets: COCO, Human-Art, SynthPose, anything written in that layout.

Follows the reference's ``COCODataset``: persons (category 1, not crowd) with at least one labelled
keypoint, ground-truth boxes cleaned as HRNet does (:func:`~locllm.data.geometry.sanitize_coco_box`),
padded to the crop's aspect ratio, scale = side / 200 with no enlargement (``scale_factor=1.0``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from ...keypoints import COCO_KEYPOINTS, KeypointSet
from ..augment import PAPER_AUGMENTATION, AugmentationConfig
from ..geometry import PIXEL_STD, box_to_center_scale, sanitize_coco_box
from .base import PoseDataset, PoseRecord

PERSON_CATEGORY_ID = 1


def load_coco(annotation_file: str | Path | COCO) -> COCO:
    """A pycocotools ``COCO`` for a file (quietly: pycocotools prints to stdout), or the one given."""
    if isinstance(annotation_file, COCO):
        return annotation_file
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def person_annotations(
    coco: COCO, num_keypoints: int, skip: Callable[[str], None], category_id: int = PERSON_CATEGORY_ID,
    keypoint_field: str = "keypoints",
) -> Iterator[tuple[dict, dict, np.ndarray]]:
    """``(image entry, annotation, keypoints (K, 3) as x, y, v)`` for every non-crowd person, image by image.

    The keypoints are read from the annotation's ``keypoint_field`` (SynthPose keeps its extra keypoint types
    in ``extra_keypoints``). Annotations of another category, crowds, keypoint lists of the wrong length or
    without a labelled keypoint (v > 0), and annotations on image entries without ``file_name``, ``width``
    and ``height`` are passed to ``skip`` with the reason.
    """
    for image_id in coco.getImgIds():
        image_info = coco.loadImgs(image_id)[0]
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            if "width" not in image_info or "height" not in image_info or "file_name" not in image_info:
                skip("on an image entry without file_name, width and height")
                continue
            if annotation.get("category_id") != category_id:
                skip("not a person")
                continue
            if annotation.get("iscrowd", 0):
                skip("crowd")
                continue
            keypoints = np.asarray(annotation.get(keypoint_field, ()), dtype=np.float64)
            if keypoints.size != 3 * num_keypoints:
                reason = f"without {num_keypoints} keypoints"
                skip(reason if keypoint_field == "keypoints" else f"{reason} in {keypoint_field!r}")
                continue
            keypoints = keypoints.reshape(num_keypoints, 3)
            if not (keypoints[:, 2] > 0).any():
                skip("without labelled keypoints")
                continue
            yield image_info, annotation, keypoints


def person_record(image_info: dict, annotation: dict, keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray,
                  **meta) -> PoseRecord:
    """The record of one COCO-layout person: keypoints ``(K, 3)`` x, y, v; ``meta`` adds to the annotation's
    ``annotation_id``, ``bbox`` (x, y, w, h as annotated) and ``file_name``."""
    joints = np.zeros((len(keypoints), 3))
    joints[:, :2] = keypoints[:, :2]
    return PoseRecord(
        image_path=Path(image_info["file_name"]),
        image_id=image_info["id"],
        center=center,
        scale=scale,
        joints=joints,
        labelled=keypoints[:, 2] > 0,
        meta={"annotation_id": annotation.get("id"), "bbox": tuple(float(v) for v in annotation["bbox"]),
              **meta, "file_name": image_info["file_name"]},
    )

class CocoKeypointDataset(PoseDataset):
    """Person crops from a COCO-format keypoint file.

    Args:
        annotation_file: the JSON file, or a pycocotools ``COCO`` already loaded.
        image_root: folder the images' ``file_name``s are relative to.
        scale_factor: box enlargement (the reference: 1.0; HRNet/ViTPose use 1.25).
        category_id: the person category.
        keypoint_field: the annotation key holding the ``[x, y, v] * K`` of ``keypoints`` (a set of your own,
            e.g. from :func:`~locllm.keypoints.load_keypoint_table`, goes with its own field).
        Other arguments: see :class:`~locllm.data.datasets.base.PoseDataset`.

    ``meta`` holds ``annotation_id``, ``bbox`` (x, y, w, h as annotated), ``area`` and ``file_name``.
    """

    def __init__(
        self,
        annotation_file: str | Path | COCO,
        image_root: str | Path,
        *,
        train: bool = False,
        keypoints: KeypointSet | None = None,
        crop_size: int | tuple[int, int] = 224,
        scale_factor: float = 1.0,
        augmentation: AugmentationConfig = PAPER_AUGMENTATION,
        exclude_keypoints: Sequence[str] = (),
        seed: int = 0,
        category_id: int = PERSON_CATEGORY_ID,
        keypoint_field: str = "keypoints",
    ) -> None:
        super().__init__(
            image_root, COCO_KEYPOINTS if keypoints is None else keypoints, train=train, crop_size=crop_size,
            augmentation=augmentation,
            exclude_keypoints=exclude_keypoints, seed=seed, pixel_std=PIXEL_STD,
        )
        self.scale_factor = scale_factor
        self.keypoint_field = keypoint_field
        source = "a COCO object" if isinstance(annotation_file, COCO) else str(annotation_file)
        self._set_records(self._parse(load_coco(annotation_file), category_id), source)

    def _parse(self, coco: COCO, category_id: int) -> list[PoseRecord]:
        records = []
        for image_info, annotation, keypoints in person_annotations(
            coco, len(self.keypoints), self._skip_annotation, category_id, self.keypoint_field
        ):
            box = sanitize_coco_box(annotation["bbox"], image_info["width"], image_info["height"])
            center, scale = box_to_center_scale(box, self.aspect_ratio, self.scale_factor, PIXEL_STD)
            if annotation.get("area", 1.0) <= 0 or box[2] < 0 or box[3] < 0 or scale[0] <= 0:
                self._skip_annotation("with an empty box")
                continue
            records.append(person_record(image_info, annotation, keypoints, center, scale,
                                         area=float(annotation.get("area", 0.0))))
        return records
