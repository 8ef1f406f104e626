"""Evaluation runs: a localizer over every person of a data set, predictions written as they come, metrics.

    annotation file -> people to ask (EvalItem: image, crop center and scale)     (a task, data/datasets)
    -> image -> crop (data/geometry) -> localizer.localize_crops -> crop pixels
    -> image pixels (inverse crop) -> one JSON line per person (PredictionLog)
    -> metric functions (coco.py, mpii.py, h36m.py)

Example (the CLI is ``locllm eval``)::

    task = build_task("coco", "person_keypoints_val2017.json", "val2017")
    result = run_evaluation(Localizer.from_pretrained("ckpt"), task, predictions="preds.jsonl")
    print(format_report(result, task))  # result["metrics"]["AP"], result["counts"], result["protocol"]

Protocols:

- COCO / Human-Art: OKS AP with pycocotools, from ground-truth boxes (the reference's protocol: crops
  exactly as its loader cuts them, instance score = mean keypoint score) or from a detector's boxes
  (the usual protocol of heatmap models: boxes above a score threshold, instance score = mean of the
  keypoint scores above 0.2 x box score, OKS NMS at 0.9). ``held_out`` keypoint types (the novel-keypoint
  protocol) are also scored on their own, next to the types seen in training.
- MPII: PCKh at 0.5 and 0.1 (both means, per joint, and the novel keypoints), crops with HRNet's
  center/scale adjustment; head sizes from ``gt_valid.mat`` or from the entries' ``head_box``.
- Human3.6M: MPJPE and PA-MPJPE in mm, per action where the file names carry one: each answer's image
  position and root-relative depth are lifted to camera coordinates with the ground-truth camera and
  root depth (:func:`~locllm.evaluation.h36m.image_to_camera`).
- custom: your own keypoints (a keypoint table) in a COCO-format file, under ``keypoints`` or another
  annotation key: PCK of the crop side from ground-truth boxes, next to the image-blind mean pose of
  the same crops; no OKS, whose per-keypoint sigmas new keypoint types do not have.

Bad samples never stop a run; they are counted in ``result["counts"]``. An unreadable image or an
unusable box costs its persons their answers; an answer that does not parse costs its keypoint. A
keypoint without a valid answer sits where the reference puts it, at the crop's top-left corner with
depth 0 and score 0, so that metrics stay comparable with the reference's; a person without any answer
is left out of the COCO results (a missed person) and placed the same way for MPII and Human3.6M,
whose metrics have a slot for every person.

Resuming: with a predictions file, each person's line is flushed as soon as it is answered; a rerun
with the same file asks only the persons the file lacks (a line cut by the interruption is dropped).
Several processes (see :mod:`.distributed`) each write ``<file>.rank<r>``; the main process merges
them into the file at the end.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.datasets import CocoKeypointDataset, Human36MDataset, MpiiDataset, load_coco
from ..data.detections import read_detections
from ..data.geometry import PIXEL_STD, box_to_center_scale, crop_image, crop_to_image
from ..data.images import ImageReadError, read_image_rgb
from ..keypoints import (
    COCO_KEYPOINTS,
    H36M_KEYPOINTS,
    MPII_KEYPOINTS,
    PAPER_HELD_OUT,
    KeypointSet,
    get_keypoint_set,
    load_description_file,
    load_keypoint_table,
    reference_keypoint_set,
)
from .coco import COCO_STAT_NAMES, evaluate_coco_keypoints, oks_nms, rescore_instances
from .distributed import Ranks
from .h36m import action_from_file_name, evaluate_h36m, image_to_camera
from .mpii import MpiiGroundTruth, evaluate_mpii_pckh, load_mpii_ground_truth, pckh_per_joint
from .pck import pck

logger = logging.getLogger(__name__)

DATASETS = ("coco", "humanart", "mpii", "h36m", "custom")
PREDICTIONS_FORMAT = "locllm-eval-predictions/1"
# The detector-box protocol of HRNet / MMPose / ViTPose: keypoint scores above this count towards the
# instance score, which is then multiplied by the box score; duplicates above this OKS are removed.
DETECTION_KEYPOINT_SCORE_THRESHOLD = 0.2
DETECTION_OKS_NMS_THRESHOLD = 0.9
# HRNet and the reference print "Mean@0.1" from row 11 of np.arange(0, 0.51, 0.01): a threshold of 0.11.
REFERENCE_LOW_THRESHOLD = 0.11
UNREADABLE_IMAGE = "unreadable_image"
UNUSABLE_BOX = "unusable_box"


@dataclass(frozen=True)
class EvalItem:
    """One person to ask about: the image, where its crop is cut, and what identifies it.

    ``center`` (2,) and ``scale`` (2,) are in the conventions of :mod:`locllm.data.geometry` (float32,
    scale in units of ``pixel_std`` pixels); ``identity`` (annotation id, or detection box and score)
    goes into the person's prediction line; ``box_problem`` says why the person's box is unusable.
    """

    index: int
    file_name: str
    image_id: int | str
    center: np.ndarray
    scale: np.ndarray
    pixel_std: float
    identity: dict = field(default_factory=dict)
    box_problem: str | None = None

    @property
    def has_crop(self) -> bool:
        """Whether ``center`` and ``scale`` describe a crop (finite, of positive size)."""
        return bool(np.isfinite(self.center).all() and np.isfinite(self.scale).all() and self.scale[0] > 0)

    @property
    def problem(self) -> str | None:
        """Why this person cannot be asked about, or None."""
        if self.box_problem is not None:
            return self.box_problem
        if not self.has_crop:
            return f"center {self.center.tolist()} and scale {self.scale.tolist()} give no crop"
        return None


# ---------------------------------------------------------------------------------------------- tasks


class EvaluationTask(abc.ABC):
    """A data set with its protocol: the persons to ask (``items``, in annotation order) and the metric."""

    name: str
    ndim: int = 2  # coordinates per answer: 2, or 3 with root-relative depth

    def __init__(self, annotation_file: str | Path, image_root: str | Path, keypoints: KeypointSet,
                 items: list[EvalItem], skipped_annotations: dict):
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        self.keypoints = keypoints
        self.items = items
        self.skipped_annotations = skipped_annotations
        if not items:
            raise ValueError(f"{self.annotation_file}: no persons to evaluate")

    @abc.abstractmethod
    def protocol(self) -> dict:
        """How the numbers were made, for the report."""

    @abc.abstractmethod
    def metrics(self, records: list[dict]) -> dict:
        """The metrics from one prediction record per item, in item order."""

    @abc.abstractmethod
    def summary_lines(self, metrics: dict) -> list[str]:
        """The metrics as a few printable lines."""

    def fingerprint(self) -> str:
        """Identifies the persons, their crops and the prompts' descriptions, so that a predictions file is
        never resumed on another evaluation."""
        keys = [(item.file_name, str(item.image_id), item.identity, item.center.tolist(), item.scale.tolist())
                for item in self.items]
        keys.append([keypoint.description for keypoint in self.keypoints])
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _items_from_records(dataset, id_fields: Sequence[str]) -> list[EvalItem]:
    return [
        EvalItem(index, str(record.image_path), record.image_id, record.center, record.scale, dataset.pixel_std,
                 {key: record.meta[key] for key in id_fields if key in record.meta})
        for index, record in enumerate(dataset.records)
    ]


def _check_keypoints(keypoints: KeypointSet | None, default: KeypointSet) -> KeypointSet:
    if keypoints is None:
        return default
    if len(keypoints) != len(default):
        raise ValueError(f"the keypoints asked ({len(keypoints)}) must be the data set's {len(default)} "
                         f"{default.name} keypoints, in its order: {', '.join(default.names)}")
    return keypoints


class CocoTask(EvaluationTask):
    """COCO-format keypoint AP (COCO val2017, Human-Art, SynthPose) from ground-truth or detector boxes.

    Args:
        boxes: ``"gt"`` or the path of COCO detection results (``[{"image_id", "bbox", "score"}]``).
        detection_score_threshold: detections scored below it are not asked about.
        held_out: keypoint types left out of training, scored on their own (``"paper"``: the paper's four).
        keypoints: the 17 keypoints as asked (names, descriptions); default our COCO set.
        name: ``"coco"`` or ``"humanart"``, for the report.

    Detector boxes are cropped like ground-truth ones (padded to a square, no enlargement), the crops
    the model was trained on.
    """

    def __init__(self, annotation_file, image_root, *, boxes: str | Path = "gt", detection_score_threshold: float = 0.0,
                 held_out: Sequence[str] | str = (), keypoints: KeypointSet | None = None, name: str = "coco"):
        self.name = name
        keypoints = _check_keypoints(keypoints, COCO_KEYPOINTS)
        self.coco = load_coco(annotation_file)
        self.boxes = "gt" if str(boxes) == "gt" else "detections"
        self.detections_file = None if self.boxes == "gt" else Path(boxes)
        self.detection_score_threshold = float(detection_score_threshold)
        held_out = PAPER_HELD_OUT if held_out == "paper" else tuple(held_out)
        self.held_out = [COCO_KEYPOINTS.names[COCO_KEYPOINTS.index(n)] for n in held_out]  # KeyError if unknown
        if self.boxes == "gt":
            dataset = CocoKeypointDataset(self.coco, image_root, keypoints=keypoints)
            items = _items_from_records(dataset, ("annotation_id", "bbox"))
            skipped = dataset.skip_counts["annotations"]
        else:
            items, skipped = self._detection_items(), {}
        super().__init__(annotation_file, image_root, keypoints, items, skipped)

    def _detection_items(self) -> list[EvalItem]:
        detections: dict[int, list] = {}
        for detection in read_detections(self.detections_file, self.detection_score_threshold):
            if detection["image_id"] is None:
                raise ValueError(f"{self.detections_file}: a detection names its image by file_name only; "
                                 "evaluation matches detections to the ground truth by image_id")
            detections.setdefault(detection["image_id"], []).append((detection["bbox"], detection["score"]))
        unknown = set(detections) - set(self.coco.getImgIds())
        if unknown:
            raise ValueError(f"{self.detections_file}: detections for image ids not in the ground truth: "
                             f"{sorted(unknown)[:10]}")
        items = []
        for image_id in sorted(self.coco.getImgIds()):
            image = self.coco.imgs[image_id]
            for box, score in detections.get(image_id, []):
                center, scale = box_to_center_scale(box, 1.0, 1.0, PIXEL_STD)
                items.append(EvalItem(len(items), image["file_name"], image_id, center, scale, PIXEL_STD,
                                      {"bbox": box, "box_score": score},
                                      _box_problem(box, image.get("width"), image.get("height"))))
        return items

    def protocol(self) -> dict:
        if self.boxes == "gt":
            protocol = {"boxes": "gt", "instance_score": "mean of all keypoint scores (the reference)",
                        "oks_nms": None}
        else:
            protocol = {"boxes": "detections", "detections_file": str(self.detections_file),
                        "detection_score_threshold": self.detection_score_threshold,
                        "instance_score": f"mean of keypoint scores > {DETECTION_KEYPOINT_SCORE_THRESHOLD} "
                                          "x box score (HRNet / MMPose)",
                        "oks_nms": DETECTION_OKS_NMS_THRESHOLD}
        if self.held_out:
            protocol["held_out"] = self.held_out
        return protocol

    def metrics(self, records: list[dict]) -> dict:
        results = []
        for item, record in zip(self.items, records, strict=True):
            if record["error"]:
                continue
            scores = np.where(record["valid"], record["scores"], 0.0)
            keypoints = np.column_stack([np.asarray(record["keypoints"])[:, :2], scores])
            results.append({"image_id": item.image_id, "category_id": 1, "keypoints": keypoints.reshape(-1).tolist(),
                            "score": float(scores.mean()), **item.identity})
        if self.boxes == "detections":
            results = rescore_instances(results, use_box_score=True,
                                        keypoint_score_threshold=DETECTION_KEYPOINT_SCORE_THRESHOLD)
            results = oks_nms(results, COCO_KEYPOINTS.sigmas, DETECTION_OKS_NMS_THRESHOLD)
        metrics = evaluate_coco_keypoints(self.coco, results, boxes=self.boxes)
        if self.held_out:
            unseen = [COCO_KEYPOINTS.index(n) for n in self.held_out]
            seen = [i for i in range(len(COCO_KEYPOINTS)) if i not in unseen]
            metrics["novel_keypoints"] = {
                "held_out": self.held_out,
                "seen": evaluate_coco_keypoints(self.coco, results, boxes=self.boxes, keypoint_indices=seen),
                "unseen": evaluate_coco_keypoints(self.coco, results, boxes=self.boxes, keypoint_indices=unseen),
            }
        return metrics

    def summary_lines(self, metrics: dict) -> list[str]:
        def stats(report):
            # pycocotools' -1: no ground-truth person of that size
            return "  ".join(f"{name} {_fmt(report[name], 100) if report[name] >= 0 else 'n/a'}"
                             for name in COCO_STAT_NAMES[:6])

        lines = [stats(metrics)]
        if "novel_keypoints" in metrics:
            novel = metrics["novel_keypoints"]
            lines.append(f"seen keypoints:   {stats(novel['seen'])}")
            lines.append(f"unseen keypoints ({', '.join(novel['held_out'])}): {stats(novel['unseen'])}")
        return lines


class MpiiTask(EvaluationTask):
    """MPII PCKh on the HRNet-layout validation list (``annot/valid.json``).

    Args:
        ground_truth_file: ``gt_valid.mat``; default the one beside the annotation file if there is one,
            else the head boxes in the entries (``head_box``, as SynthPose writes).
        keypoints: the 16 keypoints as asked; default our MPII set, whose pelvis, thorax, neck and head top
            a COCO-trained model knows only by their descriptions (the novel keypoints).
    """

    name = "mpii"

    def __init__(self, annotation_file, image_root, *, ground_truth_file: str | Path | None = None,
                 keypoints: KeypointSet | None = None):
        keypoints = _check_keypoints(keypoints, MPII_KEYPOINTS)
        dataset = MpiiDataset(annotation_file, image_root, keypoints=keypoints)
        if dataset.layout != "hrnet":
            raise ValueError(f"{annotation_file}: MPII evaluation reads the HRNet list layout (valid.json), "
                             "not the COCO layout of the reference's mixed 3D training file")
        beside = Path(annotation_file).with_name("gt_valid.mat")
        if ground_truth_file is None and beside.is_file():
            ground_truth_file = beside
        self.ground_truth_file = ground_truth_file
        if ground_truth_file is not None:
            self.ground_truth = load_mpii_ground_truth(ground_truth_file)
        else:
            self.ground_truth = _mpii_ground_truth_from_entries(annotation_file, dataset)
        items = _items_from_records(dataset, ())
        if self.ground_truth.joints.shape[0] != len(items):
            raise ValueError(f"{ground_truth_file} holds {self.ground_truth.joints.shape[0]} persons, "
                             f"{annotation_file} {len(items)}: they must be the same list")
        super().__init__(annotation_file, image_root, keypoints, items, dataset.skip_counts["annotations"])

    def protocol(self) -> dict:
        return {"boxes": "annotated center and scale (HRNet: center y + 15 x scale, scale x 1.25)",
                "head_sizes": str(self.ground_truth_file or "head_box of each entry")}

    def metrics(self, records: list[dict]) -> dict:
        predictions = np.array([np.asarray(r["keypoints"], dtype=np.float64)[:, :2] for r in records])
        metrics: dict = evaluate_mpii_pckh(predictions, self.ground_truth, thresholds=(0.5, 0.1))
        metrics["per_joint"] = {
            f"PCKh@{t:g}": dict(zip(MPII_KEYPOINTS.names, pckh_per_joint(predictions, self.ground_truth, t).tolist(),
                                    strict=True))
            for t in (0.5, 0.1)
        }
        low = evaluate_mpii_pckh(predictions, self.ground_truth, thresholds=(REFERENCE_LOW_THRESHOLD,))
        metrics[f"reference_Mean@0.1 (threshold {REFERENCE_LOW_THRESHOLD})"] = (
            low[f"PCKh@{REFERENCE_LOW_THRESHOLD:g}"]["mean_coco_joints"])
        return metrics

    def summary_lines(self, metrics: dict) -> list[str]:
        lines = []
        for key in ("PCKh@0.5", "PCKh@0.1"):
            table = metrics[key]
            novel = metrics["novel_keypoints"][key]
            lines.append(f"{key}: " + "  ".join(f"{name} {_fmt(value)}" for name, value in table.items()))
            lines.append(f"{key} novel keypoints: " + "  ".join(f"{n} {_fmt(v)}" for n, v in novel.items()))
        return lines


class H36mTask(EvaluationTask):
    """Human3.6M MPJPE / PA-MPJPE (mm) from a 3D checkpoint's answers (image position + root-relative depth)."""

    name = "h36m"
    ndim = 3

    def __init__(self, annotation_file, image_root, *, keypoints: KeypointSet | None = None):
        keypoints = _check_keypoints(keypoints, H36M_KEYPOINTS)
        dataset = Human36MDataset(annotation_file, image_root, keypoints=keypoints)
        self.root_index = dataset.root_index
        self.cameras = [record.meta for record in dataset.records]  # focal, principal, joints_cam, root_cam
        super().__init__(annotation_file, image_root, keypoints, _items_from_records(dataset, ("bbox",)),
                         dataset.skip_counts["annotations"])
        try:
            self.actions = [action_from_file_name(item.file_name) for item in self.items]
        except ValueError as error:
            logger.warning("no per-action errors: %s", error)
            self.actions = None

    def protocol(self) -> dict:
        return {"boxes": "annotated boxes clipped to the image (the reference)",
                "lifting": "ground-truth camera and root depth", "joints": len(self.keypoints),
                "per_action": self.actions is not None}

    def metrics(self, records: list[dict]) -> dict:
        answers = np.array([r["keypoints"] for r in records], dtype=np.float64)  # (N, J, 3)
        predicted = image_to_camera(
            answers[..., :2], answers[..., 2],
            root_depth=np.array([camera["root_cam"][2] for camera in self.cameras]),
            focal=np.array([camera["focal"] for camera in self.cameras]),
            principal_point=np.array([camera["principal"] for camera in self.cameras]),
            root_index=self.root_index,
        )
        ground_truth = np.array([camera["joints_cam"] for camera in self.cameras])
        return evaluate_h36m(predicted, ground_truth, self.actions, root_index=self.root_index)

    def summary_lines(self, metrics: dict) -> list[str]:
        lines = [f"MPJPE {_fmt(metrics['MPJPE'])} mm  PA-MPJPE {_fmt(metrics['PA-MPJPE'])} mm  "
                 f"({metrics['num_samples']} samples)"]
        for action, error in metrics.get("MPJPE_per_action", {}).items():
            lines.append(f"  {action}: MPJPE {_fmt(error)}  PA-MPJPE {_fmt(metrics['PA-MPJPE_per_action'][action])}")
        return lines


class CustomTask(EvaluationTask):
    """PCK of your own keypoints in a COCO-format file (SynthPose's ``extra_keypoints``, or any set of K).

    Args:
        keypoints: the K keypoints in the order the annotations list them (a keypoint table).
        keypoint_field: the annotation key holding their ``[x, y, v] * K``.

    PCK@t counts a labelled keypoint (v >= 1) as correct when the answer lies within t x the crop side (the
    ground-truth person box padded to a square, in image pixels), as the demo reports; an answer that did not
    parse is a miss. OKS AP is not given: it needs a sigma per keypoint type, which new types do not have.
    The baseline answers, for every crop, each keypoint's mean position over the labelled crops of this same
    set (image-blind, but it has seen the answers' average: a slightly optimistic bar to beat).
    """

    name = "custom"
    thresholds = (0.1, 0.05)

    def __init__(self, annotation_file, image_root, *, keypoints: KeypointSet, keypoint_field: str = "keypoints"):
        self.keypoint_field = keypoint_field
        dataset = CocoKeypointDataset(annotation_file, image_root, keypoints=keypoints, keypoint_field=keypoint_field)
        self.truth = np.array([record.joints[:, :2] for record in dataset.records], dtype=np.float64)  # (N, K, 2)
        self.labelled = np.array([record.labelled for record in dataset.records])  # (N, K)
        super().__init__(annotation_file, image_root, keypoints, _items_from_records(dataset, ("annotation_id", "bbox")),
                         dataset.skip_counts["annotations"])
        self.centers = np.array([item.center for item in self.items], dtype=np.float64)  # (N, 2)
        self.crop_sides = np.array([item.scale[0] * item.pixel_std for item in self.items], dtype=np.float64)

    def protocol(self) -> dict:
        return {"boxes": "gt", "keypoint_field": self.keypoint_field,
                "normalizer": "the crop side in image pixels (the person box padded to a square)",
                "baseline": "each keypoint's mean position in the crop over this set's labelled crops, for every crop"}

    def mean_pose(self) -> np.ndarray:
        """(N, K, 2) the baseline's answers in image pixels."""
        in_crop = (self.truth - self.centers[:, None]) / self.crop_sides[:, None, None]  # (N, K, 2), crop centre 0
        weights = self.labelled[..., None]
        mean = (in_crop * weights).sum(axis=0) / np.maximum(weights.sum(axis=0), 1)  # (K, 2)
        return self.centers[:, None] + mean[None] * self.crop_sides[:, None, None]

    def metrics(self, records: list[dict]) -> dict:
        predictions = np.array([np.asarray(r["keypoints"], dtype=np.float64)[:, :2] for r in records])
        valid = np.array([r["valid"] for r in records], dtype=bool)
        predictions[~valid] = np.nan  # a miss, wherever the stand-in point happens to lie
        model = pck(predictions, self.truth, self.labelled, self.crop_sides, self.thresholds)
        blind = pck(self.mean_pose(), self.truth, self.labelled, self.crop_sides, self.thresholds)
        keys = [f"pck@{t:g}" for t in self.thresholds]
        return {
            **{key: model[key] for key in keys},
            "num_keypoints": model["num_keypoints"],
            "per_keypoint": {key: dict(zip(self.keypoints.names, model["per_keypoint"][key], strict=True))
                             for key in keys},
            "mean_pose_baseline": {key: blind[key] for key in keys},
        }

    def summary_lines(self, metrics: dict) -> list[str]:
        keys = [f"pck@{t:g}" for t in self.thresholds]
        lines = ["  ".join(f"{key.upper()} {_fmt(metrics[key])}" for key in keys)
                 + f"  ({metrics['num_keypoints']} labelled keypoints; of the crop side)",
                 "image-blind mean pose of these crops: "
                 + "  ".join(f"{key.upper()} {_fmt(metrics['mean_pose_baseline'][key])}" for key in keys)]
        for key in keys:
            lines.append(f"{key.upper()} per keypoint: "
                         + "  ".join(f"{name} {_fmt(v)}" for name, v in metrics["per_keypoint"][key].items()))
        return lines


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
    if dataset == "mpii":
        return MpiiTask(annotation_file, image_root, ground_truth_file=mpii_ground_truth, keypoints=keypoints)
    if dataset == "custom":
        if keypoints is None:
            raise ValueError("the custom data set needs its keypoint set (a keypoint table)")
        return CustomTask(annotation_file, image_root, keypoints=keypoints, keypoint_field=keypoint_field)
    return H36mTask(annotation_file, image_root, keypoints=keypoints)


def _box_problem(box: list[float], width: int | None, height: int | None) -> str | None:
    """Why a detection box cannot be used (empty, not finite, outside the image), or None."""
    x, y, w, h = box
    if not np.isfinite(box).all() or w <= 0 or h <= 0:
        return f"box {box} is empty"
    if width is not None and height is not None and (x >= width or y >= height or x + w <= 0 or y + h <= 0):
        return f"box {box} lies outside the {width}x{height} image"
    return None


def _mpii_ground_truth_from_entries(annotation_file, dataset: MpiiDataset) -> MpiiGroundTruth:
    entries = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
    if not all("head_box" in entry for entry in entries):
        raise ValueError(f"{annotation_file}: PCKh needs head sizes: give the MPII ground truth (gt_valid.mat) "
                         "or entries with head_box [x1, y1, x2, y2]")
    head_boxes = np.array([entry["head_box"] for entry in entries], dtype=np.float64).reshape(-1, 2, 2) - 1.0
    return MpiiGroundTruth(
        joints=np.array([record.joints[:, :2] for record in dataset.records], dtype=np.float64),
        missing=np.array([~record.labelled for record in dataset.records]),
        head_boxes=head_boxes,  # 1-based (MATLAB) in the file, like the joints
    )


# ----------------------------------------------------------------------------------- predictions file


class PredictionLog:
    """The predictions file: a header line, then one JSON line per person, each flushed when written.

    One process writes ``path``; with several, rank ``r`` writes ``path.rank<r>`` and the main process
    merges everything into ``path`` at the end (:meth:`merge`).
    """

    def __init__(self, path: str | Path, header: dict, ranks: Ranks):
        self.path = Path(path)
        self.header = json.loads(json.dumps(header))  # as it reads back from the file (tuples are lists)
        single = ranks.world_size == 1
        self.own_path = self.path if single else self.path.with_name(f"{self.path.name}.rank{ranks.rank}")
        self._file = None

    def files(self) -> list[Path]:
        """Every file that may hold finished persons: the merged file and any rank's part."""
        parts = sorted(self.path.parent.glob(f"{self.path.name}.rank*"))
        return [p for p in [self.path, *parts] if p.is_file()]

    def remove(self) -> None:
        for path in self.files():
            path.unlink()

    def finished(self) -> dict[int, dict]:
        """The persons already answered, by item index, from every file (checked against the header)."""
        records: dict[int, dict] = {}
        for path in self.files():
            text = path.read_text(encoding="utf-8")
            # A last line without its newline was cut by an interruption: it is dropped (and asked again).
            lines = text[: text.rfind("\n") + 1].splitlines()
            if not lines:
                continue
            header = _parse_line(lines[0], path, 1)
            if header.get("header") != self.header:
                difference = _header_difference(header.get("header"), self.header)
                raise ValueError(f"{path} holds predictions of another evaluation ({difference}); choose another "
                                 "predictions file, or start over with --overwrite-predictions")
            for number, line in enumerate(lines[1:], start=2):
                if line.strip():
                    record = _parse_line(line, path, number)
                    records[record["index"]] = record
        return records

    def open(self) -> None:
        """Start appending to this process's file (a new file gets the header)."""
        self.own_path.parent.mkdir(parents=True, exist_ok=True)
        if self.own_path.is_file():
            _drop_partial_last_line(self.own_path)
        fresh = not self.own_path.is_file() or self.own_path.stat().st_size == 0
        self._file = self.own_path.open("a", encoding="utf-8")
        if fresh:
            self._write({"header": self.header})

    def append(self, record: dict) -> None:
        self._write(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def merge(self, records: list[dict]) -> None:
        """Main process, at the end: rewrite ``path`` with every person in order; remove the parts."""
        temporary = self.path.with_name(f"{self.path.name}.merging")
        with temporary.open("w", encoding="utf-8") as file:
            for record in [{"header": self.header}, *records]:
                file.write(json.dumps(record) + "\n")
        os.replace(temporary, self.path)
        for path in self.files():
            if path != self.path:
                path.unlink()

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def _parse_line(line: str, path: Path, number: int) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {number}: not a predictions line ({error})") from None


def _header_difference(found: dict | None, expected: dict) -> str:
    if not isinstance(found, dict):
        return "no header line"
    keys = [key for key in expected if found.get(key) != expected[key]]
    return "different " + ", ".join(keys) if keys else "a different header"


def _drop_partial_last_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)


# ------------------------------------------------------------------------------------------- the run


def run_evaluation(localizer, task: EvaluationTask, *, mode: str = "fast", predictions: str | Path | None = None,
                   overwrite: bool = False, batch_size: int = 8, progress: bool = True, ranks: Ranks | None = None,
                   checkpoint: str | None = None) -> dict:
    """Ask ``localizer`` about every person of ``task`` and compute the task's metrics.

    Args:
        localizer: a :class:`~locllm.engine.Localizer` (anything with ``localize_crops(crops, keypoints, mode)``,
            ``config.image_size`` and ``codec.ndim``).
        mode: the localizer's decoding, ``"fast"`` or ``"reference"``.
        predictions: the predictions file (JSON lines); an existing one is resumed unless ``overwrite``.
        batch_size: persons per localizer call; crops of different images share a batch.
        ranks: this process among several (see :mod:`.distributed`); default one process.
        checkpoint: names the checkpoint in the predictions header and the result.

    Returns:
        ``{"dataset", "annotation_file", "images", "checkpoint", "mode", "protocol", "keypoints", "metrics",
        "counts", "predictions_file", "persons_resumed", "persons_asked", "seconds", "persons_per_second"}``;
        NaN metrics (undefined, e.g. PCKh of a joint nobody annotated) are None.
    """
    ranks = ranks or Ranks()
    crop_size = int(localizer.config.image_size)
    if localizer.codec.ndim != task.ndim:
        raise ValueError(f"{task.name} needs a checkpoint that answers {task.ndim} coordinates per keypoint; "
                         f"this one answers {localizer.codec.ndim}")
    # What the predictions depend on (not the metric's options, such as held-out keypoints): a file written
    # with another header is never resumed.
    header = {"format": PREDICTIONS_FORMAT, "dataset": task.name, "annotation_file": str(task.annotation_file.resolve()),
              "checkpoint": checkpoint, "mode": mode, "keypoints": task.keypoints.names, "persons": len(task.items),
              "fingerprint": task.fingerprint()}
    log = PredictionLog(predictions, header, ranks) if predictions is not None else None
    if log is not None and overwrite and ranks.is_main:
        log.remove()
    ranks.barrier()  # nobody reads before the main process has removed the old files
    finished = log.finished() if log is not None else {}
    ranks.barrier()  # nobody appends before everybody has read
    todo = [item for item in _shard_by_image(task.items, ranks) if item.index not in finished]

    start = time.perf_counter()
    if log is not None:
        log.open()
    try:
        asked = _ask(localizer, task, todo, mode, crop_size, batch_size, log, progress and ranks.is_main)
    finally:
        if log is not None:
            log.close()
    seconds = time.perf_counter() - start

    records = dict(finished)
    gathered = ranks.all_gather(asked)
    for part in gathered:
        records.update((record["index"], record) for record in part)
    ordered = [records[item.index] for item in task.items]
    if log is not None and ranks.is_main:
        log.merge(ordered)
    persons_asked = sum(len(part) for part in gathered)
    return _without_nan({
        "dataset": task.name, "annotation_file": str(task.annotation_file), "images": str(task.image_root),
        "checkpoint": checkpoint, "mode": mode, "protocol": task.protocol(), "keypoints": task.keypoints.names,
        "metrics": task.metrics(ordered), "counts": _counts(ordered, task),
        "predictions_file": str(predictions) if predictions is not None else None,
        "persons_resumed": len(finished), "persons_asked": persons_asked, "seconds": round(seconds, 3),
        "persons_per_second": round(len(asked) / seconds, 3) if asked and seconds > 0 else None,
    })


def _shard_by_image(items: list[EvalItem], ranks: Ranks) -> list[EvalItem]:
    """This rank's persons: all persons of every ``world_size``-th image, so each image is read once."""
    by_image: dict[str, list[EvalItem]] = {}
    for item in items:
        by_image.setdefault(item.file_name, []).append(item)
    return [item for group in ranks.shard(list(by_image.values())) for item in group]


def _ask(localizer, task: EvaluationTask, items: list[EvalItem], mode: str, crop_size: int, batch_size: int,
         log: PredictionLog | None, progress: bool) -> list[dict]:
    records: list[dict] = []
    bad = Counter()
    bar = tqdm(total=len(items), unit="person", disable=not progress, desc=f"{task.name} ({mode})")

    def emit(record: dict) -> None:
        records.append(record)
        if log is not None:
            log.append(record)
        if record["error"]:
            bad[record["error"]] += 1
        else:
            bad["unparsed keypoints"] += len(record["valid"]) - sum(record["valid"])
        bar.update(1)
        bar.set_postfix({"no answer": bad[UNREADABLE_IMAGE] + bad[UNUSABLE_BOX],
                         "unparsed kpts": bad["unparsed keypoints"]}, refresh=False)

    batch: list[tuple[EvalItem, np.ndarray]] = []

    def ask_batch() -> None:
        people = localizer.localize_crops(np.stack([crop for _, crop in batch]), task.keypoints, mode)
        for (item, _), person in zip(batch, people, strict=True):
            emit(_answered(item, person, crop_size, task.ndim))
        batch.clear()

    image_path, image, image_error = None, None, None
    for item in items:
        path = task.image_root / item.file_name
        if path != image_path:  # the persons of one image are consecutive: read it once
            image_path, image, image_error = path, None, None
            try:
                image = read_image_rgb(path)
            except ImageReadError as error:
                image_error = str(error)
                logger.warning("%s: its persons get no answer", error)
        if image_error is not None:
            emit(_unanswered(item, UNREADABLE_IMAGE, image_error, crop_size, len(task.keypoints), task.ndim))
        elif item.problem is not None:
            emit(_unanswered(item, UNUSABLE_BOX, item.problem, crop_size, len(task.keypoints), task.ndim))
        else:
            batch.append((item, crop_image(image, item.center, item.scale, 0.0, crop_size, pixel_std=item.pixel_std)))
            if len(batch) == batch_size:
                ask_batch()
    if batch:
        ask_batch()
    bar.close()
    return records


def _crop_to_image(item: EvalItem, crop_points: np.ndarray, crop_size: int) -> np.ndarray:
    return crop_to_image(crop_points, item.center, item.scale, crop_size, 0.0, pixel_std=item.pixel_std)


def _stand_in(item: EvalItem, crop_size: int) -> np.ndarray:
    """Where a keypoint without a valid answer goes: the crop's top-left corner, as in the reference."""
    if not item.has_crop:
        return np.asarray(item.center, dtype=np.float64)
    return _crop_to_image(item, np.zeros((1, 2)), crop_size)[0]


def _record(item: EvalItem, keypoints: np.ndarray, scores, valid, answers, error=None, detail=None) -> dict:
    return {"index": item.index, "image_id": item.image_id, "file_name": item.file_name, **item.identity,
            "keypoints": keypoints.tolist(), "scores": [float(s) for s in scores], "valid": [bool(v) for v in valid],
            "answers": list(answers), "error": error, "error_detail": detail}


def _answered(item: EvalItem, person, crop_size: int, ndim: int) -> dict:
    """A person's answer in crop pixels -> its prediction line, in image pixels (depth in mm)."""
    valid = np.asarray(person.valid, dtype=bool)
    crop_points = np.asarray(person.keypoints, dtype=np.float64)  # (K, ndim)
    keypoints = np.zeros_like(crop_points)
    keypoints[:, :2] = _crop_to_image(item, np.nan_to_num(crop_points[:, :2]), crop_size)
    keypoints[~valid, :2] = _stand_in(item, crop_size)
    if ndim == 3:
        keypoints[:, 2] = np.where(valid, crop_points[:, 2], 0.0)
    scores = np.where(valid, person.scores, 0.0)
    return _record(item, keypoints, scores, valid, person.answers)


def _unanswered(item: EvalItem, error: str, detail: str, crop_size: int, num_keypoints: int, ndim: int) -> dict:
    keypoints = np.zeros((num_keypoints, ndim))
    keypoints[:, :2] = _stand_in(item, crop_size)
    return _record(item, keypoints, np.zeros(num_keypoints), np.zeros(num_keypoints, dtype=bool),
                   [""] * num_keypoints, error, detail)


def _counts(records: list[dict], task: EvaluationTask) -> dict:
    """What went wrong, by kind: persons without an answer, unparsed keypoints, skipped annotations."""
    no_answer = Counter(record["error"] for record in records if record["error"])
    answered = [record for record in records if not record["error"]]
    unreadable = {record["file_name"] for record in records if record["error"] == UNREADABLE_IMAGE}
    return {
        "persons": len(records),
        "persons_answered": len(answered),
        "persons_without_answer": {kind: no_answer[kind] for kind in (UNREADABLE_IMAGE, UNUSABLE_BOX)},
        "unreadable_images": len(unreadable),
        "keypoints_asked": len(answered) * len(task.keypoints),
        "keypoints_unparsed": sum(len(r["valid"]) - sum(r["valid"]) for r in answered),
        "skipped_annotations": dict(task.skipped_annotations),
    }


def _without_nan(value):
    """NaN (an undefined metric) -> None, so that the result is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value


def _fmt(value, factor: float = 1.0) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * factor:.2f}"


# ----------------------------------------------------------------------------------------- the report

_TASK_TITLES = {"coco": "COCO keypoint AP", "humanart": "Human-Art keypoint AP", "mpii": "MPII PCKh",
                "h36m": "Human3.6M MPJPE", "custom": "PCK of your own keypoints"}


def format_report(result: dict, task: EvaluationTask) -> str:
    """The result of :func:`run_evaluation` as a short table for the terminal."""
    protocol = result["protocol"]
    boxes = protocol.get("boxes")
    if boxes == "gt":
        boxes = "ground-truth boxes (the reference's protocol)"
    elif boxes == "detections":
        boxes = (f"detector boxes from {protocol['detections_file']} (score >= "
                 f"{protocol['detection_score_threshold']}, the usual protocol)")
    counts = result["counts"]
    lines = [f"{_TASK_TITLES[result['dataset']]}: {result['annotation_file']}",
             f"checkpoint {result['checkpoint']}, {result['mode']} decoding; {boxes}"]
    lines += ["  " + line for line in task.summary_lines(result["metrics"])]
    missing = counts["persons_without_answer"]
    lines.append(
        f"persons {counts['persons']} ({result['persons_resumed']} from the predictions file); without an answer: "
        f"{missing[UNREADABLE_IMAGE]} ({counts['unreadable_images']} unreadable images), "
        f"{missing[UNUSABLE_BOX]} (unusable boxes); unparsed keypoints {counts['keypoints_unparsed']} of "
        f"{counts['keypoints_asked']}"
    )
    skipped = counts["skipped_annotations"]
    if skipped:
        lines.append("annotations skipped while loading: " + ", ".join(f"{n} {why}" for why, n in skipped.items()))
    if result["persons_per_second"]:
        lines.append(f"{result['persons_asked']} persons asked in {result['seconds']:.1f} s "
                     f"({result['persons_per_second']:.2f} persons/s on this process)")
    return "\n".join(lines)
