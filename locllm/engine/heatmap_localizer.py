"""``HeatmapLocalizer``: the :class:`~locllm.engine.Localizer` API over a CLIP-baseline checkpoint.

    image -> person crops (processor) -> feature maps, once per crop; keypoint texts, once per call (model)
          -> one heatmap per (person, keypoint) -> argmax + quarter-cell shift (codec) -> crop pixels
          -> image pixels (processor)

Everything but the answering step is the Localizer's own (boxes, crops, keypoint sets and a checkpoint's
``descriptions.json``, the inverse crop), so ``locllm eval``, ``locllm predict`` and every metric and
novel-keypoint protocol treat both models alike. A keypoint's score is its heatmap's peak, clipped to
[0, 1] as the Localizer's scores are; every keypoint gets a position (``valid`` is all true) and no
answer text.

Example:
    >>> localizer = HeatmapLocalizer.from_pretrained("runs/clip-baseline/checkpoints/step-0001000")
    >>> people = localizer.localize("photo.jpg", boxes=[[40, 30, 120, 260]], keypoints=["left knee", "neck"])
    >>> people[0].keypoints  # (2, 2) x, y in image pixels; people[0].scores: (2,)
"""

from __future__ import annotations

import numpy as np
import torch

from ..keypoints import KeypointSet
from ..models.clip_baseline import CLIPBaselineForKeypointHeatmaps, tokenize_keypoint_texts
from ..models.processing_locllm import LocLLMImageProcessor
from .localizer import Localizer


class HeatmapLocalizer(Localizer):
    """Keypoint localization with a CLIP-baseline checkpoint; see the module docstring.

    ``mode`` ("fast" or "reference") is accepted wherever the Localizer takes it; heatmaps have one
    decoding, so both give the same keypoints.
    """

    model_class = CLIPBaselineForKeypointHeatmaps

    def __init__(self, model: CLIPBaselineForKeypointHeatmaps, tokenizer, descriptions: dict[str, str] | None = None,
                 device: str | torch.device = "cpu", persons_per_batch: int = 8):
        # The Localizer's __init__ builds prompts and a decoding grammar, which heatmaps do not need; these
        # are the attributes its shared methods (localize, localize_crops, keypoint_set) read.
        self.model = model.eval()
        self.config = model.config
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.codec = self.config.heatmap_codec()
        self.processor = LocLLMImageProcessor.from_config(self.config)
        self.descriptions = descriptions or {}
        self.persons_per_batch = persons_per_batch

    @torch.no_grad()
    def _answer_crops(self, pixel_values: torch.Tensor, kp_set: KeypointSet,
                      mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
        """Normalized crop tensors (P, 3, S, S) -> per person: coordinates (P, K, 2) in [0, 1) of the crop,
        scores (P, K), valid (P, K), and no answer texts (P empty lists)."""
        texts = [self.config.keypoint_text(keypoint) for keypoint in kp_set]
        input_ids, attention_mask = tokenize_keypoint_texts(self.tokenizer, texts, self.config.max_text_length)
        feature_map = self.model.get_feature_map(pixel_values.to(self.device))
        text_embeddings = self.model.get_text_embeddings(input_ids.to(self.device), attention_mask.to(self.device))
        persons, k = feature_map.shape[0], len(kp_set)
        image_index = torch.arange(persons, device=self.device).repeat_interleave(k)
        text_index = torch.arange(k, device=self.device).repeat(persons)
        heatmaps = self.model.predict_heatmaps(feature_map, text_embeddings, image_index, text_index)
        crop_points, peaks = self.codec.decode(heatmaps)
        normalized = crop_points.cpu().double().numpy().reshape(persons, k, 2) / self.config.image_size
        scores = peaks.clamp(0.0, 1.0).cpu().double().numpy().reshape(persons, k)
        return normalized, scores, np.ones((persons, k), dtype=bool), [[] for _ in range(persons)]


__all__ = ["HeatmapLocalizer"]
