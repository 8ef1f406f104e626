"""Our geometry and datasets against the reference's recordings (../shared/reference-golden).

geometry/geometry.json: box -> center/scale, the affine to the crop, its inverse and mapped points for
every box convention; prompts/crops/*.png: the reference's 224 x 224 crops of the fixture images;
prompts/*.json: its training and evaluation samples (center, scale, crop joints).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from locllm.data import geometry as G
from locllm.data.augment import NO_AUGMENTATION
from locllm.data.datasets import CocoKeypointDataset, Human36MDataset, MpiiDataset

CROP = 224
POINT_TOLERANCE = 1e-4  # pixels


@pytest.fixture(scope="module")
def recorded(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "geometry" / "geometry.json").read_text())


@pytest.fixture(scope="module")
def fixtures(golden_dir: Path) -> Path:
    return golden_dir / "fixtures"


def load_prompt_record(golden_dir: Path, name: str) -> dict:
    return json.loads((golden_dir / "prompts" / f"{name}.json").read_text())


def load_crop(golden_dir: Path, name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(golden_dir / "prompts" / "crops" / f"{name}.png")), cv2.COLOR_BGR2RGB)


def assert_affine(center, scale, rotation, item: dict, pixel_std: float) -> None:
    """The recorded forward / inverse matrices and the points mapped through them."""
    forward = G.get_affine_transform(center, scale, rotation, CROP, pixel_std=pixel_std)
    np.testing.assert_allclose(forward, item["affine_to_crop"], rtol=1e-9, atol=1e-9)
    if "affine_from_crop" in item:
        inverse = G.get_affine_transform(center, scale, rotation, CROP, inv=True, pixel_std=pixel_std)
        np.testing.assert_allclose(inverse, item["affine_from_crop"], rtol=1e-9, atol=1e-9)
    if "crop_points" in item:
        crop_points = np.array(item["crop_points"])
        to_image = G.crop_to_image(crop_points, center, scale, CROP, rotation, pixel_std)
        np.testing.assert_allclose(to_image, item["crop_points_to_image(transform_preds)"], atol=POINT_TOLERANCE)
        back = G.image_to_crop(to_image, center, scale, CROP, rotation, pixel_std)
        np.testing.assert_allclose(back, crop_points, atol=POINT_TOLERANCE)


# ------------------------------------------------------------------------------------------ geometry.json


def test_coco_boxes(recorded):
    items = recorded["coco"]["boxes_via_COCODataset"]
    assert len(items) == 7
    for item in items:
        width, height = item["image_size_wh"]
        clean = G.sanitize_coco_box(item["bbox_xywh"], width, height)
        np.testing.assert_allclose(clean, item["clean_bbox_xywh"], atol=1e-9)
        center, scale = G.box_to_center_scale(clean)
        np.testing.assert_array_equal(center, np.float32(item["center"]))
        np.testing.assert_array_equal(scale, np.float32(item["scale"]))
        assert_affine(center, scale, 0.0, item, G.PIXEL_STD)
        back = G.image_to_crop(item["crop_points_to_image(transform_preds)"], center, scale, CROP)
        np.testing.assert_allclose(back, item["image_points_back_to_crop"], atol=POINT_TOLERANCE)
        np.testing.assert_allclose(G.image_to_crop(item["keypoint0_image"], center, scale, CROP),
                                   item["keypoint0_crop"], atol=POINT_TOLERANCE)


def test_coco_center_scale_direct(recorded):
    for item in recorded["coco"]["xywh2cs_direct"]:
        center, scale = G.box_to_center_scale(item["xywh"])
        np.testing.assert_array_equal(center, np.float32(item["center"]))
        np.testing.assert_array_equal(scale, np.float32(item["scale"]))
        if item["affine_to_crop"] is None:  # the reference cannot crop an empty box; we say so
            with pytest.raises(ValueError, match="positive width"):
                G.get_affine_transform(center, scale, 0.0, CROP)
        else:
            assert_affine(center, scale, 0.0, item, G.PIXEL_STD)


def test_coco_rotations(recorded):
    rotations = [item["rot_deg"] for item in recorded["coco"]["rotated"]]
    assert rotations == [30.0, -17.5]
    for item in recorded["coco"]["rotated"]:
        assert_affine(np.float32(item["center"]), np.float32(item["scale"]), item["rot_deg"], item, G.PIXEL_STD)


@pytest.mark.parametrize("convention", ["mpii3d", "h36m"])
def test_pixel_scale_boxes(recorded, convention):
    assert len(recorded[convention]) == 6
    for item in recorded[convention]:
        width, height = item["image_size_wh"]
        x, y, w, h = G.clip_box(item["bbox_xywh"], width, height)
        np.testing.assert_allclose([x, y, x + w, y + h], item["bbox_xyxy_clipped"], atol=1e-9)
        center, scale = G.box_to_center_scale([x, y, w, h], scale_factor=item["scale_mult"], pixel_std=1.0)
        np.testing.assert_array_equal(center, np.float32(item["center"]))
        np.testing.assert_array_equal(scale, np.float32(item["scale"]))
        assert_affine(center, scale, 0.0, item, pixel_std=1.0)


def test_mpii_evaluation_adjustment(recorded):
    crop_points = recorded["mpii3d"][0]["crop_points"]  # the same 8 points throughout the file
    assert all(item["crop_points"] == crop_points for item in recorded["h36m"] + recorded["mpii3d"])
    for item in recorded["mpii_eval"]:
        center, scale = G.mpii_center_scale(item["annotation_center"], item["annotation_scale"])
        np.testing.assert_array_equal(center, np.float32(item["center"]))
        np.testing.assert_array_equal(scale, np.float32(item["scale"]))
        assert_affine(center, scale, 0.0, {**item, "crop_points": crop_points}, G.PIXEL_STD)


def test_h36m_dataset_items(recorded, fixtures):
    dataset = Human36MDataset(fixtures / "h36m" / "annot.json", fixtures / "h36m" / "images")
    items = recorded["h36m_dataset_items"]
    assert len(dataset) == len(items) == 2
    for index, item in enumerate(items):
        record = dataset.records[index]
        assert record.meta["file_name"] == item["file_name"]
        x, y, w, h = G.clip_box(record.meta["bbox"], 400, 400)
        np.testing.assert_allclose([x, y, x + w, y + h], item["bbox_xyxy"], atol=1e-9)
        np.testing.assert_array_equal(record.center, np.float32(item["center"]))
        np.testing.assert_array_equal(record.scale, np.float32(item["scale"]))
        np.testing.assert_allclose(record.joints, item["joint_img"], atol=POINT_TOLERANCE)
        np.testing.assert_allclose(record.meta["joints_cam"], item["joint_cam"], atol=POINT_TOLERANCE)
        np.testing.assert_allclose(record.meta["root_cam"], item["root_cam"], atol=POINT_TOLERANCE)
        assert_affine(record.center, record.scale, 0.0, item, pixel_std=1.0)

        sample = dataset[index]
        normalized = np.array(item["target_xyz_normalised"])
        np.testing.assert_allclose(sample.joints[:, :2], normalized[:, :2] * CROP, atol=POINT_TOLERANCE)
        np.testing.assert_allclose(sample.joints[:, 2] / 2000 + 0.5, normalized[:, 2], atol=1e-6)
        np.testing.assert_array_equal(sample.visible, np.array(item["target_weight"])[:, 0] > 0)


# ------------------------------------------------------------------------------------------ crops and samples


def coco_person(fixtures: Path, train: bool = False) -> CocoKeypointDataset:
    # the recordings were made with augmentation off
    annotations = fixtures / "coco" / "annotations" / "coco_person.json"
    return CocoKeypointDataset(annotations, fixtures / "coco" / "images", train=train, augmentation=NO_AUGMENTATION)


def assert_crop(sample, golden_dir: Path, name: str) -> None:
    reference = load_crop(golden_dir, name)
    assert sample.image.shape == reference.shape
    assert np.abs(sample.image.astype(np.int16) - reference).max() <= 1


def test_coco_boxes_through_the_dataset(recorded, fixtures):
    annotations = fixtures / "coco" / "annotations" / "coco_boxes.json"
    dataset = CocoKeypointDataset(annotations, fixtures / "coco" / "images")
    items = recorded["coco"]["boxes_via_COCODataset"]
    assert len(dataset) == len(items)
    for index, item in enumerate(items):
        sample = dataset[index]
        np.testing.assert_array_equal(sample.center, np.float32(item["center"]))
        np.testing.assert_array_equal(sample.scale, np.float32(item["scale"]))
        np.testing.assert_allclose(sample.joints[0, :2], item["keypoint0_crop"], atol=POINT_TOLERANCE)


def test_coco_sample_and_crop(golden_dir, fixtures):
    record = load_prompt_record(golden_dir, "coco_train")
    assert record["multimodal_cfg"]["data_augmentation"] is False
    sample = coco_person(fixtures, train=True)[0]
    assert_crop(sample, golden_dir, "coco_train")
    np.testing.assert_array_equal(sample.center, np.float32(record["center"]))
    np.testing.assert_array_equal(sample.scale, np.float32(record["scale"]))
    labelled = np.array(record["crop_joints_vis"])[:, 0] > 0
    np.testing.assert_array_equal(sample.labelled, labelled)
    crop_joints = np.array(record["crop_joints"])
    np.testing.assert_allclose(sample.joints[labelled, :2], crop_joints[labelled, :2], atol=POINT_TOLERANCE)
    inside = (crop_joints[:, :2] >= 0).all(1) & (crop_joints[:, :2] < CROP).all(1)
    np.testing.assert_array_equal(sample.visible, labelled & inside)
    assert not sample.visible[16]  # the right ankle is labelled but outside the crop

    evaluation = coco_person(fixtures)[0]  # coco_eval uses the same crop
    eval_record = load_prompt_record(golden_dir, "eval_coco")
    np.testing.assert_array_equal(evaluation.center, np.float32(eval_record["center"]))
    np.testing.assert_array_equal(evaluation.scale, np.float32(eval_record["scale"]))
    assert_crop(evaluation, golden_dir, "coco_train")


def test_mpii3d_sample_and_crop(golden_dir, fixtures):
    record = load_prompt_record(golden_dir, "mpii3d_train")
    dataset = MpiiDataset(fixtures / "mpii3d" / "annot_mpii.json", fixtures / "mpii3d" / "images", train=True)
    sample = dataset[0]
    assert dataset.layout == "coco" and not sample.has_depth
    assert_crop(sample, golden_dir, "mpii3d_train")
    np.testing.assert_array_equal(sample.center, np.float32(record["center"]))
    np.testing.assert_array_equal(sample.scale, np.float32(record["scale"]))
    weight = np.array(record["crop_joints_vis"])[:, 0] > 0  # the reference's target weight: labelled and inside
    np.testing.assert_array_equal(sample.visible, weight)
    normalized = np.array(record["crop_joints"])
    np.testing.assert_allclose(sample.joints[weight, :2], normalized[weight, :2] * CROP, atol=POINT_TOLERANCE)


def test_h36m_sample_and_crop(golden_dir, fixtures):
    record = load_prompt_record(golden_dir, "h36m_train")
    dataset = Human36MDataset(fixtures / "h36m" / "annot.json", fixtures / "h36m" / "images", train=True)
    sample = dataset[0]
    assert sample.has_depth
    assert_crop(sample, golden_dir, "h36m_train")
    np.testing.assert_array_equal(sample.center, np.float32(record["center"]))
    np.testing.assert_array_equal(sample.scale, np.float32(record["scale"]))
    normalized = np.array(record["crop_joints"])
    np.testing.assert_allclose(sample.joints[:, :2], normalized[:, :2] * CROP, atol=POINT_TOLERANCE)
    np.testing.assert_allclose(sample.joints[:, 2] / 2000 + 0.5, normalized[:, 2], atol=1e-6)
    np.testing.assert_array_equal(sample.visible, np.array(record["crop_joints_vis"])[:, 0] > 0)
    np.testing.assert_allclose(sample.meta["root_cam"], record["h36m_gt"]["root_cam"], atol=POINT_TOLERANCE)
    np.testing.assert_allclose(sample.meta["joints_cam"], record["h36m_gt"]["joint_cam"], atol=POINT_TOLERANCE)

    eval_record = load_prompt_record(golden_dir, "eval_h36m")  # same crop in evaluation
    evaluation = Human36MDataset(fixtures / "h36m" / "annot.json", fixtures / "h36m" / "images")[0]
    np.testing.assert_array_equal(evaluation.center, np.float32(eval_record["center"]))
    np.testing.assert_array_equal(evaluation.scale, np.float32(eval_record["scale"]))
    assert_crop(evaluation, golden_dir, "h36m_train")


def test_mpii_evaluation_sample_and_crop(golden_dir, recorded, fixtures):
    dataset = MpiiDataset(fixtures / "mpii" / "annot" / "valid.json", fixtures / "mpii" / "images")
    assert dataset.layout == "hrnet" and len(dataset) == len(recorded["mpii_eval"]) == 3
    record = load_prompt_record(golden_dir, "eval_mpii")
    sample = dataset[0]
    assert_crop(sample, golden_dir, "mpii_eval")
    np.testing.assert_array_equal(sample.center, np.float32(record["center"]))
    np.testing.assert_array_equal(sample.scale, np.float32(record["scale"]))
    for index, item in enumerate(recorded["mpii_eval"]):
        np.testing.assert_array_equal(dataset.records[index].center, np.float32(item["center"]))
        np.testing.assert_array_equal(dataset.records[index].scale, np.float32(item["scale"]))
