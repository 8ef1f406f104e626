"""Whether confidences mean what they say: reliability bins, the expected calibration error, the diagram.

A keypoint confidence c is calibrated when keypoints given c are correct (e.g. within PCK@0.1) a fraction
c of the time. ECE = sum over equal-width confidence bins of (bin share) x |mean confidence - hit rate|.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..data.outputs import write_picture_atomically
from .tasks.base import predicted_points

if TYPE_CHECKING:
    from .tasks.custom import CustomTask


def scores_and_hits(records: list[dict], task: CustomTask, threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The labelled keypoints of ``task``'s persons, flattened: their scores in ``records`` (one per person, in
    item order) and whether each lies within ``threshold`` x the crop side of the truth (PCK's hit)."""
    points = predicted_points(records)[..., :2]
    distance = np.linalg.norm(points - task.truth, axis=-1) / task.crop_sides[:, None]
    scores = np.array([record["scores"] for record in records])
    return scores[task.labelled], distance[task.labelled] <= threshold


def reliability_bins(confidence, hit, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) confidences in [0, 1] and (N,) bool hits -> per bin (bins,): mean confidence, hit rate (NaN where
    empty), count."""
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    hit = np.asarray(hit, dtype=np.float64)
    if confidence.shape != hit.shape or confidence.ndim != 1:
        raise ValueError(f"confidence {confidence.shape} and hit {hit.shape} must both be (N,)")
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(which, confidence, bins) / counts
        hit_rate = np.bincount(which, hit, bins) / counts
    return mean_confidence, hit_rate, counts


def expected_calibration_error(confidence, hit, bins: int = 10) -> float:
    """ECE of (N,) confidences against (N,) bool hits over ``bins`` equal-width bins."""
    mean_confidence, hit_rate, counts = reliability_bins(confidence, hit, bins)
    filled = counts > 0
    return float((counts[filled] * np.abs(mean_confidence[filled] - hit_rate[filled])).sum() / counts.sum())


def draw_reliability_diagram(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                             title: str = "", bins: int = 10, size: int = 480) -> Path:
    """Write a reliability diagram PNG: hit rate against mean confidence per bin, one line per named
    (confidence, hit) pair, the diagonal for perfect calibration, ECE in the legend."""
    margin, image = 60, np.full((size, size, 3), 255, np.uint8)
    side = size - 2 * margin

    def point(x: float, y: float) -> tuple[int, int]:
        return int(margin + x * side), int(size - margin - y * side)

    cv2.rectangle(image, point(0, 0), point(1, 1), (0, 0, 0), 1)
    cv2.line(image, point(0, 0), point(1, 1), (160, 160, 160), 1, cv2.LINE_AA)
    for tick in np.linspace(0, 1, 6):
        cv2.putText(image, f"{tick:.1f}", (point(tick, 0)[0] - 10, size - margin + 18), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, f"{tick:.1f}", (margin - 32, point(0, tick)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "confidence", (size // 2 - 40, size - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(image, "fraction within PCK@0.1", (5, margin - 30), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(image, title, (margin, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    colours = [(200, 80, 30), (30, 140, 30), (30, 30, 200), (150, 0, 150)]  # BGR
    for n, (name, (confidence, hit)) in enumerate(curves.items()):
        colour = colours[n % len(colours)]
        mean_confidence, hit_rate, _ = reliability_bins(confidence, hit, bins)
        filled = ~np.isnan(hit_rate)
        points = np.array([point(x, y) for x, y in zip(mean_confidence[filled], hit_rate[filled], strict=True)])
        cv2.polylines(image, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(image, tuple(int(v) for v in p), 3, colour, -1, cv2.LINE_AA)
        label = f"{name}: ECE {expected_calibration_error(confidence, hit, bins):.3f}"
        cv2.putText(image, label, (margin + 8, margin + 18 + 18 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1,
                    cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_picture_atomically(path, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))  # drawn in OpenCV's BGR


__all__ = ["draw_reliability_diagram", "expected_calibration_error", "reliability_bins", "scores_and_hits"]
