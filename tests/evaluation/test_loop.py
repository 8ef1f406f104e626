"""The evaluation loop end to end on SynthPose (COCO, MPII and Human3.6M layouts).

Two kinds of localizer drive it:

- an *oracle*, a stand-in that answers the ground truth: it recognises each crop the processor cuts from
  the regions the loop asks about among the crops the data set's own code cuts (``PoseSample.image``) and
  answers that person's joints, as a perfect model would, through the processor's way back to the image.
  Through the loop it must score AP 1, PCKh 100 and MPJPE 0, which proves the loop's person path (the
  task's regions -> crop -> image, MPII's 0-based pixels, the 3D lifting) and bookkeeping;
- a tiny random checkpoint: its answers are wrong (fast mode) or mostly unreadable (reference mode),
  which exercises the plumbing: counts, report keys, the predictions file and resuming.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from locllm.cli import main
from locllm.cli.eval_report import format_report
from locllm.data.datasets import CocoKeypointDataset, Human36MDataset, MpiiDataset
from locllm.data.geometry import image_to_crop, sanitize_coco_box
from locllm.data.synth import generate_synthpose
from locllm.engine import Localizer
from locllm.engine.localizer import PersonKeypoints
from locllm.evaluation.loop import run_evaluation
from locllm.evaluation.tasks import build_task
from locllm.keypoints import PAPER_HELD_OUT
from locllm.models import LocLLMForKeypointLocalization
from locllm.models.image_processing_locllm import LocLLMImageProcessor
from locllm.models.tiny import locllm_config
from locllm.prompts import PromptBuilder, PromptStyle, build_char_tokenizer

CROP_SIZE = 56  # the tiny model's image size
ANNOTATIONS = {"coco": "annotations/val.json", "mpii": "annot/valid.json", "h36m": "annotations/val.json"}
DATASETS = {"coco": CocoKeypointDataset, "mpii": MpiiDataset, "h36m": Human36MDataset}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Three SynthPose val sets (3 images, 1-2 persons each, nothing truncated): {format: (annotation, images)}."""
    root = tmp_path_factory.mktemp("synth")
    for fmt in ANNOTATIONS:
        generate_synthpose(root / fmt, num_images=6, seed=3, size=96, persons=(1, 2), fmt=fmt, val_fraction=0.5,
                           difficulty="easy")
    return {fmt: (root / fmt / annotation, root / fmt / "images") for fmt, annotation in ANNOTATIONS.items()}


def tiny_checkpoint(folder, ndim=2):
    """A tiny random LocLLM with the character tokenizer, saved with it."""
    tokenizer = build_char_tokenizer()
    # Short prompts (no description turn, a short question): the plumbing does not depend on the words.
    # A new image token, added as the last id and left outside the model's vocabulary as in the reference:
    # a random model cannot generate it.
    style = PromptStyle(with_description=False, question_template="{name}?", image_token="<im_patch>")
    builder = PromptBuilder(tokenizer, style, 1)
    assert builder.image_token_id == len(tokenizer) - 1
    config = locllm_config("tiny", vocab_size=builder.image_token_id, image_token_id=builder.image_token_id,
                           prompt_style=style.to_dict(), coordinate_ndim=ndim)
    torch.manual_seed(0)
    LocLLMForKeypointLocalization(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {ndim: tiny_checkpoint(tmp_path_factory.mktemp(f"tiny{ndim}d"), ndim) for ndim in (2, 3)}


class CropGeometry(LocLLMImageProcessor):
    """The processor's person path for a stand-in localizer: the real geometry, and the coordinates per
    keypoint (``ndim``) the loop checks."""

    def __init__(self, ndim):
        super().__init__(image_size=CROP_SIZE)
        self.ndim = ndim


class Oracle:
    """A localizer stand-in that answers the ground truth (see the module docstring)."""

    def __init__(self, fmt, annotation, images):
        self.processor = CropGeometry(3 if fmt == "h36m" else 2)
        dataset = DATASETS[fmt](annotation, images, crop_size=CROP_SIZE)
        self.truth = {}
        for index, record in enumerate(dataset.records):
            sample = dataset[index]
            # Every joint into the crop, also those the data set leaves out of the sample as unlabelled
            # (Human3.6M joints outside the image): the labelled ones are the sample's.
            joints = record.joints.astype(np.float64)
            joints[:, :2] = image_to_crop(joints[:, :2], sample.center, sample.scale, CROP_SIZE,
                                          pixel_std=sample.pixel_std)
            np.testing.assert_allclose(joints[sample.labelled], sample.joints[sample.labelled], atol=1e-3)
            self.truth[self._key(self.processor.normalize(sample.image[None])[0])] = joints[:, : self.processor.ndim]
        assert len(self.truth) == len(dataset), "two persons with the same crop: the oracle could not tell them apart"
        self.persons_asked = 0

    @staticmethod
    def _key(pixel_values):
        return pixel_values.numpy().tobytes()

    def localize_many(self, images, regions, keypoints, mode, stand_ins):
        k = len(keypoints)
        people = []
        for image, image_regions in zip(images, regions, strict=True):
            crops = self.processor(image, image_regions)
            self.persons_asked += len(image_regions)
            answers = []
            for pixel_values in crops.pixel_values:
                joints = self.truth.get(self._key(pixel_values))
                assert joints is not None, "the loop cut a crop the data set does not cut"
                answers.append(np.concatenate([joints[:, :2] / CROP_SIZE, joints[:, 2:]], axis=1))
            valid = np.ones((len(answers), k), dtype=bool)
            keypoints_in_image = self.processor.post_process(np.stack(answers), crops.regions,
                                                             valid if stand_ins else None)
            people.append([PersonKeypoints(box, keypoints.names, points, np.ones(k), valid[0], [""] * k)
                           for box, points in zip(crops.regions.boxes(), keypoints_in_image, strict=True)])
        return people


def _evaluate(localizer, task, **kwargs):
    return run_evaluation(localizer, task, progress=False, **kwargs)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- oracle


def test_oracle_coco_ground_truth_boxes_give_ap_1(synth):
    annotation, images = synth["coco"]
    task = build_task("coco", annotation, images, held_out="paper")
    result = _evaluate(Oracle("coco", annotation, images), task)
    metrics = result["metrics"]
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    novel = metrics["novel_keypoints"]
    assert novel["held_out"] == list(PAPER_HELD_OUT)
    assert novel["seen"]["AP"] == pytest.approx(1.0) and novel["unseen"]["AP"] == pytest.approx(1.0)
    assert len(novel["unseen"]["keypoint_indices"]) == 4 and len(novel["seen"]["keypoint_indices"]) == 13
    assert result["protocol"]["boxes"] == "gt" and result["protocol"]["held_out"] == list(PAPER_HELD_OUT)
    counts = result["counts"]
    assert counts["persons"] == counts["persons_answered"] == len(task.items) >= 3
    assert counts["keypoints_asked"] == 17 * len(task.items) and counts["keypoints_unparsed"] == 0
    report = format_report(result, task)
    assert "ground-truth boxes" in report and "unseen keypoints" in report


def test_oracle_coco_detector_boxes(synth, tmp_path):
    annotation, images = synth["coco"]
    gt = json.loads(annotation.read_text())
    sizes = {image["id"]: (image["width"], image["height"]) for image in gt["images"]}
    detections = []
    for person in gt["annotations"]:
        # The box the ground-truth crop is cut from, so that the oracle recognises the crop.
        box = sanitize_coco_box(person["bbox"], *sizes[person["image_id"]]).tolist()
        detections += [{"image_id": person["image_id"], "category_id": 1, "bbox": box, "score": 0.9},
                       {"image_id": person["image_id"], "category_id": 1, "bbox": box, "score": 0.6},  # a duplicate
                       {"image_id": person["image_id"], "category_id": 1, "bbox": box, "score": 0.01}]  # too weak
    detections.append({"image_id": gt["images"][0]["id"], "category_id": 1, "bbox": [5, 5, 0, 10], "score": 0.8})
    detections_file = tmp_path / "detections.json"
    detections_file.write_text(json.dumps(detections))

    task = build_task("coco", annotation, images, boxes=str(detections_file), detection_score_threshold=0.05)
    result = _evaluate(Oracle("coco", annotation, images), task)
    assert result["metrics"]["AP"] == pytest.approx(1.0)  # the duplicates are removed by OKS NMS
    assert result["protocol"]["boxes"] == "detections" and result["protocol"]["detection_score_threshold"] == 0.05
    counts = result["counts"]
    assert counts["persons"] == 2 * len(gt["annotations"]) + 1
    assert counts["persons_without_answer"] == {"unreadable_image": 0, "unusable_box": 1}
    assert "detector boxes" in format_report(result, task)


def test_oracle_mpii_pckh_is_100(synth):
    annotation, images = synth["mpii"]
    task = build_task("mpii", annotation, images)
    metrics = _evaluate(Oracle("mpii", annotation, images), task)["metrics"]
    for threshold in ("PCKh@0.5", "PCKh@0.1"):
        assert metrics[threshold]["mean"] == pytest.approx(100.0)
        assert metrics[threshold]["mean_coco_joints"] == pytest.approx(100.0)
        assert metrics["novel_keypoints"][threshold] == pytest.approx(
            {"pelvis": 100.0, "thorax": 100.0, "neck": 100.0, "head top": 100.0})
        assert list(metrics["per_joint"][threshold].values()) == pytest.approx([100.0] * 16)
    assert metrics["reference_Mean@0.1 (threshold 0.11)"] == pytest.approx(100.0)


def test_oracle_h36m_mpjpe_is_0(synth):
    annotation, images = synth["h36m"]
    task = build_task("h36m", annotation, images)
    metrics = _evaluate(Oracle("h36m", annotation, images), task)["metrics"]
    assert metrics["num_samples"] == len(task.items)
    assert metrics["MPJPE"] < 0.01 and metrics["PA-MPJPE"] < 0.01  # mm: float32 annotations
    assert "MPJPE_per_action" not in metrics  # SynthPose file names name no Human3.6M action


# -------------------------------------------------------------------------------- robustness, resuming


def test_resume_asks_only_the_unfinished_persons(synth, tmp_path):
    annotation, images = synth["coco"]
    task = build_task("coco", annotation, images)
    predictions = tmp_path / "predictions.jsonl"
    full = _evaluate(Oracle("coco", annotation, images), task, predictions=predictions)
    lines = predictions.read_text().splitlines(keepends=True)
    assert len(lines) == 1 + len(task.items) and json.loads(lines[0])["header"]["dataset"] == "coco"

    # Interrupted while writing the third person: two finished, the third's line cut short.
    predictions.write_text("".join(lines[:3]) + lines[3][:20])
    oracle = Oracle("coco", annotation, images)
    resumed = _evaluate(oracle, task, predictions=predictions)
    assert oracle.persons_asked == len(task.items) - 2
    assert resumed["persons_resumed"] == 2 and resumed["persons_asked"] == len(task.items) - 2
    assert resumed["metrics"] == full["metrics"] and resumed["counts"] == full["counts"]
    assert [record["index"] for record in _lines(predictions)[1:]] == list(range(len(task.items)))

    oracle = Oracle("coco", annotation, images)
    again = _evaluate(oracle, task, predictions=predictions)
    assert oracle.persons_asked == 0 and again["persons_resumed"] == len(task.items)
    assert again["metrics"] == full["metrics"]

    with pytest.raises(ValueError, match="another evaluation.*mode"):
        _evaluate(oracle, task, predictions=predictions, mode="reference")
    _evaluate(oracle, task, predictions=predictions, mode="reference", overwrite=True)
    assert oracle.persons_asked == len(task.items)


def test_an_unreadable_image_is_counted_not_fatal(synth, tmp_path):
    annotation, images = synth["coco"]
    oracle = Oracle("coco", annotation, images)
    copied = shutil.copytree(images, tmp_path / "images")
    task = build_task("coco", annotation, copied)
    broken = task.items[0].file_name
    (copied / broken).write_bytes(b"not a jpeg")
    persons_in_broken = sum(item.file_name == broken for item in task.items)

    result = _evaluate(oracle, task, predictions=tmp_path / "predictions.jsonl")
    counts = result["counts"]
    assert counts["unreadable_images"] == 1
    assert counts["persons_without_answer"]["unreadable_image"] == persons_in_broken
    assert counts["persons_answered"] == len(task.items) - persons_in_broken
    assert oracle.persons_asked == len(task.items) - persons_in_broken
    assert 0 < result["metrics"]["AR"] < 1  # the other persons are found, the broken image's are missed
    failed = [r for r in _lines(tmp_path / "predictions.jsonl")[1:] if r["error"]]
    assert len(failed) == persons_in_broken and broken in failed[0]["error_detail"]
    assert not any(failed[0]["valid"])


def test_the_checkpoint_must_answer_the_task_s_dimensions(synth, checkpoints):
    annotation, images = synth["h36m"]
    with pytest.raises(ValueError, match="needs a checkpoint that answers 3 coordinates"):
        _evaluate(Localizer.from_pretrained(checkpoints[2], device="cpu"), build_task("h36m", annotation, images))


# ------------------------------------------------------------------------------- a tiny random checkpoint


@pytest.mark.parametrize("fmt", list(ANNOTATIONS))
def test_tiny_checkpoint_fast_mode(synth, checkpoints, tmp_path, fmt):
    annotation, images = synth[fmt]
    task = build_task(fmt, annotation, images)
    localizer = Localizer.from_pretrained(checkpoints[task.ndim], device="cpu")
    predictions = tmp_path / "predictions.jsonl"
    result = _evaluate(localizer, task, predictions=predictions, batch_size=2, checkpoint="tiny")
    assert {"dataset", "annotation_file", "images", "checkpoint", "mode", "protocol", "keypoints", "metrics", "counts",
            "predictions_file", "persons_resumed", "persons_asked", "seconds", "persons_per_second"} <= result.keys()
    assert result["persons_asked"] == len(task.items) and result["mode"] == "fast"
    # Constrained decoding: every answer is well formed, just wrong.
    assert result["counts"]["keypoints_unparsed"] == 0
    records = _lines(predictions)[1:]
    assert len(records) == len(task.items)
    for record in records:
        assert len(record["answers"]) == len(task.keypoints) and all(a.startswith("[0.") for a in record["answers"])
        assert np.asarray(record["keypoints"]).shape == (len(task.keypoints), task.ndim)
    headline = {"coco": "AP", "mpii": "PCKh@0.5", "h36m": "MPJPE"}[fmt]
    assert headline in result["metrics"]
    json.dumps(result, allow_nan=False)  # strict JSON: undefined metrics are None


def test_tiny_checkpoint_reference_mode(synth, checkpoints):
    annotation, images = synth["coco"]
    task = build_task("coco", annotation, images)
    result = _evaluate(Localizer.from_pretrained(checkpoints[2], device="cpu"), task, mode="reference")
    counts = result["counts"]
    # Random weights answer anything; without the grammar most answers do not parse.
    assert counts["persons_answered"] == len(task.items)
    assert 0 < counts["keypoints_unparsed"] <= counts["keypoints_asked"] == 17 * len(task.items)
    assert result["metrics"]["AP"] < 0.5


def test_cli_writes_json_and_resumes(synth, checkpoints, tmp_path, capsys):
    annotation, images = synth["coco"]
    metrics_file, predictions = tmp_path / "metrics.json", tmp_path / "predictions.jsonl"
    command = ["eval", "--checkpoint", str(checkpoints[2]), "--dataset", "coco", "--ann", str(annotation),
               "--images", str(images), "--held-out", "paper", "--json", str(metrics_file),
               "--predictions", str(predictions), "--no-progress", "--device", "cpu"]
    assert main(command) == 0
    assert "COCO keypoint AP" in capsys.readouterr().out
    first = json.loads(metrics_file.read_text())
    assert first["persons_resumed"] == 0 and first["persons_asked"] == first["counts"]["persons"]
    assert set(first["metrics"]["novel_keypoints"]) == {"held_out", "seen", "unseen"}

    assert main(command) == 0
    second = json.loads(metrics_file.read_text())
    assert second["persons_asked"] == 0 and second["persons_resumed"] == first["counts"]["persons"]
    assert second["metrics"] == first["metrics"]

    assert main(["eval", "--checkpoint", str(checkpoints[2]), "--dataset", "mpii", "--ann", str(annotation),
                 "--images", str(images), "--no-progress"]) == 1
    assert "no usable annotations" in capsys.readouterr().err  # a COCO file given as MPII: one clear line


@pytest.mark.slow
def test_two_processes_give_the_one_process_result(synth, checkpoints, tmp_path):
    """torchrun with 2 CPU processes (Gloo): each asks its share, the results are gathered in memory."""
    annotation, images = synth["coco"]
    common = ["--checkpoint", str(checkpoints[2]), "--dataset", "coco", "--ann", str(annotation), "--images",
              str(images), "--no-progress", "--device", "cpu", "--batch-size", "1"]
    assert main(["eval", *common, "--json", str(tmp_path / "one.json")]) == 0
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port for the rendezvous (torchrun hangs on port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
                    "-m", "locllm", "eval", *common, "--json", str(tmp_path / "two.json"),
                    "--predictions", str(tmp_path / "predictions.jsonl")],
                   check=True, env=environment, timeout=110)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["metrics"] == one["metrics"] and two["counts"] == one["counts"]
    assert two["persons_asked"] == one["counts"]["persons"]
    assert [r["index"] for r in _lines(tmp_path / "predictions.jsonl")[1:]] == list(range(one["counts"]["persons"]))
    assert not list(tmp_path.glob("predictions.jsonl.rank*"))


def test_decoding_options_are_recorded_and_work_in_3d(synth, checkpoints, tmp_path):
    from locllm.engine.refinement import DecodingOptions

    annotation, images = synth["h36m"]
    task = build_task("h36m", annotation, images)
    options = DecodingOptions(decode="subdigit", flip=True)
    localizer = Localizer.from_pretrained(checkpoints[3], device="cpu", decoding=options)
    predictions = tmp_path / "predictions.jsonl"
    result = _evaluate(localizer, task, predictions=predictions)
    assert result["decoding"] == options.to_dict() and _lines(predictions)[0]["header"]["decoding"] == options.to_dict()
    assert result["counts"]["keypoints_unparsed"] == 0 and result["metrics"]["MPJPE"] is not None
    with pytest.raises(ValueError, match="predictions of another evaluation"):  # other options: never resumed
        _evaluate(Localizer.from_pretrained(checkpoints[3], device="cpu"), task, predictions=predictions)


def test_cli_decode_greedy_is_the_paper_reading(synth, checkpoints, tmp_path):
    annotation, images = synth["coco"]
    runs = {}
    for decode in ("greedy", "subdigit"):
        metrics_file = tmp_path / f"{decode}.json"
        assert main(["eval", "--checkpoint", str(checkpoints[2]), "--dataset", "coco", "--ann", str(annotation),
                     "--images", str(images), "--json", str(metrics_file), "--no-progress", "--device", "cpu",
                     "--decode", decode]) == 0
        runs[decode] = json.loads(metrics_file.read_text())
    paper = _evaluate(Localizer.from_pretrained(checkpoints[2], device="cpu"), build_task("coco", annotation, images))
    assert runs["greedy"]["decoding"] is None and runs["greedy"]["metrics"] == paper["metrics"]
    assert runs["subdigit"]["decoding"] == {"decode": "subdigit", "flip": False, "score": "mean_max"}
