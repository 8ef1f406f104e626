"""PCK: the fraction of keypoints predicted within a threshold x a per-instance length of the truth.

The length is whatever the caller names; the SynthPose demo uses the side of the person crop (the
person box padded to a square), so PCK@0.1 there means "within a tenth of the crop". A prediction
that did not parse (NaN) counts as a miss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pck(predictions, targets, mask, normalizers, thresholds: Sequence[float] = (0.1, 0.05)) -> dict:
    """PCK at each threshold, overall and per keypoint.

    Args:
        predictions: (N, K, 2) predicted x, y (NaN where there is no answer).
        targets: (N, K, 2) true x, y, in the same units.
        mask: (N, K) bool, the keypoints that count (e.g. labelled ones).
        normalizers: (N,) the length each instance's distances are divided by.
        thresholds: fractions of the normalizer.

    Returns:
        ``{"pck@T": overall fraction, "per_keypoint": {"pck@T": (K,) list, NaN where none counts},
        "num_keypoints": counted keypoints}``.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    normalizers = np.asarray(normalizers, dtype=np.float64)
    if predictions.shape != targets.shape or predictions.shape[:2] != mask.shape or predictions.shape[-1] != 2:
        raise ValueError(f"predictions {predictions.shape} and targets {targets.shape} must be (N, K, 2) and "
                         f"mask {mask.shape} (N, K)")
    if normalizers.shape != mask.shape[:1] or not (normalizers > 0).all():
        raise ValueError(f"normalizers must be (N,) = {mask.shape[:1]} positive lengths, got {normalizers.shape}")
    relative = np.linalg.norm(predictions - targets, axis=-1) / normalizers[:, None]
    relative = np.where(np.isnan(relative), np.inf, relative)
    counted = mask.sum(axis=0)
    report: dict = {"num_keypoints": int(mask.sum()), "per_keypoint": {}}
    for threshold in thresholds:
        hits = (relative <= threshold) & mask
        key = f"pck@{threshold:g}"
        report[key] = float(hits.sum() / max(1, mask.sum()))
        per_keypoint = np.where(counted > 0, hits.sum(axis=0) / np.maximum(counted, 1), np.nan)
        report["per_keypoint"][key] = per_keypoint.tolist()
    return report


__all__ = ["pck"]
