"""The web demo's "detect persons" choice, with a fake detector that finds known boxes."""

import cv2
import numpy as np
import pytest

from locllm.engine import Localizer
from locllm.serve.app import MAX_PERSONS, build_app, localize_request, render_examples

from ..engine.conftest import tiny_checkpoint


class FakeDetector:
    """Finds ``boxes`` (N, 4) with ``scores`` (N,) in any image."""

    def __init__(self, boxes, scores=None):
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.ones(len(self.boxes)) if scores is None else np.asarray(scores, dtype=np.float64)

    def detect(self, image):
        return self.boxes, self.scores


def with_detector(localizer: Localizer, detector: FakeDetector) -> Localizer:
    """The localizer as ``Localizer.from_pretrained(..., detector=PATH)`` gives it: ``detector`` and ``detect``."""
    localizer.detector, localizer.detect = detector, detector.detect
    return localizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_detect"))


@pytest.fixture
def localizer(checkpoint):
    return Localizer.from_pretrained(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    image, boxes = render_examples()["SynthPose: 2 persons (easy)"]
    path = tmp_path_factory.mktemp("scene") / "two_persons.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path, boxes


def test_detected_persons_equal_typed_boxes(localizer, scene):
    path, boxes = scene
    typed = localize_request(localizer, path, boxes)
    found = np.array([[float(v) for v in line.split(",")] for line in boxes.splitlines()])
    detected = localize_request(with_detector(localizer, FakeDetector(found[::-1], [0.5, 0.9])), path,
                                "1,1,5,5", detect=True)  # the typed box is not used; the surer first
    assert detected.report == {**typed.report, "ms_per_person": detected.report["ms_per_person"]}
    assert detected.status.startswith("2 persons")


def test_nobody_found_is_a_result_not_a_crash(localizer, scene):
    result = localize_request(with_detector(localizer, FakeDetector(np.zeros((0, 4)))), scene[0], "", detect=True)
    assert result.status == "no person found" and result.rows == []
    assert result.report["persons"] == 0 and result.report["images"][0]["persons"] == []
    assert result.picture.ndim == 3


def test_at_most_max_persons_are_asked(localizer, scene):
    many = FakeDetector(np.tile([[10, 10, 40, 80]], (MAX_PERSONS + 5, 1)), np.linspace(0, 1, MAX_PERSONS + 5))
    result = localize_request(with_detector(localizer, many), scene[0], "", "nose", detect=True)
    assert result.report["persons"] == MAX_PERSONS


def test_without_a_detector_the_choice_is_refused_and_not_offered(localizer, scene):
    with pytest.raises(ValueError, match="no person detector"):
        localize_request(localizer, scene[0], "", detect=True)

    def checkboxes(app):
        return [c for c in app.config["components"] if c.get("props", {}).get("elem_id") == "detect"]

    assert checkboxes(build_app(localizer)) == []
    assert len(checkboxes(build_app(with_detector(localizer, FakeDetector([[0, 0, 9, 9]]))))) == 1
