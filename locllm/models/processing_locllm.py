"""Everything around a model that is not the model, as one object per model (transformers' ``LlavaProcessor``).

    image + person regions -> crops -> pixel_values (image processor)     keypoints -> prompt ids (prompt builder)
    answer tokens -> texts -> coordinates in the crop (codec) -> image pixels, stand-ins where unanswered

- :class:`LocLLMImageProcessor` (:mod:`.image_processing_locllm`): the person path's geometry, both ways.
- :class:`LocLLMProcessor`: the image processor, the tokenizer with its :class:`PromptBuilder`, the
  coordinate codec and the answer grammar of a LocLLM model; callers ask it (prompts, training examples,
  answers read as coordinates), never its parts.
- The CLIP baseline's processor (:mod:`locllm.models.processing_clip_baseline`) shares their base,
  ``_Processor``.

A processor holds and writes every non-weight file of a checkpoint: ``processor_config.json``, the tokenizer
files, ``descriptions.json`` and ``calibration.json``; saving a checkpoint is "model + processor". It is loaded
with ``from_pretrained(folder)``; a checkpoint without ``processor_config.json`` (every one written before it
existed) gets the same processor from its ``config.json`` and tokenizer.

Example:
    >>> processor = LocLLMProcessor.from_pretrained("locllm/assets/demo")
    >>> crops = processor(image, boxes)  # pixel_values (B, 3, S, S) and the regions they were cut from
    >>> prefix, queries = processor.prompt_ids([knee])  # ids asking for one keypoint
    >>> texts, coords, valid = processor.decode_answers(answer_token_ids)  # (N, ndim) in [0, 1) of the crop
    >>> keypoints = processor.post_process(coords.reshape(B, K, -1), crops.regions, valid.reshape(B, K))
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from ..codecs import DecimalCodec, build_codec
from ..codecs.reading import Steps, beam_values, span_scores, subdigit_values
from ..keypoints import Keypoint
from ..keypoints.user import load_checkpoint_descriptions
from ..prompts import IGNORE_INDEX, PromptBuilder, PromptStyle
from ..prompts.grammar import AnswerGrammar, build_answer_grammar
from ..prompts.padding import pad_sequences, pad_token_id
from .calibration import Calibration
from .image_processing_locllm import CropRegions, LocLLMImageProcessor, PersonCrops
from .modeling_base import checkpoint_weights_sha256

PROCESSOR_FILE = "processor_config.json"
DESCRIPTIONS_FILE = "descriptions.json"


class _Processor(ABC):
    """What both processors share: an image processor, a tokenizer (padded by one rule), a codec, and
    their save / load. A subclass says what else it holds (``to_dict`` / ``from_dict``) and how a model
    config describes it (``from_config``)."""

    def __init__(self, image_processor: LocLLMImageProcessor, tokenizer, codec):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.codec = codec
        self.pad_token_id = pad_token_id(tokenizer)
        # The checkpoint's own keypoint table (names the model was trained on, or the reference's words) and
        # its confidence calibration, where it has them.
        self.descriptions: dict[str, str] | None = None
        self.calibration: Calibration | None = None

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

    def pixel_values(self, crops: list[np.ndarray]) -> torch.Tensor:
        """(S, S, 3) uint8 RGB crops -> the model's ``pixel_values`` (B, 3, S, S), normalized with the image
        processor's mean and std; a crop of another size is a ValueError (the data's crop size must be the
        model's image size)."""
        size = self.image_size
        for crop in crops:
            if crop.shape != (size, size, 3):
                raise ValueError(f"a crop has shape {crop.shape} but the model takes ({size}, {size}, 3) images; "
                                 "set data.crop_size to the model's image size")
        return self.image_processor.normalize(crops)

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
        """Write every non-weight file of a checkpoint into ``save_directory``: ``processor_config.json``, the
        tokenizer, ``descriptions.json`` (when the processor has a keypoint table) and ``calibration.json`` (when
        it has a calibration fitted for the weights already in that folder: save the model first, as in
        transformers; a calibration of other weights, e.g. those a training run started from, is left behind)."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        config = {"processor_class": type(self).__name__, **self.to_dict()}
        (out / PROCESSOR_FILE).write_text(json.dumps(config, indent=2) + "\n")
        self.tokenizer.save_pretrained(out)
        if self.descriptions is not None:
            write_descriptions(out, self.descriptions)
        if self.calibration is not None and self.calibration.checkpoint_sha256 == checkpoint_weights_sha256(out):
            self.calibration.save(out)

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, calibration: bool = True):
        """The checkpoint's processor: from its ``processor_config.json``, else from its model config; with the
        checkpoint's ``descriptions.json`` and (unless ``calibration`` is False: e.g. to refit a stale one)
        ``calibration.json`` where it has them.

        Every value is checked against its bound (:mod:`locllm.bounds`): one out of range, or a file that is not
        such a table, is one ValueError naming the file and the field."""
        folder = Path(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        saved = folder / PROCESSOR_FILE
        source = saved if saved.is_file() else folder / "config.json"
        try:
            if not saved.is_file():
                processor = cls.from_config(AutoConfig.from_pretrained(folder), tokenizer)
            else:
                config = json.loads(saved.read_text(encoding="utf-8"))
                if not isinstance(config, dict) or config.pop("processor_class", None) != cls.__name__:
                    raise ValueError(f"it does not describe a {cls.__name__}")
                processor = cls.from_dict(config, tokenizer)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
            reason = f"no field {err}" if isinstance(err, KeyError) else str(err).strip().splitlines()[0]
            raise ValueError(f"{source}: {reason} (re-save or re-download the checkpoint)") from None
        descriptions = folder / DESCRIPTIONS_FILE
        processor.descriptions = load_checkpoint_descriptions(descriptions) if descriptions.is_file() else None
        processor.calibration = Calibration.load(folder) if calibration else None
        return processor


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

    @property
    def prompt_style(self) -> PromptStyle:
        """How this processor's conversations are worded (:meth:`with_style` gives one worded otherwise)."""
        return self.builder.style

    def with_style(self, **changes) -> LocLLMProcessor:
        """This processor with its prompt style changed (``changes``: :class:`PromptStyle` fields, e.g.
        ``with_description=False``): the same model asked another way."""
        style = dataclasses.replace(self.prompt_style, **changes)
        processor = LocLLMProcessor(self.image_processor, self.tokenizer, style, self.codec,
                                    self.builder.num_image_tokens)
        processor.descriptions, processor.calibration = self.descriptions, self.calibration
        return processor

    # -- prompts ------------------------------------------------------------------------------------
    @property
    def eos_token_id(self) -> int:
        """The token that ends every answer and caption."""
        return self.builder.eos_token_id

    @property
    def image_token_id(self) -> int:
        """The prompt's image placeholder, where the model puts the image features."""
        return self.builder.image_token_id

    def check_image_token(self, model_image_token_id: int) -> None:
        """Raise ValueError unless the model (its config's ``image_token_id``) reads the image at this
        tokenizer's image placeholder."""
        if self.image_token_id != model_image_token_id:
            raise ValueError(f"tokenizer maps {self.prompt_style.image_token!r} to {self.image_token_id}, the model "
                             f"expects {model_image_token_id}")

    def prompt_ids(self, keypoints: Iterable[Keypoint]) -> tuple[list[int], list[list[int]]]:
        """The ids asking for each keypoint about one image: the prefix every sequence starts with (BOS and the
        image tokens), and per keypoint its query up to ``Answer:``. The full prompt of a keypoint is
        ``prefix + query``."""
        return self.builder.prefix_ids(), [self.builder.query_ids(keypoint) for keypoint in keypoints]

    def unit_token_ids(self) -> dict[str, int]:
        """The single-token ids of the answer's digits and punctuation (``"0123456789.,[]"``)."""
        return self.builder.unit_token_ids()

    # -- training -----------------------------------------------------------------------------------
    def training_example(self, rounds: Sequence[tuple[Keypoint, Sequence[float]]],
                         supervise_depth: bool | None = None) -> dict[str, list[int]]:
        """One multi-round conversation: the image prefix, then per round the keypoint's query and its answer.

        Args:
            rounds: ``(keypoint, coordinates)`` per round: x and y normalized to the crop, and with a 3D codec
                the root-relative depth in mm (NaN where unknown: the codec writes its filler depth).
            supervise_depth: whether a 3D answer's depth is supervised; ``None``: iff it is known.

        Returns:
            ``{"input_ids": [L], "labels": [L]}``, labels ``IGNORE_INDEX`` except the supervised answer
            tokens and each round's EOS (:meth:`PromptBuilder.training_example`).
        """
        return self.builder.training_example(
            [(keypoint, self.codec.answer_pieces(coords, supervise_depth=supervise_depth)) for keypoint, coords in rounds])

    def caption_example(self, caption: str) -> dict[str, list[int]]:
        """The image prefix, then ``caption`` and EOS, which alone are supervised (LLaVA's "plain" pretraining
        template)."""
        caption_ids = self.tokenizer.encode(caption, add_special_tokens=False) + [self.eos_token_id]
        prefix = self.builder.prefix_ids()
        return {"input_ids": prefix + caption_ids, "labels": [IGNORE_INDEX] * len(prefix) + caption_ids}

    # -- answers ------------------------------------------------------------------------------------
    def decode_answers(self, token_ids: Sequence[Sequence[int]]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Generated answers (one id list each, special tokens skipped) -> their texts (stripped), coordinates
        (Q, ndim) in [0, 1) of the crop (depth in mm), NaN where an answer does not parse, and valid (Q,)."""
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_ids]
        coords, valid = self.codec.decode_batch(texts)
        return texts, coords, valid

    def subdigit_coordinates(self, steps: Steps) -> np.ndarray:
        """(Q, ndim) coordinates read from the answers' digit distributions ``steps`` by the boundary-aware
        expectation around each value's first digit (:func:`~locllm.codecs.reading.subdigit_values`)."""
        return self.codec.values_to_coordinates(subdigit_values(steps, self.codec))

    def beam_coordinates(self, greedy_steps: Steps, runner_up_steps: Steps) -> np.ndarray:
        """(Q, ndim) coordinates from a beam of two over each value's first digit: the greedy answers' steps and
        those of the answers that took the runner-up first digit (:func:`~locllm.codecs.reading.beam_values`)."""
        return self.codec.values_to_coordinates(beam_values(greedy_steps, runner_up_steps, self.codec))

    def value_scores(self, token_ids: Sequence[Sequence[int]], step_probs: torch.Tensor) -> np.ndarray:
        """(Q, ndim) the reference's score of each value an answer wrote: the mean probability (``step_probs``
        (Q, steps)) of the tokens whose text overlaps it; NaN for a value not written."""
        scores = np.full((len(token_ids), self.ndim), np.nan)
        for row, ids in enumerate(token_ids):
            ends = [len(self.tokenizer.decode(ids[: t + 1], skip_special_tokens=True)) for t in range(len(ids))]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            scores[row] = span_scores(self.codec, text, ends, step_probs[row])
        return scores


def write_descriptions(folder: str | Path, descriptions: dict[str, str]) -> None:
    """A checkpoint's keypoint table ``{name: description}`` as its ``descriptions.json`` (what
    :meth:`_Processor.from_pretrained` reads; also written for models without a processor)."""
    (Path(folder) / DESCRIPTIONS_FILE).write_text(json.dumps(descriptions, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")


__all__ = [
    "DESCRIPTIONS_FILE", "PROCESSOR_FILE", "CropRegions", "LocLLMImageProcessor", "LocLLMProcessor", "PersonCrops",
    "write_descriptions",
]
