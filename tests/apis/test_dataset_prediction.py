"""``locllm predict SOURCE --jsonl OUT`` over SynthPose images with the shipped demo checkpoint: one line per
image, resumed after an interruption to the same file, refused for another run, COCO results that pycocotools
loads and that eval's metric scores as ``locllm eval`` does, the same records from 2 processes as from 1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from locllm.cli import main
from locllm.evaluation.metrics import CocoKeypointMetric

QUIET = ["--no-progress", "--device", "cpu"]
ONE_BY_ONE = ["--batch-size", "1"]  # the same batches in every run compared, and a line per forward pass


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _predict(*args) -> int:
    return main(["predict", *map(str, args), *QUIET, *ONE_BY_ONE])


@pytest.fixture(scope="module")
def answered(synth, tmp_path_factory):
    """The whole SynthPose folder answered once, uninterrupted: (images folder, predictions, COCO results)."""
    _, images = synth
    out = tmp_path_factory.mktemp("answered")
    assert _predict(images, "--jsonl", out / "all.jsonl", "--coco-results", out / "coco.json") == 0
    return images, out / "all.jsonl", out / "coco.json"


def test_a_folder_gives_one_line_per_image_in_order(answered):
    images, jsonl, _ = answered
    header, *records = _lines(jsonl)
    files = sorted(images.iterdir())
    assert header["header"]["images"]["count"] == len(files) == 6
    assert [record["index"] for record in records] == list(range(6))
    assert [Path(record["image"]).name for record in records] == [f.name for f in files]
    assert [record["image_id"] for record in records] == [int(f.stem) for f in files]  # 000004.jpg -> 4
    for record in records:
        assert record["error"] is None and len(record["persons"]) == 1  # the whole image is one person
        person = record["persons"][0]
        assert len(person["keypoints"]) == 17 and person["box_score"] == 1.0
        assert all(point["xy"] is not None for point in person["keypoints"].values())


def test_coco_results_load_with_pycocotools(synth, answered):
    annotations, _ = synth
    _, _, coco_results = answered
    results = json.loads(coco_results.read_text())
    assert len(results) == 6 and {r["image_id"] for r in results} == set(range(1, 7))
    for split in ("train", "val"):
        ground_truth = COCO(str(annotations / f"{split}.json"))
        loaded = ground_truth.loadRes([r for r in results if r["image_id"] in ground_truth.getImgIds()])
        assert len(loaded.getAnnIds()) == len(ground_truth.getImgIds())


def test_an_interrupted_file_is_resumed_to_the_same_file(answered, tmp_path):
    images, complete, _ = answered
    lines = complete.read_text().splitlines(keepends=True)
    interrupted = tmp_path / "resumed.jsonl"
    interrupted.write_text("".join(lines[:3]) + lines[3][:25])  # 2 images answered, the 3rd's line cut
    assert _predict(images, "--jsonl", interrupted) == 0
    assert interrupted.read_bytes() == complete.read_bytes()


def test_another_checkpoint_or_option_is_refused_unless_starting_over(answered, tmp_path, capsys):
    images, complete, _ = answered
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(complete.read_bytes())
    assert _predict(images, "--jsonl", copy, "--mode", "reference") == 1
    error = capsys.readouterr().err.strip()
    assert "another prediction run (different mode" in error and "--overwrite" in error and "\n" not in error
    header = _lines(copy)[0]
    header["header"]["checkpoint_sha256"] = "0" * 16  # weights replaced at the same path
    copy.write_text(json.dumps(header) + "\n")
    assert _predict(images, "--jsonl", copy) == 1
    assert "the checkpoint's files changed" in capsys.readouterr().err
    assert _predict(images, "--jsonl", copy, "--overwrite") == 0
    assert copy.read_bytes() == complete.read_bytes()


def test_bad_inputs_and_outputs_are_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    from locllm.engine import Localizer

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(Localizer, "from_pretrained", loaded)
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("a.jpg\nb.jpg\n")
    (tmp_path / "out").mkdir()
    cases = [
        ([tmp_path / "empty", "--jsonl", tmp_path / "a.jsonl"], "holds no image files"),
        ([tmp_path / "list.txt", "--jsonl", tmp_path / "a.jsonl"], "names 2 of 2 images that do not exist"),
        ([tmp_path / "nowhere", "--jsonl", tmp_path / "a.jsonl"], "does not exist"),
    ]
    for args, message in cases:
        assert _predict(*args) == 1
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").write_bytes(b"not read before the outputs are checked")
    assert _predict(tmp_path / "images", "--jsonl", tmp_path / "out") == 1
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "taken.json").write_text("[]")
    assert _predict(tmp_path / "images", "--jsonl", tmp_path / "a.jsonl", "--coco-results", tmp_path / "taken.json") == 1
    assert "already exists" in capsys.readouterr().err


def test_an_unreadable_image_is_logged_and_counted_and_the_run_goes_on(synth, tmp_path, capsys):
    _, images = synth
    listed = tmp_path / "list.txt"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG")
    listed.write_text(f"{images / '000001.jpg'}\n{broken}\n{images / '000002.jpg'}\n")
    assert _predict(listed, "--jsonl", tmp_path / "out.jsonl", "--json", tmp_path / "summary.json") == 1
    assert "1 images could not be read" in capsys.readouterr().err
    _, first, bad, last = _lines(tmp_path / "out.jsonl")
    assert first["persons"] and last["persons"] and not bad["persons"] and "broken.jpg" in bad["error"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["unreadable_images"] == 1 and summary["images_answered"] == 3


@pytest.mark.slow
def test_coco_results_score_as_locllm_eval_on_the_same_images_and_boxes(synth, tmp_path):
    annotations, images = synth
    ground_truth = json.loads((annotations / "val.json").read_text())
    detections = tmp_path / "boxes.json"  # the ground-truth boxes, as a detector's results file
    detections.write_text(json.dumps([{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
                                      for a in ground_truth["annotations"]]))
    assert main(["eval", "--dataset", "coco", "--ann", str(annotations / "val.json"), "--images", str(images),
                 "--boxes", str(detections), "--json", str(tmp_path / "eval.json"), *QUIET]) == 0
    assert _predict(annotations / "val.json", "--image-root", images, "--boxes", detections,
                    "--jsonl", tmp_path / "val.jsonl", "--coco-results", tmp_path / "coco.json") == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    coco = COCO(str(annotations / "val.json"))
    scored = CocoKeypointMetric(coco, boxes="detections").compute(json.loads((tmp_path / "coco.json").read_text()))
    assert evaluated["AP"] > 0.1  # the demo checkpoint finds these figures: the comparison is not of zeros
    assert scored == evaluated


def _background(args: list, **kwargs) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *map(str, args)], env=environment, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kwargs)


@pytest.mark.slow
def test_sigkill_then_the_same_command_resumes_to_an_identical_file(answered, tmp_path):
    images, complete, _ = answered
    jsonl = tmp_path / "killed.jsonl"
    command = ["-m", "locllm", "predict", images, "--jsonl", jsonl, *QUIET, *ONE_BY_ONE]
    process = _background(command)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not jsonl.exists() or len(jsonl.read_text().splitlines()) < 3):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(jsonl.read_text().splitlines())
    assert 3 <= written < 7, "killed after the last image: nothing left to resume"
    assert _predict(images, "--jsonl", jsonl) == 0
    assert jsonl.read_bytes() == complete.read_bytes()


@pytest.mark.slow
def test_two_processes_write_the_records_of_one(answered, tmp_path):
    images, complete, coco = answered
    with socket.socket() as probe:  # a free port for the rendezvous (torchrun hangs on port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = _background(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
                           "-m", "locllm", "predict", images, "--jsonl", tmp_path / "two.jsonl",
                           "--coco-results", tmp_path / "coco.json", *QUIET, *ONE_BY_ONE])
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert (tmp_path / "two.jsonl").read_bytes() == complete.read_bytes()
    assert (tmp_path / "coco.json").read_bytes() == coco.read_bytes()
    assert not list(tmp_path.glob("two.jsonl.rank*"))


class TwoPersons:
    """A detector that finds the same two persons in every image."""

    def detect(self, image):
        from locllm.engine.detection import Detections

        return Detections(np.array([[10.0, 10.0, 40.0, 70.0], [40.0, 5.0, 50.0, 85.0]]), np.array([0.9, 0.6]))


def test_persons_from_a_detector_carry_its_scores(synth, tmp_path):
    from locllm.apis.dataset_prediction import predict_dataset
    from locllm.apis.demo import demo_checkpoint
    from locllm.apis.image_sources import ImageSource
    from locllm.engine import Localizer

    _, images = synth
    localizer = Localizer.from_pretrained(demo_checkpoint(), device="cpu", detector=TwoPersons())
    listed = tmp_path / "list.txt"
    listed.write_text("000001.jpg\n000002.jpg\n")
    summary = predict_dataset(localizer, ImageSource(listed, image_root=images), tmp_path / "out.jsonl",
                              coco_results=tmp_path / "coco.json", progress=False)
    header, *records = _lines(tmp_path / "out.jsonl")
    assert header["header"]["boxes"] == {"detector": "TwoPersons"} and summary["persons"] == 4
    assert [[p["box_score"] for p in r["persons"]] for r in records] == [[0.9, 0.6], [0.9, 0.6]]
    assert [r["box_score"] for r in json.loads((tmp_path / "coco.json").read_text())] == [0.9, 0.6, 0.9, 0.6]
