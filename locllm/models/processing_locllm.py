"""Everything around a model that is not the model, as one object per model (transformers' ``LlavaProcessor``).

    person box -> crop -> normalized pixels (image processor)        keypoint -> prompt ids (tokenizer)
    model output -> coordinates (codec) -> image pixels (image processor)

- :class:`LocLLMImageProcessor`: the crop geometry (box -> normalized crop tensor, crop -> image
  pixels); the geometry itself lives in ``locllm.data.geometry``.
- :class:`LocLLMProcessor`: the image processor, the tokenizer with its :class:`PromptBuilder`, the
  coordinate codec and the answer grammar of a LocLLM model.
- The CLIP baseline's processor (:mod:`locllm.models.processing_clip_baseline`) shares their base,
  ``_Processor``.

A processor is saved with a checkpoint (``processor_config.json`` next to the tokenizer files) and
loaded with ``from_pretrained(folder)``; a checkpoint without that file (every one written before it
existed) gets the same processor from its ``config.json`` and tokenizer.

Example:
    >>> processor = LocLLMProcessor.from_pretrained("locllm/assets/demo")
    >>> crops = processor.image_processor.crop_persons(image, boxes)  # (B, 3, S, S) pixel_values
    >>> prompt = processor.builder.inference_ids(knee)  # ids asking for one keypoint
    >>> coords, valid = processor.codec.decode("[0.412,0.655]")
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from ..bounds import CONFIG_SIZE_LIMITS, check_range
from ..codecs import DecimalCodec, build_codec
from ..data.geometry import box_to_center_scale, crop_image, crop_to_image
from ..prompts import PromptBuilder, PromptStyle
from ..prompts.grammar import AnswerGrammar, build_answer_grammar
from ..prompts.padding import pad_sequences, pad_token_id
from .configuration_locllm import CLIP_MEAN, CLIP_STD

PROCESSOR_FILE = "processor_config.json"


@dataclass
class CropBatch:
    pixel_values: torch.Tensor  # (B, 3, S, S) normalized
    centers: np.ndarray  # (B, 2)
    scales: np.ndarray  # (B, 2), in units of pixel_std


class LocLLMImageProcessor:
    """Person box -> normalized crop tensor, top-down style; crop coordinates -> image pixels."""

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


class _Processor(ABC):
    """What both processors share: an image processor, a tokenizer (padded by one rule), a codec, and
    their save / load. A subclass says what else it holds (``to_dict`` / ``from_dict``) and how a model
    config describes it (``from_config``)."""

    def __init__(self, image_processor: LocLLMImageProcessor, tokenizer, codec):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.codec = codec
        self.pad_token_id = pad_token_id(tokenizer)

    @abstractmethod
    def to_dict(self) -> dict:
        """What ``processor_config.json`` holds (besides ``processor_class``)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, config: dict, tokenizer):
        """The processor :meth:`to_dict` describes, around ``tokenizer``."""

    @classmethod
    @abstractmethod
    def from_config(cls, config, tokenizer):
        """The processor a model config describes (checkpoints saved without a processor)."""

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write ``processor_config.json`` and the tokenizer into ``save_directory``."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        config = {"processor_class": type(self).__name__, **self.to_dict()}
        (out / PROCESSOR_FILE).write_text(json.dumps(config, indent=2) + "\n")
        self.tokenizer.save_pretrained(out)

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path):
        """The checkpoint's processor: from its ``processor_config.json``, else from its model config.

        Every value is checked against its bound (:mod:`locllm.bounds`): one out of range, or a file that is not
        such a table, is one ValueError naming the file and the field."""
        folder = Path(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        saved = folder / PROCESSOR_FILE
        source = saved if saved.is_file() else folder / "config.json"
        try:
            if not saved.is_file():
                return cls.from_config(AutoConfig.from_pretrained(folder), tokenizer)
            config = json.loads(saved.read_text(encoding="utf-8"))
            if not isinstance(config, dict) or config.pop("processor_class", None) != cls.__name__:
                raise ValueError(f"it does not describe a {cls.__name__}")
            return cls.from_dict(config, tokenizer)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
            reason = f"no field {err}" if isinstance(err, KeyError) else str(err).strip().splitlines()[0]
            raise ValueError(f"{source}: {reason} (re-save or re-download the checkpoint)") from None


class LocLLMProcessor(_Processor):
    """A LocLLM model's image processor, prompt builder, coordinate codec and answer grammar.

    Args:
        image_processor: the crop geometry and pixel normalization.
        tokenizer: the model's tokenizer; the prompt style's image token is added to it if absent.
        style: the conversation's words (:meth:`PromptStyle.default` if None).
        codec: how coordinates are written (:class:`~locllm.codecs.DecimalCodec` if None).
        num_image_tokens: image placeholders per image (the model config's ``num_image_tokens``).
    """

    def __init__(self, image_processor: LocLLMImageProcessor, tokenizer, style: PromptStyle | None = None,
                 codec=None, num_image_tokens: int = 256):
        super().__init__(image_processor, tokenizer, codec if codec is not None else DecimalCodec())
        self.builder = PromptBuilder(tokenizer, style, num_image_tokens)

    @cached_property
    def grammar(self) -> AnswerGrammar:
        """The codec's answer as token steps (built on first use: location tokens must be in the tokenizer)."""
        return build_answer_grammar(self.builder, self.codec)

    @classmethod
    def from_config(cls, config, tokenizer) -> LocLLMProcessor:
        """From a :class:`~locllm.models.LocLLMConfig` (its ``prompt_style``, ``coordinate_codec``, image
        geometry and ``num_image_tokens``) and the model's tokenizer."""
        style = PromptStyle.from_dict(config.prompt_style) if config.prompt_style else PromptStyle()
        codec = (build_codec(config.coordinate_codec) if config.coordinate_codec
                 else DecimalCodec(ndim=config.coordinate_ndim))
        return cls(LocLLMImageProcessor.from_config(config), tokenizer, style, codec, config.num_image_tokens)

    def to_dict(self) -> dict:
        return {"image_processor": self.image_processor.to_dict(), "prompt_style": self.builder.style.to_dict(),
                "coordinate_codec": self.codec.to_dict(), "num_image_tokens": self.builder.num_image_tokens}

    @classmethod
    def from_dict(cls, config: dict, tokenizer) -> LocLLMProcessor:
        return cls(LocLLMImageProcessor.from_dict(config["image_processor"]), tokenizer,
                   PromptStyle.from_dict(config["prompt_style"]), build_codec(config["coordinate_codec"]),
                   config["num_image_tokens"])

    def pad(self, sequences: list[list[int]], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        """Token id lists -> ``(B, T)`` ids and attention mask, padded with this tokenizer's pad id."""
        return pad_sequences(sequences, self.pad_token_id, side)


__all__ = ["PROCESSOR_FILE", "CropBatch", "LocLLMImageProcessor", "LocLLMProcessor"]
