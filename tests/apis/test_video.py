"""Video: a SynthPose scene written as a clip (the figures walk a few pixels a frame), answered by the shipped
demo checkpoint with a fake detector that finds the scene's known boxes."""

import json

import cv2
import numpy as np
import pytest

from locllm.apis.demo import demo_checkpoint
from locllm.apis.video import (
    FixedBoxes,
    KeypointTracker,
    VideoReadError,
    box_iou,
    keypoint_box,
    localize_video,
    open_video,
    read_frames,
)
from locllm.cli import main
from locllm.data.synth import render_scene
from locllm.engine import Localizer

FRAMES = 6
STEP = (2, 1)  # pixels the scene moves right and down per frame


@pytest.fixture(scope="module")
def localizer():
    return Localizer.from_pretrained(demo_checkpoint(), device="cpu")


@pytest.fixture(scope="module")
def scene():
    """A 3-person SynthPose scene and its persons' boxes (3, 4)."""
    image, persons = render_scene(np.random.default_rng(11), size=160, num_persons=3, difficulty="easy")
    return image, np.array([p["bbox"] for p in persons], dtype=np.float64)


def write_clip(path, image, fourcc: str) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, image.shape[1::-1])
    assert writer.isOpened()
    for t in range(FRAMES):
        shifted = np.roll(image, (STEP[1] * t, STEP[0] * t), axis=(0, 1))
        writer.write(cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def clip(tmp_path_factory, scene):
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    write_clip(path, scene[0], "mp4v")
    return path


def decoded(path) -> list[np.ndarray]:
    capture, _, count = open_video(path)
    return [pixels for _, pixels in read_frames(path, capture, count)]


class FakeDetector:
    """Finds the known boxes, moved with the frame it is shown; every other frame lists them in reverse
    order, so that ids must come from matching, not from the order."""

    def __init__(self, frames: list[np.ndarray], boxes: np.ndarray):
        self.frames, self.boxes, self.calls = frames, boxes, []

    def detect(self, image):
        t = int(np.argmin([np.abs(image.astype(int) - f).mean() for f in self.frames]))
        self.calls.append(t)
        boxes = self.boxes + [STEP[0] * t, STEP[1] * t, 0, 0]
        return (boxes[::-1] if t % 2 else boxes), np.ones(len(boxes))


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_frames_equal_per_image_prediction_with_the_same_boxes(localizer, scene, clip, tmp_path):
    frames = decoded(clip)
    detector = FakeDetector(frames, scene[1])
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    summary = localize_video(localizer, clip, out, jsonl, detector=detector, progress=False)
    assert (summary.frames, summary.skipped, summary.persons, summary.tracks) == (FRAMES, 0, 3 * FRAMES, 3)
    assert detector.calls == list(range(FRAMES))
    lines = read_lines(jsonl)
    assert [line["frame"] for line in lines] == list(range(FRAMES)) and all(line["detected"] for line in lines)
    for frame, line in zip(frames, lines, strict=True):
        boxes = [p["box"] for p in line["persons"]]
        alone = localizer.localize(frame, boxes)
        assert [p["keypoints"] for p in line["persons"]] == [p.to_dict()["keypoints"] for p in alone]
    # Each id stays on one figure, whose box moves by STEP a frame, whatever order the detector lists it in.
    first = {p["id"]: np.array(p["box"]) for p in lines[0]["persons"]}
    for t, line in enumerate(lines):
        assert sorted(p["id"] for p in line["persons"]) == [0, 1, 2]
        for p in line["persons"]:
            np.testing.assert_allclose(p["box"], first[p["id"]] + [STEP[0] * t, STEP[1] * t, 0, 0])
    assert len(decoded(out)) == FRAMES


def test_tracking_follows_keypoints_between_detections(localizer, scene, clip, tmp_path):
    frames = decoded(clip)
    detector = FakeDetector(frames, scene[1])
    jsonl = tmp_path / "out.jsonl"
    summary = localize_video(localizer, clip, None, jsonl, detector=detector, detect_every=3, progress=False)
    assert detector.calls == [0, 3] and summary.tracks == 3
    lines = read_lines(jsonl)
    assert [line["detected"] for line in lines] == [True, False, False, True, False, False]
    for t, (frame, line) in enumerate(zip(frames, lines, strict=True)):
        boxes = [p["box"] for p in line["persons"]]
        assert [p["keypoints"] for p in line["persons"]] == [p.to_dict()["keypoints"] for p in localizer.localize(frame, boxes)]
        assert sorted(p["id"] for p in line["persons"]) == [0, 1, 2], t
        if t:  # a followed box is the one around the person's keypoints of the frame before
            before = {p["id"]: p for p in lines[t - 1]["persons"]}
            for p in line["persons"]:
                assert box_iou([p["box"]], [before[p["id"]]["box"]])[0, 0] > 0.3


def test_a_frame_that_fails_to_decode_is_skipped_and_counted(localizer, scene, tmp_path):
    path = tmp_path / "walk.avi"
    write_clip(path, scene[0], "MJPG")
    data = bytearray(path.read_bytes())
    jpeg_starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xd8"]
    assert len(jpeg_starts) == FRAMES
    data[jpeg_starts[2]:jpeg_starts[2] + 600] = bytes(600)  # frame 2 loses its JPEG header
    path.write_bytes(bytes(data))
    out, jsonl = tmp_path / "out.avi", tmp_path / "out.jsonl"
    summary = localize_video(localizer, path, out, jsonl, progress=False)
    assert (summary.frames, summary.skipped, summary.persons) == (FRAMES, 1, FRAMES - 1)
    lines = read_lines(jsonl)
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert lines[2]["error"] == "could not be decoded" and lines[2]["persons"] == []
    assert all(len(line["persons"]) == 1 for i, line in enumerate(lines) if i != 2)  # the whole frame
    assert len(decoded(out)) == FRAMES - 1


def test_unreadable_or_empty_video_is_one_clear_error(localizer, tmp_path, capsys):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("not a video")
    with pytest.raises(VideoReadError, match="not a video OpenCV can read"):
        localize_video(localizer, fake, tmp_path / "o.mp4", tmp_path / "o.jsonl", progress=False)
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    with pytest.raises(VideoReadError, match="not a video|no frame"):
        localize_video(localizer, empty, tmp_path / "o.mp4", tmp_path / "o.jsonl", progress=False)
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.jsonl").exists()

    assert main(["predict", str(fake), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holiday.mp4: not a video OpenCV can read" in err


def test_predict_a_video_with_typed_boxes(scene, clip, tmp_path, capsys):
    out, jsonl = tmp_path / "annotated.mp4", tmp_path / "frames.jsonl"
    box = ",".join(str(v) for v in scene[1][0])
    assert main(["predict", str(clip), "--boxes", box, "--keypoints", "nose,left knee", "--detect-every", "2",
                 "--out", str(out), "--json", str(jsonl), "--device", "cpu"]) == 0
    lines = read_lines(jsonl)
    assert len(lines) == FRAMES and [line["detected"] for line in lines] == [True, False] * (FRAMES // 2)
    assert all(list(line["persons"][0]["keypoints"]) == ["nose", "left knee"] for line in lines)
    assert lines[0]["persons"][0]["box"] == scene[1][0].tolist()
    assert len(decoded(out)) == FRAMES
    assert f"{FRAMES} frames" in capsys.readouterr().out


def test_keypoint_box_and_matching():
    class Person:
        error = None
        keypoints = np.array([[10.0, 20.0], [30.0, 60.0], [np.nan, np.nan]])
        valid = np.array([True, True, False])

    np.testing.assert_allclose(keypoint_box(Person, 100, 100), [7.5, 15, 25, 50])
    np.testing.assert_allclose(keypoint_box(Person, 25, 100), [7.5, 15, 17.5, 50])  # clipped to the image
    Person.valid = np.array([True, False, False])
    assert keypoint_box(Person, 100, 100) is None
    np.testing.assert_allclose(box_iou([[0, 0, 10, 10]], [[5, 0, 10, 10], [20, 20, 5, 5]]), [[1 / 3, 0]])

    tracker = KeypointTracker()
    assert tracker.match(np.array([[0, 0, 10, 10], [50, 50, 10, 10]])) == [0, 1]
    tracker.ids, tracker.boxes = [0, 1], np.array([[0, 0, 10, 10], [50, 50, 10, 10]], dtype=float)
    tracker.asked = np.array([[0, 0, 10, 10], [0, 80, 10, 10]], dtype=float)
    assert tracker.match(np.array([[52, 51, 10, 10], [90, 90, 5, 5], [1, 1, 10, 10]])) == [1, 2, 0]
    assert tracker.match(np.array([[1, 80, 10, 10]])) == [1]  # keypoints astray: the box it was asked in
    boxes, scores = FixedBoxes().detect(np.zeros((48, 64, 3), np.uint8))
    assert boxes.tolist() == [[0, 0, 64, 48]] and scores.tolist() == [1.0]


def test_predict_a_video_with_the_localizers_detector(scene, clip, tmp_path, monkeypatch):
    """``Localizer.from_pretrained(..., detector=PATH)`` gives a localizer with ``detector`` and ``detect``;
    ``locllm predict`` on a video then finds the persons with it, unless boxes are typed."""
    own = Localizer.from_pretrained(demo_checkpoint(), device="cpu")
    detector = FakeDetector(decoded(clip), scene[1])
    own.detector, own.detect = detector, detector.detect
    monkeypatch.setattr(Localizer, "from_pretrained", classmethod(lambda cls, *args, **kwargs: own))
    jsonl = tmp_path / "frames.jsonl"
    assert main(["predict", str(clip), "--out", str(tmp_path / "a.avi"), "--json", str(jsonl)]) == 0
    expected = tmp_path / "expected.jsonl"
    localize_video(own, clip, None, expected, detector=FakeDetector(decoded(clip), scene[1]), progress=False)
    assert read_lines(jsonl) == read_lines(expected) and detector.calls == list(range(FRAMES))
    assert main(["predict", str(clip), "--boxes", "1,2,30,40", "--out", str(tmp_path / "b.avi"),
                 "--json", str(jsonl), "--overwrite"]) == 0
    assert detector.calls == list(range(FRAMES))  # typed boxes win: the detector was not asked again
    assert read_lines(jsonl)[0]["persons"][0]["box"] == [1.0, 2.0, 30.0, 40.0]
