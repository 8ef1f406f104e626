"""Our answer parsing against the reference's evaluation code (reference-golden/parse/answer_parsing.json).

The reference evaluators were fed chosen answers, well formed and malformed, and recorded the keypoints
they produced in image pixels. We map those back into the crop with the same affine transform and
compare with what our codec reads from the same text (the text after the reference's truncation to
``max_new_tokens``, which is what its parser saw):

- where the reference reads an answer correctly, we read the same coordinates;
- where it cannot read one, it leaves the keypoint at the crop origin (0, 0) and prints
  "Format error"; we flag the answer invalid (NaN coordinates);
- where it reads one wrongly, the tables below name what it made of it and why; we flag all of those
  invalid except ``[1.000,0.559]``, which is a correct answer on the crop's right edge.
"""

import json

import numpy as np
import pytest

from locllm.codecs import DecimalCodec
from locllm.data.geometry import affine_points, get_affine_transform

CROP_SIZE = 224
DEPTH_RANGE_MM = 2000.0  # the recorded z is the answer's z - 0.5, in units of 2000 mm
TOLERANCE = 1e-9  # normalized crop units

# answer -> (what the reference reads, in normalized crop x, y), and why that is wrong
REFERENCE_MISREADS_2D = {
    "[-0.100,0.223]": ((0.100, 0.223), "its regex 0\\.\\d+ drops the minus sign"),
    "[0.041,-0.034]": ((0.041, 0.034), "minus sign dropped"),
    "[0.031,-0.029]": ((0.031, 0.029), "minus sign dropped"),
    "[10.500,0.250": ((0.500, 0.250), "10.500 is read as 0.500 (and the unclosed answer accepted)"),
    "[0.250]": ((0.250, 0.0), "a one-number answer gets y = 0"),
    "[0.333]": ((0.333, 0.0), "a one-number answer gets y = 0"),
    "[1.000,0.559]": ((0.559, 0.0), "1.000 does not match 0\\.\\d+, so 0.559 becomes x and y = 0"),
    "0.3296 0.536": ((0.3296, 0.536), "text without brackets is accepted"),
    "[0.542,0.095,": ((0.542, 0.095), "a three-number answer, cut by max_new_tokens, is accepted"),
    "[0.812,0.123,0.999]": ((0.812, 0.123), "of three numbers the first two are used"),
}
REFERENCE_MISREADS_3D = {  # (x, y, z - 0.5)
    "[0.400,0.500,0.600000,": ((0.4, 0.5, 0.1), "a four-number answer, cut by max_new_tokens, is accepted"),
    "[1.400,0.500,0.550000]": ((0.4, 0.5, 0.05), "its regex \\.\\d+ reads 1.400 as 0.400"),
}
CORRECT_ANSWERS_THE_REFERENCE_MISREADS = {"[1.000,0.559]": (1.0, 0.559)}


@pytest.fixture(scope="module")
def parsing(golden_dir):
    return json.loads((golden_dir / "parse" / "answer_parsing.json").read_text())


@pytest.fixture(scope="module")
def geometry(golden_dir):
    return json.loads((golden_dir / "geometry" / "geometry.json").read_text())


def _to_normalized_crop(image_points, center, scale, pixel_std):
    """(N, 2) image pixels -> (N, 2) crop coordinates divided by the crop size."""
    matrix = get_affine_transform(np.asarray(center, np.float32), np.asarray(scale, np.float32), 0.0,
                                  CROP_SIZE, pixel_std=pixel_std)
    return affine_points(np.asarray(image_points, dtype=np.float64)[:, :2], matrix) / CROP_SIZE


def _format_errors(stdout):
    return {line[len("Format error "):] for line in stdout.splitlines() if line.startswith("Format error ")}


def _check_2d_person(answers, reference_xy, format_errors):
    codec = DecimalCodec()
    for answer, reference in zip(answers, reference_xy, strict=True):
        ours, valid = codec.decode(answer)
        if answer in REFERENCE_MISREADS_2D:
            np.testing.assert_allclose(reference, REFERENCE_MISREADS_2D[answer][0], atol=TOLERANCE, err_msg=answer)
            if answer in CORRECT_ANSWERS_THE_REFERENCE_MISREADS:
                assert valid
                np.testing.assert_allclose(ours, CORRECT_ANSWERS_THE_REFERENCE_MISREADS[answer])
            else:
                assert not valid, answer
        elif valid:  # the reference reads it correctly, and so do we
            np.testing.assert_allclose(ours, reference, atol=TOLERANCE, err_msg=answer)
        else:  # unreadable for both: the reference leaves the keypoint at the crop origin
            assert answer in format_errors
            np.testing.assert_allclose(reference, [0.0, 0.0], atol=TOLERANCE, err_msg=answer)
    # everything the reference complained about, we flag too (bar the right-edge answer it misreads)
    for answer in format_errors:
        assert not codec.decode(answer)[1] or answer in CORRECT_ANSWERS_THE_REFERENCE_MISREADS


def test_coco_answers(parsing):
    coco = parsing["coco"]
    [log] = coco["fake_generate_log"]
    [prediction] = coco["pred_kpt_json"]
    image_xy = np.asarray(prediction["keypoints"]).reshape(-1, 3)
    reference_xy = _to_normalized_crop(image_xy, coco["center"], coco["scale"], pixel_std=200.0)
    _check_2d_person(log["decoded_stripped"], reference_xy, _format_errors(coco["stdout"]))


def test_mpii_answers(parsing, geometry):
    mpii = parsing["mpii"]
    people = zip(mpii["fake_generate_log"], mpii["evaluate_input_preds(0-based image px)"], geometry["mpii_eval"],
                 strict=True)
    for log, image_xy, crop in people:
        reference_xy = _to_normalized_crop(image_xy, crop["center"], crop["scale"], pixel_std=200.0)
        _check_2d_person(log["decoded_stripped"], reference_xy, _format_errors(mpii["stdout"]))


def test_h36m_answers(parsing, geometry):
    h36m = parsing["h36m"]
    codec = DecimalCodec(ndim=3)
    format_errors = _format_errors(h36m["stdout"])
    predictions = [h36m["pred_kpt_pickle"][key] for key in sorted(h36m["pred_kpt_pickle"])]
    people = zip(h36m["fake_generate_log"], predictions, geometry["h36m_dataset_items"], strict=True)
    for log, prediction, crop in people:
        prediction = np.asarray(prediction)
        reference_xy = _to_normalized_crop(prediction, crop["center"], crop["scale"], pixel_std=1.0)
        reference = np.column_stack([reference_xy, prediction[:, 2]])  # z - 0.5
        for joint, answer in enumerate(log["decoded_stripped"]):
            ours, valid = codec.decode(answer)
            if answer in REFERENCE_MISREADS_3D:
                np.testing.assert_allclose(reference[joint], REFERENCE_MISREADS_3D[answer][0], atol=TOLERANCE)
                assert not valid, answer
            elif valid:
                np.testing.assert_allclose(ours[:2], reference[joint, :2], atol=TOLERANCE, err_msg=answer)
                if joint > 0:  # the reference pins the root's depth (joint 0) to 0
                    np.testing.assert_allclose(ours[2], reference[joint, 2] * DEPTH_RANGE_MM, atol=1e-6)
            else:
                assert answer in format_errors
                np.testing.assert_allclose(reference[joint], [0.0, 0.0, 0.0], atol=TOLERANCE, err_msg=answer)


def test_every_listed_misread_is_recorded(parsing):
    recorded = {answer for key in ("coco", "mpii", "h36m") for log in parsing[key]["fake_generate_log"]
                for answer in log["decoded_stripped"]}
    assert set(REFERENCE_MISREADS_2D) | set(REFERENCE_MISREADS_3D) <= recorded


def test_two_number_3d_answer_is_invalid_not_a_crash(parsing):
    # A 2D-shaped answer to a 3D question crashes the reference's evaluation; ours just flags it.
    assert parsing["h36m_two_number_answer_crash"].startswith("IndexError")
    coords, valid = DecimalCodec(ndim=3).decode("[0.507,0.461]")
    assert not valid and np.isnan(coords).all()


def test_truncation_does_not_change_validity(parsing):
    """Every recorded answer, before and after the reference's max_new_tokens cut, parses the same way."""
    logs = [(DecimalCodec(), log) for key in ("coco", "mpii") for log in parsing[key]["fake_generate_log"]]
    logs += [(DecimalCodec(ndim=3), log) for log in parsing["h36m"]["fake_generate_log"]]
    for codec, log in logs:
        for full, seen in zip(log["answers"], log["decoded_stripped"], strict=True):
            full_coords, full_valid = codec.decode(full)
            seen_coords, seen_valid = codec.decode(seen)
            assert full_valid == seen_valid, (full, seen)
            np.testing.assert_array_equal(full_coords, seen_coords)
