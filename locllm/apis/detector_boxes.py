"""A detector's person boxes for every image of a COCO annotation file, written as a COCO detection-results file
(``locllm eval --boxes detector:PATH``) and cached, so that the next run with the same detector, options and
annotations reuses it instead of detecting again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.datasets import load_coco
from ..data.outputs import write_text_atomically
from ..engine.detection import PersonDetector
from ..models.hub import resolve_pretrained


def detector_boxes_file(detector: str | Path, annotation_file: str | Path, image_root: str | Path, *,
                        device: str | torch.device | None = None, cache_dir: str | Path | None = None,
                        images_per_batch: int = 8, progress: bool = True, **options) -> tuple[Path, bool]:
    """The COCO detection-results file (``[{"image_id", "category_id": 1, "bbox": [x, y, w, h], "score"}]``) of
    ``detector`` (a folder or Hub repo id, loaded with ``options`` as in :class:`PersonDetector`) over the images
    of ``annotation_file``, and whether it was reused from the cache rather than computed.

    The cache (``cache_dir``, default ``$XDG_CACHE_HOME/locllm/detections``) is keyed by the detector's files,
    the options and the annotation file, so changing any of them detects again.
    """
    folder = resolve_pretrained(detector)
    out = Path(cache_dir or default_cache_dir()) / (
        f"{Path(annotation_file).stem}.{folder.name}.{cache_key(folder, annotation_file, options)}.json")
    if out.is_file():
        return out, True
    person_detector = PersonDetector.from_pretrained(folder, device=device, **options)
    coco = load_coco(annotation_file)
    image_ids = sorted(coco.getImgIds())
    entries = []
    with tqdm(total=len(image_ids), desc="detecting persons", unit="image", disable=not progress) as bar:
        for start in range(0, len(image_ids), images_per_batch):
            batch = image_ids[start:start + images_per_batch]
            found = person_detector.detect_many([Path(image_root) / coco.imgs[i]["file_name"] for i in batch])
            for image_id, (boxes, scores) in zip(batch, found, strict=True):
                entries += [{"image_id": image_id, "category_id": 1, "bbox": [round(float(v), 2) for v in box],
                             "score": round(float(score), 5)} for box, score in zip(boxes, scores, strict=True)]
            bar.update(len(batch))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, json.dumps(entries))  # a reader (another process) never sees half a file
    return out, False


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "locllm" / "detections"


def cache_key(detector_folder: Path, annotation_file: str | Path, options: dict) -> str:
    """12 hex digits naming the detector's files (path, size, modification time), the options and the annotations."""
    files = sorted(p for p in Path(detector_folder).iterdir() if p.is_file()) + [Path(annotation_file)]
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([stamp, sorted(options.items())]).encode()).hexdigest()[:12]
