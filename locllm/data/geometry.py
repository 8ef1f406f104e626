"""Top-down geometry: person box -> crop, keypoints into and out of the crop, flips.

This is the only place for it; it imports nothing else of ours. The conventions are those of the HRNet
code the reference implementation inherits, reproduced to the bit where the parity recordings need it:

- A crop is given by ``center`` (x, y) and ``scale`` (w, h), in units of ``pixel_std`` image pixels.
  COCO-style scales use ``pixel_std=200`` (scale 1.0 is a 200-pixel box); the reference's MPII-3D and
  Human3.6M loaders keep scales in pixels (``pixel_std=1``).
- Only ``scale[0]`` sets the zoom: the crop shows ``scale[0] * pixel_std`` image pixels across its width
  and the output size sets the height. Boxes are padded to the output aspect ratio before that.
- Pixel centres sit on integer coordinates (OpenCV's convention), so a horizontal flip of an image of
  width ``W`` maps ``x`` to ``W - 1 - x``.
- ``center`` and ``scale`` are float32, as the reference stores them; matrices and mapped points are
  float64. Matrices, mapped points and crops come out bit-identical to the reference's recordings.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

PIXEL_STD = 200.0  # COCO / HRNet: a scale of 1.0 is a 200-pixel box

# HRNet's MPII convention: the annotated centre sits too high for a crop that keeps the legs, and the
# annotated scale (person height / 200) is too tight; both are corrected before cropping.
MPII_CENTER_SHIFT = 15.0  # downwards, in units of the annotated scale
MPII_SCALE_FACTOR = 1.25


def _size_pair(output_size: int | Sequence[int]) -> tuple[int, int]:
    """An int or (width, height) -> (width, height), both positive ints."""
    if np.isscalar(output_size):
        width = height = int(output_size)
    else:
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or (width, height), got {output_size!r}")
        width, height = (int(v) for v in output_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    return width, height


def _scale_pair(scale) -> np.ndarray:
    """A scalar or (w, h) scale -> a (2,) array, keeping float32 input float32 (the reference's precision)."""
    scale = np.asarray(scale)
    if scale.ndim == 0:
        scale = np.array([scale, scale], dtype=scale.dtype if scale.dtype.kind == "f" else np.float64)
    if scale.shape != (2,):
        raise ValueError(f"scale must be a scalar or (w, h), got shape {scale.shape}")
    return scale


# ----------------------------------------------------------------------------------------------------
# Boxes -> center / scale
# ----------------------------------------------------------------------------------------------------


def box_to_center_scale(
    box_xywh,
    aspect_ratio: float = 1.0,
    scale_factor: float = 1.0,
    pixel_std: float = PIXEL_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """Person box -> crop center and scale.

    The center is the box center; the box is padded to ``aspect_ratio`` (width / height) around it, then
    its size is divided by ``pixel_std`` and enlarged by ``scale_factor``. The reference uses
    ``scale_factor=1.0, pixel_std=200`` for COCO, ``1.25, 1`` for MPII-3D and ``1.0, 1`` for Human3.6M.

    Args:
        box_xywh: ``(..., 4)`` boxes as (x, y, width, height) in image pixels.
    Returns:
        center ``(..., 2)`` and scale ``(..., 2)``, float32.
    """
    box = np.asarray(box_xywh, dtype=np.float64)
    if box.shape[-1] != 4:
        raise ValueError(f"boxes must be (..., 4) as x, y, w, h; got shape {box.shape}")
    if aspect_ratio <= 0 or pixel_std <= 0 or scale_factor <= 0:
        raise ValueError(
            f"aspect_ratio, pixel_std and scale_factor must be positive, got {aspect_ratio}, {pixel_std}, "
            f"{scale_factor}"
        )
    x, y, w, h = np.moveaxis(box, -1, 0)
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=-1).astype(np.float32)
    padded_w = np.where(w > aspect_ratio * h, w, h * aspect_ratio)
    padded_h = np.where(w > aspect_ratio * h, w / aspect_ratio, h)
    # float32 before the factor, as the reference multiplies its float32 scale array
    scale = np.stack([padded_w / pixel_std, padded_h / pixel_std], axis=-1).astype(np.float32)
    return center, scale * np.float32(scale_factor)


def sanitize_coco_box(box_xywh, image_width: int, image_height: int) -> np.ndarray:
    """The reference COCO loader's box clean-up (HRNet's ``clean_bbox``).

    The box becomes ``[x1, y1, x2 - x1, y2 - y1]`` with ``x1 = max(0, x)`` and
    ``x2 = min(W - 1, x1 + max(0, w - 1))``: a box crossing the left or top border keeps its width and
    moves inwards instead of being cut. Valid only where the returned width and height are >= 0.

    Args:
        box_xywh: ``(..., 4)`` boxes (x, y, w, h).
    Returns:
        ``(..., 4)`` float64 boxes (x, y, w, h).
    """
    box = np.asarray(box_xywh, dtype=np.float64)
    x, y, w, h = np.moveaxis(box, -1, 0)
    x1 = np.maximum(0.0, x)
    y1 = np.maximum(0.0, y)
    x2 = np.minimum(image_width - 1.0, x1 + np.maximum(0.0, w - 1.0))
    y2 = np.minimum(image_height - 1.0, y1 + np.maximum(0.0, h - 1.0))
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


def clip_box(box_xywh, image_width: int, image_height: int) -> np.ndarray:
    """The reference MPII-3D / Human3.6M box clean-up: to corners, clipped to the image, back to (x, y, w, h).

    Corners are ``(x, y)`` and ``(x + max(w - 1, 0), y + max(h - 1, 0))``, each clipped to
    ``[0, W - 1] x [0, H - 1]``. The reference keeps a box only where the result has width and height > 0.
    Shapes as in :func:`sanitize_coco_box`.
    """
    box = np.asarray(box_xywh, dtype=np.float64)
    x, y, w, h = np.moveaxis(box, -1, 0)
    x1 = np.clip(x, 0.0, image_width - 1.0)
    y1 = np.clip(y, 0.0, image_height - 1.0)
    x2 = np.clip(x + np.maximum(w - 1.0, 0.0), 0.0, image_width - 1.0)
    y2 = np.clip(y + np.maximum(h - 1.0, 0.0), 0.0, image_height - 1.0)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


def mpii_center_scale(
    annotation_center, annotation_scale: float, scale_factor: float = MPII_SCALE_FACTOR
) -> tuple[np.ndarray, np.ndarray]:
    """HRNet's MPII adjustment: annotated (1-based) center and scale -> the 0-based crop center and scale.

    The center moves down by ``15 * scale``, the scale grows by ``scale_factor`` (1.25) and the center
    shifts by -1 from MATLAB's 1-based pixels to 0-based ones. Computed in float32 as the reference does.

    Returns:
        center ``(2,)`` and scale ``(2,)`` float32, with ``pixel_std=200`` semantics.
    """
    center = np.array(annotation_center, dtype=np.float32)
    if center.shape != (2,):
        raise ValueError(f"MPII center must be (x, y), got {annotation_center!r}")
    scale = np.array([annotation_scale, annotation_scale], dtype=np.float32)
    center[1] = center[1] + MPII_CENTER_SHIFT * scale[1]
    scale = scale * np.float32(scale_factor)
    return center - np.float32(1.0), scale


def matlab_to_zero_based(points) -> np.ndarray:
    """MPII's 1-based (MATLAB) pixel coordinates -> 0-based ones. ``(..., 2+)``; only x and y change."""
    points = np.array(points, dtype=np.float64)
    points[..., :2] -= 1.0
    return points


def zero_based_to_matlab(points) -> np.ndarray:
    """Inverse of :func:`matlab_to_zero_based`, for writing MPII predictions. ``(..., 2+)``."""
    points = np.array(points, dtype=np.float64)
    points[..., :2] += 1.0
    return points


# ----------------------------------------------------------------------------------------------------
# The affine crop
# ----------------------------------------------------------------------------------------------------


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point that makes (a, b, c) a right angle at b; float32 arithmetic, as the reference."""
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def get_affine_transform(
    center,
    scale,
    rotation: float,
    output_size: int | Sequence[int],
    shift=(0.0, 0.0),
    inv: bool = False,
    pixel_std: float = PIXEL_STD,
) -> np.ndarray:
    """The 2x3 matrix that maps image pixels into the crop (``inv=True``: crop pixels back to the image).

    The crop is centred on ``center`` (plus ``shift`` times the crop size), shows ``scale[0] * pixel_std``
    image pixels across its width and is turned so that the image content appears rotated
    counter-clockwise by ``rotation`` degrees. As in the reference, the matrix is solved from three point
    pairs rounded to float32, which pins it to the reference's values; forward and inverse come from the
    same points, so they are exact inverses of each other.

    Args:
        center: ``(2,)`` crop center (x, y) in image pixels.
        scale: scalar or ``(2,)``, in units of ``pixel_std`` pixels.
        output_size: crop size, an int or (width, height).
    Returns:
        ``(2, 3)`` float64 matrix.
    """
    center = np.asarray(center)
    if center.shape != (2,):
        raise ValueError(f"center must be (x, y), got shape {center.shape}")
    source_size = _scale_pair(scale) * pixel_std  # float32 stays float32, as the reference's scale * 200
    source_width = float(source_size[0])
    if not np.isfinite(source_width) or source_width <= 0:
        raise ValueError(f"the crop must cover a positive width of the image; got scale {scale!r}")
    width, height = _size_pair(output_size)
    shift = np.asarray(shift, dtype=np.float64)

    angle = np.deg2rad(rotation)
    sin, cos = np.sin(angle), np.cos(angle)
    # the crop's "up" half-width vector (0, -w/2) turned by the rotation, in image pixels
    source_dir = np.array([source_width * 0.5 * sin, -source_width * 0.5 * cos])
    offset = source_size * shift

    source = np.zeros((3, 2), dtype=np.float32)
    target = np.zeros((3, 2), dtype=np.float32)
    source[0] = center + offset
    source[1] = center + source_dir + offset
    target[0] = [width * 0.5, height * 0.5]
    target[1] = [width * 0.5, height * 0.5 - width * 0.5]
    source[2] = _third_point(source[0], source[1])
    target[2] = _third_point(target[0], target[1])
    if inv:
        return cv2.getAffineTransform(target, source)
    return cv2.getAffineTransform(source, target)


def affine_points(points, matrix) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(..., 2)`` points; returns a new ``(..., 2)`` float64 array."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    if points.shape[-1] != 2:
        raise ValueError(f"points must be (..., 2), got shape {points.shape}")
    if matrix.shape != (2, 3):
        raise ValueError(f"an affine matrix is (2, 3), got shape {matrix.shape}")
    return points @ matrix[:, :2].T + matrix[:, 2]


def _invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix, with OpenCV's formula and order of operations."""
    (a, b, c), (d, e, f) = matrix
    det = a * e - b * d
    det = 1.0 / det if det != 0 else 0.0
    a11, a12, a21, a22 = e * det, b * -det, d * -det, a * det
    return np.array([[a11, a12, -a11 * c - a12 * f], [a21, a22, -a21 * c - a22 * f]])


# OpenCV 4's fixed-point bilinear warp: sample positions are rounded to 1/32 pixel (INTER_BITS), the
# mapped coordinates carry 10 fractional bits (AB_BITS), the four weights 15 bits (INTER_REMAP_COEF_BITS).
_INTER_BITS = 5
_AB_BITS = 10
_COEF_BITS = 15


def warp_to_crop(image: np.ndarray, matrix, output_size: int | Sequence[int]) -> np.ndarray:
    """Warp ``image`` with the image->crop ``matrix``: bilinear, black outside the image.

    This is OpenCV 4's ``cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR)`` (what the reference
    calls) redone in numpy with the same integer arithmetic, so crops are bit-identical to the
    reference's whatever OpenCV is installed: OpenCV 5 changed that arithmetic, and its crops differ from
    the recorded ones by up to 5 intensity levels.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8.
        matrix: ``(2, 3)`` image->crop affine matrix.
        output_size: crop size, an int or (width, height).
    Returns:
        ``(out_h, out_w)`` or ``(out_h, out_w, C)`` uint8.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise TypeError(f"warp_to_crop takes a (H, W) or (H, W, C) uint8 image, got {image.dtype} "
                        f"{image.shape}")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"an affine matrix is (2, 3), got shape {matrix.shape}")
    width, height = _size_pair(output_size)
    channels = image[..., None] if image.ndim == 2 else image
    source_height, source_width, num_channels = channels.shape

    # crop pixel (x, y) -> source position in 1/32 pixels, computed per column and per row as OpenCV does
    inverse = _invert_affine(matrix)
    scale = 1 << _AB_BITS
    round_delta = scale >> (_INTER_BITS + 1)
    columns, rows = np.arange(width), np.arange(height)
    column_x = np.rint(inverse[0, 0] * columns * scale).astype(np.int64)
    column_y = np.rint(inverse[1, 0] * columns * scale).astype(np.int64)
    row_x = np.rint((inverse[0, 1] * rows + inverse[0, 2]) * scale).astype(np.int64) + round_delta
    row_y = np.rint((inverse[1, 1] * rows + inverse[1, 2]) * scale).astype(np.int64) + round_delta
    fixed_x = (row_x[:, None] + column_x[None, :]) >> (_AB_BITS - _INTER_BITS)  # (out_h, out_w)
    fixed_y = (row_y[:, None] + column_y[None, :]) >> (_AB_BITS - _INTER_BITS)
    source_x, source_y = fixed_x >> _INTER_BITS, fixed_y >> _INTER_BITS
    fraction_x = (fixed_x & ((1 << _INTER_BITS) - 1)).astype(np.int32)
    fraction_y = (fixed_y & ((1 << _INTER_BITS) - 1)).astype(np.int32)

    # a one-pixel black frame lets every sample with a neighbour in the image read its 4 neighbours directly
    framed = np.zeros((source_height + 2, source_width + 2, num_channels), dtype=np.uint8)
    framed[1:-1, 1:-1] = channels
    flat, stride = framed.reshape(-1, num_channels), source_width + 2
    touches_image = (source_x >= -1) & (source_x < source_width)
    touches_image &= (source_y >= -1) & (source_y < source_height)
    top_left = np.clip(source_y + 1, 0, source_height) * stride + np.clip(source_x + 1, 0, source_width)

    unit = 1 << _INTER_BITS  # weights (32 - f)(32 - g) * 32 are exact and sum to 2**15
    weight_scale = (1 << _COEF_BITS) // (unit * unit)
    total = np.full((height, width, num_channels), 1 << (_COEF_BITS - 1), dtype=np.int32)
    for dy, weight_y in ((0, unit - fraction_y), (1, fraction_y)):
        for dx, weight_x in ((0, unit - fraction_x), (1, fraction_x)):
            weight = weight_y * weight_x * weight_scale * touches_image
            total += weight[..., None] * flat[top_left + dy * stride + dx]
    crop = (total >> _COEF_BITS).astype(np.uint8)
    return crop[..., 0] if image.ndim == 2 else crop


def crop_image(
    image: np.ndarray,
    center,
    scale,
    rotation: float,
    output_size: int | Sequence[int],
    pixel_std: float = PIXEL_STD,
) -> np.ndarray:
    """Cut the person crop out of ``image`` (H, W, C); see :func:`get_affine_transform` for the arguments.

    Returns:
        ``(out_h, out_w, C)`` crop of the image's dtype.
    """
    matrix = get_affine_transform(center, scale, rotation, output_size, pixel_std=pixel_std)
    return warp_to_crop(image, matrix, output_size)


def image_to_crop(points, center, scale, output_size, rotation: float = 0.0, pixel_std: float = PIXEL_STD):
    """``(..., 2)`` image pixels -> crop pixels (float64)."""
    matrix = get_affine_transform(center, scale, rotation, output_size, pixel_std=pixel_std)
    return affine_points(points, matrix)


def crop_to_image(points, center, scale, output_size, rotation: float = 0.0, pixel_std: float = PIXEL_STD):
    """``(..., 2)`` crop pixels -> image pixels (float64): the exact inverse of :func:`image_to_crop`.

    With ``rotation=0`` this is the reference's ``transform_preds``, which maps predictions back.
    """
    matrix = get_affine_transform(center, scale, rotation, output_size, inv=True, pixel_std=pixel_std)
    return affine_points(points, matrix)


# ----------------------------------------------------------------------------------------------------
# Horizontal flip
# ----------------------------------------------------------------------------------------------------


def flip_points(points, image_width: int) -> np.ndarray:
    """Mirror ``(..., D)`` points (x first) across the vertical axis of an image ``image_width`` wide."""
    points = np.array(points, dtype=np.float64)
    points[..., 0] = image_width - 1.0 - points[..., 0]
    return points


def flip_keypoints(
    joints, visible, flip_indices: Sequence[int], image_width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of a horizontally flipped image: x mirrored, left and right partners swapped.

    After a flip the person's left arm is where the right arm was, so keypoint ``i`` takes the (mirrored)
    position of its partner ``flip_indices[i]``.

    Args:
        joints: ``(K, D)`` with x first (y, depth... unchanged by the mirror).
        visible: ``(K,)`` flags, swapped along with the joints.
        flip_indices: ``K`` partner indices (a keypoint on the midline is its own partner).
    Returns:
        new ``joints`` (float64) and ``visible`` arrays; the inputs are not changed.
    """
    joints = np.asarray(joints)
    visible = np.asarray(visible)
    order = np.asarray(flip_indices, dtype=np.intp)
    num_keypoints = joints.shape[0]
    if order.shape != (num_keypoints,) or visible.shape[0] != num_keypoints:
        raise ValueError(
            f"flip_indices ({order.shape[0]}), joints ({num_keypoints}) and visible ({visible.shape[0]}) "
            "must have one entry per keypoint"
        )
    in_range = order.min() >= 0 and order.max() < num_keypoints
    if not in_range or not np.array_equal(order[order], np.arange(num_keypoints)):
        raise ValueError(
            f"flip_indices must pair keypoints up (flipping twice is the identity), got {order.tolist()}"
        )
    return flip_points(joints, image_width)[order], visible[order].copy()
