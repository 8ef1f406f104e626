"""Bounded by design: every pixel count, number and string read from outside has a limit, checked before the work
it would size; the outputs of pictures and videos keep the promises the others keep. Each test states its
guarantee; the hostile inputs are built on the fly."""

from __future__ import annotations

import json
import resource
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import locllm.apis.video as video_module
import locllm.data.images as images_module
from locllm.apis.demo import demo_checkpoint
from locllm.apis.video import VideoReadError, localize_video
from locllm.cli import main
from locllm.data.images import ImageReadError, ImageTooLargeError, read_image_rgb
from locllm.data.synth import generate_synthpose
from locllm.engine import Localizer
from locllm.models import LocLLMConfig
from locllm.models.calibration import CALIBRATION_FILE, Calibration
from locllm.models.processing_locllm import LocLLMProcessor
from locllm.serve.app import localize_request
from locllm.viz import draw_keypoints

from .conftest import IMAGE, leftovers
from .test_eval import Oracle, _evaluate


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A ~100-byte PNG whose header says ``width`` x ``height`` (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A small real JPEG whose frame header is rewritten to say ``width`` x ``height``: corrupt data a decoder
    would fill with grey."""
    ok, data = cv2.imencode(".jpg", IMAGE)
    data = bytearray(data.tobytes())
    frame = data.index(b"\xff\xc0")  # baseline start-of-frame: length, precision, height, width
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data[: len(data) // 2]))  # and cut short
    return path


def radiance_hdr(path: Path, side: int = 16) -> Path:
    """A Radiance .hdr picture: OpenCV decodes it, PIL cannot read its size."""
    assert cv2.imwrite(str(path.with_suffix(".hdr")), np.ones((side, side, 3), np.float32))
    if path.suffix != ".hdr":
        path.with_suffix(".hdr").rename(path)
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding fails the test: an image over the limit must be refused from its header alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded before the size was checked")
    monkeypatch.setattr(images_module.cv2, "imdecode", refuse)


def predict(checkpoint, *args) -> int:
    return main(["predict", *map(str, args), "--checkpoint", str(checkpoint), "--device", "cpu"])


# ---------------------------------------------------------------- 1. decoded-pixel bombs


@pytest.mark.parametrize("make", [lambda p: png_claiming(p.with_suffix(".png"), 50_000, 50_000),
                                  lambda p: jpeg_claiming(p.with_suffix(".jpg"), 30_000, 30_000)],
                         ids=["png-50000x50000", "corrupt-jpeg-30000x30000"])
def test_a_bomb_is_refused_from_its_header_without_decoding(tmp_path, no_decoding, make):
    """A header over the limit (100 M pixels by default) is an ImageTooLargeError before any decoding, with
    peak memory unchanged (nothing of its size is allocated)."""
    path = make(tmp_path / "bomb")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError, match="pixels"):
        read_image_rgb(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # kB: under 50 MB more


def test_the_limit_is_configurable_and_checked(tmp_path, monkeypatch):
    """LOCLLM_MAX_IMAGE_PIXELS moves the limit; a value that is not a pixel count is one clear error."""
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), IMAGE)  # 64 x 96
    monkeypatch.setenv("LOCLLM_MAX_IMAGE_PIXELS", str(64 * 96 - 1))
    with pytest.raises(ImageTooLargeError, match="64x96 = 6,144 pixels, more than the limit of 6,143"):
        read_image_rgb(path)
    monkeypatch.setenv("LOCLLM_MAX_IMAGE_PIXELS", str(64 * 96))
    assert read_image_rgb(path).shape == IMAGE.shape
    monkeypatch.setenv("LOCLLM_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="LOCLLM_MAX_IMAGE_PIXELS='lots'"):
        read_image_rgb(path)


def test_corrupt_or_unmeasurable_images_are_never_answered(tmp_path):
    """A JPEG cut before its end (decoded as grey by libjpeg), a PNG cut short, and a format whose size cannot be
    read before decoding (Radiance .hdr, also under a .png name) are ImageReadErrors naming the file."""
    ok, jpeg = cv2.imencode(".jpg", IMAGE)
    (tmp_path / "cut.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) * 2 // 3])
    ok, png = cv2.imencode(".png", IMAGE)
    (tmp_path / "cut.png").write_bytes(png.tobytes()[:-30])
    cases = {"cut.jpg": "truncated", "cut.png": "cannot decode", "x.hdr": "cannot read the size",
             "hdr-named.png": "cannot read the size"}
    radiance_hdr(tmp_path / "x.hdr")
    radiance_hdr(tmp_path / "hdr-named.png")
    for name, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason) as raised:
            read_image_rgb(tmp_path / name)
        assert name in str(raised.value)


def test_predict_skips_a_bomb_and_answers_the_others(checkpoint, tmp_path, capsys):
    """predict over [good, bomb, good]: the good ones are answered and reach --json, the bomb is 'skipped: ...' and
    counted, the exit is non-zero with one line."""
    good = [tmp_path / "a.png", tmp_path / "c.png"]
    for path in good:
        cv2.imwrite(str(path), IMAGE)
    bomb = png_claiming(tmp_path / "b.png", 50_000, 50_000)
    out = tmp_path / "out.json"
    assert predict(checkpoint, good[0], bomb, good[1], "--keypoints", "nose", "--json", out) == 1
    err = capsys.readouterr().err
    assert "b.png: skipped: image" in err and "Traceback" not in err
    assert "1 of 3 images could not be read" in err
    report = json.loads(out.read_text())
    answered = {Path(entry["image"]).name: len(entry["persons"]) for entry in report["images"]}
    assert answered == {"a.png": 1, "b.png": 0, "c.png": 1}
    assert "larger than" in next(e["error"] for e in report["images"] if e["image"].endswith("b.png"))


def test_eval_counts_a_bomb_as_unreadable_and_finishes(tmp_path):
    """eval with one image replaced by a bomb: that image's persons are unanswered and counted, the others
    scored."""
    generate_synthpose(tmp_path / "synth", num_images=4, seed=3, size=96, persons=(1, 2), fmt="coco",
                       val_fraction=0.5, difficulty="easy")
    annotation, folder = tmp_path / "synth" / "annotations" / "val.json", tmp_path / "synth" / "images"
    oracle = Oracle(annotation, folder)
    copy = tmp_path / "images"
    shutil.copytree(folder, copy)
    victim = copy / json.loads(annotation.read_text())["images"][0]["file_name"]
    png_claiming(victim, 50_000, 50_000)
    result = _evaluate(annotation, copy, oracle)
    assert result["counts"]["persons_without_answer"]["unreadable_image"] >= 1
    assert result["counts"]["persons_without_answer"]["unreadable_image"] < result["counts"]["persons"]


def test_the_web_demo_refuses_a_radiance_upload(checkpoint, tmp_path):
    """The web demo's 50-megapixel check cannot be bypassed by a format PIL cannot measure."""
    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    for name in ("upload.hdr", "upload.png"):
        with pytest.raises(ValueError, match="is not an image that can be read"):
            localize_request(localizer, radiance_hdr(tmp_path / name))


def test_a_video_whose_frames_are_too_large_is_refused_before_decoding(tmp_path, monkeypatch):
    """Video frames are bounded like images, from the container's frame size."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 96))
    for _ in range(2):
        writer.write(IMAGE)
    writer.release()
    monkeypatch.setenv("LOCLLM_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(VideoReadError, match="64x96 = 6,144 pixels, more than the limit of 1,000"):
        video_module.open_video(path)


# ---------------------------------------------------------------- 2. a checkpoint's own files


@pytest.fixture
def demo_copy(tmp_path):
    """The demo checkpoint, copied, with its processor written out as processor_config.json."""
    folder = Path(shutil.copytree(demo_checkpoint(), tmp_path / "demo"))
    LocLLMProcessor.from_pretrained(folder).save_pretrained(folder)
    return folder


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("file, edit, expected", [
    ("processor_config.json", lambda d: d["coordinate_codec"].update(decimals=1_000_000),
     r"decimals = 1000000 is out of range: a whole number from 1 to 6"),
    ("processor_config.json", lambda d: d.update(num_image_tokens=1_000_000_000),
     r"num_image_tokens = 1000000000 is out of range: a whole number from 1 to 16384"),
    ("processor_config.json", lambda d: d["image_processor"].update(image_size=10**7), r"image_size = 10000000"),
    ("processor_config.json", lambda d: d["prompt_style"].update(question_prefix="Q" * 10**6),
     r"prompt_style.question_prefix has 1,000,000 characters: at most 2,000"),
    ("config.json", lambda d: d.update(image_size=10**7), r"image_size = 10000000 is out of range"),
    ("config.json", lambda d: d["text_config"].update(hidden_size=10**9), r"text_config.hidden_size = 1000000000"),
    ("descriptions.json", lambda d: d.update(belly="x" * 360_000), r"360,000 characters: at most 600"),
])
def test_a_number_or_text_out_of_its_bound_is_one_line_naming_the_file(demo_copy, file, edit, expected):
    """Each value of a checkpoint's JSON files is checked when loaded: one ValueError naming the file, the field,
    the value and the range, before any allocation of its size (no hang, no gigabytes)."""
    path = demo_copy / file
    if not path.exists():
        path.write_text("{}")
    edit_json(path, edit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=expected) as raised:
        Localizer.from_pretrained(demo_copy, device="cpu")
    assert file in str(raised.value) and "\n" not in str(raised.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500 * 1024  # kB


def test_the_cli_says_the_bound_in_one_line(demo_copy, tmp_path, capsys):
    edit_json(demo_copy / "processor_config.json", lambda d: d["coordinate_codec"].update(decimals=1_000_000))
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), IMAGE)
    assert predict(demo_copy, image) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "processor_config.json: decimals = 1000000 is out of range" in err


def test_every_value_the_configs_hold_today_is_within_its_bound():
    """The bounds hold the paper's models: a config of the paper's size passes them."""
    from locllm.bounds import check_config_sizes
    from locllm.models.tiny import locllm_config

    check_config_sizes(locllm_config("paper", vocab_size=32_000).to_dict())
    check_config_sizes(LocLLMConfig.from_pretrained(demo_checkpoint()).to_dict())


# ---------------------------------------------------------------- 3. pictures never cost the answers


def test_a_box_far_larger_than_the_image_is_flagged_and_the_json_written(checkpoint, tmp_path, capsys):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), IMAGE)
    out, picture = tmp_path / "x.json", tmp_path / "x.png"
    assert predict(checkpoint, image, "--boxes", "0,0,1e30,1e30", "--keypoints", "nose", "--out", picture,
                   "--json", out) == 0
    person = json.loads(out.read_text())["images"][0]["persons"][0]
    assert "more than 100 times" in person["error"] and picture.is_file()
    assert "Traceback" not in capsys.readouterr().err


def test_keypoints_off_the_picture_are_not_drawn_and_a_person_without_any_is_said(checkpoint, tmp_path, capsys,
                                                                                 monkeypatch):
    """Answers far outside the image (a wild model) draw nothing and raise nothing; the picture and the JSON
    are written, and the person left out of the picture is named."""
    from locllm.engine.localizer import PersonKeypoints

    wild = draw_keypoints(IMAGE, np.full((1, 2), 1e30), Localizer.from_pretrained(checkpoint).keypoint_set("nose"))
    np.testing.assert_array_equal(wild, IMAGE)

    def far_away(self, images, boxes=None, keypoints="coco", mode="fast"):
        kp_set = self.keypoint_set(keypoints)
        k = len(kp_set)
        return [[PersonKeypoints(np.array([0.0, 0, 64, 96]), kp_set.names, np.full((k, 2), 1e30), np.ones(k),
                                 np.ones(k, dtype=bool), ["[9.9,9.9]"] * k)] for _ in images]

    monkeypatch.setattr(Localizer, "localize_many", far_away)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), IMAGE)
    assert predict(checkpoint, image, "--keypoints", "nose", "--out", tmp_path / "x.png", "--json",
                   tmp_path / "x.json") == 0
    assert "person 1 is not drawn: none of its keypoints lies on the picture" in capsys.readouterr().err
    assert (tmp_path / "x.png").is_file() and json.loads((tmp_path / "x.json").read_text())["persons"] == 1


# ---------------------------------------------------------------- 4. calibration


@pytest.mark.parametrize("table, expected", [
    ({"raw": [0.1, 0.9], "probability": [-3.0, 7.5]}, "must lie in \\[0, 1\\]"),
    ({"raw": [0.9, 0.1], "probability": [0.2, 0.8]}, "must increase strictly"),
    ({"raw": [0.1, float("nan")], "probability": [0.2, 0.8]}, "finite"),
    ({"raw": [0.1, 0.9], "probability": [0.9, 0.2]}, "never decrease"),
    ({"raw": [0.1, 0.9]}, "KeyError"),
])
def test_a_calibration_that_is_not_one_is_refused(demo_copy, table, expected):
    (demo_copy / CALIBRATION_FILE).write_text(json.dumps(table))
    with pytest.raises(ValueError, match=f"calibration.json is not a calibration table.*{expected}"):
        Localizer.from_pretrained(demo_copy, device="cpu")


def test_another_checkpoints_calibration_is_refused(demo_copy, checkpoint):
    """The demo's calibration.json beside other weights (the tiny checkpoint's): refused, saying which."""
    other = Path(shutil.copytree(checkpoint, demo_copy.parent / "other"))
    shutil.copy(demo_copy / CALIBRATION_FILE, other / CALIBRATION_FILE)
    with pytest.raises(ValueError, match="was fitted for other weights"):
        Localizer.from_pretrained(other, device="cpu")
    assert Calibration.load(demo_copy) is not None  # beside its own weights it loads


def test_calibrated_scores_lie_in_0_1(demo_copy):
    localizer = Localizer.from_pretrained(demo_copy, device="cpu")
    person = localizer.localize(IMAGE, keypoints="coco")[0]
    assert ((person.scores >= 0) & (person.scores <= 1)).all()


# ---------------------------------------------------------------- 5. and 6. what is asked


def test_a_question_the_model_cannot_read_is_flagged_and_not_scored(tmp_path, capsys):
    """A keypoint named and described in a script the demo's tokenizer does not know: a warning, the JSON flag
    and a score of 0, never a confident calibrated score."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), IMAGE)
    out = tmp_path / "x.json"
    assert main(["predict", str(image), "--keypoints", "left knee", "--describe", "肚脐=肚脐在腹部中央。",
                 "--device", "cpu", "--json", str(out)]) == 0
    assert "warning: the model cannot read the question for '肚脐'" in capsys.readouterr().err
    answers = json.loads(out.read_text())["images"][0]["persons"][0]["keypoints"]
    assert answers["肚脐"]["unreadable_question"] is True and answers["肚脐"]["score"] == 0
    assert "unreadable_question" not in answers["left knee"] and answers["left knee"]["score"] > 0


def test_a_keypoint_named_in_keypoints_and_described_is_asked(tmp_path):
    """--keypoints "left knee,belly" --describe "belly=...": belly is asked with that description, in its place."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), IMAGE)
    out = tmp_path / "x.json"
    assert main(["predict", str(image), "--keypoints", "left knee,belly", "--describe",
                 "belly=the navel, in the middle of the belly", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["keypoints"] == ["left knee", "belly"]
    assert report["images"][0]["persons"][0]["keypoints"]["belly"]["xy"] is not None


# ---------------------------------------------------------------- 7. video outputs


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 96))
    for t in range(6):
        writer.write(np.roll(IMAGE, t, axis=1))
    writer.release()
    return path


@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError])
def test_an_interrupted_video_run_keeps_the_earlier_outputs_byte_for_byte(checkpoint, clip, tmp_path, monkeypatch,
                                                                         fault):
    """A run stopped after some frames (Ctrl-C, a failure) leaves the complete outputs of the run before as they
    were, and no partial file at any name."""
    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    localizer.persons_per_batch = 1
    out_video, out_jsonl = tmp_path / "out.avi", tmp_path / "out.jsonl"
    localize_video(localizer, clip, out_video, out_jsonl, keypoints="nose", progress=False)
    earlier = out_video.read_bytes(), out_jsonl.read_bytes()
    answered = []
    real = Localizer.localize_many

    def stops_on_the_third_frame(self, *args, **kwargs):
        if len(answered) == 2:
            raise fault("stopped")
        answered.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Localizer, "localize_many", stops_on_the_third_frame)
    with pytest.raises(fault):
        localize_video(localizer, clip, out_video, out_jsonl, keypoints="nose", progress=False)
    assert (out_video.read_bytes(), out_jsonl.read_bytes()) == earlier
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "out.avi",
                                                                                       "out.jsonl"]


def test_an_interrupted_video_prediction_says_what_it_kept(checkpoint, clip, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.avi"
    assert predict(checkpoint, clip, "--keypoints", "nose", "--out", out) == 0
    earlier = out.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(video_module, "localize_video", interrupted)
    assert predict(checkpoint, clip, "--keypoints", "nose", "--out", out, "--overwrite") == 130
    assert f"nothing written; {out} and {out.with_suffix('.jsonl')} kept as they were" in capsys.readouterr().err
    assert out.read_bytes() == earlier
