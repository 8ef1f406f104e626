"""COCO detection-results files: the person boxes a detector found, for top-down inference and evaluation."""

from __future__ import annotations

import json
from pathlib import Path


def read_detections(path: str | Path, score_threshold: float = 0.0, category_id: int = 1) -> list[dict]:
    """The checked entries of a COCO detection-results JSON (``[{"image_id", "category_id", "bbox", "score"}]``;
    an entry may name its image by ``file_name`` instead of, or besides, ``image_id``) of ``category_id``
    scored at least ``score_threshold``: ``[{"image_id": int | None, "file_name": str | None,
    "bbox": [x, y, w, h], "score": float}]``. A malformed file or entry is a ValueError naming it."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read detection results {path}: {err}") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: detection results must be a JSON list of {{image_id, bbox, score}} entries")
    detections = []
    for n, entry in enumerate(entries):
        try:
            if entry.get("category_id", category_id) != category_id:
                continue
            detection = {"image_id": int(entry["image_id"]) if "image_id" in entry else None,
                         "file_name": str(entry["file_name"]) if "file_name" in entry else None,
                         "bbox": [float(v) for v in entry["bbox"]], "score": float(entry.get("score", 1.0))}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{path}: entry {n} is not a detection {{image_id, bbox, score}}: {entry!r:.200}") from None
        if detection["image_id"] is None and detection["file_name"] is None:
            raise ValueError(f"{path}: entry {n} names no image (image_id or file_name): {entry!r:.200}")
        if len(detection["bbox"]) != 4:
            raise ValueError(f"{path}: entry {n} has a bbox of {len(detection['bbox'])} numbers, expected x, y, w, h")
        if detection["score"] >= score_threshold:
            detections.append(detection)
    return detections
