"""Image-caption pairs for stage 1 (projector alignment), in LLaVA's pretraining JSON layout.

The file is a list of ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": caption}]}`` (LLaVA's filtered CC3M, 595K pairs). Each item is the image
resized to a square and the caption; the training collator builds the prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from .base import SkippingDataset

IMAGE_PLACEHOLDER = "<image>"


@dataclass
class CaptionSample:
    image: np.ndarray  # (S, S, 3) uint8 RGB
    instruction: str  # the human turn without the image placeholder ("" when it held nothing else)
    caption: str  # the answer to supervise
    sample_id: str
    meta: dict = field(default_factory=dict)  # file_name, and index (the entry's position in the file)


def resize_to_square(image: np.ndarray, size: int, mode: Literal["crop", "pad"] = "crop") -> np.ndarray:
    """``(H, W, 3)`` -> ``(size, size, 3)``.

    ``"crop"``: shorter side to ``size``, then the centre square (what CLIP's processor does).
    ``"pad"``: pad the shorter side with black to a square (nothing is cut, like the black border of the
    keypoint crops), then resize.
    """
    height, width = image.shape[:2]
    if mode == "pad":
        side = max(height, width)
        canvas = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top:top + height, left:left + width] = image
        image, height, width = canvas, side, side
    elif mode != "crop":
        raise ValueError(f"resize mode must be 'crop' or 'pad', got {mode!r}")
    factor = size / min(height, width)
    new_width, new_height = max(size, round(width * factor)), max(size, round(height * factor))
    # area averaging when shrinking (no aliasing), bicubic when enlarging
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


@dataclass(frozen=True)
class _CaptionRecord:
    image_path: Path
    instruction: str
    caption: str
    sample_id: str


class CaptionDataset(SkippingDataset):
    """Image-caption pairs from a LLaVA pretraining JSON file.

    Entries without an image, or whose first two turns are not a human turn and a non-empty gpt turn,
    are skipped and counted; unreadable images are skipped for the next entry and counted.

    Args:
        annotation_file: the JSON list.
        image_root: folder the ``image`` paths are relative to.
        image_size: side of the square image.
        resize_mode: ``"crop"`` or ``"pad"`` (see :func:`resize_to_square`).
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        *,
        image_size: int = 224,
        resize_mode: Literal["crop", "pad"] = "crop",
    ) -> None:
        super().__init__()
        path = Path(annotation_file)
        if not path.is_file():
            raise FileNotFoundError(f"caption file not found: {path}")
        if resize_mode not in ("crop", "pad"):
            raise ValueError(f"resize_mode must be 'crop' or 'pad', got {resize_mode!r}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_root = Path(image_root)
        self.image_size = image_size
        self.resize_mode = resize_mode
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of LLaVA pretraining entries")
        self.records = [record for record in map(self._parse, entries) if record is not None]
        self._log_loaded(len(self.records), str(path))

    def _parse(self, entry) -> _CaptionRecord | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            self._skip_annotation("without an image")
            return None
        turns = entry.get("conversations")
        if (
            not isinstance(turns, list) or len(turns) < 2
            or not all(isinstance(turn, dict) and isinstance(turn.get("value"), str) for turn in turns[:2])
            or turns[0].get("from") != "human" or turns[1].get("from") != "gpt"
            or not turns[1]["value"].strip()
        ):
            self._skip_annotation("without a human turn and a caption")
            return None
        instruction = turns[0]["value"].replace(IMAGE_PLACEHOLDER, "").strip()
        sample_id = str(entry.get("id", Path(entry["image"]).stem))
        return _CaptionRecord(Path(entry["image"]), instruction, turns[1]["value"].strip(), sample_id)

    def __len__(self) -> int:
        return len(self.records)

    def _load_item(self, index: int) -> CaptionSample | None:
        record = self.records[index]
        image = self._read_image(self.image_root / record.image_path)
        if image is None:
            return None
        return CaptionSample(
            image=resize_to_square(image, self.image_size, self.resize_mode),
            instruction=record.instruction,
            caption=record.caption,
            sample_id=record.sample_id,
            meta={"file_name": str(record.image_path), "index": index},
        )
