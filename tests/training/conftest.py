"""What the training tests share: 56 px pose samples with every COCO keypoint visible."""

from __future__ import annotations

import numpy as np
import pytest

from locllm.data.datasets import PoseSample
from locllm.keypoints import COCO_KEYPOINTS

SAMPLE_SIZE = 56


def visible_pose_samples(count: int, has_depth: bool = False) -> list[tuple[int, int, PoseSample]]:
    """``count`` collator items ``(epoch 0, index, sample)``: random crops and joints (seeded by the index),
    every COCO keypoint visible; a depth per joint when ``has_depth``."""
    items = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        joints = np.zeros((17, 3), dtype=np.float32)
        joints[:, :2] = rng.uniform(0, SAMPLE_SIZE, size=(17, 2))
        if has_depth:
            joints[:, 2] = rng.uniform(0, SAMPLE_SIZE, size=17)
        visible = np.ones(17, dtype=bool)
        items.append((0, seed, PoseSample(
            image=rng.integers(0, 256, size=(SAMPLE_SIZE, SAMPLE_SIZE, 3), dtype=np.uint8), joints=joints,
            visible=visible, labelled=visible.copy(), keypoints=COCO_KEYPOINTS, has_depth=has_depth,
            center=np.array([28.0, 28.0], dtype=np.float32), scale=np.array([0.28, 0.28], dtype=np.float32),
            rotation=0.0, pixel_std=200.0, flipped=False, image_size=(SAMPLE_SIZE, SAMPLE_SIZE), image_id=seed)))
    return items


@pytest.fixture
def pose_samples():
    return visible_pose_samples
