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
    >>> crops = processor(image, boxes)  # PersonCrops: pixel_values (B, 3, S, S), regions
    >>> prompt = processor.builder.inference_ids(knee)  # ids asking for one keypoint
    >>> coords, valid = processor.codec.decode("[0.412,0.655]")
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from ..codecs import DecimalCodec, build_codec
from ..prompts import PromptBuilder, PromptStyle
from ..prompts.grammar import AnswerGrammar, build_answer_grammar
from ..prompts.padding import pad_sequences, pad_token_id
from .image_processing_locllm import CropRegions, LocLLMImageProcessor, PersonCrops

PROCESSOR_FILE = "processor_config.json"


class _Processor(ABC):
    """What both processors share: an image processor, a tokenizer (padded by one rule), a codec, and
    their save / load. A subclass says what else it holds (``to_dict`` / ``from_dict``) and how a model
    config describes it (``from_config``)."""

    def __init__(self, image_processor: LocLLMImageProcessor, tokenizer, codec):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.codec = codec
        self.pad_token_id = pad_token_id(tokenizer)

    @property
    def image_size(self) -> int:
        """The side of the model's square crops."""
        return self.image_processor.image_size

    @property
    def ndim(self) -> int:
        """Coordinates per keypoint the model answers: 2, or 3 with root-relative depth."""
        return self.codec.ndim

    def __call__(self, image: np.ndarray, regions: CropRegions | np.ndarray) -> PersonCrops:
        """One (H, W, 3) uint8 RGB image and its persons (:class:`CropRegions`, or (B, 4) boxes x, y, w, h) ->
        the model's ``pixel_values`` and the regions they were cut from."""
        return self.image_processor(image, regions)

    def regions(self, boxes_xywh) -> CropRegions:
        """(B, 4) person boxes -> the regions their crops are cut from."""
        return self.image_processor.regions(boxes_xywh)

    def post_process(self, normalized: np.ndarray, regions: CropRegions, valid: np.ndarray | None = None) -> np.ndarray:
        """(B, K, ndim) answers in [0, 1) of each crop -> image pixels; with ``valid``, unanswered keypoints at
        their stand-ins (:meth:`LocLLMImageProcessor.post_process`)."""
        return self.image_processor.post_process(normalized, regions, valid)

    def stand_ins(self, regions: CropRegions) -> np.ndarray:
        """(B, 2) where each region's unanswered keypoints go (:meth:`LocLLMImageProcessor.stand_ins`)."""
        return self.image_processor.stand_ins(regions)

    def crop_settings(self) -> dict:
        """How a person box becomes a crop (``image_size``, ``box_scale_factor``, ``pixel_std``): what a
        predictions file records, so that a :class:`LocLLMImageProcessor` made from it places a box's
        unanswered keypoints later (the COCO results)."""
        image_processor = self.image_processor
        return {"image_size": int(image_processor.image_size),
                "box_scale_factor": float(image_processor.box_scale_factor),
                "pixel_std": float(image_processor.pixel_std)}

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

    def with_style(self, **changes) -> LocLLMProcessor:
        """This processor with its prompt style changed (``changes``: :class:`PromptStyle` fields, e.g.
        ``with_description=False``): the same model asked another way."""
        style = dataclasses.replace(self.builder.style, **changes)
        return LocLLMProcessor(self.image_processor, self.tokenizer, style, self.codec, self.builder.num_image_tokens)


__all__ = ["PROCESSOR_FILE", "CropRegions", "LocLLMImageProcessor", "LocLLMProcessor", "PersonCrops"]
