"""The person path's geometry, both ways (transformers' ``image_processing_*`` files; MMPose's ``TopdownAffine``).

    image + regions (person boxes, or a data set's center / scale) -> normalized crops + the regions they came from
    answers in [0, 1) of each crop + those regions -> keypoints in image pixels (stand-ins where unanswered)

The affine geometry itself lives in :mod:`locllm.data.geometry` (matched against the reference); this file is
the only one that composes it for a model.

Example:
    >>> image_processor = LocLLMImageProcessor(image_size=224)
    >>> crops = image_processor(image, boxes)  # PersonCrops: pixel_values (B, 3, 224, 224), regions
    >>> pixels = image_processor.post_process(coords, crops.regions, valid)  # (B, K, ndim) image pixels
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..bounds import CONFIG_SIZE_LIMITS, check_range
from ..data.geometry import box_to_center_scale, crop_image, crop_to_image
from .configuration_locllm import CLIP_MEAN, CLIP_STD


@dataclass(frozen=True)
class CropRegions:
    """Where each person's crop is cut, in the top-down convention of :mod:`locllm.data.geometry`.

    ``centers`` (N, 2) and ``scales`` (N, 2), scales in units of ``pixel_std`` (N,) pixels. A data set brings its
    own (e.g. MPII's center and scale, with pixel_std 1); :meth:`LocLLMImageProcessor.regions` makes them from
    person boxes. A region whose center or scale is not finite, or whose scale is not positive, has no crop.
    """

    centers: np.ndarray
    scales: np.ndarray
    pixel_std: np.ndarray

    @classmethod
    def of(cls, centers, scales, pixel_std) -> CropRegions:
        """Per-person centers, scales and pixel_std (a list of each, or arrays), their dtypes kept."""
        centers, scales = np.stack([np.asarray(c) for c in centers]), np.stack([np.asarray(s) for s in scales])
        return cls(centers.reshape(-1, 2), scales.reshape(-1, 2),
                   np.broadcast_to(np.asarray(pixel_std, dtype=np.float64), (len(centers),)))

    @classmethod
    def concatenate(cls, parts: list[CropRegions]) -> CropRegions:
        return cls(np.concatenate([p.centers for p in parts]), np.concatenate([p.scales for p in parts]),
                   np.concatenate([p.pixel_std for p in parts]))

    def __len__(self) -> int:
        return len(self.centers)

    def __getitem__(self, index) -> CropRegions:
        """The regions ``index`` (a slice, or a list / array of positions) picks."""
        return CropRegions(self.centers[index], self.scales[index], self.pixel_std[index])

    def boxes(self) -> np.ndarray:
        """(N, 4) float64 x, y, w, h in image pixels: the square of the image each region's crop shows."""
        sides = self.scales[:, 0].astype(np.float64) * self.pixel_std
        corners = self.centers.astype(np.float64) - sides[:, None] / 2
        return np.column_stack([corners, sides, sides])

    @classmethod
    def whole(cls, side: int) -> CropRegions:
        """The region of a square image of ``side`` pixels that is already a crop: cut to ``side`` pixels, it
        is itself, and answers in it come back in its own pixels."""
        return cls(np.full((1, 2), side / 2), np.full((1, 2), float(side)), np.ones(1))

    def has_crop(self) -> np.ndarray:
        """(N,) whether each region describes a crop."""
        finite = np.isfinite(self.centers).all(axis=1) & np.isfinite(self.scales).all(axis=1)
        return finite & (np.nan_to_num(self.scales[:, 0]) > 0)


@dataclass
class PersonCrops:
    """What :class:`LocLLMImageProcessor` gives the model for one image's persons, and where they came from."""

    pixel_values: torch.Tensor  # (N, 3, S, S) normalized
    regions: CropRegions


class LocLLMImageProcessor:
    """Person regions -> normalized crop tensors, top-down style; answers in the crop -> image pixels.

    Args:
        image_size: the crop side S (the model's input).
        mean, std: per-channel normalization of [0, 1] pixels.
        box_scale_factor, pixel_std: how a person box becomes a region (:func:`~locllm.data.geometry.box_to_center_scale`).
    """

    def __init__(self, image_size: int = 224, mean=CLIP_MEAN, std=CLIP_STD, box_scale_factor: float = 1.0,
                 pixel_std: float = 200.0):
        check_range("image_size", image_size, 8, CONFIG_SIZE_LIMITS["image_size"])
        for name, values, low in (("image_mean", mean, -1e3), ("image_std", std, 1e-6)):
            if not isinstance(values, (list, tuple)) or len(values) != 3:
                raise ValueError(f"{name} must be 3 numbers (R, G, B), got {str(values)[:60]}")
            for value in values:
                check_range(name, value, low, 1e3, integer=False)
        check_range("box_scale_factor", box_scale_factor, 1e-2, 1e2, integer=False)
        check_range("pixel_std", pixel_std, 1e-2, 1e5, integer=False)
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.box_scale_factor = box_scale_factor
        self.pixel_std = pixel_std

    @classmethod
    def from_config(cls, config) -> LocLLMImageProcessor:
        """From a model config's ``image_size``, ``image_mean`` and ``image_std`` (both models have them)."""
        return cls(config.image_size, config.image_mean, config.image_std)

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "image_mean": self.mean.flatten().tolist(),
                "image_std": self.std.flatten().tolist(), "box_scale_factor": self.box_scale_factor,
                "pixel_std": self.pixel_std}

    @classmethod
    def from_dict(cls, config: dict) -> LocLLMImageProcessor:
        return cls(config["image_size"], config["image_mean"], config["image_std"], config["box_scale_factor"],
                   config["pixel_std"])

    # ------------------------------------------------------------------ image -> model

    def regions(self, boxes_xywh) -> CropRegions:
        """(B, 4) person boxes x, y, w, h in image pixels -> their crop regions."""
        boxes = np.atleast_2d(np.asarray(boxes_xywh, dtype=np.float64))
        centers, scales = box_to_center_scale(boxes, 1.0, self.box_scale_factor, self.pixel_std)
        return CropRegions(centers, scales, np.full(len(centers), float(self.pixel_std)))

    def normalize(self, crops: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """(B, S, S, 3) uint8 RGB crops -> (B, 3, S, S) float tensor: ToTensor, then mean/std."""
        array = np.ascontiguousarray(np.stack(crops) if isinstance(crops, list) else crops)
        pixels = torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0)
        return (pixels - self.mean) / self.std

    def __call__(self, image: np.ndarray, regions: CropRegions | np.ndarray) -> PersonCrops:
        """One (H, W, 3) uint8 RGB image and its persons (:class:`CropRegions`, or (B, 4) boxes) -> their crops."""
        regions = regions if isinstance(regions, CropRegions) else self.regions(regions)
        crops = [crop_image(image, c, s, 0.0, self.image_size, pixel_std=float(p))
                 for c, s, p in zip(regions.centers, regions.scales, regions.pixel_std, strict=True)]
        return PersonCrops(self.normalize(crops), regions)

    # ------------------------------------------------------------------ model -> image

    def post_process(self, normalized: np.ndarray, regions: CropRegions, valid: np.ndarray | None = None) -> np.ndarray:
        """(B, K, ndim) answers in [0, 1) of each region's crop (depth, if any, in mm) -> (B, K, ndim) float64
        keypoints in image pixels, depth kept.

        ``valid`` (B, K): where given, a keypoint without a valid answer gets its stand-in (:meth:`stand_ins`) and
        depth 0, so that metrics compare with the reference's; without it, unanswered keypoints stay NaN."""
        keypoints = np.array(normalized, dtype=np.float64)
        for p in range(len(keypoints)):  # an unanswered (NaN) point maps to NaN, its row alone
            keypoints[p, :, :2] = self._to_image(keypoints[p, :, :2] * self.image_size, regions[p:p + 1])
        if valid is not None:
            invalid = ~np.asarray(valid, dtype=bool)
            keypoints[..., 2:][invalid] = 0.0
            keypoints[..., :2] = np.where(invalid[..., None], self.stand_ins(regions)[:, None], keypoints[..., :2])
        return keypoints

    def stand_ins(self, regions: CropRegions) -> np.ndarray:
        """(B, 2) where a keypoint without an answer goes: its crop's top-left corner, as in the reference (the
        region's center where it has no crop)."""
        places = np.array(regions.centers, dtype=np.float64)
        for p in np.flatnonzero(regions.has_crop()):
            places[p] = self._to_image(np.zeros((1, 2)), regions[p:p + 1])[0]
        return places

    def _to_image(self, crop_points: np.ndarray, region: CropRegions) -> np.ndarray:
        """(K, 2) crop pixels of one region -> (K, 2) image pixels."""
        return crop_to_image(crop_points, region.centers[0], region.scales[0], self.image_size, 0.0,
                             pixel_std=float(region.pixel_std[0]))


__all__ = ["CropRegions", "LocLLMImageProcessor", "PersonCrops"]
