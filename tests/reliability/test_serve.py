"""The web demo under hostile but fair requests: sizes are checked before decoding, no message repeats an
unbounded input, every refusal is one log line, and bad requests among good ones (concurrently) leave the
good answers equal to ``locllm predict``'s."""

import json
import logging
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import pytest

import locllm.serve.app as app
from locllm.cli import main
from locllm.engine import Localizer
from locllm.serve.app import MAX_ECHO_CHARS, localize_request

from .conftest import FILE_FAULTS, IMAGE


@pytest.fixture(scope="module")
def localizer(checkpoint):
    return Localizer.from_pretrained(checkpoint, device="cpu")


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding fails the test: a too-big image must be refused from its size alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("the image was decoded before its size was checked")
    monkeypatch.setattr(cv2, "imdecode", refuse)


def png_claiming(path, width: int, height: int):
    """A valid small PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    data = bytearray(cv2.imencode(".png", IMAGE)[1].tobytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def test_huge_dimensions_are_refused_from_the_header(localizer, tmp_path, no_decoding):
    """PNGs declaring 100000 x 100000 or 8000 x 8000 pixels are refused before decoding."""
    for side in (100_000, 8_000):
        with pytest.raises(ValueError, match="more than 50 megapixels"):
            localize_request(localizer, png_claiming(tmp_path / "bomb.png", side, side))


def test_too_many_bytes_are_refused_before_decoding(localizer, image, monkeypatch, no_decoding):
    """A file over the byte limit is refused from its size on disk."""
    monkeypatch.setattr(app, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(ValueError, match="at most 0 MB"):
        localize_request(localizer, image)


@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
def test_damaged_upload_is_a_readable_refusal(localizer, image, fault):
    """A truncated, empty or garbage upload: the 'not an image' message, not a traceback."""
    FILE_FAULTS[fault](image)
    with pytest.raises(ValueError, match="is not an image that can be read"):
        localize_request(localizer, image)


@pytest.mark.parametrize("field", ["boxes_text", "keypoint_set"])
def test_oversized_text_fields_are_refused_without_echo(localizer, image, field):
    """A megabyte in a text field: refused by its length, the message does not repeat it."""
    with pytest.raises(ValueError) as raised:
        localize_request(localizer, image, **{field: "1" * 1_000_000})
    assert "at most" in str(raised.value) and len(str(raised.value)) <= 2 * MAX_ECHO_CHARS


@pytest.mark.parametrize("request_fields", [
    {"keypoint_set": "x" * 3000},  # an unknown keypoint name, within the field's limit
    {"boxes_text": "1,2,x" + "9" * 3000},  # a malformed box
    {"image_name": "n" * 10_000 + ".png", "boxes_text": "1,2,3"},  # a long upload name
])
def test_messages_never_repeat_an_unbounded_input(localizer, image, request_fields):
    """Whatever the message quotes is clipped: at most twice MAX_ECHO_CHARS characters, one line."""
    with pytest.raises(ValueError) as raised:
        localize_request(localizer, image, **request_fields)
    message = str(raised.value)
    assert len(message) <= 2 * MAX_ECHO_CHARS and "\n" not in message


def test_too_many_table_rows_are_refused(localizer, image):
    """A table of 100000 rows is refused by its length before any row is looked at."""
    with pytest.raises(ValueError, match="at most 100 are read"):
        localize_request(localizer, image, extra_rows=[["", ""]] * 100_000)


def test_refusals_are_logged_in_one_line(localizer, image, caplog):
    """A user's error is one warning line in the log, with no traceback."""
    with caplog.at_level(logging.WARNING, logger="locllm.serve"), pytest.raises(ValueError):
        localize_request(localizer, image, boxes_text="1,2,3")
    (record,) = [r for r in caplog.records if r.name == "locllm.serve"]
    assert record.getMessage().startswith("refused request: person box 1") and record.exc_info is None
    assert "\n" not in record.getMessage()


def test_concurrent_good_and_bad_requests_answer_as_predict(localizer, checkpoint, image, tmp_path, capsys):
    """20 requests at once, bad ones mixed in: each bad one refused, each good one equal to locllm predict."""
    out = tmp_path / "predict.json"
    # the app's localizer reads the paper's way (the library default); predict's CLI default is subdigit
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--device", "cpu", "--boxes", "5,5,50,80",
                 "--decode", "greedy", "--json", str(out)]) == 0
    expected = json.loads(out.read_text())["images"][0]["persons"]
    not_an_image = FILE_FAULTS["garbage"](tmp_path / "noise.png")

    def one(number: int):
        if number % 3 == 1:
            return localize_request(localizer, image, "5,5,50")
        if number % 3 == 2:
            return localize_request(localizer, not_an_image)
        return localize_request(localizer, image, "5,5,50,80", image_name=str(image)).report

    def outcome(number: int):
        try:
            return one(number)
        except ValueError as err:
            return err

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(outcome, range(20)))
    for number, result in enumerate(results):
        if number % 3:
            assert isinstance(result, ValueError)
        else:
            persons = result["images"][0]["persons"]
            assert [p["keypoints"] for p in persons] == [p["keypoints"] for p in expected]
