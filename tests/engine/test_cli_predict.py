import json

import cv2
import numpy as np

from locllm.cli import main

from .test_localizer import IMAGE


def test_predict_writes_json_and_picture(char_checkpoint, tmp_path):
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), IMAGE)
    out = tmp_path / "out.json"
    code = main(["predict", str(image), "--checkpoint", str(char_checkpoint), "--boxes", "10,10,50,80",
                 "--keypoints", "coco", "--describe", "belly button=The navel, in the middle of the belly.",
                 "--out", str(tmp_path / "vis.png"), "--json", str(out), "--device", "cpu"])
    assert code == 0
    report = json.loads(out.read_text())
    person = report["images"][0]["persons"][0]
    assert len(person["keypoints"]) == 18 and "belly button" in person["keypoints"]
    assert report["persons"] == 1 and report["ms_per_person"] > 0
    picture = cv2.imread(str(tmp_path / "vis.png"))
    assert picture.shape == IMAGE.shape and not np.array_equal(picture, IMAGE)


def test_predict_with_detection_file(char_checkpoint, tmp_path):
    image = tmp_path / "000000000139.png"
    cv2.imwrite(str(image), IMAGE)
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([
        {"image_id": 139, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9},
        {"image_id": 139, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.1},
        {"image_id": 7, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
    ]))
    out = tmp_path / "out.json"
    assert main(["predict", str(image), "--checkpoint", str(char_checkpoint), "--boxes", str(detections),
                 "--score-threshold", "0.5", "--keypoints", "nose,neck", "--json", str(out), "--device", "cpu"]) == 0
    assert len(json.loads(out.read_text())["images"][0]["persons"]) == 1


def test_predict_user_errors_are_one_line(char_checkpoint, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.png"), "--checkpoint", str(char_checkpoint)]) == 1
    assert "image not found" in capsys.readouterr().err
    image = tmp_path / "p.png"
    cv2.imwrite(str(image), IMAGE)
    assert main(["predict", str(image), "--checkpoint", str(char_checkpoint), "--keypoints", "tail tip"]) == 1
    assert "give a description" in capsys.readouterr().err
    assert main(["predict", str(image), "--checkpoint", str(char_checkpoint), "--boxes", "1,2,3"]) == 1
    assert "x,y,w,h" in capsys.readouterr().err


def test_predict_answers_the_readable_images_when_one_is_corrupt(char_checkpoint, tmp_path, capsys):
    paths = [tmp_path / "a.png", tmp_path / "broken.png", tmp_path / "c.png"]
    cv2.imwrite(str(paths[0]), IMAGE)
    paths[1].write_bytes(b"not a png")
    cv2.imwrite(str(paths[2]), IMAGE[:, ::-1])
    out = tmp_path / "out.json"
    code = main(["predict", *map(str, paths), "--checkpoint", str(char_checkpoint), "--keypoints", "nose,neck",
                 "--json", str(out), "--out", str(tmp_path / "pictures"), "--device", "cpu"])
    assert code == 1
    assert "1 of 3 images could not be read" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert [entry["image"] for entry in report["images"]] == list(map(str, paths))
    assert [len(entry["persons"]) for entry in report["images"]] == [1, 0, 1]
    assert report["images"][1]["error"] and "broken.png" in report["images"][1]["error"]
    assert report["images"][0]["error"] is None and report["persons"] == 2
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["a_keypoints.png", "c_keypoints.png"]
