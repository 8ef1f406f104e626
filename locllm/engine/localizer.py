"""``Localizer``: images + person boxes + keypoints (by name or by description) -> keypoints in pixels.

    image + boxes (or a data set's own crop regions) -> person crops (processor) -> the model answers each
          asked keypoint (answerer: text decoding for LocLLM, heatmaps for the CLIP baseline)
          -> crop coordinates (codec) -> image pixels (processor)

Example:
    >>> localizer = Localizer.from_pretrained("checkpoints/locllm-demo")
    >>> people = localizer.localize("photo.jpg", boxes=[[40, 30, 120, 260]],
    ...                             keypoints=["left knee", ("belly button", "The navel, in the middle of the belly.")])
    >>> people[0].keypoints  # (2, 2) x, y in image pixels; people[0].scores: (2,)

With a person detector, one call finds everyone (boxes given explicitly still win):
    >>> localizer = Localizer.from_pretrained("checkpoints/locllm-demo", detector="PekingU/rtdetr_r50vd")
    >>> people = localizer.localize("photo.jpg")  # one PersonKeypoints per person found; [] if nobody
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel

from ..data.images import read_image_rgb
from ..keypoints import Keypoint, KeypointSet, normalize_name, resolve_keypoints
from ..keypoints.sets import all_known_keypoints
from ..models import LocLLMConfig
from ..models.configuration_clip_baseline import CLIPBaselineConfig
from ..models.hub import HUB_KWARGS, resolve_pretrained
from ..models.processing_clip_baseline import CLIPBaselineProcessor
from ..models.processing_locllm import CropRegions, LocLLMProcessor
from .detection import Detections, PersonDetector
from .heatmap_answerer import HeatmapAnswerer
from .refinement import DecodingOptions
from .text_answerer import TextAnswerer

MODES = ("fast", "reference")
MAX_BOX_TO_IMAGE = 100

class Strategy(NamedTuple):
    """What a model type brings to the Localizer besides its model (which ``AutoModel`` loads)."""

    processor_class: type
    answerer_class: type


# Keyed by the model_type AutoConfig reads from a checkpoint (both configs are registered with it).
STRATEGIES = {
    LocLLMConfig.model_type: Strategy(LocLLMProcessor, TextAnswerer),
    CLIPBaselineConfig.model_type: Strategy(CLIPBaselineProcessor, HeatmapAnswerer),
}


def strategy(model_type: str) -> Strategy:
    """The processor class and answering strategy of a checkpoint's ``model_type``."""
    if model_type not in STRATEGIES:
        raise ValueError(f"no localizer for model_type {model_type!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[model_type]


@dataclass
class PersonKeypoints:
    """The answer for one person.

    ``box`` (4,) x, y, w, h in image pixels: the person box asked about (asked by a data set's region, the
    square of the image its crop shows); ``keypoints`` (K, 2) image pixels x, y (3D models: (K, 3) with
    root-relative depth in mm), NaN where the answer did not parse; ``scores`` (K,) in [0, 1] (0 where
    invalid); ``valid`` (K,); ``score`` the person's mean keypoint score; ``error`` says why a person got no
    answer at all (e.g. an empty box), in which case the arrays are NaN / zero. ``unreadable`` names the keypoints whose
    question the model's tokenizer could not read (:meth:`Localizer.unreadable_keypoints`): their answers are
    kept, their scores are 0, not a confidence in an answer to a question never read.
    """

    box: np.ndarray
    names: list[str]
    keypoints: np.ndarray
    scores: np.ndarray
    valid: np.ndarray
    answers: list[str] = field(default_factory=list)
    error: str | None = None
    unreadable: frozenset[str] = frozenset()  # keypoints whose question the tokenizer could not read (scored 0)

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
                       "score": round(float(s), 4), "answer": answer,
                       **({"unreadable_question": True} if name in self.unreadable else {})}
                for name, point, s, ok, answer in zip(self.names, self.keypoints, self.scores, self.valid,
                                                      self.answers or [""] * len(self.names), strict=True)
            },
        }


class Localizer:
    """Keypoint localization with a checkpoint of either model; see the module docstring.

    Args:
        model: a LocLLM or CLIP-baseline model, on ``device``.
        processor: its :class:`~locllm.models.processing_locllm.LocLLMProcessor` (or ``CLIPBaselineProcessor``).
        answerer: how the model answers for a batch of crops: a :class:`~.text_answerer.TextAnswerer`
            (LocLLM) or :class:`~.heatmap_answerer.HeatmapAnswerer` (CLIP baseline); default: the
            model type's, with the processor's calibration (the checkpoint's ``calibration.json``).
        descriptions: the checkpoint's own keypoint descriptions (see :meth:`keypoint_set`); default the
            processor's (its ``descriptions.json``).
        persons_per_batch: persons answered together.
        detector: where person boxes come from when none are given: a :class:`~.detection.PersonDetector`, or
            any object whose ``detect(image)`` returns :class:`~.detection.Detections`; ``None``: the whole
            image is one person.
        decoding: how fast mode reads a LocLLM answer (:class:`~.refinement.DecodingOptions`: ``decode``,
            ``flip``, ``score``); default the answerer's (the paper's reading; the CLI's is
            :func:`~.refinement.recommended_decoding`). A heatmap model has no digits to read: it ignores them.
    """

    def __init__(self, model, processor: LocLLMProcessor | CLIPBaselineProcessor, answerer=None,
                 descriptions: dict[str, str] | None = None, device: str | torch.device = "cpu",
                 persons_per_batch: int = 8, detector=None, decoding: DecodingOptions | None = None):
        self.model = model.eval()
        self.config = model.config
        self.processor = processor
        if answerer is None:
            answerer = strategy(model.config.model_type).answerer_class()
            if isinstance(answerer, TextAnswerer):
                answerer.calibration = processor.calibration
        self.answerer = answerer
        if decoding is not None and isinstance(self.answerer, TextAnswerer):
            self.answerer.options = decoding
        self.device = torch.device(device)
        self.descriptions = (descriptions if descriptions is not None else processor.descriptions) or {}
        self.persons_per_batch = persons_per_batch
        self.detector = detector
        # The fast path switches the model's attention implementation for the length of a forward (state of
        # the model, not of the call): concurrent calls on one model gave wrong answers (8 threads,
        # tests/reliability/test_serve.py), so the model answers one batch at a time.
        self._model_lock = threading.Lock()

    @classmethod
    def from_model(cls, model, tokenizer, **kwargs) -> Localizer:
        """A model in memory and its tokenizer (e.g. during training): the processor from its config."""
        return cls(model, strategy(model.config.model_type).processor_class.from_config(model.config, tokenizer), **kwargs)

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, detector=None, answerer=None, **kwargs) -> Localizer:
        """Load model and processor (with the checkpoint's ``descriptions.json`` and ``calibration.json`` where it
        has them); the checkpoint's ``model_type`` picks the model class (through ``AutoModel``), the processor and
        the answering strategy (``answerer``: default the model type's, with the checkpoint's calibration; one
        given is used as it is, the checkpoint's calibration left unread).
        ``checkpoint`` and ``detector`` are folders or Hugging Face Hub repo ids (``detector`` may also be a
        loaded detector, see the class). The Hub keywords of transformers (``cache_dir``, ``force_download``,
        ``local_files_only``, ``token``, ``revision``, ``proxies``, ``subfolder``) pick the checkpoint's files as
        they do there; other keywords go to the class."""
        folder = resolve_pretrained(checkpoint, **{key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs})
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
        try:
            kind = strategy(AutoConfig.from_pretrained(folder).model_type)
        except ValueError as err:  # a foreign or unknown model_type
            raise ValueError(f"{folder / 'config.json'}: {err}") from None
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModel.from_pretrained(folder, dtype=dtype, device=device)
        if isinstance(detector, (str, Path)):
            detector = PersonDetector.from_pretrained(detector, device=device)
        return cls(model, kind.processor_class.from_pretrained(folder, calibration=answerer is None), answerer,
                   device=device, detector=detector, **kwargs)

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
        if max(w, h) > MAX_BOX_TO_IMAGE * max(width, height):  # its crop would show the image as a speck
            return f"box {[float(v) for v in box]} is more than {MAX_BOX_TO_IMAGE} times the {width}x{height} image"
        return None

    # ------------------------------------------------------------------ the work

    def detect(self, image) -> Detections:
        """The persons this localizer's detector finds in one image.

        Args:
            image: a path, PIL image or (H, W, 3) uint8 RGB array.

        Returns:
            :class:`~.detection.Detections` ``(boxes, scores)``: boxes (N, 4) float64 x, y, w, h in image
            pixels, best first, ready to pass as ``localize(image, boxes)``; scores (N,) in [0, 1]; N = 0 when
            nobody was found. A ValueError if the localizer has no detector.
        """
        if self.detector is None:
            raise ValueError("this localizer has no person detector: load it with "
                             "Localizer.from_pretrained(checkpoint, detector=PATH_OR_HUB_ID), or give boxes")
        return self.detector.detect(self.load_image(image))

    def localize(self, image, boxes=None, keypoints="coco", mode: str = "fast",
                 stand_ins: bool = False) -> list[PersonKeypoints]:
        """Localize ``keypoints`` for every person box of one image.

        Args:
            image: a path, PIL image or (H, W, 3) uint8 RGB array.
            boxes: (B, 4) person boxes x, y, w, h in pixels; or a
                :class:`~locllm.models.image_processing_locllm.CropRegions`, the regions a data set cuts its
                persons' crops from (e.g. MPII's center and scale; each person's ``box`` is then its crop's
                extent in the image); ``None``: the persons the detector finds (see :meth:`detect`; none found:
                ``[]``), or without a detector the whole image is one person.
            keypoints: a set name (``"coco"``), names (``["left knee", "neck"]``), or ``(name, description)``
                pairs for keypoints the model never saw.
            mode: ``"fast"`` (default) or ``"reference"`` (the reference implementation's decoding).
            stand_ins: where a keypoint without a valid answer goes: ``False`` (default) NaN; ``True`` its
                crop's top-left corner with depth 0, where the reference puts it (what metrics compare with).
        """
        return self.localize_many([image], [boxes], keypoints, mode, stand_ins)[0]

    def localize_many(self, images, boxes=None, keypoints="coco", mode: str = "fast",
                      stand_ins: bool = False) -> list[list[PersonKeypoints]]:
        """:meth:`localize` for several images, whose persons share batches (one person per image fills
        a batch too); returns one list of persons per image.

        Args:
            images: paths, PIL images or (H, W, 3) uint8 RGB arrays.
            boxes: one entry per image, each as in :meth:`localize` (boxes, regions or ``None``); ``None``:
                ``None`` for every image.
            keypoints, mode, stand_ins: as in :meth:`localize`.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        kp_set = self.keypoint_set(keypoints)
        results: list[list[PersonKeypoints | None]] = []
        person_boxes, crops, where = [], [], []  # per usable person: its box, crop, (image, person) place
        for i, (image, persons) in enumerate(zip(images, boxes, strict=True)):
            pixels = self.load_image(image)
            to_crop, image_boxes, problems = self._persons(pixels, persons)
            results.append([None] * len(image_boxes))
            usable = []
            for j, (box, problem) in enumerate(zip(image_boxes, problems, strict=True)):
                if problem:
                    results[i][j] = self._failed(box, kp_set, problem)
                else:
                    usable.append(j)
            if usable:
                person_boxes.append(image_boxes[usable])
                crops.append(self.processor(pixels, to_crop[usable]))
                where += [(i, j) for j in usable]
        if not where:
            return results
        person_boxes = np.concatenate(person_boxes)
        pixel_values = torch.cat([c.pixel_values for c in crops])
        regions = CropRegions.concatenate([c.regions for c in crops])
        unreadable = frozenset(self.unreadable_keypoints(kp_set))
        for start in range(0, len(where), self.persons_per_batch):
            chunk = slice(start, start + self.persons_per_batch)
            normalized, scores, valid, texts = self._answer_crops(pixel_values[chunk], kp_set, mode, unreadable)
            keypoints = self.processor.post_process(normalized, regions[chunk], valid if stand_ins else None)
            for p, (i, j) in enumerate(where[chunk]):
                results[i][j] = PersonKeypoints(person_boxes[start + p], kp_set.names, keypoints[p], scores[p],
                                                valid[p], texts[p], unreadable=unreadable)
        return results

    def _persons(self, pixels: np.ndarray, persons) -> tuple[CropRegions | np.ndarray, np.ndarray, list[str | None]]:
        """One image's persons (boxes, regions or ``None``, see :meth:`localize`) -> what the processor cuts
        their crops from (the regions, or the boxes), their (B, 4) boxes and why each cannot be asked about
        (None where it can)."""
        if isinstance(persons, CropRegions):
            problems = [None if ok else f"center {c.tolist()} and scale {s.tolist()} give no crop"
                        for c, s, ok in zip(persons.centers, persons.scales, persons.has_crop(), strict=True)]
            return persons, persons.boxes(), problems
        height, width = pixels.shape[:2]
        if persons is None and self.detector is not None:
            persons = self.detect(pixels).boxes
        image_boxes = np.array([[0, 0, width, height]] if persons is None else persons,
                               dtype=np.float64).reshape(-1, 4)
        return image_boxes, image_boxes, [self.check_box(box, width, height) for box in image_boxes]

    def unreadable_keypoints(self, keypoints) -> list[str]:
        """The asked keypoints whose question the model cannot read: at least half of the tokens of their name
        and description are the tokenizer's unknown token (a script or words its vocabulary lacks). A
        byte-level tokenizer, which has no unknown token, reads every text."""
        tokenizer = self.processor.tokenizer
        if tokenizer.unk_token_id is None:
            return []
        unreadable = []
        for keypoint in self.keypoint_set(keypoints):
            ids = tokenizer(f"{keypoint.name} {keypoint.description}", add_special_tokens=False)["input_ids"]
            if ids and 2 * sum(token == tokenizer.unk_token_id for token in ids) >= len(ids):
                unreadable.append(keypoint.name)
        return unreadable

    def _failed(self, box, kp_set: KeypointSet, reason: str) -> PersonKeypoints:
        k = len(kp_set)
        return PersonKeypoints(np.asarray(box, dtype=np.float64), kp_set.names,
                               np.full((k, self.processor.ndim), np.nan), np.zeros(k), np.zeros(k, dtype=bool),
                               [""] * k, error=reason)

    def _answer_crops(self, pixel_values: torch.Tensor, kp_set: KeypointSet, mode: str,
                      unreadable: frozenset[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
        """Normalized crop tensors (P, 3, S, S) -> the answerer's coordinates (P, K, ndim) in [0, 1) of the
        crop, scores (P, K), valid (P, K) and answer texts; the scores of the ``unreadable`` keypoints
        (:meth:`unreadable_keypoints`, found once per call by the caller) are 0."""
        with self._model_lock:
            normalized, scores, valid, texts = self.answerer(self.model, self.processor, pixel_values.to(self.device),
                                                             kp_set, mode)
        if unreadable:
            scores = np.where([name in unreadable for name in kp_set.names], 0.0, scores)
        return normalized, scores, valid, texts
