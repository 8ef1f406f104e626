"""The printed report of ``locllm eval``: a result of :func:`~locllm.evaluation.loop.run_evaluation` as a few
lines for the terminal, each metric object's numbers in its own short form."""

from __future__ import annotations

import math

from ..evaluation.coco import COCO_STAT_NAMES
from ..evaluation.loop import UNREADABLE_IMAGE, UNUSABLE_BOX
from ..evaluation.metrics import CocoKeypointMetric, H36mMPJPEMetric, MpiiPCKhMetric, PCKMetric
from ..evaluation.tasks import EvaluationTask

TASK_TITLES = {"coco": "COCO keypoint AP", "humanart": "Human-Art keypoint AP", "mpii": "MPII PCKh",
               "h36m": "Human3.6M MPJPE", "custom": "PCK of your own keypoints"}


def format_report(result: dict, task: EvaluationTask) -> str:
    """The result of ``run_evaluation(localizer, task)`` as a short table for the terminal."""
    protocol = result["protocol"]
    boxes = protocol.get("boxes")
    if boxes == "gt":
        boxes = "ground-truth boxes (the reference's protocol)"
    elif boxes == "detections":
        boxes = (f"detector boxes from {protocol['detections_file']} (score >= "
                 f"{protocol['detection_score_threshold']}, the usual protocol)")
    counts = result["counts"]
    lines = [f"{TASK_TITLES[result['dataset']]}: {result['annotation_file']}",
             f"checkpoint {result['checkpoint']}, {result['mode']} decoding; {boxes}"]
    # Each metric object's numbers in their own short form: a new data set with a known metric needs no code here.
    lines += ["  " + line for line in _SUMMARIES[type(task.metric)](result["metrics"])]
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


def _coco_lines(metrics: dict) -> list[str]:
    """CocoKeypointMetric's report as printable lines."""
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


def _mpii_lines(metrics: dict) -> list[str]:
    """MpiiPCKhMetric's report as printable lines."""
    lines = []
    for key in ("PCKh@0.5", "PCKh@0.1"):
        table = metrics[key]
        novel = metrics["novel_keypoints"][key]
        lines.append(f"{key}: " + "  ".join(f"{name} {_fmt(value)}" for name, value in table.items()))
        lines.append(f"{key} novel keypoints: " + "  ".join(f"{n} {_fmt(v)}" for n, v in novel.items()))
    return lines


def _h36m_lines(metrics: dict) -> list[str]:
    """H36mMPJPEMetric's report as printable lines."""
    lines = [f"MPJPE {_fmt(metrics['MPJPE'])} mm  PA-MPJPE {_fmt(metrics['PA-MPJPE'])} mm  "
             f"({metrics['num_samples']} samples)"]
    for action, error in metrics.get("MPJPE_per_action", {}).items():
        lines.append(f"  {action}: MPJPE {_fmt(error)}  PA-MPJPE {_fmt(metrics['PA-MPJPE_per_action'][action])}")
    return lines


def _pck_lines(metrics: dict) -> list[str]:
    """PCKMetric's report as printable lines."""
    keys = list(metrics["per_keypoint"])  # "pck@0.1", ... in the metric's order of thresholds
    lines = ["  ".join(f"{key.upper()} {_fmt(metrics[key])}" for key in keys)
             + f"  ({metrics['num_keypoints']} labelled keypoints; of the crop side)",
             "image-blind mean pose of these crops: "
             + "  ".join(f"{key.upper()} {_fmt(metrics['mean_pose_baseline'][key])}" for key in keys)]
    for key in keys:
        lines.append(f"{key.upper()} per keypoint: "
                     + "  ".join(f"{name} {_fmt(v)}" for name, v in metrics["per_keypoint"][key].items()))
    return lines


_SUMMARIES = {CocoKeypointMetric: _coco_lines, MpiiPCKhMetric: _mpii_lines, H36mMPJPEMetric: _h36m_lines,
              PCKMetric: _pck_lines}


def _fmt(value, factor: float = 1.0) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * factor:.2f}"
