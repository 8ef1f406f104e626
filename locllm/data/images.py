"""Reading images from disk as the reference does: OpenCV, BGR -> RGB, EXIF orientation ignored."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class ImageReadError(OSError):
    """An image file is missing, unreadable or not a decodable image; the message names the file."""


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    EXIF orientation is ignored on purpose: keypoint annotations (COCO and the rest) are made on the
    stored pixels, and the reference reads them the same way. Grey images come back as three channels.

    Raises:
        ImageReadError: the file does not exist, cannot be read, or does not decode as an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    # imdecode from bytes instead of imread(path): imread cannot open non-ASCII paths on every platform
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode image {path}: the file is empty, truncated or not an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
