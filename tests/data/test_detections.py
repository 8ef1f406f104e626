import json

import pytest

from locllm.data.detections import read_detections


def test_detections_are_checked_filtered_and_name_their_image(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([
        {"image_id": 139, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"file_name": "a.jpg", "bbox": [5, 6, 7, 8]},  # category 1 and score 1 by default
        {"image_id": 139, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.9},  # not a person
        {"image_id": 139, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.1},  # under the threshold
    ]))
    assert read_detections(path, score_threshold=0.5) == [
        {"image_id": 139, "file_name": None, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9},
        {"image_id": None, "file_name": "a.jpg", "bbox": [5.0, 6.0, 7.0, 8.0], "score": 1.0},
    ]


@pytest.mark.parametrize("entries, message", [
    ({"image_id": 1}, "JSON list"),
    ([{"image_id": 1, "bbox": [1, 2, 3]}], "entry 0 has a bbox of 3 numbers"),
    ([{"image_id": 1, "bbox": [1, 2, 3, 4]}, {"bbox": [1, 2, 3, 4]}], "entry 1 names no image"),
    ([{"image_id": "x", "bbox": [1, 2, 3, 4]}], "entry 0 is not a detection"),
])
def test_malformed_detections_are_named(tmp_path, entries, message):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=message):
        read_detections(path)
