"""Evaluation tasks: a data set with its protocol, the persons to ask (``task.items``) and the metric.

    task = build_task("coco", "person_keypoints_val2017.json", "val2017", held_out="paper")
    task.items        # [EvalItem(image, crop center and scale, identity), ...] in annotation order
    task.metrics(records)  # one prediction record per item (see ..loop) -> the metric object's report

Protocols:

- COCO / Human-Art (:class:`CocoTask`): OKS AP with pycocotools, from ground-truth boxes (the reference's
  protocol: crops exactly as its loader cuts them, instance score = mean keypoint score) or from a detector's
  boxes (the usual protocol of heatmap models: boxes above a score threshold, instance score = mean of the
  keypoint scores above 0.2 x box score, OKS NMS at 0.9). ``held_out`` keypoint types (the novel-keypoint
  protocol) are also scored on their own, next to the types seen in training.
- MPII (:class:`MpiiTask`): PCKh at 0.5 and 0.1 (both means, per joint, and the novel keypoints), crops with
  HRNet's center/scale adjustment; head sizes from ``gt_valid.mat`` or from the entries' ``head_box``.
- Human3.6M (:class:`H36mTask`): MPJPE and PA-MPJPE in mm, per action where the file names carry one: each
  answer's image position and root-relative depth are lifted to camera coordinates with the ground-truth
  camera and root depth (:func:`~locllm.evaluation.h36m.image_to_camera`).
- custom (:class:`CustomTask`): your own keypoints (a keypoint table) in a COCO-format file, under
  ``keypoints`` or another annotation key: PCK of the crop side from ground-truth boxes, next to the
  image-blind mean pose of the same crops; no OKS, whose per-keypoint sigmas new keypoint types do not have.

A new data set is a module here with an :class:`EvaluationTask` subclass (its items, protocol and the metric
object it names, from :mod:`..metrics`) and a line in :func:`build_task`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ...keypoints import (
    KeypointSet,
    get_keypoint_set,
    load_description_file,
    load_keypoint_table,
    reference_keypoint_set,
)
from .base import EvalItem, EvaluationTask
from .coco import CocoTask
from .custom import CustomTask
from .h36m import H36mTask
from .mpii import MpiiTask

DATASETS = ("coco", "humanart", "mpii", "h36m", "custom")


def asked_keypoints(dataset: str, descriptions_file: str | Path | None = None) -> KeypointSet:
    """The data set's keypoints as the prompts name and describe them.

    ``descriptions_file``: a JSON / YAML ``{name: description}`` table replacing ours, or the reference's
    ``constants.py``, which also gives its spelling of the names (what its checkpoints were trained on).
    For ``custom`` it is required: the keypoint table that defines the keypoints, in the annotations' order.
    """
    if dataset == "custom":
        if descriptions_file is None:
            raise ValueError("--dataset custom needs --keypoints TABLE: your keypoint table (names and "
                             "descriptions, in the order the annotations list them)")
        return load_keypoint_table(descriptions_file)
    set_name = "coco" if dataset in ("coco", "humanart") else dataset
    default = get_keypoint_set(set_name)
    if descriptions_file is None:
        return default
    if Path(descriptions_file).suffix == ".py":
        return reference_keypoint_set(descriptions_file, set_name)
    return default.with_descriptions(load_description_file(descriptions_file))


def build_task(dataset: str, annotation_file: str | Path, image_root: str | Path, *, boxes: str = "gt",
               detection_score_threshold: float = 0.0, held_out: Sequence[str] | str = (),
               keypoints: KeypointSet | None = None, mpii_ground_truth: str | Path | None = None,
               keypoint_field: str = "keypoints") -> EvaluationTask:
    """The task for a data set name (one of ``DATASETS``); see the task classes for the arguments."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")
    if dataset != "custom" and keypoint_field != "keypoints":
        raise ValueError("another annotation key for the keypoints goes with --dataset custom")
    if dataset not in ("coco", "humanart") and (boxes != "gt" or held_out):
        raise ValueError("detector boxes and held-out keypoints are COCO-format protocols (coco, humanart)")
    if dataset != "mpii" and mpii_ground_truth is not None:
        raise ValueError("an MPII ground-truth file goes with --dataset mpii")
    if dataset in ("coco", "humanart"):
        return CocoTask(annotation_file, image_root, boxes=boxes, detection_score_threshold=detection_score_threshold,
                        held_out=held_out, keypoints=keypoints, name=dataset)
    if dataset == "custom":
        if keypoints is None:
            raise ValueError("the custom data set needs its keypoint set (a keypoint table)")
        return CustomTask(annotation_file, image_root, keypoints=keypoints, keypoint_field=keypoint_field)
    try:  # COCO-format files are checked entry by entry (.coco_file); these are read by their data sets
        if dataset == "mpii":
            return MpiiTask(annotation_file, image_root, ground_truth_file=mpii_ground_truth, keypoints=keypoints)
        return H36mTask(annotation_file, image_root, keypoints=keypoints)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{annotation_file}: not JSON ({error}); give the {dataset} annotation file") from None


__all__ = ["DATASETS", "CocoTask", "CustomTask", "EvalItem", "EvaluationTask", "H36mTask", "MpiiTask",
           "asked_keypoints", "build_task"]
