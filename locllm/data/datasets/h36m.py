"""Human3.6M in the reference's JSON layout: 2D crop coordinates plus root-relative depth.

The file holds ``images`` (``file_name``, ``width``, ``height``, ``cam_param`` with ``R``, ``t``, ``f``,
``c``) and ``annotations`` (``image_id``, ``bbox``, ``keypoints_world`` in mm, optional
``keypoints_vis``). Each person's world joints go through the camera to pixels and a depth relative to
the root joint (:meth:`~locllm.data.camera.PinholeCamera.world_to_pixel_root_relative`); boxes are clipped to the
image with pixel scales and no enlargement, as the reference's ``Human36MDataset``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...keypoints import H36M_KEYPOINTS, KeypointSet
from ..augment import NO_AUGMENTATION, AugmentationConfig
from ..camera import PinholeCamera
from ..geometry import box_to_center_scale, clip_box
from .base import PoseDataset, PoseRecord

# Sequences of subject 9 whose ground truth is known to be broken; the reference (like the protocol-2
# code it descends from) leaves them out of training and testing.
CORRUPT_SEQUENCES = ("s_09_act_05_subact_02_ca", "s_09_act_10_subact_02_ca", "s_09_act_13_subact_01_ca")

# The reference's codec writes depth as depth / 2000 + 0.5, so [-1000, 1000) mm fits in [0, 1).
DEPTH_RANGE_MM = 2000.0


def _read_only(array) -> np.ndarray:
    array = np.array(array, dtype=np.float64)
    array.setflags(write=False)
    return array


class Human36MDataset(PoseDataset):
    """Person crops from a Human3.6M annotation file, with root-relative depth (``has_depth=True``).

    Args:
        annotation_file: the JSON file.
        image_root: folder the images' ``file_name``s are relative to.
        scale_factor: box enlargement (the reference: 1.0).
        root_index: the joint depths are relative to (the pelvis, 0, in the H36M order).
        depth_range_mm: the codec's depth span; a keypoint whose normalized depth falls outside [0, 1) is
            not visible.
        skip_sequences: file-name fragments of sequences to leave out.
        Other arguments: see :class:`~locllm.data.datasets.base.PoseDataset`. The reference trains
        without augmentation, hence the default.

    ``meta`` holds ``file_name``, ``bbox``, the camera (``camera_rotation``, ``camera_translation``,
    ``focal``, ``principal``), ``joints_cam`` ``(K, 3)`` and ``root_cam`` ``(3,)`` in mm: what the
    MPJPE evaluation needs to lift predictions back to 3D.
    """

    has_depth = True

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        *,
        train: bool = False,
        keypoints: KeypointSet | None = None,
        crop_size: int | tuple[int, int] = 224,
        scale_factor: float = 1.0,
        augmentation: AugmentationConfig = NO_AUGMENTATION,
        exclude_keypoints: Sequence[str] = (),
        seed: int = 0,
        root_index: int = 0,
        depth_range_mm: float = DEPTH_RANGE_MM,
        skip_sequences: Sequence[str] = CORRUPT_SEQUENCES,
    ) -> None:
        path = Path(annotation_file)
        if not path.is_file():
            raise FileNotFoundError(f"Human3.6M annotation file not found: {path}")
        super().__init__(
            image_root, H36M_KEYPOINTS if keypoints is None else keypoints, train=train, crop_size=crop_size,
            augmentation=augmentation,
            exclude_keypoints=exclude_keypoints, seed=seed, pixel_std=1.0, depth_range_mm=depth_range_mm,
        )
        self.scale_factor = scale_factor
        self.root_index = root_index
        self.skip_sequences = tuple(skip_sequences)
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise ValueError(f"{path}: expected a dict with images and annotations (the reference's layout)")
        self._set_records(self._parse(data), str(path))

    def _parse(self, data: dict) -> list[PoseRecord]:
        images = {image["id"]: image for image in data["images"]}
        num_keypoints = len(self.keypoints)
        records = []
        for annotation in data["annotations"]:
            image = images.get(annotation.get("image_id"))
            if image is None:
                self._skip_annotation("without an image entry")
                continue
            if any(name in image["file_name"] for name in self.skip_sequences):
                self._skip_annotation("in a skipped sequence")
                continue
            world = np.asarray(annotation.get("keypoints_world", ()), dtype=np.float64)
            if world.shape != (num_keypoints, 3):
                self._skip_annotation(f"without {num_keypoints} world keypoints")
                continue
            box = clip_box(annotation["bbox"], image["width"], image["height"])
            if box[2] <= 0 or box[3] <= 0:
                self._skip_annotation("with an empty box")
                continue
            camera = image["cam_param"]
            pixels, joints_cam = PinholeCamera.from_h36m(camera).world_to_pixel_root_relative(world, self.root_index)
            labelled = np.asarray(annotation.get("keypoints_vis", np.ones(num_keypoints)), dtype=float) > 0
            if labelled.shape != (num_keypoints,):
                self._skip_annotation(f"without {num_keypoints} keypoints_vis flags")
                continue
            center, scale = box_to_center_scale(box, self.aspect_ratio, self.scale_factor, pixel_std=1.0)
            records.append(PoseRecord(
                image_path=Path(image["file_name"]),
                image_id=annotation["image_id"],
                center=center,
                scale=scale,
                joints=pixels,
                labelled=labelled,
                meta={
                    "file_name": image["file_name"],
                    "bbox": tuple(float(v) for v in annotation["bbox"]),
                    "camera_rotation": _read_only(camera["R"]),
                    "camera_translation": _read_only(camera["t"]),
                    "focal": _read_only(camera["f"]),
                    "principal": _read_only(camera["c"]),
                    "joints_cam": _read_only(joints_cam),
                    "root_cam": _read_only(joints_cam[self.root_index]),
                },
            ))
        return records
