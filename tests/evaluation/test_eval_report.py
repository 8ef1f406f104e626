"""The printed report of ``locllm eval`` (locllm.cli.eval_report): each metric object's numbers in their short form."""

from types import SimpleNamespace

import numpy as np

from locllm.cli.eval_report import format_report
from locllm.evaluation import H36mMPJPEMetric, MpiiGroundTruth, MpiiPCKhMetric, PCKMetric


def _result(dataset, metrics, protocol):
    return {"dataset": dataset, "annotation_file": "val.json", "checkpoint": "ckpt", "mode": "fast",
            "protocol": protocol, "metrics": metrics, "persons_resumed": 1, "persons_asked": 2, "seconds": 1.0,
            "persons_per_second": 2.0,
            "counts": {"persons": 3, "persons_without_answer": {"unreadable_image": 1, "unusable_box": 0},
                       "unreadable_images": 1, "keypoints_asked": 6, "keypoints_unparsed": 1,
                       "skipped_annotations": {"no keypoints": 4}}}


def test_report_of_a_pck_metric():
    truth = np.zeros((2, 2, 2))
    metric = PCKMetric(["neck", "crown"], truth=truth, labelled=np.ones((2, 2), bool),
                       normalizers=np.array([100.0, 100.0]), mean_pose=truth)
    metrics = metric.compute(truth + 5.0)
    report = format_report(_result("custom", metrics, {"boxes": "gt"}), SimpleNamespace(metric=metric))
    assert report.splitlines() == [
        "PCK of your own keypoints: val.json",
        "checkpoint ckpt, fast decoding; ground-truth boxes (the reference's protocol)",
        "  PCK@0.1 1.00  PCK@0.05 0.00  (4 labelled keypoints; of the crop side)",
        "  image-blind mean pose of these crops: PCK@0.1 1.00  PCK@0.05 1.00",
        "  PCK@0.1 per keypoint: neck 1.00  crown 1.00",
        "  PCK@0.05 per keypoint: neck 0.00  crown 0.00",
        "persons 3 (1 from the predictions file); without an answer: 1 (1 unreadable images), 0 (unusable boxes); "
        "unparsed keypoints 1 of 6",
        "annotations skipped while loading: 4 no keypoints",
        "2 persons asked in 1.0 s (2.00 persons/s on this process)",
    ]


def test_report_of_mpii_and_h36m_metrics():
    joints = np.arange(2 * 16 * 2, dtype=np.float64).reshape(2, 16, 2)
    mpii = MpiiPCKhMetric(MpiiGroundTruth(joints, np.zeros((2, 16), bool), np.array([[[0, 0], [30, 30]]] * 2)))
    report = format_report(_result("mpii", mpii.compute(joints), {"boxes": "annotated"}), SimpleNamespace(metric=mpii))
    assert "  PCKh@0.5: head 100.00  shoulder 100.00" in report
    assert "  PCKh@0.1 novel keypoints: pelvis 100.00  thorax 100.00  neck 100.00  head top 100.00" in report

    poses = np.random.default_rng(0).normal(size=(2, 17, 3))
    h36m = H36mMPJPEMetric(poses, ["Walking", "Eating"], root_index=0)
    report = format_report(_result("h36m", h36m.compute(poses), {"boxes": "clipped"}), SimpleNamespace(metric=h36m))
    assert "  MPJPE 0.00 mm  PA-MPJPE 0.00 mm  (2 samples)" in report
    assert "    Walking: MPJPE 0.00  PA-MPJPE 0.00" in report
