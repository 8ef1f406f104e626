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
