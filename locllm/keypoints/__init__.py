"""Keypoint knowledge: the sets (COCO, MPII, Human3.6M, extra types) and keypoints users bring."""

from .sets import (
    COCO_KEYPOINTS,
    EXTRA_KEYPOINTS,
    H36M_KEYPOINTS,
    KEYPOINT_SETS,
    MPII_KEYPOINTS,
    PAPER_HELD_OUT,
    Keypoint,
    KeypointSet,
    get_keypoint_set,
    normalize_name,
)
from .user import (
    custom_keypoint,
    load_description_file,
    load_keypoint_table,
    load_reference_constants,
    parse_describe,
    reference_keypoint_set,
    resolve_keypoints,
)

__all__ = [
    "COCO_KEYPOINTS", "EXTRA_KEYPOINTS", "H36M_KEYPOINTS", "KEYPOINT_SETS", "MPII_KEYPOINTS", "PAPER_HELD_OUT",
    "Keypoint", "KeypointSet", "get_keypoint_set", "normalize_name", "custom_keypoint", "load_description_file",
    "load_keypoint_table", "load_reference_constants", "parse_describe", "reference_keypoint_set", "resolve_keypoints",
]
