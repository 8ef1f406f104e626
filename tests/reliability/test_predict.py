"""``locllm predict`` under faults: its outputs are checked before any inference, written atomically, never
announced when they were not written, never overwrite each other, and every answer reaches ``--json``."""

import json

import cv2
import pytest

from locllm.cli import main
from locllm.engine import Localizer

from .conftest import FILE_FAULTS, IMAGE, disk_full, fail_writes, leftovers, one_line_error


def predict(checkpoint, *args) -> int:
    return main(["predict", *map(str, args), "--checkpoint", str(checkpoint), "--keypoints", "nose,neck",
                 "--device", "cpu"])


@pytest.fixture
def no_inference(monkeypatch):
    """Any inference fails the test: the refusal must come before the model runs."""
    def refuse(*args, **kwargs):
        raise AssertionError("inference ran before the output was checked")
    monkeypatch.setattr(Localizer, "localize_many", refuse)


def test_unwritable_extension_is_refused_before_inference(checkpoint, image, tmp_path, no_inference, capsys):
    """Item 1: an extension OpenCV cannot write is one line, before inference, and nothing is written."""
    assert predict(checkpoint, image, "--out", tmp_path / "vis.xyz", "--json", tmp_path / "p.json") == 1
    line = one_line_error(capsys.readouterr().err)
    assert "vis.xyz" in line and "'.xyz'" in line and ".png" in line
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("target", ["json_is_folder", "out_is_file_for_several"])
def test_unusable_targets_are_refused_before_inference(checkpoint, image, tmp_path, no_inference, capsys, target):
    """A --json that is a folder, or an --out file for several images, is refused before inference."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.png").write_bytes(b"x")
    if target == "json_is_folder":
        args = [image, "--json", tmp_path / "folder"]
    else:
        args = [image, image.with_name("copy.png"), "--out", tmp_path / "file.png"]
        cv2.imwrite(str(image.with_name("copy.png")), IMAGE)
    assert predict(checkpoint, *args) == 1
    assert "folder" in one_line_error(capsys.readouterr().err)


def test_failed_picture_write_is_an_error_and_the_answers_reach_json(checkpoint, image, tmp_path, monkeypatch, capsys):
    """Item 2: a full disk while the picture is written: no "wrote", no picture, no temporary, exit 1, and
    the answers are in --json."""
    fail_writes(monkeypatch, disk_full(), matching="vis.png")
    assert predict(checkpoint, image, "--out", tmp_path / "vis.png", "--json", tmp_path / "p.json") == 1
    captured = capsys.readouterr()
    assert "wrote" not in captured.out
    line = one_line_error(captured.err)
    assert "1 of 1 pictures could not be written" in line and "p.json" in line and "No space left" in line
    assert not (tmp_path / "vis.png").exists() and leftovers(tmp_path) == []
    assert json.loads((tmp_path / "p.json").read_text())["persons"] == 1


def test_picture_encoder_failure_is_an_error(checkpoint, image, tmp_path, monkeypatch, capsys):
    """An encoder that returns False (what cv2.imwrite would have hidden) is reported, not "wrote"."""
    monkeypatch.setattr(cv2, "imencode", lambda *a, **k: (False, None))
    assert predict(checkpoint, image, "--out", tmp_path / "vis.png", "--json", tmp_path / "p.json") == 1
    assert "cannot encode" in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "vis.png").exists() and (tmp_path / "p.json").is_file()


def test_same_file_names_from_two_folders_get_two_pictures(checkpoint, tmp_path, capsys):
    """Item 3: a/000001.jpg and b/000001.jpg never overwrite each other's picture; both are in --json."""
    images = [tmp_path / "a" / "000001.png", tmp_path / "b" / "000001.png"]
    for path, pixels in zip(images, (IMAGE, IMAGE[::-1]), strict=True):
        path.parent.mkdir()
        cv2.imwrite(str(path), pixels)
    assert predict(checkpoint, *images, "--out", tmp_path / "pictures", "--json", tmp_path / "p.json") == 0
    pictures = sorted((tmp_path / "pictures").iterdir())
    assert [p.name for p in pictures] == ["000001-2_keypoints.png", "000001_keypoints.png"]
    assert not (cv2.imread(str(pictures[0])) == cv2.imread(str(pictures[1]))).all()
    assert [entry["image"] for entry in json.loads((tmp_path / "p.json").read_text())["images"]] == list(map(str, images))


def test_interrupted_picture_write_leaves_no_partial_picture(checkpoint, image, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the picture is being written: exit 130, one line, no partial picture or temporary."""
    fail_writes(monkeypatch, KeyboardInterrupt(), matching="vis.png")
    assert predict(checkpoint, image, "--out", tmp_path / "vis.png") == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "vis.png").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("fault", ["interrupt", "disk_full"])
def test_failed_json_write_keeps_the_earlier_file(checkpoint, image, tmp_path, monkeypatch, capsys, fault):
    """Ctrl-C or a full disk while --json is written: the earlier file is intact, no temporary is left."""
    earlier = tmp_path / "p.json"
    earlier.write_text('{"earlier": true}\n')
    fail_writes(monkeypatch, KeyboardInterrupt() if fault == "interrupt" else disk_full(), matching="p.json")
    assert predict(checkpoint, image, "--json", earlier, "--overwrite") == (130 if fault == "interrupt" else 1)
    err = capsys.readouterr().err
    assert "interrupted" in err if fault == "interrupt" else "No space left on device" in one_line_error(err)
    assert json.loads(earlier.read_text()) == {"earlier": True} and leftovers(tmp_path) == []


@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
def test_damaged_image_is_named_and_the_others_answered(checkpoint, image, tmp_path, capsys, fault):
    """A truncated, empty or garbage image: its error in --json and one line, the other image answered."""
    bad = tmp_path / "bad.png"
    cv2.imwrite(str(bad), IMAGE)
    FILE_FAULTS[fault](bad)
    assert predict(checkpoint, image, bad, "--json", tmp_path / "p.json") == 1
    assert "1 of 2 images could not be read" in one_line_error(capsys.readouterr().err)
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["persons"] == 1 and "bad.png" in report["images"][1]["error"]


def test_existing_outputs_are_refused_before_any_work_and_replaced_only_with_overwrite(checkpoint, image, tmp_path,
                                                                                      monkeypatch, capsys):
    picture, report = tmp_path / "vis.png", tmp_path / "p.json"
    report.write_text('{"earlier": true}\n')
    with monkeypatch.context() as patch:
        patch.setattr("locllm.engine.Localizer.from_pretrained", lambda *a, **k: pytest.fail("loaded a model"))
        assert predict(checkpoint, image, "--out", picture, "--json", report) == 1
    assert "p.json already exists" in one_line_error(capsys.readouterr().err)
    assert json.loads(report.read_text()) == {"earlier": True} and not picture.exists()
    assert predict(checkpoint, image, "--out", picture, "--json", report, "--overwrite") == 0
    assert json.loads(report.read_text())["persons"] == 1 and picture.is_file()


def test_image_folder_and_missing_image_are_one_line(checkpoint, tmp_path, no_inference, capsys):
    """An image argument that is a folder or does not exist: one line naming it, exit 1."""
    assert predict(checkpoint, tmp_path) == 1
    assert "is a folder" in one_line_error(capsys.readouterr().err)
    assert predict(checkpoint, tmp_path / "nowhere.png") == 1
    assert "nowhere.png" in one_line_error(capsys.readouterr().err)


def test_detections_that_name_no_image_are_refused(checkpoint, image, tmp_path, no_inference, capsys):
    """Detections matching none of the images: not silence with exit 0 but one line, before inference."""
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([{"image_id": 7, "bbox": [1, 1, 20, 20], "score": 0.9}]))
    assert predict(checkpoint, image, "--boxes", detections, "--json", tmp_path / "p.json") == 1
    assert "names any of the 1 images" in one_line_error(capsys.readouterr().err)


def test_an_image_no_detection_names_is_said(checkpoint, tmp_path, capsys):
    """With detections for some images only, each unnamed image gets a line on stderr (and no persons)."""
    named, unnamed = tmp_path / "000000000139.png", tmp_path / "other.png"
    cv2.imwrite(str(named), IMAGE)
    cv2.imwrite(str(unnamed), IMAGE)
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([{"image_id": 139, "bbox": [1, 1, 40, 60], "score": 0.9}]))
    assert predict(checkpoint, named, unnamed, "--boxes", detections) == 0
    assert "other.png: no detection in" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["[{\"image_id\": 1, \"bbox\": [1, 2", "", "{\"not\": \"a list\"}",
                                     "[{\"image_id\": 1, \"bbox\": [1, 2, 3]}]"])
def test_malformed_detections_are_one_line(checkpoint, image, tmp_path, no_inference, capsys, content):
    """A truncated, empty, foreign or malformed detections JSON: one line naming the file."""
    detections = tmp_path / "dets.json"
    detections.write_text(content)
    assert predict(checkpoint, image, "--boxes", detections) == 1
    assert "dets.json" in one_line_error(capsys.readouterr().err)
