"""The metric objects (locllm.evaluation.metrics) on hand-made cases: what each adds to its pure function."""

import json

import numpy as np
import pytest

from locllm.data.datasets import load_coco
from locllm.evaluation import (
    CocoKeypointMetric,
    H36mMPJPEMetric,
    MpiiGroundTruth,
    MpiiPCKhMetric,
    PCKMetric,
    evaluate_coco_keypoints,
    evaluate_h36m,
    oks_nms,
    pck,
    rescore_instances,
)
from locllm.keypoints import COCO_KEYPOINTS, MPII_KEYPOINTS, PAPER_HELD_OUT

# ------------------------------------------------------------------------------------------------ PCK


def _pck_case():
    """Two persons of three keypoints, crop sides 100 and 200: errors 0.04, 0.08, 0.2 and 0.02, NaN, 0.3."""
    truth = np.zeros((2, 3, 2))
    predicted = np.array([[[4.0, 0], [8.0, 0], [20.0, 0]], [[4.0, 0], [np.nan, np.nan], [60.0, 0]]])
    labelled = np.array([[True, True, True], [True, True, False]])
    return predicted, truth, labelled, np.array([100.0, 200.0])


def test_pck_metric_counts_labelled_keypoints_by_name():
    predicted, truth, labelled, sides = _pck_case()
    metrics = PCKMetric(["a", "b", "c"], truth=truth, labelled=labelled, normalizers=sides).compute(predicted)
    assert list(metrics) == ["pck@0.1", "pck@0.05", "num_keypoints", "per_keypoint"]
    assert metrics["num_keypoints"] == 5
    assert metrics["pck@0.1"] == pytest.approx(3 / 5)  # 0.04, 0.08, 0.02; the NaN answer is a miss
    assert metrics["pck@0.05"] == pytest.approx(2 / 5)
    assert metrics["per_keypoint"]["pck@0.1"] == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    assert metrics["per_keypoint"]["pck@0.05"] == pytest.approx({"a": 1.0, "b": 0.0, "c": 0.0})


def test_pck_metric_is_the_pck_function_with_names_and_a_mean_pose_baseline():
    predicted, truth, labelled, sides = _pck_case()
    mean_pose = np.zeros_like(truth)  # answers the truth everywhere
    metrics = PCKMetric(["a", "b", "c"], truth=truth, labelled=labelled, normalizers=sides, thresholds=(0.1,),
                        mean_pose=mean_pose).compute(predicted)
    plain = pck(predicted, truth, labelled, sides, (0.1,))
    assert metrics["pck@0.1"] == plain["pck@0.1"] and metrics["num_keypoints"] == plain["num_keypoints"]
    assert list(metrics["per_keypoint"]["pck@0.1"].values()) == plain["per_keypoint"]["pck@0.1"]
    assert metrics["mean_pose_baseline"] == {"pck@0.1": 1.0}


def test_pck_metric_needs_a_name_per_keypoint():
    predicted, truth, labelled, sides = _pck_case()
    with pytest.raises(ValueError):
        PCKMetric(["a", "b"], truth=truth, labelled=labelled, normalizers=sides).compute(predicted)


# ----------------------------------------------------------------------------------------------- COCO


@pytest.fixture
def coco_ground_truth(tmp_path):
    """One image, two people far apart, every keypoint labelled."""
    rng = np.random.default_rng(0)
    annotations = []
    for annotation_id, (x, y) in enumerate([(10, 10), (200, 200)], start=1):
        xy = rng.uniform([x, y], [x + 80, y + 160], size=(17, 2))
        keypoints = np.column_stack([xy, np.full(17, 2.0)])
        annotations.append({"id": annotation_id, "image_id": 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [x, y, 80, 160], "area": 80.0 * 160, "num_keypoints": 17,
                            "keypoints": keypoints.reshape(-1).tolist()})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 400, "height": 400}], "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": COCO_KEYPOINTS.names, "skeleton": []}]}))
    return load_coco(path), annotations


def _results(annotations, keypoint_score, box_score, score=0.0, shift=0.0):
    results = []
    for annotation in annotations:
        keypoints = np.reshape(annotation["keypoints"], (-1, 3)).copy()
        keypoints[:, :2] += shift
        keypoints[:, 2] = keypoint_score
        results.append({"image_id": 1, "category_id": 1, "keypoints": keypoints.reshape(-1).tolist(), "score": score,
                        "bbox": annotation["bbox"], "box_score": box_score})
    return results


def test_coco_metric_with_detections_scores_persons_by_keypoints_and_box(coco_ground_truth):
    coco, annotations = coco_ground_truth
    # Each person found twice; the second copy is a few pixels off (OKS about 0.85 with the truth) and comes with
    # a higher given score, but lower keypoint and box scores. Scored as given it ranks first and costs AP at
    # the strict OKS thresholds; the detection protocol scores it 0.5 x 0.3 < 0.9 x 0.8 and ranks it last.
    results = _results(annotations, 0.9, 0.8) + _results(annotations, 0.5, 0.3, score=1.0, shift=5.0)
    detections = CocoKeypointMetric(coco, boxes="detections")
    assert detections.compute(results)["AP"] == pytest.approx(1.0)
    assert CocoKeypointMetric(coco, boxes="gt").compute(results)["AP"] < 0.9
    assert detections.compute(results) == evaluate_coco_keypoints(
        coco, oks_nms(rescore_instances(results, use_box_score=True, keypoint_score_threshold=0.2),
                      COCO_KEYPOINTS.sigmas, 0.9), boxes="detections")
    assert detections.protocol()["oks_nms"] == 0.9
    assert CocoKeypointMetric(coco).protocol() == {"instance_score": "mean of all keypoint scores (the reference)",
                                                   "oks_nms": None}


def test_coco_metric_scores_held_out_keypoints_on_their_own(coco_ground_truth):
    coco, annotations = coco_ground_truth
    held_out = list(PAPER_HELD_OUT)
    results = _results(annotations, 1.0, 1.0)
    for result in results:
        keypoints = np.reshape(result["keypoints"], (-1, 3))
        keypoints[[COCO_KEYPOINTS.index(n) for n in held_out], :2] += 500.0  # every unseen type missed
        result["keypoints"] = keypoints.reshape(-1).tolist()
    metrics = CocoKeypointMetric(coco, held_out=held_out).compute(results)
    novel = metrics["novel_keypoints"]
    assert novel["held_out"] == held_out
    assert novel["seen"]["AP"] == pytest.approx(1.0) and novel["unseen"]["AP"] == pytest.approx(0.0)
    assert sorted(novel["seen"]["keypoint_indices"] + novel["unseen"]["keypoint_indices"]) == list(range(17))


# ------------------------------------------------------------------------------------ MPII, Human3.6M


def test_mpii_metric_adds_per_joint_and_the_reference_mean():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 200, size=(3, 1, 2))
    ground_truth = MpiiGroundTruth(joints=rng.uniform(50, 250, size=(3, 16, 2)), missing=np.zeros((3, 16), bool),
                                   head_boxes=np.concatenate([corners, corners + 30.0], axis=1))
    metrics = MpiiPCKhMetric(ground_truth).compute(ground_truth.joints.copy())
    for key in ("PCKh@0.5", "PCKh@0.1"):
        assert metrics[key]["mean"] == 100.0
        assert list(metrics["per_joint"][key]) == MPII_KEYPOINTS.names
        assert set(metrics["per_joint"][key].values()) == {100.0}
    assert metrics["reference_Mean@0.1 (threshold 0.11)"] == 100.0


def test_h36m_metric_is_evaluate_h36m_with_its_ground_truth():
    rng = np.random.default_rng(0)
    ground_truth = rng.normal(size=(4, 17, 3)) * 200
    predicted = ground_truth + rng.normal(size=ground_truth.shape) * 10
    actions = ["Walking", "Walking", "Eating", "Eating"]
    metrics = H36mMPJPEMetric(ground_truth, actions, root_index=0).compute(predicted)
    assert metrics == evaluate_h36m(predicted, ground_truth, actions, root_index=0)
    assert set(metrics["MPJPE_per_action"]) == {"Walking", "Eating"}


def test_every_metric_object_is_called_the_same_way():
    import inspect

    from locllm.evaluation import KeypointMetric

    for metric in (CocoKeypointMetric, MpiiPCKhMetric, H36mMPJPEMetric, PCKMetric):
        assert issubclass(metric, KeypointMetric)
        assert list(inspect.signature(metric.compute).parameters) == ["self", "predictions"]
