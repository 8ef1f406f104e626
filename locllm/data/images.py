"""Reading images from disk as the reference does (OpenCV, BGR -> RGB, EXIF orientation ignored), bounded.

Every entry point (predict, eval, data sets, the web demo, the detector) reads through :func:`read_image_rgb`,
which refuses a picture whose header says it is larger than a pixel limit before a byte is decoded: a
128-byte PNG may announce 50000 x 50000 pixels (7.5 GB decoded). A format whose size cannot be read from its
header is refused, not trusted; a decoder error, a size that differs from the header's, or a truncated file is
an :class:`ImageReadError` naming the file, never an answer on garbage.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

# Like PIL's decompression-bomb guard (89 megapixels warns, 179 refuses); LOCLLM_MAX_IMAGE_PIXELS changes it.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
MAX_IMAGE_PIXELS_ENV = "LOCLLM_MAX_IMAGE_PIXELS"
_LIMIT_RANGE = (1, 2 * Image.MAX_IMAGE_PIXELS)  # past PIL's own bomb limit no header is read


class ImageReadError(OSError):
    """An image file is missing, unreadable, too large or not a decodable image; the message names the file."""


class ImageTooLargeError(ImageReadError):
    """An image whose header says it has more pixels than the limit (nothing was decoded)."""


def max_image_pixels() -> int:
    """The pixel limit in force: ``LOCLLM_MAX_IMAGE_PIXELS`` if set (a whole number in range), else 100 M."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if text is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not _LIMIT_RANGE[0] <= value <= _LIMIT_RANGE[1]:
        raise ValueError(f"{MAX_IMAGE_PIXELS_ENV}={text!r}: give a whole number of pixels from {_LIMIT_RANGE[0]} "
                         f"to {_LIMIT_RANGE[1]}")
    return value


def read_image_rgb(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array, at most ``max_pixels`` (default
    :func:`max_image_pixels`) pixels.

    EXIF orientation is ignored on purpose: keypoint annotations (COCO and the rest) are made on the
    stored pixels, and the reference reads them the same way. Grey images come back as three channels.

    Raises:
        ImageReadError: the file does not exist, cannot be read, is larger than the limit (or of a format
            whose size cannot be read first), or does not decode whole as an image.
    """
    path = Path(path)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    # One read of the file serves the header check and the decoder; imdecode from bytes instead of imread(path):
    # imread cannot open non-ASCII paths on every platform
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    width, height = _header_size(path, data, limit)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as error:
        raise ImageReadError(f"cannot decode image {path}: {str(error).strip().splitlines()[-1]}") from None
    if image is None:
        raise ImageReadError(f"cannot decode image {path}: the file is empty, truncated or not an image")
    if image.shape[:2] != (height, width):
        raise ImageReadError(f"cannot decode image {path}: its header says {width}x{height}, its pixels are "
                             f"{image.shape[1]}x{image.shape[0]} (a damaged file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _header_size(path: Path, data: bytes, limit: int) -> tuple[int, int]:
    """Width and height from the file's header, checked against ``limit`` and, where the format says where
    it ends, against truncation. PIL reads headers without decoding pixels (OpenCV has no such call)."""
    if not data:
        raise ImageReadError(f"cannot decode image {path}: the file is empty")
    try:
        with warnings.catch_warnings():  # PIL warns of a bomb above 89 M pixels: ours is the limit that counts
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))
        with header:
            width, height = header.size
            kind = header.format
            if kind == "PNG":
                header.verify()  # chunk checksums, to the end of the file: a damaged or cut PNG is caught here
    except Image.DecompressionBombError:  # PIL's own limit, at or above ours
        raise ImageTooLargeError(f"image {path} is larger than {_LIMIT_RANGE[1]:,} pixels, more than any limit "
                             "this reader allows") from None
    except (UnidentifiedImageError, SyntaxError) as error:
        reason = "not a format PIL knows" if isinstance(error, UnidentifiedImageError) else str(error)
        raise ImageReadError(f"cannot read the size of image {path} from its header ({reason}): give PNG, JPEG, "
                             "BMP, TIFF, WebP or another format whose size can be read before decoding") from None
    except (OSError, ValueError) as error:  # a header that is cut short, or a value the format cannot hold
        raise ImageReadError(f"cannot decode image {path}: {error}") from None
    if width * height > limit:
        raise ImageTooLargeError(f"image {path} is {width}x{height} = {width * height:,} pixels, more than the limit "
                             f"of {limit:,} (set {MAX_IMAGE_PIXELS_ENV} to allow more)")
    if kind == "JPEG" and not _ends_after_its_scans(data):
        raise ImageReadError(f"cannot decode image {path}: the JPEG stops before its end-of-image marker "
                             "(truncated)")
    return width, height


def _ends_after_its_scans(jpeg: bytes) -> bool:
    """Whether an end-of-image marker follows the last start-of-scan: libjpeg fills a cut file with grey."""
    return jpeg.rfind(b"\xff\xd9") > jpeg.rfind(b"\xff\xda")


__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "MAX_IMAGE_PIXELS_ENV", "ImageReadError", "ImageTooLargeError", "max_image_pixels",
           "read_image_rgb"]
