"""Person boxes for inference: typed on the command line or read from COCO detection results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


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
    """Person boxes from a COCO detection-results JSON (``[{"image_id", "category_id", "bbox", "score"}]``).

    Returns ``{key: (B, 4) boxes}`` where the key is the entry's ``file_name`` if it has one, else its
    ``image_id`` as a string: match images by file name, or by the number in a COCO-style file stem
    (``000000000139.jpg`` -> ``"139"``), see :func:`image_key`.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read detection results {path}: {err}") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: detection results must be a JSON list of {{image_id, bbox, score}} entries")
    boxes: dict[str, list] = {}
    for n, entry in enumerate(entries):
        try:
            if entry.get("category_id", category_id) != category_id or entry.get("score", 1.0) < score_threshold:
                continue
            key = str(entry["file_name"]) if "file_name" in entry else str(int(entry["image_id"]))
            box = [float(v) for v in entry["bbox"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{path}: entry {n} is not a detection ({{image_id, bbox, score}}): {entry!r}") from None
        if len(box) != 4:
            raise ValueError(f"{path}: entry {n} has a bbox of {len(box)} numbers, expected x, y, w, h")
        boxes.setdefault(key, []).append(box)
    return {key: np.array(value) for key, value in boxes.items()}


def image_key(image_path: str | Path, boxes: dict[str, np.ndarray]) -> str | None:
    """The key of ``boxes`` that belongs to an image file: its name, or the number of its stem."""
    path = Path(image_path)
    if path.name in boxes:
        return path.name
    if path.stem.isdigit() and str(int(path.stem)) in boxes:
        return str(int(path.stem))
    return None
