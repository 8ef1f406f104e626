"""A COCO-format annotation file read for evaluation: checked before any person is asked, and made scorable.

The data set (:class:`~locllm.data.datasets.CocoKeypointDataset`) skips and counts the annotations it cannot
use, but pycocotools' ``COCOeval`` reads every annotation of the file again and crashes on what the data set
skipped (no ``keypoints``, a list of the wrong length, no ``categories``), after every person was asked. So
the file is read once, here, into two views:

- ``persons``: what the data set reads, without the entries that would crash it (they are counted);
- ``ground_truth``: what the metric reads: the person category (category 1) alone, every person annotation
  complete. One whose keypoints or box cannot be read is kept as a person without labelled keypoints, which
  ``COCOeval`` ignores (a detection on it is neither a hit nor a false positive), as it ignores such persons
  in COCO itself; a missing ``area`` is the box's; a missing ``num_keypoints`` is counted.

A file that cannot be scored at all (not JSON, not the COCO layout, entries without ids, repeated ids) is
refused with one line naming the file, the entry and the fix.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pycocotools.coco import COCO

from ...data.datasets import CocoKeypointDataset
from ...data.datasets.coco import PERSON_CATEGORY_ID

logger = logging.getLogger(__name__)

PERSON_CATEGORY = {"id": PERSON_CATEGORY_ID, "name": "person", "supercategory": "person"}
FIX = "fix or remove that entry"


@dataclass
class CocoFile:
    """The two views of one annotation file (see the module docstring)."""

    persons: COCO  # for the data set
    ground_truth: COCO | None  # for COCOeval (None when not asked for)
    skipped: Counter = field(default_factory=Counter)  # reason -> annotations left out of ``persons``
    repairs: list[str] = field(default_factory=list)  # what the metric's view completed, one line each


def read_coco_file(path: str | Path, num_keypoints: int, keypoint_field: str = "keypoints", *,
                   with_ground_truth: bool = True) -> CocoFile:
    """Read and check a COCO keypoint file whose persons have ``num_keypoints`` keypoints in ``keypoint_field``;
    ``with_ground_truth``: also the metric's view (OKS scores ``keypoints``, whatever ``keypoint_field``).

    Raises ``FileNotFoundError`` / ``ValueError`` (one line: file, entry, fix) when it cannot be scored.
    """
    path = Path(path)
    raw = _read_json(path)
    images = _checked_images(path, raw["images"])
    annotations, skipped = _checked_annotations(path, raw["annotations"], {image["id"] for image in images})
    person = _person_category(raw.get("categories"))
    repairs = [] if person is not None or not with_ground_truth else [
        f"{path} has no person category (id {PERSON_CATEGORY_ID}): its annotations of category_id "
        f"{PERSON_CATEGORY_ID} are scored as persons"]
    categories = [person or PERSON_CATEGORY]

    readable = []
    for annotation in annotations:
        problem = _keypoint_problem(annotation.get(keypoint_field), num_keypoints)
        if annotation.get("category_id") == PERSON_CATEGORY_ID and not annotation.get("iscrowd", 0):
            if problem == "not numbers":  # the data set would stop on it: it is skipped here instead
                skipped[f"with {keypoint_field!r} that are not numbers"] += 1
                continue
            if _box_problem(annotation.get("bbox")):
                skipped["without a bbox of 4 finite numbers"] += 1
                continue
        readable.append(annotation)
    persons = _coco({"images": images, "annotations": readable, "categories": categories})
    ground_truth = None
    if with_ground_truth:
        ground_truth, completed = _scorable(images, annotations, categories, num_keypoints)
        repairs += [f"{path}: {count} person annotations {what}" for what, count in completed.items()]
    for line in repairs:
        logger.warning("%s", line)
    return CocoFile(persons, ground_truth, skipped, repairs)


def persons_dataset(coco_file: CocoFile, annotation_file: str | Path, image_root: str | Path,
                    **kwargs) -> CocoKeypointDataset:
    """The data set over ``coco_file.persons``; its errors name the annotation file, not "a COCO object"."""
    try:
        return CocoKeypointDataset(coco_file.persons, image_root, **kwargs)
    except ValueError as error:
        raise ValueError(str(error).replace("a COCO object", str(annotation_file))) from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        what = "empty" if path.stat().st_size == 0 else f"not JSON ({error})"
        raise ValueError(f"{path}: {what}; give a COCO keypoint annotation file (e.g. "
                         "person_keypoints_val2017.json)") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list) \
            or not isinstance(raw.get("annotations"), list):
        found = f"keys {sorted(raw)[:8]}" if isinstance(raw, dict) else f"a JSON {type(raw).__name__}"
        raise ValueError(f"{path}: not a COCO annotation file (an object with 'images' and 'annotations' lists; "
                         f"found {found}); give the COCO-format file, or the --dataset its layout is")
    return raw


def _checked_images(path: Path, images: list) -> list[dict]:
    seen = set()
    for i, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("id"), (int, str)):
            raise ValueError(f"{path}: images[{i}] is not an image entry with an id; {FIX}")
        if image["id"] in seen:
            raise ValueError(f"{path}: images[{i}] repeats image id {image['id']!r}; give each image its own id")
        seen.add(image["id"])
    return images


def _checked_annotations(path: Path, annotations: list, image_ids: set) -> tuple[list[dict], Counter]:
    """The annotations on listed images (each a dict with a unique id and an image_id); the others counted."""
    seen, kept, skipped = set(), [], Counter()
    for i, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or not isinstance(annotation.get("id"), (int, str)):
            raise ValueError(f"{path}: annotations[{i}] is not an annotation with an id; {FIX}")
        if annotation["id"] in seen:
            raise ValueError(f"{path}: annotations[{i}] repeats annotation id {annotation['id']!r}; give each "
                             "annotation its own id")
        seen.add(annotation["id"])
        if annotation.get("image_id") not in image_ids:
            skipped["on an image_id not in 'images'"] += 1
        elif "category_id" not in annotation:
            skipped["not a person"] += 1  # as the data set counts any other category
        else:
            kept.append(annotation)
    return kept, skipped


def _person_category(categories) -> dict | None:
    if isinstance(categories, list):
        for category in categories:
            if isinstance(category, dict) and category.get("id") == PERSON_CATEGORY_ID:
                return category
    return None


def _keypoint_problem(keypoints, num_keypoints: int) -> str | None:
    """None (usable), ``"length"`` (missing or another number of values: the data set skips it) or ``"not
    numbers"`` (text, null, NaN: the data set would stop on it)."""
    if keypoints is not None and not (isinstance(keypoints, list) and all(_is_number(v) for v in keypoints)):
        return "not numbers"
    if keypoints is None or len(keypoints) != 3 * num_keypoints:
        return "length"
    return None


def _box_problem(box) -> bool:
    return not (isinstance(box, list) and len(box) == 4 and all(_is_number(value) for value in box))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _scorable(images: list[dict], annotations: list[dict], categories: list[dict],
              num_keypoints: int) -> tuple[COCO, Counter]:
    """The metric's view: person annotations only, each with what COCOeval reads (see the module docstring)."""
    completed, persons = Counter(), []
    for annotation in annotations:
        if annotation["category_id"] != PERSON_CATEGORY_ID:
            continue
        annotation = copy.deepcopy(annotation)
        unreadable_box = _box_problem(annotation.get("bbox"))
        if unreadable_box or _keypoint_problem(annotation.get("keypoints"), num_keypoints):
            completed["whose keypoints or box cannot be read: ignored by the metric"] += 1
            annotation["keypoints"], annotation["num_keypoints"] = [0] * (3 * num_keypoints), 0
            if unreadable_box:
                annotation["bbox"] = [0.0, 0.0, 0.0, 0.0]
        if not isinstance(annotation.get("num_keypoints"), int):
            annotation["num_keypoints"] = sum(1 for v in annotation["keypoints"][2::3] if v > 0)
            completed["without num_keypoints: counted from the keypoints"] += 1
        if not _is_number(annotation.get("area")):
            annotation["area"] = float(annotation["bbox"][2] * annotation["bbox"][3])
            completed["without area: the box's area is the OKS scale"] += 1
        annotation.setdefault("iscrowd", 0)
        persons.append(annotation)
    return _coco({"images": images, "annotations": persons, "categories": categories}), completed


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco
