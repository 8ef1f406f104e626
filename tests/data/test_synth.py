"""SynthPose: scenes, the three annotation layouts, determinism, the CLI, and the drawing they use."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from locllm.cli import main
from locllm.data.synth import JOINT_NAMES, coco_self_check, generate_synthpose, joint_indices, render_scene
from locllm.data.synth.figure import PARTS, sample_figure
from locllm.keypoints import (
    COCO_KEYPOINTS,
    EXTRA_KEYPOINTS,
    H36M_KEYPOINTS,
    MPII_KEYPOINTS,
    KeypointSet,
    custom_keypoint,
)
from locllm.viz import LEFT_COLOR, RIGHT_COLOR, draw_keypoints

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "reference-golden" / "fixtures"
NUM_IMAGES = 12


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """One small data set per format, all from seed 7."""
    made = {}
    for fmt in ("coco", "mpii", "h36m"):
        out = tmp_path_factory.mktemp(fmt)
        made[fmt] = out, generate_synthpose(out, NUM_IMAGES, seed=7, fmt=fmt, val_fraction=0.25, workers=1)
    return made


def _inside(points: np.ndarray, low, high) -> np.ndarray:
    return np.all((points >= np.asarray(low) - 1e-9) & (points <= np.asarray(high) + 1e-9), axis=-1)


# ---------------------------------------------------------------------------------------------------------
# Scenes in memory
# ---------------------------------------------------------------------------------------------------------


def test_render_scene_labels_every_person_consistently():
    rng = np.random.default_rng(0)
    for num_persons in (1, 2, 3, 5):
        image, persons = render_scene(rng, size=128, num_persons=num_persons)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert len(persons) == num_persons
        for person in persons:
            shapes = {"joints": (len(JOINT_NAMES), 3), "keypoints": (17, 3), "extra_keypoints": (6, 3),
                      "mpii_joints": (16, 3), "h36m_joints": (17, 3), "joints_3d_camera": (17, 3),
                      "joints_3d_world": (17, 3), "bbox": (4,), "head_box": (4,)}
            assert {key: person[key].shape for key in shapes} == shapes
            visibility = person["joints"][:, 2]
            assert set(np.unique(visibility)) <= {0.0, 1.0, 2.0}
            labelled = person["joints"][visibility > 0, :2]
            assert _inside(labelled, 0, 127).all()
            x, y, w, h = person["bbox"]
            assert w > 0 and h > 0 and _inside(labelled, (x, y), (x + w, y + h)).all()
            assert 0 < person["area"] <= w * h
            # Outside the image is exactly what v = 0 means.
            assert not _inside(person["joints"][visibility == 0, :2], 0, 127).any()
            np.testing.assert_allclose(person["camera"].project(person["joints_camera"]), person["joints"][:, :2])
            np.testing.assert_allclose(person["camera"].world_to_camera(person["joints_world"]),
                                       person["joints_camera"], atol=1e-6)


def test_render_scene_is_a_function_of_the_generator_state():
    first = render_scene(np.random.default_rng(5), size=96, num_persons=2)
    second = render_scene(np.random.default_rng(5), size=96, num_persons=2)
    other = render_scene(np.random.default_rng(6), size=96, num_persons=2)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1][1]["keypoints"], second[1][1]["keypoints"])
    assert not np.array_equal(first[0], other[0])


def test_part_labels_cover_the_drawn_parts_without_changing_the_scene():
    image, persons = render_scene(np.random.default_rng(5), size=128, num_persons=2)
    same_image, same_persons, labels = render_scene(np.random.default_rng(5), size=128, num_persons=2,
                                                    part_labels=True)
    np.testing.assert_array_equal(image, same_image)
    np.testing.assert_array_equal(persons[1]["joints"], same_persons[1]["joints"])
    assert labels.shape == (128, 128) and labels.dtype == np.uint8
    assert set(np.unique(labels)) - {0} <= {1 + 16 * slot + i for slot in range(2) for i in range(len(PARTS))}
    part = np.where(labels > 0, (labels.astype(int) - 1) % 16, -1)
    red, blue = image[..., 0].astype(int), image[..., 2].astype(int)
    for side, bluer in (("left", True), ("right", False)):  # left limbs are drawn blue, right ones red
        limb = np.isin(part, [i for i, p in enumerate(PARTS) if p.name.startswith(side)])
        assert limb.sum() > 50
        assert ((blue > red) == bluer)[limb].mean() > 0.9
    assert (labels == 0).mean() > 0.3  # background stays unlabelled


def test_easy_single_figures_fill_their_crop():
    """The demo's crops: one figure, large, hardly ever cut by the border."""
    rng = np.random.default_rng(1)
    labelled = []
    for _ in range(20):
        _, (person,) = render_scene(rng, size=64, num_persons=1, difficulty="easy")
        assert person["bbox"][2:].max() >= 0.6 * 64
        labelled.append((person["keypoints"][:, 2] > 0).mean())
    assert np.mean(labelled) > 0.95


def test_persons_occlude_each_other_and_themselves():
    rng = np.random.default_rng(2)
    visibility = np.concatenate([p["keypoints"][:, 2] for _ in range(20) for p in render_scene(rng, 128, 3)[1]])
    counts = {v: int((visibility == v).sum()) for v in (0, 1, 2)}
    assert counts[2] > counts[1] > 0 and counts[0] > 0  # mostly visible, some occluded, some cut off


def test_left_limbs_are_blue_and_right_limbs_red():
    rng = np.random.default_rng(3)
    for _ in range(10):
        colors = sample_figure(rng).colors
        for part in ("upper arm", "forearm", "hand", "thigh", "shin", "foot"):
            left, right = np.array(colors[f"left {part}"]), np.array(colors[f"right {part}"])
            assert left[2] > left[0] and right[0] > right[2]


def test_figure_models_every_keypoint_set():
    for keypoint_set in (COCO_KEYPOINTS, MPII_KEYPOINTS, H36M_KEYPOINTS, EXTRA_KEYPOINTS):
        assert len(set(joint_indices(keypoint_set))) == len(keypoint_set)
    with pytest.raises(KeyError, match="no 'tail' keypoint"):
        joint_indices(KeypointSet("custom", (custom_keypoint("tail", "The tip of the tail."),)))


def test_render_scene_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="num_persons"):
        render_scene(rng, 64, num_persons=0)
    with pytest.raises(ValueError, match="at least 32"):
        render_scene(rng, 16)
    with pytest.raises(ValueError, match="unknown difficulty"):
        render_scene(rng, 64, difficulty="hard")


# ---------------------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------------------


def test_coco_file_loads_in_pycocotools_and_scores_ap_1(datasets):
    from pycocotools.coco import COCO

    out, summary = datasets["coco"]
    assert summary["self_check_ap"] == {"train": 1.0, "val": 1.0}
    assert summary["splits"]["train"]["images"] == 9 and summary["splits"]["val"]["images"] == 3
    coco = COCO(str(out / "annotations" / "train.json"))
    category = coco.loadCats(1)[0]
    assert category["keypoints"] == [name.replace(" ", "_") for name in COCO_KEYPOINTS.names]
    assert category["extra_keypoints"] == ["neck", "pelvis", "head_top", "thorax", "left_toe", "right_toe"]
    assert min(min(pair) for pair in category["skeleton"]) == 1  # 1-based, as COCO's own files
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == summary["splits"]["train"]["persons"]
    for annotation in annotations:
        image = coco.loadImgs(annotation["image_id"])[0]
        assert cv2.imread(str(out / "images" / image["file_name"])).shape == (256, 256, 3)
        assert annotation["iscrowd"] == 0 and annotation["category_id"] == 1
        for key, count in (("keypoints", 17), ("extra_keypoints", 6)):
            points = np.array(annotation[key]).reshape(count, 3)
            labelled = points[:, 2] > 0
            assert annotation[f"num_{key}"] == labelled.sum()
            assert (points[~labelled] == 0).all()  # COCO writes unlabelled points as 0, 0, 0
            x, y, w, h = annotation["bbox"]
            assert _inside(points[labelled, :2], 0, 255).all()
            assert _inside(points[labelled, :2], (x, y), (x + w, y + h)).all()


def test_coco_self_check_catches_an_inconsistent_file(datasets, tmp_path):
    out, _ = datasets["coco"]
    data = json.loads((out / "annotations" / "train.json").read_text())
    # A count that disagrees with the visibility flags: COCOeval then scores the person by its box alone.
    data["annotations"][0]["keypoints"] = [0] * 51
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    assert coco_self_check(broken) < 1.0


def test_same_seed_same_bytes_and_other_seed_other_bytes(datasets, tmp_path):
    out, _ = datasets["coco"]
    again = generate_synthpose(tmp_path / "again", NUM_IMAGES, seed=7, val_fraction=0.25, workers=1)
    other = generate_synthpose(tmp_path / "other", NUM_IMAGES, seed=8, val_fraction=0.25, workers=1)
    for split in ("train", "val"):
        reference = (out / "annotations" / f"{split}.json").read_bytes()
        assert Path(again["splits"][split]["annotation_file"]).read_bytes() == reference
        assert Path(other["splits"][split]["annotation_file"]).read_bytes() != reference
    assert (tmp_path / "again" / "images" / "000001.jpg").read_bytes() == (out / "images" / "000001.jpg").read_bytes()


def test_worker_processes_do_not_change_the_output(tmp_path):
    serial = generate_synthpose(tmp_path / "serial", 6, seed=11, fmt="h36m", workers=1, val_fraction=0.0)
    parallel = generate_synthpose(tmp_path / "parallel", 6, seed=11, fmt="h36m", workers=2, val_fraction=0.0)
    assert parallel["workers"] == 2
    path = Path(serial["splits"]["train"]["annotation_file"])
    assert path.read_bytes() == Path(parallel["splits"]["train"]["annotation_file"]).read_bytes()


# ---------------------------------------------------------------------------------------------------------
# MPII and Human3.6M
# ---------------------------------------------------------------------------------------------------------


def test_mpii_layout_matches_the_reference_files(datasets):
    out, summary = datasets["mpii"]
    entries = json.loads((out / "annot" / "valid.json").read_text())
    assert len(entries) == summary["splits"]["val"]["persons"]
    if (FIXTURES / "mpii" / "annot" / "valid.json").exists():
        reference = json.loads((FIXTURES / "mpii" / "annot" / "valid.json").read_text())[0]
        assert set(reference) <= set(entries[0])
    for entry in entries:
        joints, labelled = np.array(entry["joints"]), np.array(entry["joints_vis"]) > 0
        assert joints.shape == (16, 2) and labelled.shape == (16,)
        assert (joints[~labelled] == -1).all()
        assert _inside(joints[labelled], 1, 256).all()  # MATLAB's 1-based pixels
        x1, y1, x2, y2 = entry["head_box"]
        assert x2 > x1 and y2 > y1 and entry["scale"] > 0
        # The head box holds the head top when it is labelled (index 9 in MPII order).
        if labelled[9]:
            assert _inside(joints[9], (x1, y1), (x2, y2))


def test_h36m_layout_and_cameras_reproduce_the_2d_joints(datasets):
    out, summary = datasets["h36m"]
    data = json.loads((out / "annotations" / "train.json").read_text())
    assert len(data["annotations"]) == summary["splits"]["train"]["persons"]
    if (FIXTURES / "h36m" / "annot.json").exists():
        reference = json.loads((FIXTURES / "h36m" / "annot.json").read_text())
        assert set(reference["images"][0]) <= set(data["images"][0])
        assert set(reference["images"][0]["cam_param"]) == set(data["images"][0]["cam_param"])
        assert set(reference["annotations"][0]) <= set(data["annotations"][0])
    images = {image["id"]: image for image in data["images"]}
    for annotation in data["annotations"]:
        camera = {key: np.array(value) for key, value in images[annotation["image_id"]]["cam_param"].items()}
        np.testing.assert_allclose(camera["R"] @ camera["R"].T, np.eye(3), atol=1e-8)
        world = np.array(annotation["keypoints_world"])
        in_camera = (world - camera["t"]) @ camera["R"].T
        np.testing.assert_allclose(in_camera, annotation["keypoints_cam"], atol=0.05)
        pixels = in_camera[:, :2] / in_camera[:, 2:] * camera["f"] + camera["c"]
        np.testing.assert_allclose(pixels, annotation["keypoints_img"], atol=0.02)
        # In-image flags agree with the projection (away from the border, where rounding could flip them).
        flags = np.array(annotation["keypoints_vis"])
        assert (flags[_inside(pixels, 0.05, 254.95)] == 1).all()
        assert (flags[~_inside(pixels, -0.05, 255.05)] == 0).all()
        assert in_camera[:, 2].min() > 500  # every joint well in front of the camera


def test_mpii_and_h36m_load_with_the_project_loaders(datasets):
    loaders = pytest.importorskip("locllm.data.datasets")
    out, summary = datasets["mpii"]
    mpii = loaders.MpiiDataset(out / "annot" / "valid.json", out / "images")
    assert len(mpii) == summary["splits"]["val"]["persons"]
    entry = json.loads((out / "annot" / "valid.json").read_text())[0]
    sample = mpii[0]
    # Back from the crop to the image: the 0-based version of the file's 1-based joints.
    labelled = np.array(entry["joints_vis"]) > 0
    np.testing.assert_allclose(sample.crop_to_image(sample.joints[:, :2])[labelled],
                               np.array(entry["joints"])[labelled] - 1, atol=0.05)

    out, summary = datasets["h36m"]
    h36m = loaders.Human36MDataset(out / "annotations" / "val.json", out / "images")
    assert len(h36m) == summary["splits"]["val"]["persons"]
    annotation = json.loads((out / "annotations" / "val.json").read_text())["annotations"][0]
    depth = np.array(annotation["keypoints_cam"])[:, 2]
    np.testing.assert_allclose(h36m[0].joints[:, 2], depth - depth[0], atol=0.05)


# ---------------------------------------------------------------------------------------------------------
# Command line and contact sheet
# ---------------------------------------------------------------------------------------------------------


def test_cli_writes_data_set_summary_and_contact_sheet(tmp_path, capsys):
    summary_path, sheet = tmp_path / "s.json", tmp_path / "sheet.png"
    code = main(["synth", "--out", str(tmp_path / "s"), "--num-images", "10", "--seed", "3", "--persons", "2",
                 "--workers", "1", "--json", str(summary_path), "--contact-sheet", str(sheet)])
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["self_check_ap"] == {"train": 1.0, "val": 1.0}
    assert summary["splits"]["train"]["persons"] == 18 and summary["persons"] == [2, 2]
    assert cv2.imread(str(sheet)).shape == (3 * 256 + 4, 4 * 256 + 6, 3)  # 10 images: 4 columns, 3 rows
    assert "AP: train 1.0, val 1.0" in capsys.readouterr().out


def test_cli_reports_bad_arguments_in_one_line(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--num-images", "2", "--persons", "3-1"]) == 1
    assert "persons must be" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path), "--num-images", "2", "--persons", "many"]) == 1
    assert "--persons takes N or MIN-MAX" in capsys.readouterr().err



def test_cli_refuses_an_existing_data_set_and_replaces_it_whole_with_overwrite(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["synth", "--out", str(out), "--num-images", "4", "--seed", "1", "--workers", "1", "--size", "64"]
    assert main(args) == 0
    (out / "images" / "999999.jpg").write_bytes(b"an earlier data set's image")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*args[:-4], "--seed", "2", "--workers", "1"]) == 1
    error = capsys.readouterr().err
    assert "not empty" in error and "--overwrite" in error and error.count("\n") == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # refused before any work
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "images" / "999999.jpg").exists()  # replaced as a whole: nothing orphaned
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.jpg" for i in range(1, 5)]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folder left behind


def test_an_interrupted_synth_leaves_no_partial_data_set(tmp_path, monkeypatch):
    from locllm.data.synth import generate

    def fail(job):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "_render_image", fail)
    with pytest.raises(KeyboardInterrupt):
        generate_synthpose(tmp_path / "s", 4, seed=0, workers=1)
    assert list(tmp_path.iterdir()) == []

# ---------------------------------------------------------------------------------------------------------
# Drawing (locllm.viz)
# ---------------------------------------------------------------------------------------------------------


def test_draw_keypoints_colours_sides_and_leaves_the_input_alone():
    image = np.zeros((100, 100, 3), np.uint8)
    keypoints = np.full((17, 2), np.nan)
    keypoints[COCO_KEYPOINTS.index("left knee")] = (30, 50)
    keypoints[COCO_KEYPOINTS.index("right knee")] = (70, 50)
    drawn = draw_keypoints(image, keypoints, COCO_KEYPOINTS, labels=True)
    assert not image.any() and drawn.shape == image.shape
    assert tuple(drawn[50, 30]) == LEFT_COLOR and tuple(drawn[50, 70]) == RIGHT_COLOR
    hidden = draw_keypoints(image, keypoints, COCO_KEYPOINTS, visible=np.arange(17) != COCO_KEYPOINTS.index("left knee"))
    assert not hidden[50, 30].any() and hidden[50, 70].any()
    scored = draw_keypoints(image, keypoints, COCO_KEYPOINTS, scores=np.full(17, 0.5))
    assert scored[40:50, 34:60].any()  # the score is written beside the point


def test_draw_keypoints_rejects_mismatched_inputs():
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(17, 2\)"):
        draw_keypoints(image, np.zeros((16, 2)), COCO_KEYPOINTS)
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_keypoints(image.astype(np.float32), np.zeros((17, 2)), COCO_KEYPOINTS)
    with pytest.raises(ValueError, match="17 labels"):
        draw_keypoints(image, np.zeros((17, 2)), COCO_KEYPOINTS, labels=["nose"])
