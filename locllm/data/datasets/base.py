"""The sample every keypoint dataset yields, and the machinery the datasets share.

A dataset parses its annotation file once into read-only :class:`PoseRecord`s (dropping, and counting,
annotations it cannot use), then builds each :class:`PoseSample` on demand: read the image, augment
(training only), cut the crop, map the keypoints into it. A missing or corrupt image never stops an
epoch: the item is skipped for the next one and counted. Datasets yield crops, not tokens: the training
collator writes the conversation and the model's image processor makes the tensor.
"""

from __future__ import annotations

import abc
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ...keypoints import KeypointSet
from ..augment import AugmentationConfig, apply_augmentation, draw_augmentation
from ..geometry import (
    PIXEL_STD,
    affine_points,
    crop_to_image,
    flip_points,
    get_affine_transform,
    warp_to_crop,
)
from ..images import ImageReadError, read_image_rgb

logger = logging.getLogger(__name__)


@dataclass
class PoseSample:
    """One person crop and its keypoints.

    ``meta["index"]`` is the position of the record the sample came from: when an image cannot be read
    the dataset returns the next usable record instead, so evaluation should key its results on it.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB crop; H = W = crop size by default
    # (K, 3) float32: x, y in crop pixels, root-relative depth in mm (0 without depth); 0 where not labelled
    joints: np.ndarray
    # (K,) bool: labelled, inside the crop (and depth range) and not excluded: may be asked in training
    visible: np.ndarray
    labelled: np.ndarray  # (K,) bool: annotated in the source, inside the crop or not
    keypoints: KeypointSet  # names, descriptions and flip partners of the K keypoints
    has_depth: bool  # whether joints[:, 2] is a real depth target (Human3.6M) or a placeholder 0
    center: np.ndarray  # (2,) float32 crop center, in pixels of the (flipped when ``flipped``) source image
    scale: np.ndarray  # (2,) float32 crop scale, in units of ``pixel_std`` pixels
    rotation: float  # degrees the content is turned counter-clockwise in the crop
    pixel_std: float  # 200 for COCO-style scales, 1 for pixel scales
    flipped: bool  # whether the source image was mirrored before cropping
    image_size: tuple[int, int]  # (width, height) of the source image
    image_id: int | str
    meta: dict = field(default_factory=dict)

    @property
    def crop_size(self) -> tuple[int, int]:
        """(width, height) of the crop."""
        return self.image.shape[1], self.image.shape[0]

    def crop_to_image(self, points) -> np.ndarray:
        """``(..., 2)`` crop pixels -> pixels of the original (unflipped) source image, float64."""
        points = crop_to_image(points, self.center, self.scale, self.crop_size, self.rotation, self.pixel_std)
        return flip_points(points, self.image_size[0]) if self.flipped else points


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class PoseRecord:
    """One annotated person as parsed from an annotation file; its arrays are read-only."""

    image_path: Path
    image_id: int | str
    center: np.ndarray  # (2,) float32
    scale: np.ndarray  # (2,) float32, in units of the dataset's pixel_std
    # (K, 3) float32 (the reference's precision; at high zoom crop coordinates depend on it):
    # x, y in image pixels, root-relative depth in mm (0 without depth)
    joints: np.ndarray
    labelled: np.ndarray  # (K,) bool
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        # copies made read-only: a sample can never change the cached annotation (the reference does)
        object.__setattr__(self, "center", _read_only(np.array(self.center, dtype=np.float32).reshape(2)))
        object.__setattr__(self, "scale", _read_only(np.array(self.scale, dtype=np.float32).reshape(2)))
        object.__setattr__(self, "joints", _read_only(np.array(self.joints, dtype=np.float32)))
        object.__setattr__(self, "labelled", _read_only(np.array(self.labelled, dtype=bool)))
        if self.joints.ndim != 2 or self.joints.shape[1] != 3 or self.labelled.shape != self.joints.shape[:1]:
            raise ValueError(
                f"a record needs joints (K, 3) and labelled (K,); got {self.joints.shape} and "
                f"{self.labelled.shape}"
            )


class SkippingDataset(Dataset, abc.ABC):
    """Shared by every dataset here: items that cannot be built are skipped for the next one and counted.

    Counts are per process: each DataLoader worker keeps its own.
    """

    def __init__(self) -> None:
        self.skipped_annotations: Counter[str] = Counter()  # reason -> annotations dropped while loading
        self.unreadable_images: set[str] = set()  # paths that could not be read

    def _skip_annotation(self, reason: str) -> None:
        self.skipped_annotations[reason] += 1

    def _log_loaded(self, num_items: int, source: str) -> None:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped_annotations.items()))
        logger.info("%s: %d items from %s%s", type(self).__name__, num_items, source,
                    f" (skipped: {skipped})" if skipped else "")
        if num_items == 0:
            raise ValueError(
                f"{type(self).__name__}: no usable annotations in {source}"
                + (f" (skipped: {skipped})" if skipped else "")
            )

    def _read_image(self, path: Path) -> np.ndarray | None:
        key = str(path)
        if key in self.unreadable_images:
            return None
        try:
            return read_image_rgb(path)
        except ImageReadError as error:
            self.unreadable_images.add(key)
            logger.warning("%s; skipping it (%d unreadable images so far in %s)", error,
                           len(self.unreadable_images), type(self).__name__)
            return None

    @property
    def skip_counts(self) -> dict:
        """What was skipped so far: ``{"annotations": {reason: n}, "unreadable_images": n}``."""
        return {
            "annotations": dict(self.skipped_annotations),
            "unreadable_images": len(self.unreadable_images),
        }

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _load_item(self, index: int):
        """The item at ``index``, or ``None`` when it cannot be built (e.g. its image is unreadable)."""

    def __getitem__(self, index: int):
        num_items = len(self)
        if index < 0:
            index += num_items
        if not 0 <= index < num_items:
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of length {num_items}")
        for step in range(num_items):
            item = self._load_item((index + step) % num_items)
            if item is not None:
                return item
        raise RuntimeError(
            f"{type(self).__name__}: none of its {num_items} items can be used ({self.skip_counts})"
        )


class PoseDataset(SkippingDataset):
    """A top-down keypoint dataset: records -> :class:`PoseSample` crops.

    Subclasses parse their annotation format into :class:`PoseRecord`s and hand them to
    :meth:`_set_records`.

    Args:
        image_root: folder the records' image paths are relative to.
        keypoints: the ``K`` keypoints of the annotation, in annotation order (names, descriptions, flip
            partners); any set of the same length overrides the default (e.g. the reference's prompt names).
        train: training mode augments and yields only crops with at least one visible keypoint; evaluation
            mode never augments and yields every record.
        crop_size: crop side, or (width, height); boxes are padded to its aspect ratio.
        augmentation: applied in training mode only.
        exclude_keypoints: keypoint names that are never visible (the novel-keypoint protocol: never asked
            in training); their joints are still given.
        seed: with the epoch (:meth:`set_epoch`) and the index, seeds each sample's augmentation, so
            samples are reproducible whatever the number of DataLoader workers.
        pixel_std: the unit of the records' scales (200 for COCO-style scales, 1 for pixel scales).
        depth_range_mm: for depth datasets, the depth span the coordinate codec maps onto [0, 1]; a keypoint
            whose ``depth / range + 0.5`` falls outside [0, 1) is not visible.
    """

    has_depth: bool = False

    def __init__(
        self,
        image_root: str | Path,
        keypoints: KeypointSet,
        *,
        train: bool,
        crop_size: int | tuple[int, int],
        augmentation: AugmentationConfig,
        exclude_keypoints: Sequence[str] = (),
        seed: int = 0,
        pixel_std: float = PIXEL_STD,
        depth_range_mm: float | None = None,
    ) -> None:
        super().__init__()
        self.image_root = Path(image_root)
        self.keypoints = keypoints
        self.train = train
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.crop_size: tuple[int, int] = (int(crop_size[0]), int(crop_size[1]))
        if min(self.crop_size) <= 0:
            raise ValueError(f"crop_size must be positive, got {crop_size!r}")
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        self.pixel_std = pixel_std
        self.depth_range_mm = depth_range_mm
        self.flip_indices = keypoints.flip_indices()
        self.exclude_keypoints = tuple(exclude_keypoints)
        excluded = [keypoints.index(name) for name in self.exclude_keypoints]  # KeyError names unknown ones
        self.askable = np.ones(len(keypoints), dtype=bool)
        self.askable[excluded] = False
        self.empty_crops = 0  # training crops skipped because no keypoint was visible in them
        self.records: list[PoseRecord] = []

    @property
    def aspect_ratio(self) -> float:
        """Width / height of the crop, which every box is padded to."""
        return self.crop_size[0] / self.crop_size[1]

    def _set_records(self, records: list[PoseRecord], source: str) -> None:
        """Keep the records (in training only those with a keypoint that may be asked) and log the counts."""
        num_keypoints = len(self.keypoints)
        for record in records:
            if record.joints.shape[0] != num_keypoints:
                raise ValueError(
                    f"{source}: a record has {record.joints.shape[0]} keypoints but the keypoint set "
                    f"{self.keypoints.name!r} has {num_keypoints}"
                )
        if self.train:
            usable = [record for record in records if (record.labelled & self.askable).any()]
            for _ in range(len(records) - len(usable)):
                self._skip_annotation("without a labelled keypoint that may be asked")
            records = usable
        self.records = records
        self._log_loaded(len(records), source)

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations for the next epoch (the trainer calls this before each epoch)."""
        self.epoch = epoch

    @property
    def skip_counts(self) -> dict:
        return {**super().skip_counts, "empty_crops": self.empty_crops}

    def __len__(self) -> int:
        return len(self.records)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _load_item(self, index: int) -> PoseSample | None:
        record = self.records[index]
        image = self._read_image(self.image_root / record.image_path)
        if image is None:
            return None
        image_size = (image.shape[1], image.shape[0])
        joints, labelled, center, scale = record.joints, record.labelled, record.center, record.scale
        rotation, flipped = 0.0, False
        if self.train and self.augmentation.enabled:
            draw = draw_augmentation(self.augmentation, self._rng(index))
            view = apply_augmentation(image, joints, labelled, center, scale, self.flip_indices, draw)
            image, joints, labelled = view.image, view.joints, view.labelled
            center, scale, rotation, flipped = view.center, view.scale, view.rotation, view.flipped

        matrix = get_affine_transform(center, scale, rotation, self.crop_size, pixel_std=self.pixel_std)
        crop = warp_to_crop(image, matrix, self.crop_size)
        crop_joints = np.zeros((len(self.keypoints), 3), dtype=np.float32)
        crop_joints[:, :2] = affine_points(joints[:, :2], matrix)
        crop_joints[:, 2] = joints[:, 2]
        crop_joints[~labelled] = 0.0

        visible = labelled & self.askable & self._inside(crop_joints)
        if self.train and not visible.any():
            self.empty_crops += 1
            return None
        return PoseSample(
            image=crop,
            joints=crop_joints,
            visible=visible,
            labelled=labelled.copy(),
            keypoints=self.keypoints,
            has_depth=self.has_depth,
            center=np.array(center, dtype=np.float32),
            scale=np.array(scale, dtype=np.float32),
            rotation=float(rotation),
            pixel_std=self.pixel_std,
            flipped=flipped,
            image_size=image_size,
            image_id=record.image_id,
            meta={**record.meta, "index": index},
        )

    def _inside(self, crop_joints: np.ndarray) -> np.ndarray:
        """(K,) whether each keypoint can be written as coordinates in [0, 1): in the crop and depth range."""
        x, y, depth = crop_joints[:, 0], crop_joints[:, 1], crop_joints[:, 2]
        width, height = self.crop_size
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        if self.depth_range_mm is not None:
            normalized_depth = depth / np.float32(self.depth_range_mm) + np.float32(0.5)
            inside &= (normalized_depth >= 0) & (normalized_depth < 1)
        return inside
