"""The web demo's handler (no browser), and gradio's API endpoint through gradio_client."""

import json
import socket

import cv2
import numpy as np
import pytest

from locllm.cli import main
from locllm.engine import Localizer
from locllm.keypoints import COCO_KEYPOINTS
from locllm.serve.app import (
    DISPLAY_SIZE,
    MAX_PERSONS,
    TABLE_HEADERS,
    build_app,
    keypoint_set_choices,
    localize_request,
    parse_boxes,
    render_examples,
)
from locllm.viz import score_color

from ..engine.conftest import tiny_checkpoint

BELLY = ["belly button", "The navel, in the middle of the belly."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_serve"))


@pytest.fixture(scope="module")
def localizer(checkpoint):
    return Localizer.from_pretrained(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A bundled two-person example, written where `locllm predict` can read it: (path, boxes text)."""
    image, boxes = render_examples()["SynthPose: 2 persons (easy)"]
    path = tmp_path_factory.mktemp("scene") / "two_persons.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path, boxes


def predict_json(checkpoint, image, boxes_text, describe, tmp_path) -> dict:
    out = tmp_path / "predict.json"
    args = ["predict", str(image), "--checkpoint", str(checkpoint), "--device", "cpu", "--json", str(out),
            "--decode", "greedy"]  # the Localizer's own default, which the app under test was built with
    args += ["--boxes", boxes_text] if boxes_text else []
    for name, description in describe:
        args += ["--describe", f"{name}={description}"]
    assert main(args) == 0
    return json.loads(out.read_text())


def without_timing(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "ms_per_person"}


def test_report_equals_locllm_predict(localizer, checkpoint, scene, tmp_path):
    path, boxes = scene
    first_box = boxes.splitlines()[0]  # predict takes one typed box for all images
    result = localize_request(localizer, path, first_box, "coco", [BELLY, ["", ""]], "fast")
    expected = predict_json(checkpoint, path, first_box, [BELLY], tmp_path)
    expected["images"][0]["image"] = path.name
    assert without_timing(result.report) == without_timing(expected)
    assert result.report["ms_per_person"] > 0 and "ms per person" in result.status

    assert len(result.rows) == 18 and len(result.rows[0]) == len(TABLE_HEADERS)
    person = result.report["images"][0]["persons"][0]
    assert result.rows[-1][:5] == [1, "belly button", *person["keypoints"]["belly button"]["xy"],
                                   person["keypoints"]["belly button"]["score"]]
    assert result.picture.shape == (DISPLAY_SIZE, DISPLAY_SIZE, 3) and result.picture.dtype == np.uint8


def test_several_persons_whole_image_and_builtin_extra(localizer, scene):
    path, boxes = scene
    two = localize_request(localizer, path, boxes, "mpii", [], "reference")
    assert two.report["persons"] == 2 and two.report["mode"] == "reference"
    assert len(two.report["keypoints"]) == 16
    whole = localize_request(localizer, path, "  \n", "coco", [["neck", ""]])
    assert whole.report["images"][0]["persons"][0]["box"] == [0.0, 0.0, 256.0, 256.0]
    assert whole.report["keypoints"][-1] == "neck"  # a built-in name alone brings its own description


@pytest.mark.parametrize("change, message", [
    ({"image_path": None}, "no image"),
    ({"boxes_text": "10,20,30"}, "person box 1"),
    ({"boxes_text": "10,20,30,40\nten,20,30,40"}, "person box 2"),
    ({"extra_rows": [["tail tip", ""]]}, "unknown keypoint 'tail tip'"),
    ({"extra_rows": [["", "somewhere"]]}, "no name"),
    ({"extra_rows": [["tail tip", "x" * 5000]]}, "at most 600"),
    ({"extra_rows": [["Left_Knee", "again"]]}, "asked twice"),
    ({"keypoint_set": "no such set"}, "unknown keypoint"),
    ({"mode": "slowest"}, "mode must be one of"),
])
def test_bad_input_raises_a_readable_message(localizer, scene, change, message):
    path, boxes = scene
    request = {"image_path": path, "boxes_text": boxes, "keypoint_set": "coco", "extra_rows": [], **change}
    with pytest.raises(ValueError, match=message):
        localize_request(localizer, **request)


def test_file_that_is_not_an_image(localizer, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("not a picture")
    with pytest.raises(ValueError, match="'holiday.png' is not an image"):
        localize_request(localizer, fake)


def test_unusable_boxes_are_reported_and_the_others_answered(localizer, scene):
    path, boxes = scene
    result = localize_request(localizer, path, "10,10,0,0\nnan,1,2,3\n" + boxes)
    persons = result.report["images"][0]["persons"]
    assert persons[0]["error"] and persons[1]["error"] and persons[2]["error"] is None
    assert "No answer for person 1" in result.status and "zero or negative area" in result.status
    assert "person 2" in result.status and "non-finite" in result.status


def test_helpers():
    assert parse_boxes("") is None and parse_boxes("1,2,3,4\n\n5,6,7,8").shape == (2, 4)
    assert score_color(0.0) == (230, 40, 40) and score_color(1.0) == (40, 200, 80)
    first, second = render_examples(), render_examples()
    assert list(first) == list(second) and all(np.array_equal(first[k][0], second[k][0]) for k in first)


def test_checkpoint_keypoints_are_offered_when_they_are_not_a_builtin_set(localizer, scene):
    builtin = Localizer.from_model(localizer.model, localizer.processor.tokenizer)
    assert [value for _, value in keypoint_set_choices(builtin)] == ["coco", "mpii", "h36m", "extra"]
    coco_words = Localizer.from_model(localizer.model, localizer.processor.tokenizer, descriptions=dict.fromkeys(COCO_KEYPOINTS.names, "."))
    assert keypoint_set_choices(coco_words) == keypoint_set_choices(builtin)
    own = Localizer.from_model(localizer.model, localizer.processor.tokenizer, descriptions={
        "belly button": BELLY[1], "nose": "The tip of the nose."})
    label, value = keypoint_set_choices(own)[-1]
    assert label == "this checkpoint's keypoints (2)" and value == "belly button,nose"
    result = localize_request(own, scene[0], scene[1], value, None, "fast")
    assert [row[1] for row in result.rows[:2]] == ["belly button", "nose"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # starts a gradio server
def test_api_endpoint_with_gradio_client(localizer, scene, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from locllm.serve import build_app

    path, boxes = scene
    app = build_app(localizer)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, ssr_mode=False,
               quiet=True)
    try:
        client = Client(app.local_url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)
        extra = {"headers": ["name", "description"], "data": [BELLY]}
        picture, table, report_json, status = client.predict(handle_file(str(path)), boxes, "coco", extra, "fast",
                                                             api_name="/localize")
        expected = localize_request(localizer, path, boxes, "coco", [BELLY], "fast")
        assert without_timing(json.loads(report_json)) == without_timing(expected.report)
        assert cv2.imread(picture).shape == expected.picture.shape
        assert table["data"][0][:2] == [1, "nose"] and "2 persons" in status

        with pytest.raises(AppError, match="unknown keypoint 'tail tip'"):
            client.predict(handle_file(str(path)), boxes, "coco", {"headers": ["name", "description"],
                                                                   "data": [["tail tip", ""]]}, "fast",
                           api_name="/localize")
        _, _, after_error, _ = client.predict(handle_file(str(path)), "", "coco", extra, "fast", api_name="/localize")
        assert json.loads(after_error)["persons"] == 1  # the server keeps serving
    finally:
        app.close()


# The "detect persons" choice, with a fake detector that finds known boxes.

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


@pytest.fixture
def bare_localizer(checkpoint):
    """A localizer of its own, which a test may give a detector."""
    return Localizer.from_pretrained(checkpoint, device="cpu")


def test_detected_persons_equal_typed_boxes(bare_localizer, scene):
    path, boxes = scene
    typed = localize_request(bare_localizer, path, boxes)
    found = np.array([[float(v) for v in line.split(",")] for line in boxes.splitlines()])
    detected = localize_request(with_detector(bare_localizer, FakeDetector(found[::-1], [0.5, 0.9])), path,
                                "1,1,5,5", detect=True)  # the typed box is not used; the surer first
    assert detected.report == {**typed.report, "ms_per_person": detected.report["ms_per_person"]}
    assert detected.status.startswith("2 persons")


def test_nobody_found_is_a_result_not_a_crash(bare_localizer, scene):
    result = localize_request(with_detector(bare_localizer, FakeDetector(np.zeros((0, 4)))), scene[0], "", detect=True)
    assert result.status == "no person found" and result.rows == []
    assert result.report["persons"] == 0 and result.report["images"][0]["persons"] == []
    assert result.picture.ndim == 3


def test_at_most_max_persons_are_asked(bare_localizer, scene):
    many = FakeDetector(np.tile([[10, 10, 40, 80]], (MAX_PERSONS + 5, 1)), np.linspace(0, 1, MAX_PERSONS + 5))
    result = localize_request(with_detector(bare_localizer, many), scene[0], "", "nose", detect=True)
    assert result.report["persons"] == MAX_PERSONS


def test_without_a_detector_the_choice_is_refused_and_not_offered(bare_localizer, scene):
    with pytest.raises(ValueError, match="no person detector"):
        localize_request(bare_localizer, scene[0], "", detect=True)

    def checkboxes(app):
        return [c for c in app.config["components"] if c.get("props", {}).get("elem_id") == "detect"]

    assert checkboxes(build_app(bare_localizer)) == []
    assert len(checkboxes(build_app(with_detector(bare_localizer, FakeDetector([[0, 0, 9, 9]]))))) == 1
