"""Person boxes from an image: any Hugging Face ``AutoModelForObjectDetection`` checkpoint (DETR, Conditional
DETR, RT-DETR, YOLOS, ...) with its image processor, kept to its "person" class.

    image (H, W, 3) -> image processor -> detector -> post_process_object_detection (boxes x0, y0, x1, y1)
          -> the person class, score threshold, NMS, min box size, max persons -> (N, 4) boxes x, y, w, h

Example:
    >>> detector = PersonDetector.from_pretrained("PekingU/rtdetr_r50vd", score_threshold=0.5)
    >>> boxes, scores = detector.detect("photo.jpg")   # (N, 4) x, y, w, h in pixels; (N,)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForObjectDetection
from transformers.models.auto.modeling_auto import MODEL_FOR_OBJECT_DETECTION_MAPPING

from ..data.images import read_image_rgb
from ..models.hub import HUB_KWARGS, resolve_pretrained

PERSON = "person"


class Detections(NamedTuple):
    """The persons a detector found in one image, best first: ``boxes`` (N, 4) float64 x, y, w, h in image
    pixels, ``scores`` (N,) float64 in [0, 1]. N = 0 when it found nobody."""

    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0))


class PersonDetector:
    """The persons an object detector finds, as top-down boxes.

    Args:
        model: an ``AutoModelForObjectDetection`` model, on ``device``, whose ``config.id2label`` has "person".
        image_processor: its image processor (``post_process_object_detection`` turns outputs into boxes).
        score_threshold: detections scored below it are dropped.
        nms_iou: of two person boxes overlapping more than this (IoU), the lower-scored is dropped; DETR-style
            detectors rarely need it, but a low threshold lets their near-duplicate queries through.
        min_box_size: boxes whose width or height (pixels) is smaller are dropped (too small to localize in).
        max_persons: keep at most this many, best first (``None``: all).
    """

    def __init__(self, model, image_processor, *, score_threshold: float = 0.5, nms_iou: float = 0.5,
                 min_box_size: float = 8.0, max_persons: int | None = None, device: str | torch.device = "cpu"):
        self.model = model.eval()
        self.image_processor = image_processor
        self.person_label = person_label(model.config.id2label)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.min_box_size = min_box_size
        self.max_persons = max_persons
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None,
                        **options) -> PersonDetector:
        """A detector folder, or a Hugging Face Hub repo id (see :func:`~locllm.models.hub.resolve_pretrained`); ``options``
        as in the class, and the Hub keywords of transformers (``revision``, ``cache_dir``, ... see
        :data:`~locllm.models.hub.HUB_KWARGS`). A folder holding some other model is one ValueError saying what it
        holds."""
        folder = resolve_pretrained(name_or_path, **{key: options.pop(key) for key in HUB_KWARGS if key in options})
        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError) as err:
            raise ValueError(f"{name_or_path}: not a detector checkpoint (no readable config.json: {err}); give an "
                             "AutoModelForObjectDetection folder (DETR, RT-DETR, YOLOS, ...)") from None
        if type(config) not in MODEL_FOR_OBJECT_DETECTION_MAPPING:
            raise ValueError(f"{name_or_path}: a {config.model_type!r} checkpoint is not an object detector; give an "
                             "AutoModelForObjectDetection folder (DETR, RT-DETR, YOLOS, ...)")
        person_label(config.id2label, name_or_path)  # before loading the weights
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForObjectDetection.from_pretrained(folder).to(device)
        return cls(model, AutoImageProcessor.from_pretrained(folder), device=device, **options)

    def detect(self, image) -> Detections:
        """The persons in one image (a path or an (H, W, 3) uint8 RGB array); see :class:`Detections`."""
        return self.detect_many([image])[0]

    @torch.inference_mode()
    def detect_many(self, images) -> list[Detections]:
        """:meth:`detect` for several images in one forward pass."""
        pixels = [read_image_rgb(image) if isinstance(image, (str, Path)) else np.asarray(image) for image in images]
        inputs = self.image_processor(images=pixels, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        found = self.image_processor.post_process_object_detection(
            outputs, threshold=self.score_threshold, target_sizes=[p.shape[:2] for p in pixels])
        return [self._persons(result) for result in found]

    def _persons(self, result: dict) -> Detections:
        """One image's ``post_process_object_detection`` result -> its kept persons."""
        person = (result["labels"] == self.person_label).cpu().numpy()
        corners = result["boxes"].float().cpu().numpy()[person].astype(np.float64)  # (N, 4) x0, y0, x1, y1
        scores = result["scores"].float().cpu().numpy()[person].astype(np.float64)
        order = np.argsort(-scores, kind="stable")
        corners, scores = corners[order], scores[order]
        keep = non_maximum_suppression(corners, self.nms_iou)
        corners, scores = corners[keep], scores[keep]
        sizes = corners[:, 2:] - corners[:, :2]
        big_enough = (sizes >= self.min_box_size).all(axis=1)
        corners, scores = corners[big_enough][:self.max_persons], scores[big_enough][:self.max_persons]
        return Detections(np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1), scores)


def person_label(id2label: dict, name: str | Path = "detector") -> int:
    """The class id whose label is "person" (any case); a ValueError listing the labels if none is."""
    for label_id, label in id2label.items():
        if str(label).strip().lower() == PERSON:
            return int(label_id)
    labels = ", ".join(repr(v) for v in list(id2label.values())[:20])
    raise ValueError(f"{name}: no 'person' class among the detector's labels ({labels}{', ...' if len(id2label) > 20 else ''}); "
                     "give a detector trained with a person class (e.g. on COCO)")


def non_maximum_suppression(corners: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over boxes sorted best first: (N, 4) x0, y0, x1, y1 -> indices kept, ascending.

    Written here because torchvision (whose ``nms`` transformers' processors use) is not a dependency and
    transformers exposes no NMS of its own; N is a few dozen, so the O(N^2) loop is nothing beside the model.
    """
    areas = np.prod(np.clip(corners[:, 2:] - corners[:, :2], 0, None), axis=1)
    keep: list[int] = []
    for i in range(len(corners)):
        if keep:
            kept = corners[keep]
            overlap = np.clip(np.minimum(kept[:, 2:], corners[i, 2:]) - np.maximum(kept[:, :2], corners[i, :2]), 0, None)
            intersection = np.prod(overlap, axis=1)
            iou = intersection / np.maximum(areas[keep] + areas[i] - intersection, 1e-12)
            if (iou > iou_threshold).any():
                continue
        keep.append(i)
    return np.array(keep, dtype=np.int64)
