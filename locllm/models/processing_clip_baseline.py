"""The CLIP baseline's processor: the image processor, the tokenizer reading keypoint texts and the heatmap
codec of a CLIP-baseline model, saved and loaded as LocLLM's (:mod:`locllm.models.processing_locllm`)."""

from __future__ import annotations

import numpy as np
import torch

from ..bounds import CONFIG_SIZE_LIMITS, check_range, check_text
from ..codecs import HeatmapCodec
from ..keypoints import Keypoint
from ..prompts.padding import pad_sequences
from .processing_locllm import LocLLMImageProcessor, _Processor


class CLIPBaselineProcessor(_Processor):
    """A CLIP-baseline model's image processor, keypoint texts and heatmap codec.

    Args:
        image_processor: the crop geometry and pixel normalization.
        tokenizer: the text tower's tokenizer; it must have an EOS token, where the tower is read.
        codec: keypoints in crop pixels <-> heatmaps.
        text_template: what the text tower reads for a keypoint, with ``{name}`` and ``{description}``.
        max_text_length: the text tower's positions; longer texts are cut before their EOS.
    """

    def __init__(self, image_processor: LocLLMImageProcessor, tokenizer, codec: HeatmapCodec,
                 text_template: str = "{description}", max_text_length: int = 77):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token, which the text tower is read at")
        check_text("text_template", text_template)
        check_range("max_text_length", max_text_length, 2, CONFIG_SIZE_LIMITS["max_text_length"])
        super().__init__(image_processor, tokenizer, codec)
        self.text_template = text_template
        self.max_text_length = max_text_length

    @classmethod
    def from_config(cls, config, tokenizer) -> CLIPBaselineProcessor:
        """From a :class:`~locllm.models.CLIPBaselineConfig` and the text tower's tokenizer."""
        return cls(LocLLMImageProcessor.from_config(config), tokenizer, config.heatmap_codec(),
                   config.text_template, config.max_text_length)

    def to_dict(self) -> dict:
        codec = self.codec
        return {"image_processor": self.image_processor.to_dict(), "heatmap_size": codec.heatmap_size,
                "heatmap_sigma": codec.sigma, "text_template": self.text_template,
                "max_text_length": self.max_text_length}

    @classmethod
    def from_dict(cls, config: dict, tokenizer) -> CLIPBaselineProcessor:
        image_processor = LocLLMImageProcessor.from_dict(config["image_processor"])
        check_range("heatmap_size", config["heatmap_size"], 1, image_processor.image_size)
        check_range("heatmap_sigma", config["heatmap_sigma"], 1e-3, 1e3, integer=False)
        codec = HeatmapCodec(image_processor.image_size, config["heatmap_size"], config["heatmap_sigma"])
        return cls(image_processor, tokenizer, codec, config["text_template"], config["max_text_length"])

    def keypoint_text(self, keypoint: Keypoint) -> str:
        """What the text tower reads for ``keypoint``."""
        return self.text_template.format(name=keypoint.name, description=keypoint.description)

    def tokenize_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> right-padded ``input_ids`` and ``attention_mask`` (T, L), each text ending in EOS.

        The model reads each text at its last real token, so EOS must be there: CLIP's tokenizer adds it,
        others (the character tokenizer of tiny models) get it appended; a text too long is cut before it.
        """
        eos = self.tokenizer.eos_token_id
        rows = []
        for text in texts:
            ids = self.tokenizer(text)["input_ids"]
            if ids[-1] != eos:
                ids = ids + [eos]
            rows.append(ids if len(ids) <= self.max_text_length else ids[: self.max_text_length - 1] + [eos])
        return pad_sequences(rows, self.pad_token_id)

    def heatmap_targets(self, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, 2) keypoints in crop pixels, all visible -> the training targets: heatmaps (Q, H, H) and their
        weights (Q,) (:meth:`~locllm.codecs.HeatmapCodec.encode`)."""
        return self.codec.encode(points, np.ones(len(points), dtype=bool))

    def decode_heatmaps(self, heatmaps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(Q, H, H) predicted heatmaps -> each one's keypoint (Q, 2) in [0, 1) of the crop (its argmax, shifted a
        quarter cell towards the higher neighbour) and its peak value (Q,), both float64."""
        crop_points, peaks = self.codec.decode(heatmaps)
        return crop_points.cpu().double().numpy() / self.image_size, peaks.cpu().double().numpy()


__all__ = ["CLIPBaselineProcessor"]
