"""Drawing keypoints, skeletons and labels on images so that a person can check them at a glance.

Left keypoints and the links between them are drawn in blue, right ones in orange, midline ones in
green (a keypoint set's own ``colors`` win where it has them). "Left" is the person's own left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import cv2
import numpy as np

from .keypoints import KeypointSet, normalize_name

LEFT_COLOR = (40, 140, 255)
RIGHT_COLOR = (255, 120, 30)
MIDDLE_COLOR = (60, 220, 90)
_SHIFT = 4  # sub-pixel drawing: OpenCV takes coordinates x 16
DRAWABLE_EXTENT = 4
BOX_COLOR = (255, 255, 255)


def keypoint_side(name: str) -> str:
    """``"left"``, ``"right"`` or ``"middle"``, from the keypoint's name."""
    first = normalize_name(name).split(" ")[0]
    return first if first in ("left", "right") else "middle"


def _side_color(side: str) -> tuple[int, int, int]:
    return {"left": LEFT_COLOR, "right": RIGHT_COLOR}.get(side, MIDDLE_COLOR)


def drawable_keypoints(keypoints: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """(K,) bool: the (K, 2) points that can be drawn on an image of ``image_shape``: finite and within
    ``DRAWABLE_EXTENT`` times its size of it (farther ones are off the picture anyway, and OpenCV's fixed-point
    drawing fails on coordinates past 2**31)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    limit = DRAWABLE_EXTENT * max(image_shape[:2])
    with np.errstate(invalid="ignore"):
        return np.isfinite(keypoints).all(axis=1) & (np.abs(keypoints) <= limit).all(axis=1)


def draw_keypoints(
    image_rgb: np.ndarray,
    keypoints: np.ndarray,
    keypoint_set: KeypointSet,
    scores: np.ndarray | None = None,
    visible: np.ndarray | None = None,
    labels: bool | list[str] = False,
) -> np.ndarray:
    """Draw one person's keypoints and skeleton on a copy of an image.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image; it is not modified.
        keypoints: (K, 2) x, y in pixels, K = len(keypoint_set). Points that are not
            :func:`drawable_keypoints` (non-finite, or far off the image) are not drawn.
        keypoint_set: names (for colours and labels) and skeleton of the keypoints.
        scores: optional (K,) confidence per keypoint, written after the label as ``0.93``.
        visible: optional (K,) bool; keypoints marked False are not drawn, nor are their links.
        labels: True writes each keypoint's name beside it, a list of K strings writes those.

    Returns:
        (H, W, 3) uint8 RGB: the image with the keypoints drawn.
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.dtype} {image_rgb.shape}")
    count = len(keypoint_set)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.shape != (count, 2):
        raise ValueError(f"expected keypoints of shape ({count}, 2) for the {keypoint_set.name} set, "
                         f"got {keypoints.shape}")
    shown = drawable_keypoints(keypoints, image_rgb.shape)
    if visible is not None:
        visible = np.asarray(visible, dtype=bool)
        if visible.shape != (count,):
            raise ValueError(f"expected visible of shape ({count},), got {visible.shape}")
        shown &= visible
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (count,):
            raise ValueError(f"expected scores of shape ({count},), got {scores.shape}")
    texts = _texts(keypoint_set, scores, labels)

    out = image_rgb.copy()
    height, width = out.shape[:2]
    extent = max(height, width)
    radius = max(2.0, extent / 128)
    thickness = max(1, round(extent / 256))
    sides = [keypoint_side(name) for name in keypoint_set.names]
    colors = [keypoint_set.colors.get(name, _side_color(side)) for name, side in zip(keypoint_set.names, sides,
                                                                                          strict=True)]
    fixed = np.round(np.where(shown[:, None], keypoints, 0.0) * (1 << _SHIFT)).astype(np.int64)

    for a, b in keypoint_set.skeleton:
        if shown[a] and shown[b]:
            color = _side_color(sides[a] if sides[a] == sides[b] else "middle")
            cv2.line(out, tuple(fixed[a].tolist()), tuple(fixed[b].tolist()), color, thickness, cv2.LINE_AA, _SHIFT)
    for k in np.flatnonzero(shown):
        center = tuple(fixed[k].tolist())
        cv2.circle(out, center, round((radius + 1) * (1 << _SHIFT)), (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, center, round(radius * (1 << _SHIFT)), colors[k], -1, cv2.LINE_AA, _SHIFT)
    if texts:
        font_scale = max(0.3, extent / 900)
        for k in np.flatnonzero(shown):
            if not texts[k]:
                continue
            origin = (int(keypoints[k, 0] + radius + 2), int(keypoints[k, 1] - radius))
            # A dark halo keeps the text readable on any background.
            cv2.putText(out, texts[k], origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness + 2,
                        cv2.LINE_AA)
            cv2.putText(out, texts[k], origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colors[k], thickness, cv2.LINE_AA)
    return out


def _texts(keypoint_set: KeypointSet, scores: np.ndarray | None, labels: bool | list[str]) -> list[str] | None:
    if labels is True:
        names = keypoint_set.names
    elif labels is False:
        names = [""] * len(keypoint_set)
    else:
        names = list(labels)
        if len(names) != len(keypoint_set):
            raise ValueError(f"expected {len(keypoint_set)} labels, got {len(names)}")
    if scores is not None:
        names = [f"{name} {score:.2f}".strip() for name, score in zip(names, scores, strict=True)]
    return names if any(names) else None


def score_color(score: float) -> tuple[int, int, int]:
    """RGB from red (score 0) through yellow (0.5) to green (1)."""
    red, yellow, green = np.array([230, 40, 40]), np.array([245, 205, 40]), np.array([40, 200, 80])
    score = float(np.clip(score, 0.0, 1.0))
    low, high, t = (red, yellow, score * 2) if score < 0.5 else (yellow, green, score * 2 - 1)
    return tuple(int(v) for v in np.round(low + t * (high - low)))


Corners = tuple[tuple[int, int], tuple[int, int]]


def draw_persons(
    picture: np.ndarray,
    persons: Sequence,
    keypoint_set: KeypointSet,
    labels: bool | list[str] = False,
    score_text: bool = True,
    score_colors: bool = False,
    to_picture: Callable[[np.ndarray], np.ndarray] | None = None,
    box_corners: Callable[[object], Corners] | None = None,
    tags: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw every answered person (a localizer's ``PersonKeypoints``: ``box``, ``keypoints``, ``scores``,
    ``valid``, ``error``) on a copy of ``picture``: its box and tag if asked, then its skeleton
    (:func:`draw_keypoints`). A person with an ``error`` got no answer and is left out.

    Args:
        picture: (H, W, 3) uint8 RGB, the image or an enlarged copy of it (see ``to_picture``).
        labels: as in :func:`draw_keypoints`.
        score_text: write each keypoint's score beside it.
        score_colors: colour each keypoint by its score (:func:`score_color`) instead of by its side.
        to_picture: (K, 2) image pixels -> the picture's; default: the picture is the image.
        box_corners: a person -> its box's corners ``((x0, y0), (x1, y1))`` in the picture's pixels, drawn in
            ``BOX_COLOR``; None: no boxes.
        tags: one text per person, written above its box (a video's ids).
    """
    picture = picture.copy()
    for number, person in enumerate(persons):
        if person.error is not None:
            continue  # its box is empty, outside the image or not finite: nothing to draw
        if box_corners is not None:
            (x0, y0), (x1, y1) = box_corners(person)
            cv2.rectangle(picture, (x0, y0), (x1, y1), BOX_COLOR, 1, cv2.LINE_AA)
            if tags is not None:
                cv2.putText(picture, tags[number], (x0 + 2, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            BOX_COLOR, 1, cv2.LINE_AA)
        colored = keypoint_set
        if score_colors:
            colored = replace(keypoint_set, colors={name: score_color(s) for name, s in zip(keypoint_set.names,
                                                                                           person.scores, strict=True)})
        points = person.keypoints[:, :2]
        picture = draw_keypoints(picture, points if to_picture is None else to_picture(points), colored,
                                 scores=person.scores if score_text else None, visible=person.valid, labels=labels)
    return picture
