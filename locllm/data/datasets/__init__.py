"""Datasets that yield person crops (:class:`PoseSample`) or image-caption pairs (:class:`CaptionSample`)."""

from .base import PoseDataset, PoseRecord, PoseSample, SkippingDataset
from .captions import CaptionDataset, CaptionSample, resize_to_square
from .coco import CocoKeypointDataset, load_coco
from .h36m import CORRUPT_SEQUENCES, DEPTH_RANGE_MM, Human36MDataset
from .mixture import MixtureDataset
from .mpii import MpiiDataset

__all__ = [
    "PoseDataset", "PoseRecord", "PoseSample", "SkippingDataset", "CaptionDataset", "CaptionSample",
    "resize_to_square", "CocoKeypointDataset", "load_coco", "CORRUPT_SEQUENCES", "DEPTH_RANGE_MM",
    "Human36MDataset", "MixtureDataset", "MpiiDataset",
]
