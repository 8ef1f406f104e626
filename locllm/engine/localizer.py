"""``Localizer``: images + person boxes + keypoints (by name or by description) -> keypoints in pixels.

    image -> person crops (processor) -> image features, once per crop (model)
          -> one query per keypoint, prefix shared (decoding) -> answer text -> coordinates (codec)
          -> image pixels (processor)

Example:
    >>> localizer = Localizer.from_pretrained("checkpoints/locllm-demo")
    >>> people = localizer.localize("photo.jpg", boxes=[[40, 30, 120, 260]],
    ...                             keypoints=["left knee", ("belly button", "The navel, in the middle of the belly.")])
    >>> people[0].keypoints  # (2, 2) x, y in image pixels; people[0].scores: (2,)
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer

from ..data.images import read_image_rgb
from ..keypoints import Keypoint, KeypointSet, normalize_name, resolve_keypoints
from ..keypoints.sets import all_known_keypoints
from ..models import LocLLMForKeypointLocalization
from ..models.clip_baseline import MODEL_TYPE as CLIP_BASELINE_MODEL_TYPE
from ..models.processing_locllm import LocLLMImageProcessor
from ..prompts import DecimalCodec, PromptBuilder, PromptStyle, build_codec
from .decoding import AnswerGrammar, GrammarItem, fast_decode, left_pad, reference_decode

logger = logging.getLogger(__name__)

MODES = ("fast", "reference")
_VALUE_TEXT = re.compile(r"\d+\.\d+|<loc_\d+>")


@dataclass
class PersonKeypoints:
    """The answer for one person.

    ``keypoints`` (K, 2) image pixels x, y (3D models: (K, 3) with root-relative depth in mm), NaN
    where the answer did not parse; ``scores`` (K,) in [0, 1] (0 where invalid); ``valid`` (K,);
    ``score`` the person's mean keypoint score; ``error`` says why a person got no answer at all
    (e.g. an empty box), in which case the arrays are NaN / zero.
    """

    box: np.ndarray
    names: list[str]
    keypoints: np.ndarray
    scores: np.ndarray
    valid: np.ndarray
    answers: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def score(self) -> float:
        return float(self.scores.mean()) if len(self.scores) else 0.0

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(self.score, 4),
            "error": self.error,
            "keypoints": {
                name: {"xy": None if not ok else [round(float(v), 2) for v in point],
                       "score": round(float(s), 4), "answer": answer}
                for name, point, s, ok, answer in zip(self.names, self.keypoints, self.scores, self.valid,
                                                      self.answers or [""] * len(self.names), strict=True)
            },
        }


def build_answer_grammar(builder: PromptBuilder, codec) -> AnswerGrammar:
    """The codec's answer shape as token steps of this tokenizer, with the value each step writes."""
    steps = builder.allowed_answer_ids(codec)
    units = codec.answer_grammar()[1:]  # after "["; the answer-start ids cover the separator and "["
    separator = codec.value_separator
    value_of_unit: list[int | None] = []
    value = 0
    for allowed in units:
        if separator and allowed == [separator]:
            value_of_unit.append(None)
            value += 1
        elif allowed == ["]"]:
            value_of_unit.append(None)
        else:
            value_of_unit.append(value)
            if not separator:
                value += 1  # location tokens: one unit per value, no separator
    start = len(steps) - 1 - len(units)
    items = [GrammarItem(tuple(ids), None) for ids in steps[:start]]
    items += [GrammarItem(tuple(ids), v) for ids, v in zip(steps[start:-1], value_of_unit, strict=True)]
    items.append(GrammarItem(tuple(steps[-1]), None))
    return AnswerGrammar(tuple(items), codec.ndim)


class Localizer:
    """Keypoint localization with a LocLLM checkpoint; see the module docstring."""

    model_class = LocLLMForKeypointLocalization  # what from_pretrained loads

    def __init__(self, model: LocLLMForKeypointLocalization, tokenizer, descriptions: dict[str, str] | None = None,
                 device: str | torch.device = "cpu", persons_per_batch: int = 8, constrained: bool = True):
        self.model = model.eval()
        self.config = model.config
        self.device = torch.device(device)
        self.style = PromptStyle.from_dict(self.config.prompt_style) if self.config.prompt_style else PromptStyle()
        self.builder = PromptBuilder(tokenizer, self.style, self.config.num_image_tokens)
        if self.builder.image_token_id != self.config.image_token_id:
            raise ValueError(
                f"tokenizer maps {self.style.image_token!r} to {self.builder.image_token_id}, the model expects "
                f"{self.config.image_token_id}"
            )
        self.tokenizer = tokenizer
        self.codec = (build_codec(self.config.coordinate_codec) if self.config.coordinate_codec
                      else DecimalCodec(ndim=self.config.coordinate_ndim))
        self.grammar = build_answer_grammar(self.builder, self.codec)
        self.processor = LocLLMImageProcessor.from_config(self.config)
        self.descriptions = descriptions or {}
        self.persons_per_batch = persons_per_batch
        # Unconstrained fast decoding is plain greedy, token for token the reference's: for parity checks
        # on models (random ones) whose answers do not follow the grammar.
        self.constrained = constrained
        # The image token may be inside the LM's vocabulary; an answer never holds one, and feeding one
        # back would read as a second image.
        vocab = self.model.get_input_embeddings().num_embeddings
        self.suppressed_token_ids = (self.builder.image_token_id,) if self.builder.image_token_id < vocab else ()
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, **kwargs) -> Localizer:
        """Load model, tokenizer and (if the checkpoint has one) its ``descriptions.json``; a CLIP-baseline
        checkpoint gets a :class:`~.heatmap_localizer.HeatmapLocalizer`, with the same API."""
        folder = Path(checkpoint)
        config_file = folder / "config.json"
        if cls is Localizer and config_file.is_file() and \
                json.loads(config_file.read_text()).get("model_type") == CLIP_BASELINE_MODEL_TYPE:
            from .heatmap_localizer import HeatmapLocalizer  # a subclass of this one: imported on use

            cls = HeatmapLocalizer
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = cls.model_class.from_pretrained(folder, dtype=dtype, device=device)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        descriptions_file = folder / "descriptions.json"
        descriptions = json.loads(descriptions_file.read_text()) if descriptions_file.is_file() else None
        return cls(model, tokenizer, descriptions, device=device, **kwargs)

    # ------------------------------------------------------------------ inputs

    def keypoint_set(self, keypoints) -> KeypointSet:
        """What to ask. A checkpoint's own ``descriptions.json`` (e.g. the reference's words, or the keypoint
        table it was trained on) replaces our descriptions of built-in keypoints and makes its other keypoints
        askable by name alone; a description the user wrote is always kept."""
        own = {normalize_name(name): Keypoint(name, description) for name, description in self.descriptions.items()}
        kp_set = resolve_keypoints(keypoints, known=own)
        if not own:
            return kp_set
        builtin = all_known_keypoints()
        asked = tuple(
            replace(kp, description=own[normalize_name(kp.name)].description)
            if builtin.get(normalize_name(kp.name)) == kp and normalize_name(kp.name) in own else kp
            for kp in kp_set
        )
        return replace(kp_set, keypoints=asked)

    @staticmethod
    def load_image(image) -> np.ndarray:
        """A path, a PIL image or an (H, W, 3) uint8 RGB array -> (H, W, 3) uint8 RGB array."""
        if isinstance(image, (str, Path)):
            return read_image_rgb(image)
        if isinstance(image, Image.Image):
            return np.asarray(image.convert("RGB"))
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"an image array must be (H, W, 3) uint8 RGB, got {array.shape} {array.dtype}")
        return array

    @staticmethod
    def check_box(box, width: int, height: int) -> str | None:
        """Why a person box cannot be used, or None."""
        x, y, w, h = (float(v) for v in box)
        if not np.isfinite([x, y, w, h]).all():
            return f"box {[float(v) for v in box]} has non-finite values"
        if w <= 0 or h <= 0:
            return f"box {[float(v) for v in box]} has zero or negative area"
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            return f"box {[float(v) for v in box]} lies outside the {width}x{height} image"
        return None

    # ------------------------------------------------------------------ the work

    def localize(self, image, boxes=None, keypoints="coco", mode: str = "fast") -> list[PersonKeypoints]:
        """Localize ``keypoints`` for every person box of one image.

        Args:
            image: a path, PIL image or (H, W, 3) uint8 RGB array.
            boxes: (B, 4) person boxes x, y, w, h in pixels; ``None``: the whole image is one person.
            keypoints: a set name (``"coco"``), names (``["left knee", "neck"]``), or ``(name, description)``
                pairs for keypoints the model never saw.
            mode: ``"fast"`` (default) or ``"reference"`` (the reference implementation's decoding).
        """
        return self.localize_many([image], [boxes], keypoints, mode)[0]

    def localize_many(self, images, boxes=None, keypoints="coco", mode: str = "fast") -> list[list[PersonKeypoints]]:
        """:meth:`localize` for several images, whose persons share batches (one person per image fills
        a batch too); returns one list of persons per image.

        Args:
            images: paths, PIL images or (H, W, 3) uint8 RGB arrays.
            boxes: one entry per image, each as in :meth:`localize`; ``None``: every image is one person.
            keypoints, mode: as in :meth:`localize`.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        kp_set = self.keypoint_set(keypoints)
        results: list[list[PersonKeypoints | None]] = []
        crops, where = [], []  # one crop per usable person, and its (image, person) place in results
        for i, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
            pixels = self.load_image(image)
            height, width = pixels.shape[:2]
            image_boxes = np.array([[0, 0, width, height]] if image_boxes is None else image_boxes,
                                   dtype=np.float64).reshape(-1, 4)
            results.append([None] * len(image_boxes))
            usable = []
            for j, box in enumerate(image_boxes):
                problem = self.check_box(box, width, height)
                if problem:
                    results[i][j] = self._failed(box, kp_set, problem)
                else:
                    usable.append(j)
            if usable:
                crops.append((image_boxes[usable], self.processor.crop_persons(pixels, image_boxes[usable])))
                where += [(i, j) for j in usable]
        if not where:
            return results
        person_boxes = np.concatenate([b for b, _ in crops])
        pixel_values = torch.cat([c.pixel_values for _, c in crops])
        centers = np.concatenate([c.centers for _, c in crops])
        scales = np.concatenate([c.scales for _, c in crops])
        for start in range(0, len(where), self.persons_per_batch):
            chunk = slice(start, start + self.persons_per_batch)
            normalized, scores, valid, texts = self._answer_crops(pixel_values[chunk], kp_set, mode)
            for p, (i, j) in enumerate(where[chunk]):
                n = start + p
                coords = normalized[p]
                coords[:, :2] = self.processor.crop_to_image(coords[:, :2], centers[n], scales[n])
                results[i][j] = PersonKeypoints(person_boxes[n], kp_set.names, coords, scores[p], valid[p], texts[p])
        return results

    def _failed(self, box, kp_set: KeypointSet, reason: str) -> PersonKeypoints:
        k = len(kp_set)
        return PersonKeypoints(np.asarray(box, dtype=np.float64), kp_set.names,
                               np.full((k, self.codec.ndim), np.nan), np.zeros(k), np.zeros(k, dtype=bool),
                               [""] * k, error=reason)

    def localize_crops(self, crops: np.ndarray, keypoints="coco", mode: str = "fast") -> list[PersonKeypoints]:
        """Localize ``keypoints`` in person crops cut beforehand, e.g. with a dataset's own box convention.

        Args:
            crops: (B, S, S, 3) uint8 RGB crops, S the model's ``image_size``.
            keypoints, mode: as in :meth:`localize`.

        Returns:
            one :class:`PersonKeypoints` per crop, keypoints in crop pixels (box = the whole crop).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        crops = np.asarray(crops)
        size = self.processor.image_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be (B, {size}, {size}, 3) uint8 RGB, got {crops.shape} {crops.dtype}")
        kp_set = self.keypoint_set(keypoints)
        results = []
        for start in range(0, len(crops), self.persons_per_batch):
            chunk = crops[start:start + self.persons_per_batch]
            normalized, scores, valid, texts = self._answer_crops(self.processor.normalize(chunk), kp_set, mode)
            normalized[..., :2] *= size
            box = np.array([0.0, 0.0, size, size])
            results += [PersonKeypoints(box, kp_set.names, normalized[p], scores[p], valid[p], texts[p])
                        for p in range(len(chunk))]
        return results

    @torch.no_grad()
    def _answer_crops(self, pixel_values: torch.Tensor, kp_set: KeypointSet,
                      mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
        """Normalized crop tensors (P, 3, S, S) -> per person: coordinates (P, K, ndim) in [0, 1) of the crop
        (depth in mm), NaN where invalid; scores (P, K); valid (P, K); answer texts (P lists of K)."""
        pixel_values = pixel_values.to(self.device)
        queries = [self.builder.query_ids(kp) for kp in kp_set]
        persons, k = pixel_values.shape[0], len(kp_set)
        if mode == "fast":
            features = self.model.get_image_features(pixel_values)
            decoded = fast_decode(
                self.model, features, self.builder.prefix_ids(), queries, self.grammar if self.constrained else None,
                self.builder.eos_token_id, len(self.grammar) - 1, self.suppressed_token_ids,
            )
            token_ids, value_scores = decoded.token_ids, decoded.value_scores.numpy()
        else:
            token_ids, value_scores = self._reference_answers(pixel_values, queries, persons)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_ids]
        normalized, valid = self.codec.decode_batch(texts)
        # A keypoint's score is the mean of its x and y scores, as in the reference.
        keypoint_scores = np.where(valid, np.nan_to_num(value_scores[:, :2], nan=0.0).mean(axis=1), 0.0)
        return (normalized.reshape(persons, k, -1), keypoint_scores.reshape(persons, k), valid.reshape(persons, k),
                [texts[p * k:(p + 1) * k] for p in range(persons)])

    def _reference_answers(self, pixel_values: torch.Tensor, queries: list[list[int]],
                           persons: int) -> tuple[list[list[int]], np.ndarray]:
        """The reference's way: per person, K full prompts with K copies of the image, one generate call."""
        prefix = self.builder.prefix_ids()
        prompts = [prefix + q for q in queries]
        input_ids, attention_mask = left_pad(prompts, self.pad_token_id)
        token_ids: list[list[int]] = []
        scores = []
        for p in range(persons):
            images = pixel_values[p:p + 1].expand(len(queries), -1, -1, -1)
            ids, step_probs = reference_decode(
                self.model, input_ids.to(self.device), attention_mask.to(self.device), images,
                len(self.grammar) - 1, self.builder.eos_token_id, self.pad_token_id, self.suppressed_token_ids,
            )
            token_ids += ids
            scores.append(self._span_scores(ids, step_probs))
        return token_ids, np.concatenate(scores)

    def _span_scores(self, token_ids: list[list[int]], step_probs: torch.Tensor) -> np.ndarray:
        """Per answer, the mean step probability over the tokens that write each value (by token span)."""
        scores = np.full((len(token_ids), self.codec.ndim), np.nan)
        for row, ids in enumerate(token_ids):
            ends = [len(self.tokenizer.decode(ids[: t + 1], skip_special_tokens=True)) for t in range(len(ids))]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            for v, match in enumerate(list(_VALUE_TEXT.finditer(text))[: self.codec.ndim]):
                starts = [0] + ends[:-1]
                picked = [float(step_probs[row, t]) for t in range(len(ids))
                          if starts[t] < match.end() and ends[t] > match.start()]
                scores[row, v] = float(np.mean(picked)) if picked else np.nan
        return scores
