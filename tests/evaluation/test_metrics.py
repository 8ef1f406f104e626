"""Metrics on hand-made cases whose answers are known without running the metric."""

import json
import math

import numpy as np
import pytest

from locllm.evaluation import (
    COCO_STAT_NAMES,
    MpiiGroundTruth,
    action_from_file_name,
    evaluate_coco_keypoints,
    evaluate_h36m,
    evaluate_mpii_pckh,
    head_sizes,
    image_to_camera,
    instance_score,
    oks_nms,
    pckh_per_joint,
    procrustes_align,
    rescore_instances,
)
from locllm.keypoints import COCO_KEYPOINTS, MPII_KEYPOINTS

RNG_SEED = 0
COCO_SIGMAS = np.array(COCO_KEYPOINTS.sigmas)


# ----------------------------------------------------------------------------------------------- COCO

def _person(annotation_id, image_id, box, rng, unlabelled=()):
    """A ground-truth person with 17 keypoints inside ``box`` (x, y, w, h), some of them unlabelled."""
    x, y, w, h = box
    xy = rng.uniform([x, y], [x + w, y + h], size=(17, 2))
    visibility = np.full(17, 2.0)
    visibility[list(unlabelled)] = 0
    xy[list(unlabelled)] = 0
    keypoints = np.concatenate([xy, visibility[:, None]], axis=1)
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": list(box),
            "area": float(w * h), "num_keypoints": int((visibility > 0).sum()),
            "keypoints": keypoints.reshape(-1).tolist()}


@pytest.fixture
def coco_gt_file(tmp_path):
    """Two images, three people: two large, one medium (32^2 < area < 96^2), one with 3 keypoints unlabelled."""
    rng = np.random.default_rng(RNG_SEED)
    annotations = [
        _person(1, 10, (20, 30, 120, 240), rng),
        _person(2, 10, (200, 40, 60, 80), rng, unlabelled=(3, 4, 16)),
        _person(3, 11, (50, 50, 150, 200), rng),
    ]
    dataset = {
        "images": [{"id": 10, "file_name": "a.png", "width": 320, "height": 320},
                   {"id": 11, "file_name": "b.png", "width": 320, "height": 320}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": COCO_KEYPOINTS.names, "skeleton": []}],
    }
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(dataset))
    return path, annotations


def _perfect_predictions(annotations):
    predictions = []
    for annotation in annotations:
        keypoints = np.reshape(annotation["keypoints"], (-1, 3)).copy()
        keypoints[:, 2] = 1.0
        predictions.append({"image_id": annotation["image_id"], "category_id": 1,
                            "keypoints": keypoints.reshape(-1).tolist(), "score": 1.0})
    return predictions


def _shift_for_oks(predictions, annotations, oks, indices, sigmas):
    """Move keypoints ``indices`` along x so that each one's OKS term is exactly ``oks``.

    COCO's per-keypoint term is exp(-d^2 / (2 * area * (2 sigma)^2)); solve it for d.
    """
    shifted = []
    for prediction, annotation in zip(predictions, annotations, strict=True):
        keypoints = np.reshape(prediction["keypoints"], (-1, 3)).copy()
        distance = np.sqrt(-math.log(oks) * 2 * annotation["area"] * (2 * np.asarray(sigmas)) ** 2)
        keypoints[indices, 0] += distance[indices]
        shifted.append({**prediction, "keypoints": keypoints.reshape(-1).tolist()})
    return shifted


def test_coco_perfect_predictions_give_ap_1(coco_gt_file):
    path, annotations = coco_gt_file
    report = evaluate_coco_keypoints(path, _perfect_predictions(annotations), boxes="gt")
    for name in COCO_STAT_NAMES:
        assert report[name] == pytest.approx(1.0), name
    assert report["boxes"] == "gt"
    assert report["keypoint_indices"] == list(range(17))


def test_coco_known_oks_gives_known_ap(coco_gt_file):
    # OKS 0.82 passes the thresholds 0.50, 0.55, ..., 0.80 (7 of 10) and fails 0.85..0.95.
    path, annotations = coco_gt_file
    predictions = _shift_for_oks(_perfect_predictions(annotations), annotations, 0.82, list(range(17)), COCO_SIGMAS)
    report = evaluate_coco_keypoints(path, predictions, boxes="detections")
    assert report["AP"] == pytest.approx(0.7)
    assert report["AP50"] == pytest.approx(1.0)
    assert report["AP75"] == pytest.approx(1.0)
    assert report["boxes"] == "detections"


def test_coco_subset_is_scored_on_its_own_keypoints_and_sigmas(coco_gt_file):
    path, annotations = coco_gt_file
    held_out = [COCO_KEYPOINTS.index(n) for n in ("right elbow", "left wrist", "left knee", "right ankle")]
    seen = [i for i in range(17) if i not in held_out]
    # Held-out keypoints badly off (OKS term 0.1), seen ones perfect.
    predictions = _shift_for_oks(_perfect_predictions(annotations), annotations, 0.1, held_out, COCO_SIGMAS)

    assert evaluate_coco_keypoints(path, predictions, boxes="gt", keypoint_indices=seen)["AP"] == pytest.approx(1.0)
    assert evaluate_coco_keypoints(path, predictions, boxes="gt", keypoint_indices=held_out)["AP"] == 0.0
    assert evaluate_coco_keypoints(path, predictions, boxes="gt")["AP"] < 1.0

    # The subset's OKS uses the subset's own sigmas: a term of 0.82 on every held-out keypoint -> AP 0.7.
    predictions = _shift_for_oks(_perfect_predictions(annotations), annotations, 0.82, held_out, COCO_SIGMAS)
    report = evaluate_coco_keypoints(path, predictions, boxes="gt", keypoint_indices=held_out)
    assert report["AP"] == pytest.approx(0.7)
    assert report["keypoint_indices"] == held_out


def test_coco_subset_ignores_people_with_none_of_its_keypoints_labelled(coco_gt_file):
    # Person 2 has keypoints 3, 4, 16 unlabelled: on that subset it must not count as a missed person.
    path, annotations = coco_gt_file
    predictions = [p for i, p in enumerate(_perfect_predictions(annotations)) if i != 1]  # none for person 2
    report = evaluate_coco_keypoints(path, predictions, boxes="gt", keypoint_indices=[3, 4, 16])
    assert report["AP"] == pytest.approx(1.0)
    assert report["AR"] == pytest.approx(1.0)


def test_coco_custom_sigmas_change_the_oks(coco_gt_file):
    path, annotations = coco_gt_file
    predictions = _shift_for_oks(_perfect_predictions(annotations), annotations, 0.82, list(range(17)), COCO_SIGMAS)
    # Twice the sigmas: each term becomes 0.82 ** (1/4) = 0.95, which passes every threshold.
    report = evaluate_coco_keypoints(path, predictions, boxes="gt", sigmas=2 * COCO_SIGMAS)
    assert report["AP"] == pytest.approx(1.0)


def test_coco_empty_predictions_warn_and_give_zero(coco_gt_file):
    path, _ = coco_gt_file
    with pytest.warns(UserWarning, match="no predictions"):
        report = evaluate_coco_keypoints(path, [], boxes="gt")
    assert report["AP"] == 0.0
    assert report["AR"] == 0.0


def test_coco_pycocotools_prints_nothing(coco_gt_file, capsys):
    path, annotations = coco_gt_file
    evaluate_coco_keypoints(path, _perfect_predictions(annotations), boxes="gt")
    assert capsys.readouterr().out == ""


def test_coco_clear_errors(coco_gt_file):
    path, annotations = coco_gt_file
    predictions = _perfect_predictions(annotations)
    with pytest.raises(ValueError, match="boxes must be one of"):
        evaluate_coco_keypoints(path, predictions, boxes="ground truth")
    with pytest.raises(ValueError, match="3 x 17"):
        evaluate_coco_keypoints(path, [{**predictions[0], "keypoints": predictions[0]["keypoints"][:-3]}], boxes="gt")
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco_keypoints(path, [{**predictions[0], "image_id": 999}], boxes="gt")
    with pytest.raises(ValueError, match="expected 17 sigmas"):
        evaluate_coco_keypoints(path, predictions, boxes="gt", sigmas=[0.1] * 4)
    with pytest.raises(ValueError, match="keypoint_indices"):
        evaluate_coco_keypoints(path, predictions, boxes="gt", keypoint_indices=[0, 17])


def test_instance_score_rules():
    scores = [0.9, 0.1, 0.5, 0.0]
    assert instance_score(scores) == pytest.approx(0.375)  # the reference: mean of all, no box score
    assert instance_score(scores, box_score=0.5, keypoint_score_threshold=0.2) == pytest.approx(0.35)
    assert instance_score([0.1, 0.0], keypoint_score_threshold=0.2) == 0.0


def test_rescore_instances():
    prediction = {"image_id": 1, "category_id": 1, "keypoints": [0, 0, 0.8, 1, 1, 0.1, 2, 2, 0.6], "score": 0.0,
                  "box_score": 0.5}
    assert rescore_instances([prediction])[0]["score"] == pytest.approx(0.5)
    detection_rule = rescore_instances([prediction], use_box_score=True, keypoint_score_threshold=0.2)
    assert detection_rule[0]["score"] == pytest.approx(0.35)
    assert prediction["score"] == 0.0  # the input is not modified
    without_box_score = {key: value for key, value in prediction.items() if key != "box_score"}
    with pytest.raises(KeyError, match="box_score"):
        rescore_instances([without_box_score], use_box_score=True)


def test_oks_nms_removes_duplicates_only():
    rng = np.random.default_rng(RNG_SEED)
    xy = rng.uniform(0, 100, size=(17, 2))
    far_xy = xy + 500

    def person(image_id, points, score):
        keypoints = np.concatenate([points, np.ones((17, 1))], axis=1).reshape(-1).tolist()
        return {"image_id": image_id, "category_id": 1, "keypoints": keypoints, "score": score,
                "bbox": [0, 0, 100, 100]}

    predictions = [person(1, xy, 0.5), person(1, xy + 0.5, 0.9), person(1, far_xy, 0.3), person(2, xy, 0.4)]
    kept = oks_nms(predictions, COCO_SIGMAS, threshold=0.9)
    assert [(p["image_id"], p["score"]) for p in kept] == [(1, 0.9), (1, 0.3), (2, 0.4)]


# ----------------------------------------------------------------------------------------------- MPII

def _mpii_ground_truth(num_people=4, head_box_side=30.0):
    rng = np.random.default_rng(RNG_SEED)
    joints = rng.uniform(50, 250, size=(num_people, 16, 2))
    corners = rng.uniform(0, 200, size=(num_people, 1, 2))
    head_boxes = np.concatenate([corners, corners + head_box_side], axis=1)
    missing = np.zeros((num_people, 16), dtype=bool)
    return MpiiGroundTruth(joints=joints, missing=missing, head_boxes=head_boxes)


def _shift_by_head_sizes(ground_truth, fraction):
    """Every joint moved by ``fraction`` head sizes, along a random direction per joint."""
    rng = np.random.default_rng(RNG_SEED + 1)
    angle = rng.uniform(0, 2 * np.pi, size=ground_truth.joints.shape[:2])
    direction = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    distance = fraction * head_sizes(ground_truth.head_boxes)[:, None, None]
    return ground_truth.joints + distance * direction


def test_head_size_is_0_6_of_the_head_box_diagonal():
    assert head_sizes(np.array([[[10.0, 20.0], [40.0, 60.0]]])) == pytest.approx([0.6 * 50.0])


def test_mpii_perfect_predictions_give_100():
    ground_truth = _mpii_ground_truth()
    report = evaluate_mpii_pckh(ground_truth.joints.copy(), ground_truth)
    for key in ("PCKh@0.5", "PCKh@0.1"):
        assert all(value == 100.0 for value in report[key].values())
        assert all(value == 100.0 for value in report["novel_keypoints"][key].values())


def test_mpii_error_of_0_3_head_sizes_counts_at_0_5_not_at_0_1():
    ground_truth = _mpii_ground_truth()
    report = evaluate_mpii_pckh(_shift_by_head_sizes(ground_truth, 0.3), ground_truth)
    assert all(value == 100.0 for value in report["PCKh@0.5"].values())
    assert all(value == 0.0 for value in report["PCKh@0.1"].values())


def test_mpii_reference_mean_at_0_1_is_really_at_0_11():
    # An error of 0.105 head sizes fails PCKh@0.1 but passes the reference's "Mean@0.1" (0.11).
    ground_truth = _mpii_ground_truth()
    report = evaluate_mpii_pckh(_shift_by_head_sizes(ground_truth, 0.105), ground_truth, thresholds=(0.1, 0.11))
    assert report["PCKh@0.1"]["mean_coco_joints"] == 0.0
    assert report["PCKh@0.11"]["mean_coco_joints"] == 100.0


def test_mpii_means_and_novel_keypoints():
    ground_truth = _mpii_ground_truth()
    predictions = ground_truth.joints.copy()
    neck, head_top = MPII_KEYPOINTS.index("neck"), MPII_KEYPOINTS.index("head top")
    predictions[:, [neck, head_top]] += 1000.0  # only neck and head top wrong
    report = evaluate_mpii_pckh(predictions, ground_truth)["PCKh@0.5"]
    assert report["mean_coco_joints"] == 100.0  # the 12 COCO-like joints
    assert report["mean"] == pytest.approx(100.0 * 12 / 14)  # the standard mean also has neck and head top
    assert report["head"] == 0.0
    novel = evaluate_mpii_pckh(predictions, ground_truth)["novel_keypoints"]["PCKh@0.5"]
    assert novel == {"pelvis": 100.0, "thorax": 100.0, "neck": 0.0, "head top": 0.0}


def test_mpii_missing_joints_are_not_counted():
    ground_truth = _mpii_ground_truth(num_people=4)
    missing = ground_truth.missing.copy()
    missing[:2, 0] = True  # right ankle unannotated for the first two people
    ground_truth = MpiiGroundTruth(ground_truth.joints, missing, ground_truth.head_boxes)
    predictions = ground_truth.joints.copy()
    predictions[:3, 0] += 1000.0  # wrong for people 0..2, but 0 and 1 do not count
    assert pckh_per_joint(predictions, ground_truth)[0] == pytest.approx(50.0)
    missing[:, 0] = True  # nobody annotated -> undefined
    assert math.isnan(pckh_per_joint(predictions, MpiiGroundTruth(ground_truth.joints, missing,
                                                                  ground_truth.head_boxes))[0])


def test_mpii_ground_truth_from_matlab_layout_and_errors():
    pos = np.arange(16 * 2 * 3, dtype=np.float64).reshape(16, 2, 3) + 1
    ground_truth = MpiiGroundTruth.from_matlab_arrays(pos, np.zeros((16, 3)), np.ones((2, 2, 3)))
    assert ground_truth.joints.shape == (3, 16, 2)
    assert ground_truth.joints[2, 5].tolist() == [pos[5, 0, 2] - 1, pos[5, 1, 2] - 1]  # 1-based -> 0-based
    with pytest.raises(ValueError, match="shape"):
        MpiiGroundTruth(np.zeros((3, 16, 2)), np.zeros((3, 15), dtype=bool), np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="empty head box"):
        evaluate_mpii_pckh(ground_truth.joints, ground_truth)


# ----------------------------------------------------------------------------------------------- H36M

def _pose(rng, num_samples=5):
    return rng.normal(0, 300, size=(num_samples, 17, 3)) + np.array([0.0, 0.0, 4500.0])


def _rotation(axis, degrees):
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_h36m_known_mpjpe():
    rng = np.random.default_rng(RNG_SEED)
    ground_truth = _pose(rng)
    predicted = ground_truth.copy()
    predicted[:, 1:] += np.array([3.0, 4.0, 0.0])  # every joint but the root 5 mm off ...
    predicted += 100.0  # ... and the whole pose moved, which root-relative errors do not see
    report = evaluate_h36m(predicted, ground_truth)
    assert report["MPJPE"] == pytest.approx(5.0 * 16 / 17)  # the root's own error is 0
    assert report["MPJPE_per_joint"][0] == 0.0
    assert report["MPJPE_per_joint"][1:] == pytest.approx([5.0] * 16)
    assert report["MPJPE_xyz"] == pytest.approx([3.0 * 16 / 17, 4.0 * 16 / 17, 0.0])
    assert report["PA-MPJPE"] < report["MPJPE"]  # the alignment takes up most of a shift of 16 of 17 joints
    assert report["num_samples"] == 5


def test_pa_mpjpe_of_a_similarity_copy_is_zero():
    rng = np.random.default_rng(RNG_SEED)
    ground_truth = _pose(rng)
    rotation = _rotation([0.3, -1.0, 0.5], 70.0)
    predicted = 1.7 * ground_truth @ rotation.T + np.array([120.0, -40.0, 300.0])
    report = evaluate_h36m(predicted, ground_truth)
    assert report["MPJPE"] > 100.0
    assert report["PA-MPJPE"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(procrustes_align(predicted, ground_truth), ground_truth, atol=1e-9)


def test_procrustes_does_not_reflect():
    rng = np.random.default_rng(RNG_SEED)
    ground_truth = _pose(rng, num_samples=1)[0]
    mirrored = ground_truth * np.array([-1.0, 1.0, 1.0])
    aligned = procrustes_align(mirrored, ground_truth)
    # With reflections allowed the mirror image would fit exactly; with rotations only it cannot.
    assert np.linalg.norm(aligned - ground_truth, axis=-1).mean() > 10.0


def test_procrustes_of_a_collapsed_pose_is_the_target_centroid():
    target = _pose(np.random.default_rng(RNG_SEED), num_samples=1)[0]
    aligned = procrustes_align(np.zeros_like(target), target)
    np.testing.assert_allclose(aligned, np.broadcast_to(target.mean(0), target.shape))


def test_h36m_per_action():
    rng = np.random.default_rng(RNG_SEED)
    ground_truth = _pose(rng, num_samples=3)
    predicted = ground_truth.copy()
    predicted[2, 1:] += np.array([0.0, 0.0, 17.0])
    report = evaluate_h36m(predicted, ground_truth, actions=["Walking", "Directions", "Walking"])
    assert list(report["MPJPE_per_action"]) == ["Directions", "Walking"]  # H36M_ACTIONS order
    assert report["MPJPE_per_action"]["Directions"] == 0.0
    assert report["MPJPE_per_action"]["Walking"] == pytest.approx(16.0 / 2)
    with pytest.raises(ValueError, match="unknown Human3.6M actions"):
        evaluate_h36m(predicted, ground_truth, actions=["Walking", "Dancing", "Walking"])


def test_image_to_camera_inverts_the_projection():
    rng = np.random.default_rng(RNG_SEED)
    camera = _pose(rng, num_samples=2)  # (2, 17, 3) mm
    focal = np.array([[1145.0, 1144.0], [1150.0, 1149.5]])
    principal_point = np.array([[512.5, 515.0], [508.0, 508.8]])
    pixels = camera[..., :2] / camera[..., 2:] * focal[:, None] + principal_point[:, None]
    root_depth = camera[:, 0, 2]
    relative_depth = camera[..., 2] - root_depth[:, None]
    relative_depth[:, 0] = 123.0  # whatever the model says about the root's own depth is ignored
    back = image_to_camera(pixels, relative_depth, root_depth, focal, principal_point)
    np.testing.assert_allclose(back, camera, rtol=1e-12)
    kept = image_to_camera(pixels[0], relative_depth[0], root_depth[0], focal[0], principal_point[0], root_index=None)
    assert kept[0, 2] == pytest.approx(root_depth[0] + 123.0)


def test_action_from_file_name():
    assert action_from_file_name("s_09_act_02_subact_01_ca_01/s_09_act_02_subact_01_ca_01_000001.jpg") == "Directions"
    assert action_from_file_name("s_11_act_16_subact_02_ca_04_000321.jpg") == "WalkTogether"
    with pytest.raises(ValueError, match="act_NN"):
        action_from_file_name("frame_0001.jpg")
