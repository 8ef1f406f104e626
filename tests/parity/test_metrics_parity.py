"""Our metrics against what the reference's evaluation code computed (reference-golden/metrics, /parse).

The parse recordings hold the reference's parsed predictions in image coordinates (after its answer
parsing and inverse crop), so these tests feed those straight into the metrics.
"""

import json

import numpy as np
import pytest

from locllm.evaluation import (
    COCO_STAT_NAMES,
    MpiiGroundTruth,
    action_from_file_name,
    evaluate_coco_keypoints,
    evaluate_h36m,
    evaluate_mpii_pckh,
    image_to_camera,
    load_mpii_ground_truth,
    pckh_per_joint,
    procrustes_align,
)
from locllm.keypoints import MPII_KEYPOINTS

TOLERANCE = 1e-3
# The reference prints these groups; Head (head top) and the novel joints come out masked.
REFERENCE_GROUPS = {"Shoulder": "shoulder", "Elbow": "elbow", "Wrist": "wrist", "Hip": "hip", "Knee": "knee",
                    "Ankle": "ankle"}
H36M_DEPTH_RANGE_MM = 2000.0  # the 3D answer's z is depth / 2000 + 0.5; the recording holds z - 0.5


@pytest.fixture(scope="module")
def metrics(golden_dir):
    return json.loads((golden_dir / "metrics" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def parsing(golden_dir):
    return json.loads((golden_dir / "parse" / "answer_parsing.json").read_text())


def _assert_reference_pckh_table(report, name_value):
    """Our tables against the reference's printed OrderedDict (its Mean@0.1 thresholds at 0.11)."""
    for reference_name, group in REFERENCE_GROUPS.items():
        assert report["PCKh@0.5"][group] == pytest.approx(name_value[reference_name], abs=TOLERANCE)
    assert report["PCKh@0.5"]["mean_coco_joints"] == pytest.approx(name_value["Mean"], abs=TOLERANCE)
    assert report["PCKh@0.11"]["mean_coco_joints"] == pytest.approx(name_value["Mean@0.1"], abs=TOLERANCE)


def test_mpii_pckh_matches_reference_on_chosen_head_size_fractions(metrics):
    recorded = metrics["mpii_pckh"]
    mat = recorded["gt_valid_mat"]
    ground_truth = MpiiGroundTruth.from_matlab_arrays(mat["pos_gt_src"], mat["jnt_missing"], mat["headboxes_src"])
    predictions = np.array(recorded["preds_0based"])
    report = evaluate_mpii_pckh(predictions, ground_truth, thresholds=(0.5, 0.1, 0.11))

    _assert_reference_pckh_table(report, recorded["name_value"])
    assert report["PCKh@0.5"]["mean_coco_joints"] == pytest.approx(52.94117647058824, abs=TOLERANCE)
    assert recorded["mean"] == pytest.approx(recorded["name_value"]["Mean"])

    # Per joint (the reference masks 6..9): from the recorded error fractions, which include exactly 0.5.
    fractions = np.array(recorded["error_fraction_of_0.6*headsize"])  # (N, 16)
    annotated = ~ground_truth.missing
    expected = 100.0 * ((fractions <= 0.5) & annotated).sum(0) / annotated.sum(0)
    np.testing.assert_allclose(pckh_per_joint(predictions, ground_truth), expected, atol=TOLERANCE)
    # The standard mean: every joint but pelvis and thorax, weighted by annotated counts.
    standard = np.setdiff1d(np.arange(16), [MPII_KEYPOINTS.index("pelvis"), MPII_KEYPOINTS.index("thorax")])
    expected_mean = 100.0 * ((fractions <= 0.5) & annotated)[:, standard].sum() / annotated[:, standard].sum()
    assert report["PCKh@0.5"]["mean"] == pytest.approx(expected_mean, abs=TOLERANCE)
    assert report["PCKh@0.5"]["head"] == pytest.approx(expected[MPII_KEYPOINTS.index("head top")], abs=TOLERANCE)


def test_mpjpe_and_pa_mpjpe_match_reference(metrics):
    recorded = metrics["h36m"]
    predicted, ground_truth = np.array(recorded["pred_mm"]), np.array(recorded["gt_mm"])
    report = evaluate_h36m(predicted, ground_truth)
    assert report["MPJPE"] == pytest.approx(174.53652468871806, abs=TOLERANCE)
    assert report["PA-MPJPE"] == pytest.approx(33.77029098383368, abs=TOLERANCE)
    assert report["MPJPE"] == pytest.approx(recorded["MPJPE"], abs=TOLERANCE)
    assert report["PA-MPJPE"] == pytest.approx(recorded["PA_MPJPE"], abs=TOLERANCE)

    samples = recorded["per_sample"]
    per_joint = np.mean([s["mpjpe_per_joint"] for s in samples], axis=0)
    pa_per_joint = np.mean([s["pa_mpjpe_per_joint"] for s in samples], axis=0)
    np.testing.assert_allclose(report["MPJPE_per_joint"], per_joint, atol=TOLERANCE)
    np.testing.assert_allclose(report["PA-MPJPE_per_joint"], pa_per_joint, atol=TOLERANCE)

    root_relative_pred = np.array([s["pred_root_rel"] for s in samples])
    root_relative_gt = np.array([s["gt_root_rel"] for s in samples])
    np.testing.assert_allclose(root_relative_pred, predicted - predicted[:, :1], atol=TOLERANCE)
    np.testing.assert_allclose(root_relative_gt, ground_truth - ground_truth[:, :1], atol=TOLERANCE)
    aligned = procrustes_align(root_relative_pred, root_relative_gt)
    np.testing.assert_allclose(aligned, np.array([s["aligned_pred"] for s in samples]), atol=TOLERANCE)
    np.testing.assert_allclose(aligned[0], recorded["compute_similarity_transform_sample0"], atol=TOLERANCE)


def test_coco_stats_from_recorded_parsed_predictions(golden_dir, parsing):
    recorded = parsing["coco"]
    report = evaluate_coco_keypoints(golden_dir / "fixtures" / "coco" / "annotations" / "coco_person.json",
                                     recorded["pred_kpt_json"], boxes="gt")
    expected = recorded["cocoeval_stats(AP,AP50,AP75,APm,APl,AR,AR50,AR75,ARm,ARl)"]
    assert [report[name] for name in COCO_STAT_NAMES] == pytest.approx(expected, abs=TOLERANCE)
    assert report["AP"] == pytest.approx(0.5, abs=TOLERANCE)


def test_mpii_table_from_recorded_parsed_predictions(golden_dir, parsing):
    recorded = parsing["mpii"]
    ground_truth = load_mpii_ground_truth(golden_dir / "fixtures" / "mpii" / "annot" / "gt_valid.mat")
    predictions = np.array(recorded["evaluate_input_preds(0-based image px)"])
    report = evaluate_mpii_pckh(predictions, ground_truth, thresholds=(0.5, 0.11))
    _assert_reference_pckh_table(report, recorded["PCKh_name_value"])
    assert report["PCKh@0.5"]["mean_coco_joints"] == pytest.approx(41.1764705882353, abs=TOLERANCE)
    assert recorded["PCKh_mean"] == pytest.approx(recorded["PCKh_name_value"]["Mean"])


def _h36m_camera_ground_truth(annotation, image):
    """World -> camera as the reference's dataset does it: R (x - t), R and t in float32, joints in mm."""
    rotation = np.array(image["cam_param"]["R"], dtype=np.float32)
    translation = np.array(image["cam_param"]["t"], dtype=np.float32)
    world = np.array(annotation["keypoints_world"], dtype=np.float64)
    return (world - translation) @ rotation.T.astype(np.float64)


def test_h36m_errors_from_recorded_parsed_predictions(golden_dir, parsing):
    recorded = parsing["h36m"]
    fixture = json.loads((golden_dir / "fixtures" / "h36m" / "annot.json").read_text())
    predicted, ground_truth, actions = [], [], []
    for image, annotation in zip(fixture["images"], fixture["annotations"], strict=True):
        camera_gt = _h36m_camera_ground_truth(annotation, image)
        parsed = np.array(recorded["pred_kpt_pickle"][str(image["id"])])  # (17, 3): image x, y and z - 0.5
        predicted.append(image_to_camera(parsed[:, :2], parsed[:, 2] * H36M_DEPTH_RANGE_MM, camera_gt[0, 2],
                                         image["cam_param"]["f"], image["cam_param"]["c"]))
        ground_truth.append(camera_gt)
        actions.append(action_from_file_name(image["file_name"]))

    report = evaluate_h36m(np.array(predicted), np.array(ground_truth), actions=actions)
    assert report["MPJPE"] == pytest.approx(93.998306, abs=TOLERANCE)
    assert report["PA-MPJPE"] == pytest.approx(120.72324275771095, abs=TOLERANCE)
    error_x, error_y, error_z = report["MPJPE_xyz"]
    assert error_x == pytest.approx(recorded["err_x"], abs=TOLERANCE)
    assert error_y == pytest.approx(recorded["err_y"], abs=0.005)  # the reference prints y with 2 decimals
    assert error_z == pytest.approx(recorded["err_z"], abs=TOLERANCE)
    # The reference prints per-action MPJPE with 2 decimals and nan for absent actions.
    assert report["MPJPE_per_action"] == pytest.approx({"Directions": 132.72, "Discussion": 55.28}, abs=0.005)
    assert "Directions: 132.72 Discussion: 55.28 Eating: nan" in recorded["stdout"]
