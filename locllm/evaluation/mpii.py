"""MPII PCKh: the fraction of joints within a threshold x head size of the ground truth.

The head size of a person is 0.6 x the diagonal of its annotated head box (the standard MPII
evaluation, as HRNet's ``gt_valid.mat`` with ``headboxes_src``, ``jnt_missing``, ``pos_gt_src``).
A joint counts only where it is annotated. Means over joints weight each joint by how many people
have it annotated (equivalently: hits over annotated joints, pooled).

Two means are reported, because the literature uses two:

* ``"mean"``: HRNet / MMPose, every joint but pelvis and thorax (indices 6, 7).
* ``"mean_coco_joints"``: the reference (``utils/valid2dmpii.py``), which also leaves out neck and
  head top (6..9) and so averages the 12 joints that have a COCO counterpart (shoulders, elbows,
  wrists, hips, knees, ankles): the mean the reference prints for a COCO-trained model.

Pelvis, thorax, neck and head top are reported on their own as the novel keypoints of a
COCO-trained model (the reference masks them, and its "Head" row with them). The reference's
``Mean@0.1`` is not at 0.1: like HRNet it reads row 11 of ``np.arange(0, 0.51, 0.01)``, i.e. 0.11;
ask for ``thresholds=(0.5, 0.11)`` to reproduce it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..keypoints import MPII_KEYPOINTS

HEAD_SIZE_FACTOR = 0.6  # the "SC_BIAS" of the MPII evaluation: head size = 0.6 x head box diagonal
NUM_JOINTS = len(MPII_KEYPOINTS)

# gt_valid.mat names the joints by these abbreviations, in the order of MPII_KEYPOINTS.
MATLAB_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head",
                      "rwri", "relb", "rsho", "lsho", "lelb", "lwri")

# Each reported group and its joints; MPII's "head" is the head top.
JOINT_GROUPS: dict[str, tuple[str, ...]] = {
    "head": ("head top",),
    "shoulder": ("left shoulder", "right shoulder"),
    "elbow": ("left elbow", "right elbow"),
    "wrist": ("left wrist", "right wrist"),
    "hip": ("left hip", "right hip"),
    "knee": ("left knee", "right knee"),
    "ankle": ("left ankle", "right ankle"),
}
NOVEL_KEYPOINTS = ("pelvis", "thorax", "neck", "head top")  # MPII joints that COCO does not label
STANDARD_EXCLUDED = ("pelvis", "thorax")  # left out of HRNet / MMPose's mean
COCO_JOINTS_EXCLUDED = NOVEL_KEYPOINTS  # left out of the reference's mean


@dataclass(frozen=True)
class MpiiGroundTruth:
    """MPII annotations for PCKh, N people, joints in MPII_KEYPOINTS order.

    Attributes:
        joints: (N, 16, 2) joint positions, 0-based image pixels.
        missing: (N, 16) bool, True where the joint is not annotated.
        head_boxes: (N, 2, 2) head box corners ``[[x1, y1], [x2, y2]]`` in pixels.
    """

    joints: np.ndarray
    missing: np.ndarray
    head_boxes: np.ndarray

    def __post_init__(self):
        n = self.joints.shape[0]
        expected = {"joints": (n, NUM_JOINTS, 2), "missing": (n, NUM_JOINTS), "head_boxes": (n, 2, 2)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"MpiiGroundTruth.{name} has shape {getattr(self, name).shape}, "
                                 f"expected {shape}")

    @classmethod
    def from_matlab_arrays(cls, pos_gt_src, jnt_missing, headboxes_src) -> MpiiGroundTruth:
        """From gt_valid.mat's arrays: (16, 2, N) 1-based joints, (16, N) missing, (2, 2, N) head boxes."""
        pos_gt_src = np.asarray(pos_gt_src, dtype=np.float64)
        return cls(
            joints=np.transpose(pos_gt_src, (2, 0, 1)) - 1.0,  # MATLAB counts pixels from 1
            missing=np.transpose(np.asarray(jnt_missing)).astype(bool),
            head_boxes=np.transpose(np.asarray(headboxes_src, dtype=np.float64), (2, 0, 1)) - 1.0,
        )


def load_mpii_ground_truth(mat_path: str | Path) -> MpiiGroundTruth:
    """Read the standard MPII validation ground truth (``annot/gt_valid.mat``)."""
    from scipy.io import loadmat

    mat = loadmat(str(mat_path))
    missing_fields = {"dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src"} - set(mat)
    if missing_fields:
        raise KeyError(f"{mat_path} is not an MPII gt_valid.mat: it lacks {sorted(missing_fields)}")
    joint_names = tuple(str(np.squeeze(name)) for name in np.ravel(mat["dataset_joints"]))
    if joint_names != MATLAB_JOINT_NAMES:
        raise ValueError(f"{mat_path} orders its joints {joint_names}, expected {MATLAB_JOINT_NAMES}")
    return MpiiGroundTruth.from_matlab_arrays(mat["pos_gt_src"], mat["jnt_missing"], mat["headboxes_src"])


def head_sizes(head_boxes: np.ndarray) -> np.ndarray:
    """(N, 2, 2) head boxes -> (N,) head sizes: 0.6 x the box diagonal."""
    return HEAD_SIZE_FACTOR * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=-1)


def normalized_errors(predictions: np.ndarray, ground_truth: MpiiGroundTruth) -> np.ndarray:
    """(N, 16, 2) predictions in 0-based image pixels -> (N, 16) distances in head sizes."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.shape != ground_truth.joints.shape:
        raise ValueError(f"predictions have shape {predictions.shape}, "
                         f"the ground truth {ground_truth.joints.shape}")
    sizes = head_sizes(ground_truth.head_boxes)
    if np.any(sizes <= 0):
        empty = np.flatnonzero(sizes <= 0).tolist()
        raise ValueError(f"people {empty} have an empty head box: PCKh is undefined for them")
    return np.linalg.norm(predictions - ground_truth.joints, axis=-1) / sizes[:, None]


def evaluate_mpii_pckh(
    predictions: np.ndarray,
    ground_truth: MpiiGroundTruth,
    thresholds: Sequence[float] = (0.5, 0.1),
) -> dict[str, dict]:
    """PCKh in percent per joint group, the two means, and the novel keypoints.

    Args:
        predictions: (N, 16, 2) predicted joints in 0-based image pixels, MPII_KEYPOINTS order.
        ground_truth: the same N people.
        thresholds: PCKh thresholds in head sizes.

    Returns:
        for each threshold t, ``"PCKh@t"``: ``{"head", "shoulder", "elbow", "wrist", "hip", "knee",
        "ankle", "mean", "mean_coco_joints"}``, and ``"novel_keypoints"``: ``{"PCKh@t": {"pelvis",
        "thorax", "neck", "head top"}}``. A joint nobody has annotated gives NaN.
    """
    errors = normalized_errors(predictions, ground_truth)  # (N, 16)
    annotated = ~ground_truth.missing  # (N, 16)
    counts = annotated.sum(0)  # (16,)
    index = MPII_KEYPOINTS.index
    standard_joints = _all_but([index(n) for n in STANDARD_EXCLUDED])
    coco_joints = _all_but([index(n) for n in COCO_JOINTS_EXCLUDED])

    report: dict[str, dict] = {}
    novel: dict[str, dict] = {}
    for threshold in thresholds:
        hits = ((errors <= threshold) & annotated).sum(0)  # (16,)
        per_joint = _percent(hits, counts)
        table = {group: float(np.mean(per_joint[[index(n) for n in names]]))
                 for group, names in JOINT_GROUPS.items()}
        table["mean"] = _percent(hits[standard_joints].sum(), counts[standard_joints].sum())
        table["mean_coco_joints"] = _percent(hits[coco_joints].sum(), counts[coco_joints].sum())
        key = f"PCKh@{threshold:g}"
        report[key] = table
        novel[key] = {name: float(per_joint[index(name)]) for name in NOVEL_KEYPOINTS}
    report["novel_keypoints"] = novel
    return report


def pckh_per_joint(
    predictions: np.ndarray, ground_truth: MpiiGroundTruth, threshold: float = 0.5
) -> np.ndarray:
    """(16,) PCKh in percent of each joint at ``threshold``; NaN for a joint nobody has annotated."""
    annotated = ~ground_truth.missing
    hits = ((normalized_errors(predictions, ground_truth) <= threshold) & annotated).sum(0)
    return _percent(hits, annotated.sum(0))


def _all_but(excluded: list[int]) -> np.ndarray:
    return np.setdiff1d(np.arange(NUM_JOINTS), excluded)


def _percent(hits, counts):
    """100 x hits / counts, NaN where counts is 0 (a float for scalars, an array otherwise)."""
    hits = np.asarray(hits, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(counts > 0, 100.0 * hits / counts, np.nan)
    return float(percent) if percent.ndim == 0 else percent
