"""Pre- and post-processing around the model: person box -> normalized crop tensor, and the model's
normalized crop coordinates -> image pixels. The geometry itself lives in ``locllm.data.geometry``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.geometry import box_to_center_scale, crop_image, crop_to_image
from .configuration_locllm import CLIP_MEAN, CLIP_STD, LocLLMConfig


@dataclass
class CropBatch:
    pixel_values: torch.Tensor  # (B, 3, S, S) normalized
    centers: np.ndarray  # (B, 2)
    scales: np.ndarray  # (B, 2), in units of pixel_std


class LocLLMImageProcessor:
    def __init__(self, image_size: int = 224, mean=CLIP_MEAN, std=CLIP_STD, box_scale_factor: float = 1.0,
                 pixel_std: float = 200.0):
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.box_scale_factor = box_scale_factor
        self.pixel_std = pixel_std

    @classmethod
    def from_config(cls, config: LocLLMConfig) -> LocLLMImageProcessor:
        return cls(config.image_size, config.image_mean, config.image_std)

    def normalize(self, crops: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """(B, S, S, 3) uint8 RGB crops -> (B, 3, S, S) float tensor: ToTensor, then mean/std."""
        array = np.ascontiguousarray(np.stack(crops) if isinstance(crops, list) else crops)
        pixels = torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0)
        return (pixels - self.mean) / self.std

    def crop_persons(self, image: np.ndarray, boxes_xywh: np.ndarray) -> CropBatch:
        """One (H, W, 3) uint8 RGB image and (B, 4) person boxes -> their crops, top-down style."""
        centers, scales = box_to_center_scale(boxes_xywh, 1.0, self.box_scale_factor, self.pixel_std)
        crops = [crop_image(image, c, s, 0.0, self.image_size, pixel_std=self.pixel_std)
                 for c, s in zip(centers, scales, strict=True)]
        return CropBatch(self.normalize(crops), centers, scales)

    def crop_to_image(self, normalized_xy: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """(K, 2) coordinates in [0, 1) of the crop -> (K, 2) image pixels."""
        crop_px = np.asarray(normalized_xy, dtype=np.float64) * self.image_size
        return crop_to_image(crop_px, center, scale, self.image_size, pixel_std=self.pixel_std)
