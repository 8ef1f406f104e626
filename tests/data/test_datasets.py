"""Datasets on tiny files written here: samples, skipping and counting, exclusion, augmentation, mixtures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from locllm.data.augment import (
    NO_AUGMENTATION,
    AugmentationConfig,
    AugmentationDraw,
    apply_augmentation,
    draw_augmentation,
)
from locllm.data.datasets import (
    CaptionDataset,
    CocoKeypointDataset,
    Human36MDataset,
    MixtureDataset,
    MpiiDataset,
    PoseSample,
)
from locllm.data.images import ImageReadError, read_image_rgb
from locllm.keypoints import COCO_KEYPOINTS, H36M_KEYPOINTS, MPII_KEYPOINTS

COCO_K = len(COCO_KEYPOINTS)


def write_image(path: Path, width: int = 320, height: int = 256, value: int = 90) -> np.ndarray:
    """A grey RGB image with a white 10 x 10 square at (200..209, 100..109); written as PNG (BGR)."""
    image = np.full((height, width, 3), value, dtype=np.uint8)
    image[100:110, 200:210] = 255
    image[..., 0] = np.minimum(image[..., 0], 250)  # R != B, so a channel swap would show
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return image


def coco_keypoints(labelled: dict[int, tuple[float, float]]) -> list[float]:
    flat = [0.0] * (3 * COCO_K)
    for index, (x, y) in labelled.items():
        flat[3 * index: 3 * index + 3] = [x, y, 2.0]
    return flat


def person(annotation_id, image_id, bbox, labelled, **extra) -> dict:
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": bbox,
            "area": bbox[2] * bbox[3], "num_keypoints": len(labelled), "keypoints": coco_keypoints(labelled),
            **extra}


@pytest.fixture()
def coco_files(tmp_path: Path):
    """Images: 1 and 4 fine, 2 missing, 3 corrupt. 3 usable persons (on 1, 2, 3) plus 5 to drop."""
    root = tmp_path / "images"
    write_image(root / "a.png")
    write_image(root / "d.png")
    (root / "c.png").write_bytes(b"not an image at all")
    images = [{"id": i, "file_name": name, "width": 320, "height": 256}
              for i, name in ((1, "a.png"), (2, "missing.png"), (3, "c.png"), (4, "d.png"))]
    good_box = [40.0, 20.0, 101.0, 201.0]  # cleaned to (40, 20, 100, 200): center (90, 120), scale 1.0
    annotations = [
        person(10, 1, good_box, {0: (90.0, 120.0), 1: (140.0, 120.0), 2: (40.0, 120.0), 16: (90.0, 300.0)}),
        person(11, 2, good_box, {0: (90.0, 120.0)}),
        person(12, 3, good_box, {0: (90.0, 120.0)}),
        person(13, 4, good_box, {0: (90.0, 120.0)}, category_id=2),  # not a person
        person(14, 4, good_box, {0: (90.0, 120.0)}, iscrowd=1),  # crowd
        person(15, 4, good_box, {}),  # no labelled keypoint
        person(16, 4, [10.0, 10.0, 1.0, 1.0], {0: (10.0, 10.0)}),  # empty after the clean-up
        {**person(17, 4, good_box, {0: (90.0, 120.0)}), "keypoints": [1.0, 2.0, 2.0]},  # malformed
    ]
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path, root


# ------------------------------------------------------------------------------------------ images


def test_read_image_rgb_and_its_errors(tmp_path: Path):
    written = write_image(tmp_path / "x.png")
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "x.png"), written)
    with pytest.raises(ImageReadError, match="not found.*nothing.png"):
        read_image_rgb(tmp_path / "nothing.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_image_rgb(tmp_path / "bad.jpg")


# ------------------------------------------------------------------------------------------ COCO


def test_coco_sample(coco_files):
    path, root = coco_files
    dataset = CocoKeypointDataset(path, root)
    assert len(dataset) == 3
    sample = dataset[0]
    assert isinstance(sample, PoseSample)
    assert sample.image.shape == (224, 224, 3) and sample.image.dtype == np.uint8
    assert sample.joints.shape == (COCO_K, 3) and sample.joints.dtype == np.float32
    np.testing.assert_allclose(sample.center, [90, 120])
    np.testing.assert_allclose(sample.scale, [1.0, 1.0])
    # 200 image px -> 224 crop px around the center
    np.testing.assert_allclose(sample.joints[:3, :2], [[112, 112], [168, 112], [56, 112]], atol=1e-4)
    assert sample.labelled.sum() == 4 and sample.labelled[16]
    assert not sample.visible[16]  # labelled but below the crop
    assert sample.visible[:3].all() and sample.visible.sum() == 3
    assert not sample.has_depth and sample.keypoints is COCO_KEYPOINTS
    assert (sample.joints[~sample.labelled] == 0).all()
    assert sample.image_id == 1 and sample.meta["annotation_id"] == 10 and sample.meta["index"] == 0
    # the white square (200..209, 100..109) lands at (200 - 90) * 1.12 + 112 = 235 > 224: outside;
    # the grey background is inside, RGB and not BGR
    np.testing.assert_array_equal(sample.image[112, 112], [90, 90, 90])
    np.testing.assert_allclose(sample.crop_to_image(sample.joints[:3, :2]), [[90, 120], [140, 120], [40, 120]],
                               atol=1e-3)


def test_coco_skips_unusable_annotations_and_unreadable_images(coco_files, caplog):
    path, root = coco_files
    with caplog.at_level(logging.INFO, logger="locllm.data.datasets.base"):
        dataset = CocoKeypointDataset(path, root)
    assert dataset.skip_counts["annotations"] == {
        "not a person": 1, "crowd": 1, "without labelled keypoints": 1, "with an empty box": 1,
        f"without {COCO_K} keypoints": 1,
    }
    assert "3 items" in caplog.text and "crowd" in caplog.text
    with caplog.at_level(logging.WARNING):
        second = dataset[1]  # image 2 is missing, image 3 corrupt: wraps around to the first record
    assert second.meta["index"] == 0
    assert dataset.skip_counts["unreadable_images"] == 2
    assert "missing.png" in caplog.text and "c.png" in caplog.text
    assert dataset[2].meta["index"] == 0
    assert dataset.skip_counts["unreadable_images"] == 2  # known-bad files are not retried
    with pytest.raises(IndexError):
        dataset[3]


def test_dataset_with_no_readable_image_fails_clearly(tmp_path: Path):
    images = [{"id": 1, "file_name": "gone.png", "width": 320, "height": 256}]
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"images": images, "annotations": [person(1, 1, [10, 10, 50, 50], {0: (20, 20)})],
                                "categories": [{"id": 1, "name": "person"}]}))
    dataset = CocoKeypointDataset(path, tmp_path)
    with pytest.raises(RuntimeError, match="none of its 1 items"):
        dataset[0]
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="no usable annotations"):
        CocoKeypointDataset(empty, tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        CocoKeypointDataset(tmp_path / "nowhere.json", tmp_path)


def test_exclude_keypoints(coco_files):
    path, root = coco_files
    dataset = CocoKeypointDataset(path, root, exclude_keypoints=["nose", "left eye"])
    sample = dataset[0]
    assert sample.labelled[0] and not sample.visible[0] and not sample.visible[1]
    assert sample.visible[2]
    np.testing.assert_allclose(sample.joints[0, :2], [112, 112], atol=1e-4)  # still given, just never asked
    # in training, a person whose only labelled keypoint is held out is of no use
    training = CocoKeypointDataset(path, root, train=True, augmentation=NO_AUGMENTATION,
                                   exclude_keypoints=["nose"])
    assert len(training) == 1
    assert training.skip_counts["annotations"]["without a labelled keypoint that may be asked"] == 2
    with pytest.raises(KeyError, match="tail"):
        CocoKeypointDataset(path, root, exclude_keypoints=["tail"])


def test_training_skips_crops_without_a_visible_keypoint(tmp_path: Path):
    write_image(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png", "width": 320, "height": 256}]
    annotations = [
        person(1, 1, [10.0, 10.0, 50.0, 50.0], {0: (300.0, 250.0)}),  # the only keypoint is far outside the box
        person(2, 1, [10.0, 10.0, 50.0, 50.0], {0: (30.0, 30.0)}),
    ]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    training = CocoKeypointDataset(path, tmp_path, train=True, augmentation=NO_AUGMENTATION)
    assert training[0].meta["annotation_id"] == 2
    assert training.skip_counts["empty_crops"] == 1
    evaluation = CocoKeypointDataset(path, tmp_path)
    assert not evaluation[0].visible.any()  # evaluation yields every person


def test_augmentation_never_changes_the_cached_annotations(coco_files):
    path, root = coco_files
    config = AugmentationConfig(flip_prob=0.5, scale_sigma=0.3, rotation_prob=1.0, max_rotation=40.0)
    dataset = CocoKeypointDataset(path, root, train=True, augmentation=config, seed=7)
    record = dataset.records[0]
    before = [record.joints.copy(), record.labelled.copy(), record.center.copy(), record.scale.copy()]
    flips = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        flips.add(sample.flipped)
        sample.joints[:] = -1  # a consumer writing into its sample cannot reach the record either
        sample.center[:] = -1
    assert flips == {True, False}
    cached_arrays = [record.joints, record.labelled, record.center, record.scale]
    for cached, original in zip(cached_arrays, before, strict=True):
        np.testing.assert_array_equal(cached, original)
    with pytest.raises(ValueError, match="read-only"):
        record.joints[0, 0] = 5.0


def test_augmented_samples_are_reproducible_and_map_back(coco_files):
    path, root = coco_files
    config = AugmentationConfig(flip_prob=1.0, scale_sigma=0.3, rotation_prob=1.0)
    dataset = CocoKeypointDataset(path, root, train=True, augmentation=config, seed=3)
    first, again = dataset[0], dataset[0]
    np.testing.assert_array_equal(first.image, again.image)
    assert first.rotation == again.rotation != 0.0 and first.flipped
    dataset.set_epoch(1)
    assert dataset[0].rotation != first.rotation
    # flipped: the left eye sits where the mirrored right eye was; mapping back and swapping recovers it
    record = dataset.records[0]
    np.testing.assert_array_equal(first.labelled[COCO_KEYPOINTS.flip_indices()], record.labelled)
    back = first.crop_to_image(first.joints[:, :2])[COCO_KEYPOINTS.flip_indices()]
    np.testing.assert_allclose(back[record.labelled], record.joints[record.labelled, :2], atol=1e-3)


def test_apply_augmentation_flip_swaps_partners_and_center():
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[:, 0] = 255
    joints = np.array([[2.0, 3.0, 0.0], [5.0, 3.0, 0.0], [7.0, 3.0, 0.0]])
    labelled = np.array([True, True, False])
    view = apply_augmentation(image, joints, labelled, np.float32([4, 5]), np.float32([1, 1]), [0, 2, 1],
                              AugmentationDraw(scale_multiplier=1.2, rotation=10.0, flip=True))
    assert view.image[:, 19].all() and not view.image[:, 0].any()
    np.testing.assert_allclose(view.joints[:, 0], [17.0, 12.0, 14.0])
    np.testing.assert_array_equal(view.labelled, [True, False, True])
    np.testing.assert_allclose(view.center, [15, 5])
    np.testing.assert_allclose(view.scale, [1.2, 1.2], rtol=1e-6)
    assert view.rotation == 10.0 and image[:, 0].all()  # the input image is untouched


def test_augmentation_draws_follow_the_config():
    rng = np.random.default_rng(0)
    config = AugmentationConfig()
    draws = [apply_augmentation(np.zeros((4, 4, 3), np.uint8), np.zeros((1, 3)), np.ones(1, bool),
                                np.zeros(2, np.float32), np.ones(2, np.float32), [0], draw_augmentation(config, rng))
             for _ in range(400)]
    multipliers = np.array([d.scale[0] for d in draws])
    rotations = np.array([d.rotation for d in draws])
    assert multipliers.min() >= 0.7 - 1e-6 and multipliers.max() <= 1.3 + 1e-6
    assert np.abs(rotations).max() <= 40.0 and 0.35 < (rotations != 0).mean() < 0.65
    assert 0.35 < np.mean([d.flipped for d in draws]) < 0.65
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentationConfig(flip_prob=1.5)
    assert not NO_AUGMENTATION.enabled and config.enabled


# ------------------------------------------------------------------------------------------ MPII


def mpii_joints(cx: float, cy: float) -> list[list[float]]:
    return [[cx + 3 * i - 24, cy + 2 * i - 16] for i in range(len(MPII_KEYPOINTS))]


def test_mpii_hrnet_layout(tmp_path: Path):
    write_image(tmp_path / "images" / "m1.png", 360, 288)
    write_image(tmp_path / "images" / "m2.png", 360, 288)
    entries = [
        {"image": "m1.png", "center": [180.0, 140.0], "scale": 1.1, "joints": mpii_joints(181.0, 141.0),
         "joints_vis": [1] * 15 + [0]},
        {"image": "m2.png", "center": [180.0, 140.0], "scale": 1.1, "joints": [[-1.0, -1.0]] * 16,
         "joints_vis": [0] * 16},
    ]
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(entries))
    evaluation = MpiiDataset(path, tmp_path / "images")
    assert len(evaluation) == 2  # evaluation keeps every entry: PCKh matches them by position
    sample = evaluation[0]
    assert sample.pixel_std == 200.0 and sample.image_id == 0 and not sample.has_depth
    np.testing.assert_allclose(sample.center, [179.0, 155.5])
    np.testing.assert_allclose(sample.scale, [1.375, 1.375])
    image_points = sample.crop_to_image(sample.joints[:15, :2])
    np.testing.assert_allclose(image_points, np.array(mpii_joints(180.0, 140.0))[:15], atol=1e-3)  # 0-based
    assert sample.labelled.sum() == 15 and not sample.labelled[15]
    training = MpiiDataset(path, tmp_path / "images", train=True)
    assert len(training) == 1


def test_mpii_coco_layout_uses_pixel_scales(tmp_path: Path):
    write_image(tmp_path / "p.png", 360, 288)
    keypoints = []
    for x, y in mpii_joints(60.0, 60.0):
        keypoints += [x, y, 1.0]
    data = {
        "images": [{"id": 5, "file_name": "p.png", "width": 360, "height": 288}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "iscrowd": 0, "bbox": [10, 20, 101, 81],
                         "area": 8181, "num_keypoints": 16, "keypoints": keypoints}],
        "categories": [{"id": 1, "name": "person"}],
    }
    path = tmp_path / "annot_mpii.json"
    path.write_text(json.dumps(data))
    dataset = MpiiDataset(path, tmp_path, train=True)
    sample = dataset[0]
    assert dataset.layout == "coco" and sample.pixel_std == 1.0
    np.testing.assert_allclose(sample.center, [60, 60])  # clipped box (10, 20, 100, 80)
    np.testing.assert_allclose(sample.scale, [125, 125])  # 100 px x 1.25
    np.testing.assert_allclose(sample.joints[0, :2], (np.array([36, 44]) - 60) * 224 / 125 + 112, atol=1e-4)
    assert sample.keypoints is MPII_KEYPOINTS and sample.visible.all()


# ------------------------------------------------------------------------------------------ Human3.6M


def h36m_file(tmp_path: Path) -> Path:
    write_image(tmp_path / "images" / "s_01_act_02_subact_01_ca_01" / "f1.png", 400, 400)
    write_image(tmp_path / "images" / "s_09_act_05_subact_02_ca_01" / "f1.png", 400, 400)
    world = [[0.0, 0.0, 0.0]] + [[10.0 * i, -20.0 * i, 0.0] for i in range(1, 17)]
    world[3] = [0.0, 0.0, 1500.0]  # 1.5 m behind the pelvis: normalized depth 1.25, not askable
    camera = {"R": np.eye(3).tolist(), "t": [0.0, 0.0, -5000.0], "f": [500.0, 500.0], "c": [200.0, 200.0]}
    data = {
        "images": [
            {"id": i, "file_name": f"{sequence}/f1.png", "width": 400, "height": 400, "cam_param": camera}
            for i, sequence in ((1, "s_01_act_02_subact_01_ca_01"), (2, "s_09_act_05_subact_02_ca_01"))
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [150.0, 100.0, 101.0, 201.0], "keypoints_world": world},
            # a sequence with broken ground truth
            {"id": 2, "image_id": 2, "bbox": [150.0, 100.0, 101.0, 201.0], "keypoints_world": world},
            {"id": 3, "image_id": 1, "bbox": [150.0, 100.0, 101.0, 201.0], "keypoints_world": world[:5]},
        ],
    }
    path = tmp_path / "h36m.json"
    path.write_text(json.dumps(data))
    return path


def test_h36m_projects_with_root_relative_depth(tmp_path: Path):
    path = h36m_file(tmp_path)
    dataset = Human36MDataset(path, tmp_path / "images", train=True)
    assert len(dataset) == 1
    assert dataset.skip_counts["annotations"] == {"in a skipped sequence": 1, "without 17 world keypoints": 1}
    sample = dataset[0]
    assert sample.has_depth and sample.keypoints is H36M_KEYPOINTS and sample.pixel_std == 1.0
    np.testing.assert_allclose(sample.center, [200, 200])  # clipped box (150, 100, 100, 200)
    np.testing.assert_allclose(sample.scale, [200, 200])
    np.testing.assert_allclose(sample.joints[0], [112, 112, 0], atol=1e-4)  # the root on the optical axis
    np.testing.assert_allclose(sample.joints[3, 2], 1500.0)
    # 10 mm at 5 m with f = 500 px is 1 px, 1.12 crop px
    np.testing.assert_allclose(sample.joints[1, :2], [112 + 1 * 1.12, 112 - 2 * 1.12], atol=1e-4)
    assert not sample.visible[3] and sample.visible[[0, 1, 2, 4]].all()
    np.testing.assert_allclose(sample.meta["root_cam"], [0, 0, 5000])
    assert sample.meta["joints_cam"].shape == (17, 3)


# ------------------------------------------------------------------------------------------ captions


def test_caption_dataset(tmp_path: Path, caplog):
    write_image(tmp_path / "cc" / "a.png", 300, 200)
    write_image(tmp_path / "cc" / "b.png", 100, 150)
    entries = [
        {"id": "a", "image": "cc/a.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the photo."},
            {"from": "gpt", "value": " a grey card "}]},
        {"id": "x", "image": "cc/missing.png", "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "gone"}]},
        {"id": "b", "image": "cc/b.png", "conversations": [
            {"from": "human", "value": "Say what you see.\n<image>"}, {"from": "gpt", "value": "a square"}]},
        {"id": "y", "image": "cc/a.png", "conversations": [{"from": "human", "value": "<image>"}]},
        {"id": "z", "conversations": []},
    ]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(entries))
    dataset = CaptionDataset(path, tmp_path, image_size=64)
    assert len(dataset) == 3
    assert dataset.skip_counts["annotations"] == {"without a human turn and a caption": 1, "without an image": 1}
    sample = dataset[0]
    assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
    assert sample.instruction == "Describe the photo." and sample.caption == "a grey card"
    assert sample.sample_id == "a"
    with caplog.at_level(logging.WARNING):
        assert dataset[1].sample_id == "b"
    assert dataset.skip_counts["unreadable_images"] == 1 and "missing.png" in caplog.text
    padded = CaptionDataset(path, tmp_path, image_size=64, resize_mode="pad")[0].image
    assert padded.shape == (64, 64, 3) and not padded[0].any()  # black bands above and below the wide image
    with pytest.raises(ValueError, match="resize_mode"):
        CaptionDataset(path, tmp_path, resize_mode="stretch")


# ------------------------------------------------------------------------------------------ mixture


class Numbers:
    def __init__(self, start: int, size: int) -> None:
        self.values = list(range(start, start + size))
        self.epoch = None

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> int:
        return self.values[index]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def test_mixture_lengths_and_repeats():
    first, second = Numbers(0, 3), Numbers(100, 4)
    mixture = MixtureDataset([first, second], repeats=[2, 0.5], seed=1)
    assert len(mixture) == 3 * 2 + 2
    items = [mixture[i] for i in range(len(mixture))]
    assert items[:6] == [0, 1, 2, 0, 1, 2]
    assert len(set(items[6:])) == 2 and set(items[6:]) <= set(second.values)
    assert mixture.locate(-1)[0] == 1
    with pytest.raises(IndexError):
        mixture[len(mixture)]
    assert len(MixtureDataset([first, second])) == 7
    assert len(MixtureDataset([first], repeats=[1.5])) == 4  # one whole copy and 2 of the 3 again
    mixture.set_epoch(4)
    assert first.epoch == second.epoch == 4
    with pytest.raises(ValueError, match="positive"):
        MixtureDataset([first], repeats=[0])
    with pytest.raises(ValueError, match="2 repeat factors for 1"):
        MixtureDataset([first], repeats=[1, 1])


def test_mixture_of_3d_and_2d_datasets(tmp_path: Path, coco_files):
    h36m = Human36MDataset(h36m_file(tmp_path / "h36m"), tmp_path / "h36m" / "images", train=True)
    path, root = coco_files
    coco = CocoKeypointDataset(path, root, train=True, augmentation=NO_AUGMENTATION)
    mixture = MixtureDataset([h36m, coco], repeats=[3, 1])
    assert len(mixture) == 3 + 3
    assert mixture[0].has_depth and not mixture[3].has_depth
    assert mixture.skip_counts[1]["annotations"]["crowd"] == 1
