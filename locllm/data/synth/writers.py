"""SynthPose annotation files in the COCO, MPII and Human3.6M layouts.

A writer turns the persons of one rendered image (see :func:`.render.render_scene`) into a JSON-ready
record, and a split's records into its annotation file. Pixel coordinates are 0-based (pixel centres
at integers) except where MPII's MATLAB convention says otherwise; pixels and millimetres are rounded
to 2 decimals so that the same seed always gives the same bytes. Images are ``images/<id:06d>.jpg``.

COCO, ``annotations/{train,val}.json`` (loads in ``pycocotools.coco.COCO``)::

    {"info": {...}, "licenses": [],
     "categories": [{"id": 1, "name": "person", "supercategory": "person",
                     "keypoints": [17 COCO names], "skeleton": [[16, 14], ...] (1-based, as COCO),
                     "extra_keypoints": ["neck", "pelvis", "head_top", "thorax", "left_toe", "right_toe"]}],
     "images": [{"id", "file_name", "width", "height"}],
     "annotations": [{"id", "image_id", "category_id": 1, "iscrowd": 0, "keypoints": [x, y, v] * 17,
                      "num_keypoints", "bbox": [x, y, w, h], "area",
                      "extra_keypoints": [x, y, v] * 6, "num_extra_keypoints"}]}

  v is 0 outside the image (x = y = 0 then, as COCO writes unlabelled points), 1 occluded, 2 visible.
  ``bbox`` is the figure as drawn alone, clipped to the image; ``area`` its pixel count.

MPII, ``annot/{train,valid}.json`` (HRNet's layout), a list with one entry per person::

    {"image": file name, "center": [x, y], "scale": s, "joints": [[x, y]] * 16, "joints_vis": [0 | 1] * 16,
     "head_box": [x1, y1, x2, y2]}

  1-based pixels (MATLAB, like the MPII files): subtract 1 for 0-based. A joint outside the image is
  [-1, -1] with ``joints_vis`` 0; occluded joints are labelled (1), as in MPII. ``scale`` is the
  person box's longer side / 200 and ``center`` the box centre moved up by 15 * scale, so that the
  standard MPII preprocessing (centre y += 15 * scale, scale *= 1.25) frames the box again.
  ``head_box`` gives PCKh its head size (0.6 x the box diagonal).

Human3.6M, ``annotations/{train,val}.json`` (the layout of the reference's Human3.6M files)::

    {"categories": [{"id": 1, "name": "person", "keypoints": [17 Human3.6M names], "skeleton": 1-based}],
     "images": [{"id", "file_name", "width", "height", "cam_param": {"R": 3x3, "t": [3], "f": [2], "c": [2]}}],
     "annotations": [{"id", "image_id", "category_id": 1, "bbox": [x, y, w, h],
                      "keypoints_world": [[x, y, z]] * 17, "keypoints_cam": [[x, y, z]] * 17,
                      "keypoints_img": [[u, v]] * 17, "keypoints_vis": [0 | 1] * 17}]}

  mm, y down; ``X_cam = R (X_world - t)`` and ``u = f X_cam / Z_cam + c`` (see :mod:`.camera`).
  ``keypoints_vis`` is 1 where the joint projects inside the image; every 3D joint is exact.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from ...keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS, H36M_KEYPOINTS, MPII_KEYPOINTS, KeypointSet

PIXEL_STD = 200.0  # MPII's scale unit: a person 200 px tall has scale 1


def _round(values, decimals: int = 2) -> list:
    """Nested lists of Python floats; -0.0 becomes 0.0 so that equal values print equally."""
    return (np.round(np.asarray(values, dtype=np.float64), decimals) + 0.0).tolist()


def _snake(keypoint_set: KeypointSet) -> list[str]:
    return [name.replace(" ", "_") for name in keypoint_set.names]


def _skeleton_1based(keypoint_set: KeypointSet) -> list[list[int]]:
    return [[a + 1, b + 1] for a, b in keypoint_set.skeleton]


def _coco_triplets(keypoints: np.ndarray) -> tuple[list, int]:
    """(K, 3) x, y, v -> COCO's flat [x, y, v, ...] with unlabelled points at 0, 0; and the labelled count."""
    labelled = keypoints[:, 2] > 0
    flat = np.where(labelled[:, None], keypoints, 0.0)
    values = []
    for (x, y), v in zip(_round(flat[:, :2]), flat[:, 2].astype(int).tolist(), strict=True):
        values += [x, y, v]
    return values, int(labelled.sum())


class CocoWriter:
    name = "coco"
    keypoint_set = COCO_KEYPOINTS
    person_key = "keypoints"  # the person array counted in the summary

    def annotation_path(self, out_dir: Path, split: str) -> Path:
        return out_dir / "annotations" / f"{split}.json"

    def encode(self, image_id: int, file_name: str, size: int, persons: list[dict]) -> dict:
        annotations = []
        for k, person in enumerate(persons):
            keypoints, num_keypoints = _coco_triplets(person["keypoints"])
            extra, num_extra = _coco_triplets(person["extra_keypoints"])
            annotations.append({
                "id": _annotation_id(image_id, k), "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "keypoints": keypoints, "num_keypoints": num_keypoints, "bbox": _round(person["bbox"]),
                "area": round(person["area"], 2), "extra_keypoints": extra, "num_extra_keypoints": num_extra,
            })
        return {"image": {"id": image_id, "file_name": file_name, "width": size, "height": size},
                "annotations": annotations}

    def write(self, path: Path, records: list[dict], info: dict) -> None:
        category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": _snake(COCO_KEYPOINTS),
                    "skeleton": _skeleton_1based(COCO_KEYPOINTS), "extra_keypoints": _snake(EXTRA_KEYPOINTS)}
        write_annotation_json(path, {
            "info": info, "licenses": [], "categories": [category],
            "images": [record["image"] for record in records],
            "annotations": [a for record in records for a in record["annotations"]],
        })

    def sheet_persons(self, record: dict) -> list[tuple[np.ndarray, np.ndarray]]:
        """(keypoints (17, 3) x, y, v; bbox (4,) x, y, w, h) of each person of a record, 0-based pixels."""
        return [(np.array(a["keypoints"], dtype=np.float64).reshape(-1, 3), np.array(a["bbox"]))
                for a in record["annotations"]]


class MpiiWriter:
    name = "mpii"
    keypoint_set = MPII_KEYPOINTS
    person_key = "mpii_joints"

    def annotation_path(self, out_dir: Path, split: str) -> Path:
        return out_dir / "annot" / f"{'valid' if split == 'val' else split}.json"

    def encode(self, image_id: int, file_name: str, size: int, persons: list[dict]) -> dict:
        entries = []
        for person in persons:
            joints = person["mpii_joints"]
            labelled = joints[:, 2] > 0
            x, y, w, h = person["bbox"]
            scale = max(w, h) / PIXEL_STD
            entries.append({
                "image": file_name,
                "center": _round([x + w / 2 + 1, y + h / 2 + 1 - 15 * scale]),
                "scale": round(scale, 4),
                "joints": _round(np.where(labelled[:, None], joints[:, :2] + 1, -1.0)),
                "joints_vis": labelled.astype(int).tolist(),
                "head_box": _round(person["head_box"] + 1),
            })
        return {"entries": entries}

    def write(self, path: Path, records: list[dict], info: dict) -> None:
        write_annotation_json(path, [entry for record in records for entry in record["entries"]])

    def sheet_persons(self, record: dict) -> list[tuple[np.ndarray, np.ndarray]]:
        persons = []
        for entry in record["entries"]:
            joints = np.array(entry["joints"], dtype=np.float64) - 1
            keypoints = np.concatenate([joints, np.array(entry["joints_vis"], dtype=np.float64)[:, None]], axis=1)
            x1, y1, x2, y2 = np.array(entry["head_box"]) - 1
            persons.append((keypoints, np.array([x1, y1, x2 - x1, y2 - y1])))  # the head box: what PCKh uses
        return persons


class H36mWriter:
    name = "h36m"
    keypoint_set = H36M_KEYPOINTS
    person_key = "h36m_joints"

    def annotation_path(self, out_dir: Path, split: str) -> Path:
        return out_dir / "annotations" / f"{split}.json"

    def encode(self, image_id: int, file_name: str, size: int, persons: list[dict]) -> dict:
        camera = persons[0]["camera"]
        image = {"id": image_id, "file_name": file_name, "width": size, "height": size,
                 "cam_param": {"R": _round(camera.R, 9), "t": _round(camera.t), "f": _round(camera.f, 4),
                               "c": _round(camera.c, 4)}}
        annotations = [{
            "id": _annotation_id(image_id, k), "image_id": image_id, "category_id": 1, "bbox": _round(person["bbox"]),
            "keypoints_world": _round(person["joints_3d_world"]), "keypoints_cam": _round(person["joints_3d_camera"]),
            "keypoints_img": _round(person["h36m_joints"][:, :2]),
            "keypoints_vis": (person["h36m_joints"][:, 2] > 0).astype(int).tolist(),
        } for k, person in enumerate(persons)]
        return {"image": image, "annotations": annotations}

    def write(self, path: Path, records: list[dict], info: dict) -> None:
        category = {"id": 1, "name": "person", "keypoints": _snake(H36M_KEYPOINTS),
                    "skeleton": _skeleton_1based(H36M_KEYPOINTS)}
        write_annotation_json(path, {
            "info": info, "categories": [category], "images": [record["image"] for record in records],
            "annotations": [a for record in records for a in record["annotations"]],
        })

    def sheet_persons(self, record: dict) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.concatenate([np.array(a["keypoints_img"]), 2.0 * np.array(a["keypoints_vis"])[:, None]], axis=1),
                 np.array(a["bbox"])) for a in record["annotations"]]


WRITERS = {writer.name: writer for writer in (CocoWriter(), MpiiWriter(), H36mWriter())}


def get_writer(fmt: str):
    if fmt not in WRITERS:
        raise ValueError(f"unknown SynthPose format {fmt!r}; known: {', '.join(WRITERS)}")
    return WRITERS[fmt]


def _annotation_id(image_id: int, person_index: int) -> int:
    # Unique across splits and independent of how images are shared among worker processes.
    return image_id * 100 + person_index + 1


def write_annotation_json(path: Path, payload) -> None:
    """Sorted keys, compact separators: the same content always gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n")


def coco_self_check(annotation_file: str | Path) -> float | None:
    """COCO keypoint AP of the ground truth submitted as its own predictions.

    Anything but 1.0 means the file contradicts itself (boxes, areas, visibility or ids). Persons with
    no labelled keypoint are not submitted (COCOeval ignores them). None when no person is labelled.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress we do not want
        ground_truth = COCO(str(annotation_file))
        predictions = [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"],
                        "score": 1.0} for a in ground_truth.dataset["annotations"] if a["num_keypoints"] > 0]
        if not predictions:
            return None
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(predictions), "keypoints")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])
