"""Where the persons of a data set's images are: a COCO detection-results file, the localizer's person
detector, or (neither) the whole image as one person. Each box comes with its detection score (1 for a
whole image), which the COCO results keep as ``box_score`` for the detector-box protocol's rescoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.detections import read_detections
from .image_sources import ImageEntry


class PersonBoxes:
    """The persons of each image.

    Args:
        detections: a COCO detection-results JSON; an entry names its image by ``file_name`` or ``image_id``.
        score_threshold: detections scored below it are not asked about.

    Without a detections file, the localizer's detector finds the persons, else the whole image is one.
    """

    def __init__(self, detections: str | Path | None = None, score_threshold: float = 0.0):
        self.detections_file = Path(detections) if detections is not None else None
        self.score_threshold = float(score_threshold)
        self._by_key: dict[str, tuple[list, list]] = {}
        if self.detections_file is not None:
            for detection in read_detections(self.detections_file, self.score_threshold):
                for key in (detection["file_name"], detection["image_id"]):
                    if key is not None:
                        boxes, scores = self._by_key.setdefault(str(key), ([], []))
                        boxes.append(detection["bbox"])
                        scores.append(detection["score"])

    def describe(self, detector: str | None) -> dict:
        """What the predictions depend on about the boxes (for the predictions file's header); ``detector``
        names the localizer's detector, if it has one."""
        if self.detections_file is not None:
            return {"detections": str(self.detections_file.resolve()), "score_threshold": self.score_threshold}
        return {"detector": detector} if detector else {"whole_image": True}

    def from_file(self, entry: ImageEntry) -> tuple[np.ndarray, np.ndarray] | None:
        """``(boxes (B, 4) x, y, w, h, scores (B,))`` the detections file gives ``entry`` (matched by path,
        file name or image id), or None without a detections file."""
        if self.detections_file is None:
            return None
        for key in (str(entry.path), entry.path.name, str(entry.image_id)):
            if key in self._by_key:
                boxes, scores = self._by_key[key]
                return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64)
        return np.zeros((0, 4)), np.zeros(0)
