"""Training augmentation for top-down keypoint crops (paper 4.2; the reference's COCO loader).

One random draw per sample: a scale multiplier ``clip(N(1, sigma), 1 - sigma, 1 + sigma)``, a rotation
uniform in ``[-max_rotation, max_rotation]`` degrees with probability ``rotation_prob`` (else 0), and a
horizontal flip with probability ``flip_prob`` that also swaps left and right keypoints. The random
numbers come from an explicit ``np.random.Generator``, so a sample is reproducible from its seed, and
nothing passed in is modified: the reference changes its cached annotations in place (docs/differences.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import flip_keypoints, flip_points


@dataclass(frozen=True)
class AugmentationConfig:
    """How strongly to augment; the defaults are the paper's (and the reference's COCO) recipe."""

    flip_prob: float = 0.5
    scale_sigma: float = 0.3  # the multiplier is N(1, sigma) clipped to [1 - sigma, 1 + sigma]
    rotation_prob: float = 0.5
    max_rotation: float = 40.0  # degrees

    def __post_init__(self):
        for name in ("flip_prob", "rotation_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentationConfig.{name} is a probability in [0, 1], got {value}")
        if not 0.0 <= self.scale_sigma < 1.0:
            raise ValueError(
                "AugmentationConfig.scale_sigma must be in [0, 1) to keep the scale positive, "
                f"got {self.scale_sigma}"
            )
        if self.max_rotation < 0:
            raise ValueError(f"AugmentationConfig.max_rotation must be >= 0 degrees, got {self.max_rotation}")

    @property
    def enabled(self) -> bool:
        rotates = self.rotation_prob > 0 and self.max_rotation > 0
        return self.flip_prob > 0 or self.scale_sigma > 0 or rotates


PAPER_AUGMENTATION = AugmentationConfig()
NO_AUGMENTATION = AugmentationConfig(flip_prob=0.0, scale_sigma=0.0, rotation_prob=0.0)


@dataclass(frozen=True)
class AugmentationDraw:
    """The random choices for one sample."""

    scale_multiplier: float
    rotation: float  # degrees
    flip: bool


def draw_augmentation(config: AugmentationConfig, rng: np.random.Generator) -> AugmentationDraw:
    """Draw scale, rotation and flip for one sample (in the reference's order: scale, rotation, flip)."""
    sigma = config.scale_sigma
    scale_multiplier = float(np.clip(rng.standard_normal() * sigma + 1.0, 1.0 - sigma, 1.0 + sigma))
    rotate = rng.random() < config.rotation_prob
    rotation = float(rng.uniform(-config.max_rotation, config.max_rotation)) if rotate else 0.0
    flip = bool(rng.random() < config.flip_prob)
    return AugmentationDraw(scale_multiplier, rotation, flip)


@dataclass
class AugmentedView:
    """An image and its annotation after augmentation, ready to be cropped; the inputs stay unchanged."""

    image: np.ndarray  # (H, W, 3): the input image, or a flipped copy when ``flipped``
    joints: np.ndarray  # (K, D) float64, x and y in the (flipped) image
    labelled: np.ndarray  # (K,) bool, swapped with the joints on a flip
    center: np.ndarray  # (2,) float32
    scale: np.ndarray  # (2,) float32
    rotation: float  # degrees, for the affine crop
    flipped: bool


def apply_augmentation(
    image: np.ndarray,
    joints: np.ndarray,
    labelled: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    flip_indices: Sequence[int],
    draw: AugmentationDraw,
) -> AugmentedView:
    """Apply one draw: scale the crop, set its rotation and, on a flip, mirror the image, joints and center.

    Args:
        image: ``(H, W, 3)`` image the joints are annotated on.
        joints: ``(K, D)`` keypoints, x and y first, in image pixels.
        labelled: ``(K,)`` which keypoints are annotated.
        center, scale: the crop's ``(2,)`` center and scale.
        flip_indices: each keypoint's left/right partner.
    """
    joints = np.array(joints, dtype=np.float64)
    labelled = np.array(labelled, dtype=bool)
    center = np.array(center, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32) * np.float32(draw.scale_multiplier)
    if draw.flip:
        width = image.shape[1]
        image = np.ascontiguousarray(image[:, ::-1])
        joints, labelled = flip_keypoints(joints, labelled, flip_indices, width)
        center = flip_points(center, width).astype(np.float32)
    return AugmentedView(image, joints, labelled, center, scale, draw.rotation, draw.flip)
