"""COCO-style keypoint AP (COCO val2017, Human-Art): OKS-based average precision with pycocotools.

A prediction is one person instance in the COCO results format::

    {"image_id": int, "category_id": 1, "keypoints": [x1, y1, s1, ..., xK, yK, sK], "score": float}

with x, y in image pixels and s the keypoint's confidence. Two optional keys are used by the
detector-box protocol and dropped before pycocotools sees the results: ``"bbox"`` (the person box
``[x, y, w, h]`` the crop was made from) and ``"box_score"`` (the detector's confidence).

Instance scores. The reference (``utils/valid2d.py``) scores an instance with the plain mean of
all its keypoint scores (a keypoint whose answer could not be parsed counts with score 0), never
multiplies by a box score (it runs on ground-truth boxes) and does no OKS NMS (one prediction per
ground-truth person). The usual detector-box protocol (HRNet, MMPose, ViTPose) instead averages
only the keypoint scores above 0.2, multiplies by the detector's box score, and removes duplicate
people with OKS NMS at 0.9. :func:`rescore_instances` and :func:`oks_nms` give both; the
evaluation itself takes the scores as they are.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..keypoints import COCO_KEYPOINTS

logger = logging.getLogger(__name__)

# The order of COCOeval.stats for iouType "keypoints".
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")
BOX_SOURCES = ("gt", "detections")
RESULT_KEYS = ("image_id", "category_id", "keypoints", "score")


def evaluate_coco_keypoints(
    ground_truth: str | Path | COCO,
    predictions: Sequence[Mapping],
    *,
    boxes: Literal["gt", "detections"],
    sigmas: Sequence[float] | None = None,
    keypoint_indices: Sequence[int] | None = None,
) -> dict:
    """OKS keypoint AP/AR of ``predictions`` against a COCO-format ground truth.

    Args:
        ground_truth: path of a COCO keypoint annotation file, or an already loaded ``COCO``.
        predictions: COCO result dicts (see the module docstring), K keypoints each; the ``score``
            of each is used as given (see :func:`rescore_instances`).
        boxes: which person boxes the crops came from, ``"gt"`` or ``"detections"``; reported
            back so that every number says which protocol produced it.
        sigmas: OKS sigma of each of the K keypoints; defaults to the COCO sigmas when K is 17.
        keypoint_indices: evaluate only these keypoints (e.g. the held-out types of the
            novel-keypoint protocol): ground truth, predictions and sigmas are all restricted to
            them, so OKS is computed over the subset alone.

    Returns:
        ``{"AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL"}`` as
        fractions in [0, 1] (-1 where the ground truth has no person of that size, as
        pycocotools), plus ``"boxes"`` and ``"keypoint_indices"`` (the evaluated indices).
        Empty ``predictions`` give AP 0 with a warning.
    """
    if boxes not in BOX_SOURCES:
        raise ValueError(f"boxes must be one of {BOX_SOURCES}, got {boxes!r}")
    captured = io.StringIO()  # pycocotools prints progress and the summary table
    with contextlib.redirect_stdout(captured):
        coco_gt = ground_truth if isinstance(ground_truth, COCO) else COCO(str(ground_truth))
    num_keypoints = _num_keypoints(coco_gt)
    sigmas = _checked_sigmas(sigmas, num_keypoints)
    indices = _checked_indices(keypoint_indices, num_keypoints)

    results = [_as_result(p, num_keypoints, indices) for p in predictions]
    unknown_images = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown_images:
        raise ValueError("predictions name image ids that are not in the ground truth: "
                         f"{sorted(unknown_images)[:10]}")

    with contextlib.redirect_stdout(captured):
        if keypoint_indices is not None:
            coco_gt = _restrict_ground_truth(coco_gt, indices)
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            warnings.warn("no predictions to evaluate: every AP and AR is 0", stacklevel=2)
            coco_dt = _empty_results(coco_gt)
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
        coco_eval.params.kpt_oks_sigmas = sigmas[indices]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.debug("pycocotools output:\n%s", captured.getvalue())

    report: dict = {name: float(value) for name, value in zip(COCO_STAT_NAMES, coco_eval.stats, strict=True)}
    report["boxes"] = boxes
    report["keypoint_indices"] = indices
    return report


def instance_score(
    keypoint_scores: Sequence[float] | np.ndarray,
    *,
    box_score: float = 1.0,
    keypoint_score_threshold: float | None = None,
) -> float:
    """Confidence of one person instance from its keypoint scores.

    Args:
        keypoint_scores: (K,) per-keypoint confidences.
        box_score: the detector's confidence in the person box (1 for ground-truth boxes).
        keypoint_score_threshold: None averages all K scores (the reference); a number averages
            only the scores above it, 0 when none is (HRNet/MMPose use 0.2).

    Returns:
        mean keypoint score x ``box_score``.
    """
    scores = np.asarray(keypoint_scores, dtype=np.float64)
    if keypoint_score_threshold is not None:
        scores = scores[scores > keypoint_score_threshold]
    mean = float(scores.mean()) if scores.size else 0.0
    return mean * box_score


def rescore_instances(
    predictions: Sequence[Mapping],
    *,
    use_box_score: bool = False,
    keypoint_score_threshold: float | None = None,
) -> list[dict]:
    """Copies of ``predictions`` whose ``"score"`` is recomputed by :func:`instance_score`.

    The defaults reproduce the reference (mean of all keypoint scores). The detector-box protocol
    of HRNet/MMPose is ``use_box_score=True, keypoint_score_threshold=0.2``; it needs a
    ``"box_score"`` in every prediction.
    """
    rescored = []
    for i, prediction in enumerate(predictions):
        if use_box_score and "box_score" not in prediction:
            raise KeyError(f"prediction {i} has no 'box_score' (needed with use_box_score=True)")
        keypoint_scores = np.asarray(prediction["keypoints"], dtype=np.float64)[2::3]
        box_score = float(prediction["box_score"]) if use_box_score else 1.0
        score = instance_score(keypoint_scores, box_score=box_score,
                               keypoint_score_threshold=keypoint_score_threshold)
        rescored.append({**prediction, "score": score})
    return rescored


def oks_nms(predictions: Sequence[Mapping], sigmas: Sequence[float], threshold: float = 0.9) -> list[dict]:
    """Drop people that duplicate a higher-scored person of the same image (OKS above ``threshold``).

    Needed with detector boxes, where one person can be detected twice; with ground-truth boxes
    (the reference) there is nothing to remove. Each prediction needs its person box
    ``"bbox": [x, y, w, h]``: the OKS scale is the mean of the two boxes' areas.

    Args:
        predictions: COCO result dicts with ``"bbox"``.
        sigmas: (K,) OKS sigmas of the keypoints.
        threshold: OKS above which the lower-scored of two people is removed.

    Returns:
        the kept predictions, highest score first within each image, images in first-seen order.
    """
    variances = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    by_image: dict[int, list[Mapping]] = {}
    for i, prediction in enumerate(predictions):
        if "bbox" not in prediction:
            raise KeyError(f"prediction {i} has no 'bbox' [x, y, w, h]: OKS NMS needs the person's box area")
        by_image.setdefault(prediction["image_id"], []).append(prediction)

    kept: list[dict] = []
    for people in by_image.values():
        people = sorted(people, key=lambda p: p["score"], reverse=True)
        xy = np.array([np.reshape(p["keypoints"], (-1, 3))[:, :2] for p in people], dtype=np.float64)
        # xy: (P, K, 2), people sorted by score
        areas = np.array([p["bbox"][2] * p["bbox"][3] for p in people], dtype=np.float64)  # (P,)
        suppressed = np.zeros(len(people), dtype=bool)
        for i in range(len(people)):
            if suppressed[i]:
                continue
            kept.append(dict(people[i]))
            squared_distances = ((xy[i + 1:] - xy[i]) ** 2).sum(-1)  # (P-i-1, K)
            scales = (areas[i + 1:] + areas[i]) / 2 + np.spacing(1)
            oks = np.exp(-squared_distances / variances / scales[:, None] / 2).mean(-1)
            suppressed[i + 1:] |= oks > threshold
    return kept


def _num_keypoints(coco_gt: COCO) -> int:
    for category in coco_gt.dataset.get("categories", []):
        if category.get("keypoints"):
            return len(category["keypoints"])
    for annotation in coco_gt.dataset.get("annotations", []):
        if annotation.get("keypoints"):
            return len(annotation["keypoints"]) // 3
    raise ValueError("the ground truth names no keypoints (no category 'keypoints' list, "
                     "no annotated keypoints)")


def _checked_sigmas(sigmas: Sequence[float] | None, num_keypoints: int) -> np.ndarray:
    """(K,) the OKS sigmas: as given, or COCO's for a 17-keypoint ground truth."""
    if sigmas is None:
        if num_keypoints != len(COCO_KEYPOINTS):
            raise ValueError(f"the ground truth has {num_keypoints} keypoints per person, not the 17 "
                             "of COCO: pass their OKS sigmas")
        sigmas = COCO_KEYPOINTS.sigmas
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.shape != (num_keypoints,):
        raise ValueError(f"expected {num_keypoints} sigmas (one per ground-truth keypoint), "
                         f"got {sigmas.shape[0]}")
    return sigmas


def _checked_indices(keypoint_indices: Sequence[int] | None, num_keypoints: int) -> list[int]:
    """The keypoints to evaluate: as given (distinct, in range), or all."""
    indices = list(range(num_keypoints)) if keypoint_indices is None else [int(i) for i in keypoint_indices]
    if not indices or min(indices) < 0 or max(indices) >= num_keypoints or len(set(indices)) != len(indices):
        raise ValueError(f"keypoint_indices must be distinct indices in [0, {num_keypoints}), got {indices}")
    return indices


def _as_result(prediction: Mapping, num_keypoints: int, indices: list[int]) -> dict:
    """A clean COCO result restricted to ``indices``: extra keys would change how loadRes reads it."""
    missing = [key for key in RESULT_KEYS if key not in prediction]
    if missing:
        raise KeyError(f"a prediction lacks {missing}; expected keys {RESULT_KEYS}")
    keypoints = np.asarray(prediction["keypoints"], dtype=np.float64)
    if keypoints.shape != (3 * num_keypoints,):
        raise ValueError(f"a prediction for image {prediction['image_id']} has {keypoints.size} keypoint "
                         f"values; expected 3 x {num_keypoints} (x, y, score per keypoint)")
    return {
        "image_id": prediction["image_id"],
        "category_id": prediction["category_id"],
        "keypoints": keypoints.reshape(num_keypoints, 3)[indices].reshape(-1).tolist(),
        "score": float(prediction["score"]),
    }


def _restrict_ground_truth(coco_gt: COCO, indices: list[int]) -> COCO:
    """A copy of the ground truth that labels only ``indices``.

    ``num_keypoints`` is recounted because COCOeval ignores people with none labelled; the area
    stays the person's area, which is the OKS scale whatever keypoints are asked.
    """
    dataset = copy.deepcopy(coco_gt.dataset)
    for annotation in dataset.get("annotations", []):
        if "keypoints" not in annotation:
            continue
        keypoints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)[indices]
        annotation["keypoints"] = keypoints.reshape(-1).tolist()
        annotation["num_keypoints"] = int(np.count_nonzero(keypoints[:, 2] > 0))
    for category in dataset.get("categories", []):
        if category.get("keypoints"):
            category["keypoints"] = [category["keypoints"][i] for i in indices]
            category["skeleton"] = []
    restricted = COCO()
    restricted.dataset = dataset
    restricted.createIndex()
    return restricted


def _empty_results(coco_gt: COCO) -> COCO:
    """A results object with no detections (``loadRes`` cannot take an empty list)."""
    empty = COCO()
    empty.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    empty.createIndex()
    return empty
