"""Samples -> CLIP-baseline inputs: the normalized crops, the batch's keypoint texts and heatmap targets."""

from __future__ import annotations

import numpy as np
import torch

from ..models.processing_clip_baseline import CLIPBaselineProcessor

QUERY_CHOICE_STREAM = 3  # keeps the collator's keypoint choice independent of the other seeded draws


class CLIPBaselineCollator:
    """Build a training batch from ``(epoch, index, sample)`` items (what the trainer's loader yields).

    Each sample (a :class:`~locllm.data.datasets.PoseSample`: its ``image`` crop, ``joints``, ``visible``
    and ``keypoints``) is asked about up to ``keypoints_per_sample`` of its visible keypoints, chosen at
    random (``None``: all of them). The choice is seeded by (seed, epoch, index), like the datasets'
    augmentations, so a batch is the same whichever process builds it. Texts are encoded once per batch.

    Args:
        processor: the model's ``pixel_values``, keypoint texts and heatmap targets.

    Returns (from ``__call__``): ``pixel_values`` (B, 3, S, S); ``input_ids`` / ``attention_mask`` (T, L) of
    the batch's distinct keypoint texts; ``image_index`` / ``text_index`` (Q,); ``target_heatmaps``
    (Q, H, H); ``target_weights`` (Q,): the keyword arguments of the model's ``forward``.
    """

    def __init__(self, processor: CLIPBaselineProcessor, keypoints_per_sample: int | None = None, seed: int = 0):
        if keypoints_per_sample is not None and keypoints_per_sample < 1:
            raise ValueError(f"keypoints_per_sample must be >= 1 or None (all), got {keypoints_per_sample}")
        self.processor = processor
        self.keypoints_per_sample = keypoints_per_sample
        self.seed = seed

    def __call__(self, items) -> dict[str, torch.Tensor]:
        pixel_values = self.processor.pixel_values([sample.image for _, _, sample in items])
        texts: dict[str, int] = {}
        image_index, text_index, points = [], [], []
        for row, (epoch, index, sample) in enumerate(items):
            candidates = np.flatnonzero(sample.visible)
            if len(candidates) == 0:
                raise ValueError(f"sample {sample.image_id} has no visible keypoint to ask; training datasets "
                                 "skip such crops")
            if self.keypoints_per_sample is not None and len(candidates) > self.keypoints_per_sample:
                rng = np.random.default_rng([self.seed, epoch, index, QUERY_CHOICE_STREAM])
                candidates = np.sort(rng.choice(candidates, size=self.keypoints_per_sample, replace=False))
            for k in candidates:
                text = self.processor.keypoint_text(sample.keypoints[k])
                text_index.append(texts.setdefault(text, len(texts)))
                image_index.append(row)
                points.append(sample.joints[k, :2])
        input_ids, attention_mask = self.processor.tokenize_texts(list(texts))
        target_heatmaps, target_weights = self.processor.heatmap_targets(np.stack(points))
        return {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "image_index": torch.tensor(image_index, dtype=torch.long),
            "text_index": torch.tensor(text_index, dtype=torch.long),
            "target_heatmaps": target_heatmaps,
            "target_weights": target_weights,
        }


__all__ = ["CLIPBaselineCollator"]
