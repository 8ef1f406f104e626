"""Person boxes for inference: typed on the command line or read from COCO detection results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.detections import read_detections


def parse_box(text: str) -> np.ndarray:
    """``"x,y,w,h"`` -> (1, 4) box."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"a box is 'x,y,w,h' in pixels, got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"a box is 'x,y,w,h' in pixels (4 numbers), got {text!r}")
    return np.array([values])


def read_detection_boxes(path: str | Path, score_threshold: float = 0.0,
                         category_id: int = 1) -> dict[str, np.ndarray]:
    """Person boxes from a COCO detection-results JSON (see :func:`read_detections`).

    Returns ``{key: (B, 4) boxes}`` where the key is the entry's ``file_name`` if it has one, else its
    ``image_id`` as a string: match images by file name, or by the number in a COCO-style file stem
    (``000000000139.jpg`` -> ``"139"``), see :func:`image_key`.
    """
    boxes: dict[str, list] = {}
    for detection in read_detections(path, score_threshold, category_id):
        key = detection["file_name"] if detection["file_name"] is not None else str(detection["image_id"])
        boxes.setdefault(key, []).append(detection["bbox"])
    return {key: np.array(value) for key, value in boxes.items()}


def image_key(image_path: str | Path, boxes: dict[str, np.ndarray]) -> str | None:
    """The key of ``boxes`` that belongs to an image file: its name, or the number of its stem."""
    path = Path(image_path)
    if path.name in boxes:
        return path.name
    if path.stem.isdigit() and str(int(path.stem)) in boxes:
        return str(int(path.stem))
    return None
