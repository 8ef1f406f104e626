"""Where the persons of an image are: typed as ``x,y,w,h``, or read from a COCO detection-results file (or,
for a data set without one, the localizer's person detector or the whole image as one person). Each box
read from a file comes with its detection score, which the COCO results keep as ``box_score`` for the
detector-box protocol's rescoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.detections import read_detections
from .image_sources import ImageEntry


def parse_box(text: str) -> np.ndarray:
    """``"x,y,w,h"`` -> (1, 4) box."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"a box is 'x,y,w,h' in pixels, got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"a box is 'x,y,w,h' in pixels (4 numbers), got {text!r}")
    return np.array([values])


class PersonBoxes:
    """The persons of each image, read once from a COCO detection-results file.

    Args:
        detections: a COCO detection-results JSON; an entry names its image by ``file_name`` or ``image_id``.
        score_threshold: detections scored below it are not asked about.

    A data set's image (:meth:`from_file`) is matched by its path, file name or image id; an image file
    given on its own (:meth:`for_image_file`, ``locllm predict``) by its name, or by the number of a
    COCO-style file stem among the entries that name no file. Without a detections file, the localizer's
    detector finds a data set's persons, else the whole image is one.
    """

    def __init__(self, detections: str | Path | None = None, score_threshold: float = 0.0):
        self.detections_file = Path(detections) if detections is not None else None
        self.given_as = str(detections)  # how messages name the file: as the user wrote it
        self.score_threshold = float(score_threshold)
        self._by_key: dict[str, tuple[list, list]] = {}  # every entry under its file name and its image id
        self._by_name_or_id: dict[str, list] = {}  # every entry under its file name, else its image id
        if self.detections_file is not None:
            for detection in read_detections(self.detections_file, self.score_threshold):
                for key in (detection["file_name"], detection["image_id"]):
                    if key is not None:
                        boxes, scores = self._by_key.setdefault(str(key), ([], []))
                        boxes.append(detection["bbox"])
                        scores.append(detection["score"])
                name = detection["file_name"] if detection["file_name"] is not None else str(detection["image_id"])
                self._by_name_or_id.setdefault(name, []).append(detection["bbox"])

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

    def image_key(self, image_path: str | Path) -> str | None:
        """What names an image file in the detections file: its name, or the number of its stem
        (``000000000139.jpg`` -> ``"139"``) as the ``image_id`` of entries without a ``file_name``; None if
        nothing does."""
        path = Path(image_path)
        if path.name in self._by_name_or_id:
            return path.name
        if path.stem.isdigit() and str(int(path.stem)) in self._by_name_or_id:
            return str(int(path.stem))
        return None

    def for_image_file(self, image_path: str | Path) -> np.ndarray:
        """(B, 4) boxes x, y, w, h the detections file gives the image file ``image_path`` (see
        :meth:`image_key`); none when nothing names it."""
        key = self.image_key(image_path)
        return np.array(self._by_name_or_id[key]) if key is not None else np.zeros((0, 4))
