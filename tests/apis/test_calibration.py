"""``locllm calibrate CHECKPOINT --data SCENES``: a copy of the shipped demo checkpoint calibrated on SynthPose
scenes, the file tied to its weights and read back by ``--score calibrated``; an existing calibration refused
in one line unless ``--overwrite`` (a stale one then refitted); the library's errors name the command."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from locllm.apis.calibration import CalibrationScenes, calibrate
from locllm.apis.demo import demo_checkpoint
from locllm.cli import main
from locllm.engine import Localizer
from locllm.engine.refinement import DecodingOptions
from locllm.models.calibration import CALIBRATION_FILE, Calibration
from locllm.models.configuration_clip_baseline import clip_baseline_config
from locllm.models.modeling_base import checkpoint_weights_sha256

QUIET = ["--no-progress", "--device", "cpu"]


@pytest.fixture
def checkpoint(tmp_path):
    """The demo checkpoint without its calibration."""
    folder = tmp_path / "demo"
    shutil.copytree(demo_checkpoint(), folder)
    (folder / CALIBRATION_FILE).unlink()
    return folder


@pytest.fixture(scope="module")
def scenes(synth):
    return synth[0].parent  # the folder locllm synth wrote: annotations/train.json and images/


def test_calibrate_writes_a_calibration_tied_to_the_weights(checkpoint, scenes, tmp_path, capsys):
    assert main(["calibrate", str(checkpoint), "--data", str(scenes), "--json", str(tmp_path / "c.json"), *QUIET]) == 0
    out = capsys.readouterr().out
    assert f"wrote {checkpoint / CALIBRATION_FILE}" in out and "decode subdigit" in out
    calibration = Calibration.load(checkpoint)
    assert calibration.checkpoint_sha256 == checkpoint_weights_sha256(checkpoint)
    persons = len(CalibrationScenes(scenes).coco.items)
    assert calibration.about == {"feature": "first-digit mass of the greedy digit and its neighbours, x times y",
                                 "target": "within PCK@0.1 of the crop side", "decode": "subdigit",
                                 "folder": str(scenes), "scenes": persons, "persons": persons}
    assert json.loads((tmp_path / "c.json").read_text())["knots"] == len(calibration.raw)
    # the scores --score calibrated gives are the table read at the raw confidence
    image = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    raw = Localizer.from_pretrained(checkpoint, device="cpu", decoding=DecodingOptions(score="calibrated"))
    raw.answerer.calibration = Calibration((0.0, 1.0), (0.0, 1.0))
    calibrated = Localizer.from_pretrained(checkpoint, device="cpu", decoding=DecodingOptions(score="calibrated"))
    np.testing.assert_allclose(calibrated.localize(image, keypoints=["nose", "left knee"])[0].scores,
                               calibration(raw.localize(image, keypoints=["nose", "left knee"])[0].scores))


def test_an_existing_calibration_is_refused_in_one_line_unless_overwrite(checkpoint, scenes, capsys, monkeypatch):
    calibrate(checkpoint, scenes, decode="greedy", device="cpu")
    before = (checkpoint / CALIBRATION_FILE).read_bytes()

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    with monkeypatch.context() as patched:
        patched.setattr(Localizer, "from_pretrained", loaded)
        assert main(["calibrate", str(checkpoint), "--data", str(scenes), *QUIET]) == 1
        error = capsys.readouterr().err.strip()
        assert "already exists" in error and "--overwrite" in error and len(error.splitlines()) == 1
        with pytest.raises(FileExistsError):
            calibrate(checkpoint, scenes, device="cpu")
    assert (checkpoint / CALIBRATION_FILE).read_bytes() == before
    assert main(["calibrate", str(checkpoint), "--data", str(scenes), "--overwrite", *QUIET]) == 0
    assert Calibration.load(checkpoint).about["decode"] == "subdigit"


def test_a_stale_calibration_names_the_command_and_is_refitted_with_overwrite(checkpoint, scenes, capsys):
    table = json.loads((demo_checkpoint() / CALIBRATION_FILE).read_text())
    (checkpoint / CALIBRATION_FILE).write_text(json.dumps({**table, "checkpoint_sha256": "other weights"}))
    with pytest.raises(ValueError, match=f"locllm calibrate {checkpoint} --data SCENES --overwrite"):
        Localizer.from_pretrained(checkpoint, device="cpu")
    assert main(["calibrate", str(checkpoint), "--data", str(scenes), "--overwrite", *QUIET]) == 0
    assert Calibration.load(checkpoint).checkpoint_sha256 == checkpoint_weights_sha256(checkpoint)


def test_a_missing_calibration_names_the_command(checkpoint):
    localizer = Localizer.from_pretrained(checkpoint, device="cpu", decoding=DecodingOptions(score="calibrated"))
    with pytest.raises(ValueError, match="locllm calibrate CHECKPOINT --data SCENES"):
        localizer.localize(np.zeros((32, 32, 3), np.uint8), keypoints=["nose"])


def test_bad_inputs_are_one_line(checkpoint, scenes, tmp_path, capsys):
    clip = tmp_path / "clip"
    clip_baseline_config("tiny").save_pretrained(clip)
    cases = [
        ([str(tmp_path / "nowhere"), "--data", str(scenes)], "is not a checkpoint folder"),
        ([str(clip), "--data", str(scenes)], "only a LocLLM checkpoint"),
        ([str(checkpoint), "--data", str(tmp_path)], "is not a folder of scenes"),
    ]
    for args, message in cases:
        assert main(["calibrate", *args, *QUIET]) == 1
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1
    assert not (checkpoint / CALIBRATION_FILE).exists()
