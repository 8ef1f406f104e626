"""``HeatmapAnswerer``: how a CLIP-baseline model answers: one heatmap per (person, keypoint).

    crops (P, 3, S, S) -> feature maps, once per crop; keypoint texts, once per call (model)
        -> one heatmap per (person, keypoint) -> argmax + quarter-cell shift (codec) -> crop pixels

With it the :class:`~locllm.engine.Localizer` does everything else as for LocLLM (boxes, crops,
keypoint sets and a checkpoint's ``descriptions.json``, the inverse crop), so ``locllm eval``,
``locllm predict`` and every metric and novel-keypoint protocol treat both models alike. A keypoint's
score is its heatmap's peak, clipped to [0, 1] as text scores are; every keypoint gets a position
(``valid`` is all true) and no answer text. Heatmaps have one decoding: ``mode`` ("fast" or
"reference") gives the same keypoints.
"""

from __future__ import annotations

import numpy as np
import torch

from ..keypoints import KeypointSet
from ..models.processing_clip_baseline import CLIPBaselineProcessor


class HeatmapAnswerer:
    """Answers by heatmaps; see the module docstring."""

    @torch.no_grad()
    def __call__(self, model, processor: CLIPBaselineProcessor, pixel_values: torch.Tensor, kp_set: KeypointSet,
                 mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
        """Normalized crop tensors (P, 3, S, S) on the model's device -> per person: coordinates (P, K, 2)
        in [0, 1) of the crop, scores (P, K), valid (P, K), and no answer texts (P empty lists)."""
        device = pixel_values.device
        input_ids, attention_mask = processor.tokenize_texts([processor.keypoint_text(kp) for kp in kp_set])
        feature_map = model.get_feature_map(pixel_values)
        text_embeddings = model.get_text_embeddings(input_ids.to(device), attention_mask.to(device))
        persons, k = feature_map.shape[0], len(kp_set)
        image_index = torch.arange(persons, device=device).repeat_interleave(k)
        text_index = torch.arange(k, device=device).repeat(persons)
        heatmaps = model.predict_heatmaps(feature_map, text_embeddings, image_index, text_index)
        normalized, peaks = processor.decode_heatmaps(heatmaps)
        scores = np.clip(peaks, 0.0, 1.0)
        return (normalized.reshape(persons, k, 2), scores.reshape(persons, k), np.ones((persons, k), dtype=bool),
                [[] for _ in range(persons)])


__all__ = ["HeatmapAnswerer"]
