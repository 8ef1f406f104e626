"""One reader of detection files, two lookups: an image file of ``locllm predict`` (by name, or by the number
of its stem among entries that name no file) and a data set's image (by path, name or image id)."""

import json
from pathlib import Path

import numpy as np
import pytest

from locllm.apis.image_sources import ImageEntry
from locllm.apis.person_boxes import PersonBoxes, parse_box


@pytest.fixture
def detections(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([
        {"file_name": "a.jpg", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"image_id": 139, "category_id": 1, "bbox": [5, 6, 7, 8], "score": 0.8},
        {"file_name": "b.jpg", "image_id": 7, "category_id": 1, "bbox": [9, 9, 9, 9], "score": 0.7},
        {"image_id": 139, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.1},
    ]))
    return path


def test_an_image_file_is_matched_by_name_or_by_the_number_of_its_stem(detections):
    boxes = PersonBoxes(detections, score_threshold=0.5)
    assert boxes.image_key("photos/a.jpg") == "a.jpg"
    assert boxes.image_key("000000000139.jpg") == "139"
    np.testing.assert_array_equal(boxes.for_image_file("000000000139.jpg"), [[5, 6, 7, 8]])  # 0.1 is below
    # an entry that names its file is found by that name only, as predict always matched it
    assert boxes.image_key("000007.jpg") is None
    assert boxes.for_image_file("000007.jpg").shape == (0, 4)
    assert boxes.given_as == str(detections)


def test_a_data_set_image_is_matched_by_path_name_or_id(detections):
    boxes = PersonBoxes(detections)
    found, scores = boxes.from_file(ImageEntry(0, Path("x/000007.jpg"), 7))
    np.testing.assert_array_equal(found, [[9, 9, 9, 9]])
    np.testing.assert_array_equal(scores, [0.7])
    found, scores = boxes.from_file(ImageEntry(1, Path("x/139.png"), 139))
    assert found.shape == (2, 4) and scores.tolist() == [0.8, 0.1]
    assert PersonBoxes().from_file(ImageEntry(0, Path("a.jpg"), 0)) is None


def test_a_typed_box():
    np.testing.assert_array_equal(parse_box("1,2,3,4"), [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="4 numbers"):
        parse_box("1,2,3")
