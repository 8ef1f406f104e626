"""The person detector (tiny random YOLOS and RT-DETR, loaded by path; weights cannot be downloaded here) and the
one call built on it: ``Localizer.from_pretrained(ckpt, detector=...)`` -> ``localize(image)``, ``locllm predict
--detector``, ``locllm eval --boxes detector:PATH``. A fake detector with known boxes drives the end-to-end
assertions."""

import json

import cv2
import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForObjectDetection,
    RTDetrConfig,
    RTDetrImageProcessorPil,
    RTDetrResNetConfig,
    YolosConfig,
    YolosImageProcessorPil,
)

from locllm.cli import main
from locllm.data.synth import generate_synthpose
from locllm.engine import Detections, Localizer, PersonDetector
from locllm.engine.detection import non_maximum_suppression

from .test_localizer import BOXES, IMAGE

LABELS = {0: "person", 1: "dog"}


def tiny_detector(folder, architecture: str = "yolos", labels=None, confident: bool = False):
    """A tiny random object detector saved with its image processor, as a downloaded checkpoint would be.
    ``confident``: its person class scores near 1 for every query (random boxes)."""
    labels = labels or LABELS
    common = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}
    torch.manual_seed(0)
    if architecture == "yolos":
        config = YolosConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                             image_size=[64, 64], patch_size=16, num_detection_tokens=10, **common)
        processor = YolosImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    else:
        backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                      layer_type="basic", out_features=["stage2", "stage3", "stage4"])
        config = RTDetrConfig(backbone_config=backbone, encoder_hidden_dim=16, encoder_in_channels=[16, 16, 16],
                              encoder_layers=1, encoder_ffn_dim=16, encoder_attention_heads=2, d_model=16,
                              num_queries=10, decoder_in_channels=[16, 16, 16], decoder_layers=1, decoder_ffn_dim=16,
                              decoder_attention_heads=2, decoder_n_points=2, num_denoising=0, **common)
        processor = RTDetrImageProcessorPil(size={"height": 64, "width": 64})
    model = AutoModelForObjectDetection.from_config(config)
    if architecture == "yolos":
        with torch.no_grad():  # zero detection tokens would make every query answer the same class
            model.vit.embeddings.detection_tokens.normal_(std=1.0)
            model.class_labels_classifier.layers[-1].weight.normal_(std=1.0)
            if confident:
                model.class_labels_classifier.layers[-1].bias[0] = 100.0  # person wins every query's softmax
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    return {architecture: tiny_detector(tmp_path_factory.mktemp(architecture), architecture)
            for architecture in ("yolos", "rt_detr")}


@pytest.fixture(scope="module")
def confident_detector(tmp_path_factory):
    return tiny_detector(tmp_path_factory.mktemp("confident"), "yolos", confident=True)


class FakeDetector:
    """Known boxes for any image, counting its calls: what the localizer does with a detector's answer."""

    def __init__(self, boxes, scores=None):
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.ones(len(self.boxes)) if scores is None else np.asarray(scores, dtype=np.float64)
        self.calls = 0

    def detect(self, image) -> Detections:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        self.calls += 1
        return Detections(self.boxes, self.scores)


# ---------------------------------------------------------------------------- the detector


@pytest.mark.parametrize("architecture", ["yolos", "rt_detr"])
def test_tiny_detectors_load_by_path_and_give_the_processors_person_boxes(detectors, architecture):
    detector = PersonDetector.from_pretrained(detectors[architecture], device="cpu", score_threshold=0.0,
                                              nms_iou=1.0, min_box_size=0.0)
    boxes, scores = detector.detect(IMAGE)
    with torch.no_grad():
        outputs = detector.model(**detector.image_processor(images=[IMAGE], return_tensors="pt"))
    raw = detector.image_processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(120, 90)])[0]
    person = (raw["labels"] == 0).numpy()
    corners = raw["boxes"].numpy()[person][np.argsort(-raw["scores"].numpy()[person], kind="stable")]
    assert len(boxes) == person.sum() >= 1 and boxes.shape[1] == 4
    np.testing.assert_allclose(boxes[:, :2], corners[:, :2], atol=1e-4)  # x0, y0 -> x, y
    np.testing.assert_allclose(boxes[:, 2:], corners[:, 2:] - corners[:, :2], atol=1e-4)  # x1, y1 -> w, h
    assert (np.diff(scores) <= 0).all() and ((scores >= 0) & (scores <= 1)).all()
    assert len(detector.detect(IMAGE)[0]) == len(boxes)  # deterministic
    none = PersonDetector.from_pretrained(detectors[architecture], device="cpu", score_threshold=1.01)
    assert none.detect(IMAGE).boxes.shape == (0, 4)  # nobody found: an empty answer, not a crash


def test_person_class_threshold_nms_size_and_count(detectors, monkeypatch):
    """What is kept of the processor's detections, on known ones: persons only, NMS, min size, best first, a cap."""
    detector = PersonDetector.from_pretrained(detectors["yolos"], device="cpu", score_threshold=0.3, nms_iou=0.5,
                                              min_box_size=8, max_persons=None)
    found = {  # x0, y0, x1, y1
        "E": (0, [70, 10, 120, 90], 0.6),
        "A": (0, [10, 10, 60, 110], 0.9),
        "dog": (1, [0, 0, 50, 50], 0.95),
        "F": (0, [0, 60, 30, 119], 0.7),
        "A twin": (0, [12, 12, 62, 112], 0.8),  # IoU 0.85 with A: suppressed
        "thin": (0, [100, 20, 104, 80], 0.85),  # 4 px wide: dropped
    }
    asked = {}

    def post_process(outputs, threshold, target_sizes):
        asked.update(threshold=threshold, target_sizes=target_sizes)
        return [{"labels": torch.tensor([v[0] for v in found.values()]),
                 "boxes": torch.tensor([v[1] for v in found.values()], dtype=torch.float32),
                 "scores": torch.tensor([v[2] for v in found.values()])}]

    monkeypatch.setattr(detector.image_processor, "post_process_object_detection", post_process)
    boxes, scores = detector.detect(IMAGE)
    assert asked == {"threshold": 0.3, "target_sizes": [(120, 90)]}
    np.testing.assert_allclose(boxes, [[10, 10, 50, 100], [0, 60, 30, 59], [70, 10, 50, 80]])
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6], rtol=1e-6)
    detector.max_persons = 2
    assert len(detector.detect(IMAGE).boxes) == 2


def test_non_maximum_suppression():
    corners = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 5], [20, 20, 30, 30]], dtype=float)
    # IoU with the first: 9/11, 1/2, 0
    assert non_maximum_suppression(corners, 0.5).tolist() == [0, 2, 3]
    assert non_maximum_suppression(corners, 0.4).tolist() == [0, 3]
    assert non_maximum_suppression(corners[:0], 0.5).tolist() == []


def test_a_folder_that_is_not_a_person_detector_is_one_clear_error(char_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="'locllm' checkpoint is not an object detector"):
        PersonDetector.from_pretrained(char_checkpoint)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a detector checkpoint"):
        PersonDetector.from_pretrained(tmp_path / "empty")
    animals = tiny_detector(tmp_path / "animals", labels={0: "cat", 1: "dog"})
    with pytest.raises(ValueError, match="no 'person' class among the detector's labels \\('cat', 'dog'\\)"):
        PersonDetector.from_pretrained(animals)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        PersonDetector.from_pretrained(tmp_path / "missing" / "detector")


# ---------------------------------------------------------------------------- one call


def test_localize_without_boxes_asks_the_detector(char_checkpoint):
    plain = Localizer.from_pretrained(char_checkpoint, device="cpu")
    fake = FakeDetector(BOXES, [0.9, 0.8, 0.7])
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu", detector=fake)
    boxes, scores = localizer.detect(IMAGE)
    assert boxes.tolist() == BOXES and scores.tolist() == [0.9, 0.8, 0.7]
    detected, given = localizer.localize(IMAGE, keypoints=["nose", "neck"]), plain.localize(IMAGE, BOXES, ["nose", "neck"])
    assert len(detected) == 3
    for a, b in zip(detected, given, strict=True):
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        assert a.answers == b.answers
    calls = fake.calls
    explicit = localizer.localize(IMAGE, [[0, 0, 20, 20]], ["nose"])  # given boxes win
    assert fake.calls == calls and [p.box.tolist() for p in explicit] == [[0, 0, 20, 20]]
    mixed = localizer.localize_many([IMAGE, IMAGE], [None, [[0, 0, 20, 20]]], ["nose"])
    assert [len(persons) for persons in mixed] == [3, 1] and fake.calls == calls + 1


def test_a_detector_that_finds_nobody_gives_no_person(char_checkpoint):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu", detector=FakeDetector(np.zeros((0, 4))))
    assert localizer.localize(IMAGE, keypoints=["nose"]) == []
    assert localizer.localize_many([IMAGE, IMAGE], keypoints=["nose"]) == [[], []]


def test_detect_without_a_detector_says_how_to_get_one(char_checkpoint):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    with pytest.raises(ValueError, match="no person detector.*detector=PATH"):
        localizer.detect(IMAGE)
    assert [p.box.tolist() for p in localizer.localize(IMAGE, keypoints=["nose"])] == [[0, 0, 90, 120]]


def test_from_pretrained_loads_a_detector_by_path(char_checkpoint, confident_detector):
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu", detector=confident_detector)
    assert isinstance(localizer.detector, PersonDetector)
    boxes, scores = localizer.detect(IMAGE)
    assert len(boxes) >= 1 and (scores > 0.5).all()
    persons = localizer.localize(IMAGE, keypoints=["nose"])
    assert [p.box.tolist() for p in persons] == boxes.tolist()


# ---------------------------------------------------------------------------- the command line


def test_predict_with_a_detector(char_checkpoint, confident_detector, detectors, tmp_path, capsys):
    image = tmp_path / "group.png"
    cv2.imwrite(str(image), IMAGE)
    out = tmp_path / "out.json"
    common = [str(image), "--checkpoint", str(char_checkpoint), "--keypoints", "nose", "--device", "cpu"]
    assert main(["predict", *common, "--detector", str(confident_detector), "--json", str(out)]) == 0
    expected = PersonDetector.from_pretrained(confident_detector, device="cpu").detect(IMAGE[..., ::-1].copy())
    persons = json.loads(out.read_text())["images"][0]["persons"]
    np.testing.assert_allclose([p["box"] for p in persons], expected.boxes, atol=0.01)
    assert main(["predict", *common, "--detector", str(confident_detector), "--boxes", "1,2,30,40",
                 "--json", str(out), "--overwrite"]) == 0  # given boxes win
    assert [p["box"] for p in json.loads(out.read_text())["images"][0]["persons"]] == [[1, 2, 30, 40]]
    capsys.readouterr()
    # the random RT-DETR scores every query about 0.33, under the default threshold of 0.5
    assert main(["predict", *common, "--detector", str(detectors["rt_detr"]), "--json", str(out), "--overwrite"]) == 0
    assert "group.png: no person found" in capsys.readouterr().out
    assert json.loads(out.read_text())["images"][0]["persons"] == []
    assert main(["predict", *common, "--detector", str(char_checkpoint)]) == 1
    assert "is not an object detector" in capsys.readouterr().err


def test_eval_with_detector_boxes_caches_them(char_checkpoint, confident_detector, tmp_path, monkeypatch, capsys):
    generate_synthpose(tmp_path / "synth", num_images=4, seed=3, size=96, persons=(1, 2), fmt="coco",
                       val_fraction=0.5, difficulty="easy")
    annotation, images = tmp_path / "synth" / "annotations" / "val.json", tmp_path / "synth" / "images"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    command = ["eval", "--checkpoint", str(char_checkpoint), "--dataset", "coco", "--ann", str(annotation),
               "--images", str(images), "--boxes", f"detector:{confident_detector}", "--device", "cpu",
               "--no-progress", "--json", str(tmp_path / "metrics.json")]
    assert main(command) == 0
    assert "detector boxes: wrote" in capsys.readouterr().err
    [cached] = (tmp_path / "cache" / "locllm" / "detections").iterdir()
    detections = json.loads(cached.read_text())
    image_ids = {image["id"] for image in json.loads(annotation.read_text())["images"]}
    assert detections and {d["image_id"] for d in detections} == image_ids
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["protocol"]["boxes"] == "detections" and result["protocol"]["detections_file"] == str(cached)
    assert result["counts"]["persons"] == len(detections)

    def no_second_detection(*args, **kwargs):
        raise AssertionError("the cached detections should have been reused")

    monkeypatch.setattr(PersonDetector, "from_pretrained", no_second_detection)
    assert main(command) == 0
    assert f"detector boxes: reused {cached}" in capsys.readouterr().err
