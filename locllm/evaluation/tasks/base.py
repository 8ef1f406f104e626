"""What every evaluation task shares: the person to ask (:class:`EvalItem`) and the task's interface."""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...keypoints import KeypointSet

if TYPE_CHECKING:
    from ..metrics import KeypointMetric


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


class EvaluationTask(abc.ABC):
    """A data set with its protocol: the persons to ask (``items``, in annotation order) and the metric.

    A task turns the prediction records (one per item, see :mod:`..loop`) into its metric object's input;
    the metric object (``self.metric``, see :mod:`..metrics`) does the arithmetic.
    """

    name: str
    ndim: int = 2  # coordinates per answer: 2, or 3 with root-relative depth
    metric: KeypointMetric  # the metric object that metrics() hands the records to, set by each task

    def __init__(self, annotation_file: str | Path, image_root: str | Path, keypoints: KeypointSet,
                 items: list[EvalItem], skipped_annotations: dict):
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        self.keypoints = keypoints
        self.items = items
        self.skipped_annotations = skipped_annotations
        if not items:
            why = ", ".join(f"{count} {reason}" for reason, count in skipped_annotations.items())
            raise ValueError(f"{self.annotation_file}: no persons to evaluate" + (f" (skipped: {why})" if why else ""))

    @abc.abstractmethod
    def protocol(self) -> dict:
        """How the numbers were made, for the report."""

    @abc.abstractmethod
    def metrics(self, records: list[dict]) -> dict:
        """The metrics from one prediction record per item, in item order."""

    def fingerprint(self) -> str:
        """Identifies the persons, their crops and the prompts' descriptions, so that a predictions file is
        never resumed on another evaluation."""
        keys = [(item.file_name, str(item.image_id), item.identity, item.center.tolist(), item.scale.tolist())
                for item in self.items]
        keys.append([keypoint.description for keypoint in self.keypoints])
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def items_from_dataset(dataset, id_fields: Sequence[str]) -> list[EvalItem]:
    """One item per record of a keypoint data set (its crops exactly), identified by the ``id_fields`` of its meta."""
    return [
        EvalItem(index, str(record.image_path), record.image_id, record.center, record.scale, dataset.pixel_std,
                 {key: record.meta[key] for key in id_fields if key in record.meta})
        for index, record in enumerate(dataset.records)
    ]


def check_keypoints(keypoints: KeypointSet | None, default: KeypointSet) -> KeypointSet:
    """The keypoints as asked (default: the data set's own), which must be the data set's in number."""
    if keypoints is None:
        return default
    if len(keypoints) != len(default):
        raise ValueError(f"the keypoints asked ({len(keypoints)}) must be the data set's {len(default)} "
                         f"{default.name} keypoints, in its order: {', '.join(default.names)}")
    return keypoints


def predicted_points(records: list[dict]) -> np.ndarray:
    """(N, K, ndim) the records' keypoints in image pixels (depth in mm), in record order."""
    return np.array([record["keypoints"] for record in records], dtype=np.float64)
