"""The README's "Train on your own keypoints" walkthrough, small: synth -> train (the shipped config) -> eval ->
predict / serve with the new names. Checks the plumbing, not accuracy (two training steps)."""

import json
import re
from pathlib import Path

import pytest

from locllm.cli import main
from locllm.engine import Localizer
from locllm.keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS, load_keypoint_table
from locllm.serve.app import localize_request
from locllm.training.config import load_config
from locllm.training.data import build_dataset

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "synthpose" / "custom_keypoints_cpu.yaml"
TABLE = REPO / "configs" / "keypoints" / "extra_keypoints.yaml"
# The user's table as a name -> description mapping, with a name no built-in set has ("crown", for SynthPose's
# head top): after training it must be askable by name alone. Left and right toe pair up by their names.
USER_TABLE = {
    "neck": "Where the head joins the trunk, between the shoulders.",
    "pelvis": "The centre of the hips, between the two hip joints.",
    "crown": "The highest point of the skull, on top of the head.",
    "thorax": "The middle of the upper chest, below the neck.",
    "left toe": "The tip of the left foot.",
    "right toe": "The tip of the right foot.",
}


def test_shipped_table_is_synthposes_extra_keypoints():
    table = load_keypoint_table(TABLE)
    assert table.keypoints == EXTRA_KEYPOINTS.keypoints
    assert table.flip_indices() == [0, 1, 2, 3, 5, 4]


@pytest.mark.parametrize("table, message", [
    ([{"name": "left toe", "description": "The tip of the left foot.", "flip": "right toe"}],
     "flip partner 'right toe' of 'left toe' is not in the table"),
    ([{"name": "a", "description": "Here.", "flip": "b"}, {"name": "b", "description": "There.", "flip": None}],
     "'a' names 'b' as its flip partner, but 'b' does not name it back"),
    ({"neck": "Here.", "Neck": "There."}, "keypoint 'Neck' is listed twice"),
    ([{"name": "neck"}], "entry 1 needs a name and a description"),
    (["neck"], "a keypoint table is a list of {name, description, flip} entries or a mapping"),
])
def test_bad_keypoint_tables_are_refused(tmp_path, table, message):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError, match=re.escape(message)):
        load_keypoint_table(path)


def test_walkthrough_from_synth_to_predict(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the shipped config names the demo checkpoint relative to the repository
    data = tmp_path / "synthpose_custom"
    assert main(["synth", "--out", str(data), "--num-images", "10", "--size", "64", "--persons", "1",
                 "--val-fraction", "0.2", "--seed", "3", "--workers", "1"]) == 0
    table = tmp_path / "my_keypoints.json"
    table.write_text(json.dumps(USER_TABLE))
    run = tmp_path / "run"
    # dataset 0: the user's keypoints; dataset 1: the COCO keypoints the demo checkpoint knows, replayed
    overrides = [f"output_dir={run}", f"data.datasets.0.keypoints={table}",
                 *(f"data.datasets.{i}.{key}={value}" for i in (0, 1) for key, value in (
                     ("annotation_file", data / "annotations" / "train.json"), ("image_root", data / "images"))),
                 "optim.max_steps=2", "optim.batch_size=4", "optim.micro_batch_size=2", "optim.warmup_steps=0",
                 "checkpoint.every_steps=2", "logging.progress_bar=false", "logging.tensorboard=false"]

    # the dataset reads the table's keypoints from extra_keypoints, flip partners from their names
    users, replayed = build_dataset(load_config(CONFIG, overrides), crop_size=64).datasets
    assert users.keypoints.names == list(USER_TABLE) and users.flip_indices == [0, 1, 2, 3, 5, 4]
    assert replayed.keypoints == COCO_KEYPOINTS

    assert main(["train", str(CONFIG), *sum((["--set", o] for o in overrides), []),
                 "--json", str(tmp_path / "train.json")]) == 0
    checkpoint = Path(json.loads((tmp_path / "train.json").read_text())["checkpoint"])
    trained = json.loads((checkpoint / "descriptions.json").read_text())
    assert trained == {**USER_TABLE, **{k.name: k.description for k in COCO_KEYPOINTS}}

    assert main(["eval", "--checkpoint", str(checkpoint), "--dataset", "custom",
                 "--ann", str(data / "annotations" / "val.json"), "--images", str(data / "images"),
                 "--keypoints", str(table), "--keypoint-field", "extra_keypoints", "--device", "cpu",
                 "--no-progress", "--json", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["dataset"] == "custom" and result["keypoints"] == list(USER_TABLE)
    assert result["counts"]["persons"] == 2
    metrics = result["metrics"]
    for key in ("pck@0.1", "pck@0.05"):
        assert 0 <= metrics[key] <= 1 and key in metrics["mean_pose_baseline"]
        assert list(metrics["per_keypoint"][key]) == list(USER_TABLE)
    assert "PCK@0.1" in capsys.readouterr().out

    image = data / "images" / json.loads((data / "annotations" / "val.json").read_text())["images"][0]["file_name"]
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--keypoints", "crown,left toe",
                 "--device", "cpu", "--json", str(tmp_path / "predict.json")]) == 0
    predicted = json.loads((tmp_path / "predict.json").read_text())
    assert predicted["keypoints"] == ["crown", "left toe"]
    assert list(predicted["images"][0]["persons"][0]["keypoints"]) == ["crown", "left toe"]

    # a name neither built in nor in the checkpoint's table still needs its description
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--keypoints", "belly button",
                 "--device", "cpu"]) == 1
    assert "--describe" in capsys.readouterr().err

    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    asked = localizer.keypoint_set(["crown", "neck"])
    assert [k.description for k in asked] == [USER_TABLE["crown"], USER_TABLE["neck"]]  # the trained words
    served = localize_request(localizer, image, "", "crown", [["right toe", ""]])
    assert served.report["keypoints"] == ["crown", "right toe"]
    with pytest.raises(ValueError, match="unknown keypoint 'belly button'"):
        localize_request(localizer, image, "", "coco", [["belly button", ""]])
