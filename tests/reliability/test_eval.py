"""Fault injection for ``locllm eval``: bad annotation and predictions files, interruptions, changed inputs.

Each test states the guarantee it checks. Most drive the loop with an *oracle* (a stand-in localizer that
answers the ground truth of each crop the processor cuts, see tests/evaluation/test_loop.py), so a correct run
scores AP 1 and a wrong one shows; the CLI tests check the one-line message and the exit code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from locllm.cli import main
from locllm.data.datasets import CocoKeypointDataset
from locllm.data.geometry import image_to_crop
from locllm.data.synth import generate_synthpose
from locllm.engine.localizer import PersonKeypoints
from locllm.evaluation.loop import run_evaluation
from locllm.evaluation.tasks import build_task
from locllm.keypoints import load_keypoint_table
from locllm.models.image_processing_locllm import LocLLMImageProcessor

CROP_SIZE = 56


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A SynthPose COCO val set: 3 images, 1-2 persons each: (annotation file, image folder)."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthpose(root, num_images=6, seed=3, size=96, persons=(1, 2), fmt="coco", val_fraction=0.5,
                       difficulty="easy")
    return root / "annotations" / "val.json", root / "images"


class CropGeometry(LocLLMImageProcessor):
    """The processor's person path for a stand-in localizer: the real geometry, 2 coordinates per keypoint."""

    ndim = 2

    def __init__(self):
        super().__init__(image_size=CROP_SIZE)


def _people(crops, keypoints, crop_points):
    """One image's persons answered ``crop_points`` (P, K, 2) in crop pixels, brought to the image."""
    k = len(keypoints)
    keypoints_in_image = CropGeometry().post_process(np.asarray(crop_points) / CROP_SIZE, crops.regions)
    return [PersonKeypoints(box, keypoints.names, points, np.ones(k), np.ones(k, dtype=bool), [""] * k)
            for box, points in zip(crops.regions.boxes(), keypoints_in_image, strict=True)]


class Oracle:
    """Answers each crop's true joints (a perfect model); ``stop_after`` persons, it raises KeyboardInterrupt."""

    def __init__(self, annotation, images, stop_after: int | None = None):
        self.processor = CropGeometry()
        dataset = CocoKeypointDataset(annotation, images, crop_size=CROP_SIZE)
        self.truth = {}
        for index, record in enumerate(dataset.records):
            sample = dataset[index]
            self.truth[self._key(self.processor.normalize(sample.image[None])[0])] = image_to_crop(
                record.joints[:, :2], sample.center, sample.scale, CROP_SIZE, pixel_std=sample.pixel_std)
        self.asked, self.stop_after = 0, stop_after

    @staticmethod
    def _key(pixel_values):
        return pixel_values.numpy().tobytes()

    def localize_many(self, images, regions, keypoints, mode, stand_ins):
        people = []
        for image, image_regions in zip(images, regions, strict=True):
            crops = self.processor(image, image_regions)
            answers = []
            for pixel_values in crops.pixel_values:
                if self.stop_after is not None and self.asked >= self.stop_after:
                    raise KeyboardInterrupt
                self.asked += 1
                answers.append(self.truth[self._key(pixel_values)])
            people.append(_people(crops, keypoints, answers))
        return people


def _evaluate(annotation, images, oracle=None, **kwargs):
    task = build_task("coco", annotation, images, **{k: kwargs.pop(k) for k in ("held_out", "boxes") if k in kwargs})
    oracle = oracle or Oracle(annotation, images)
    return run_evaluation(oracle, task, progress=False, batch_size=1, **kwargs)


def _edited(annotation, tmp_path, edit, name="edited.json"):
    """A copy of the annotation file changed by ``edit(data)``."""
    data = json.loads(annotation.read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _eval_cli(annotation, images, *extra):
    # The checkpoint is never loaded when the annotation file is refused: the task is built first. An existing
    # (empty) folder, so that resolving it never asks the Hub.
    return main(["eval", "--checkpoint", str(Path(annotation).parent), "--dataset", "coco", "--ann", str(annotation),
                 "--images", str(images), "--no-progress", *extra])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------ annotation files that cannot be scored


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b'{"images": [{"id": 1, "file_name": "a.jpg"', "not JSON"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not JSON"),
    (b"[{\"joints\": []}]", "not a COCO annotation file"),
    (b"output_dir: runs\nmodel: {}\n", "not JSON"),
    (b'{"images": [], "annotations": {}}', "not a COCO annotation file"),
], ids=["empty", "truncated", "binary", "foreign-json-list", "foreign-yaml", "annotations-not-a-list"])
def test_unreadable_annotation_file_stops_before_asking(synth, tmp_path, capsys, content, expected):
    """An empty, truncated or foreign annotation file stops eval before any person is asked: one line naming
    the file and what to give instead, exit 1."""
    path = tmp_path / "ann.json"
    path.write_bytes(content)
    assert _eval_cli(path, synth[1]) == 1
    line = _one_line(capsys)
    assert str(path) in line and expected in line


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["images"][0].pop("id"), "images[0]"),
    (lambda d: d["images"].append(dict(d["images"][0])), "repeats image id"),
    (lambda d: d["annotations"][0].pop("id"), "annotations[0]"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "repeats annotation id"),
], ids=["image-without-id", "repeated-image-id", "annotation-without-id", "repeated-annotation-id"])
def test_entries_without_identity_stop_before_asking(synth, tmp_path, capsys, edit, expected):
    """Entries the metric cannot tell apart (no id, a repeated id: COCO would silently keep one of them) stop
    eval before any person is asked, with the entry's place in the file."""
    assert _eval_cli(_edited(synth[0], tmp_path, edit), synth[1]) == 1
    assert expected in _one_line(capsys)


@pytest.mark.parametrize("dataset", ["mpii", "h36m"])
@pytest.mark.parametrize("content, expected", [(b"", "not JSON"), (b'[{"joints": [', "not JSON"),
                                               (b'{"images": []}', "expected")], ids=["empty", "truncated", "foreign"])
def test_unreadable_mpii_and_h36m_files_are_one_line(synth, tmp_path, capsys, dataset, content, expected):
    """MPII and Human3.6M annotation files that are empty, truncated or of another layout: one line naming the
    file, exit 1, before any person is asked."""
    path = tmp_path / "ann.json"
    path.write_bytes(content)
    assert main(["eval", "--checkpoint", "x", "--dataset", dataset, "--ann", str(path), "--images", str(synth[1]),
                 "--no-progress"]) == 1
    line = _one_line(capsys)
    assert str(path) in line and expected in line


def test_missing_annotation_file_is_one_line(synth, tmp_path, capsys):
    """A missing annotation file: one line naming it, exit 1."""
    assert _eval_cli(tmp_path / "nope.json", synth[1]) == 1
    assert "nope.json" in _one_line(capsys)


def test_a_file_with_no_usable_person_says_why(synth, tmp_path, capsys):
    """A file whose every person is unusable stops before asking and says what was skipped."""
    def drop_keypoints(data):
        for annotation in data["annotations"]:
            annotation["keypoints"] = annotation["keypoints"][:-3]
    assert _eval_cli(_edited(synth[0], tmp_path, drop_keypoints), synth[1]) == 1
    line = _one_line(capsys)
    assert "edited.json" in line and "skipped: 6 without 17 keypoints" in line


# ------------------------------------------------------------------ annotation files with skippable entries


def _break_first(field, value):
    def edit(data):
        if value is KeyError:
            data["annotations"][0].pop(field)
        else:
            data["annotations"][0][field] = value
    return edit


@pytest.mark.parametrize("edit, reason", [
    (_break_first("keypoints", KeyError), "without 17 keypoints"),
    (_break_first("keypoints", [1.0, 2.0, 2]), "without 17 keypoints"),
    (_break_first("keypoints", ["a"] * 51), "that are not numbers"),
    (_break_first("keypoints", [float("nan")] * 51), "that are not numbers"),
    (_break_first("bbox", KeyError), "without a bbox"),
    (_break_first("bbox", [1, 2, "x", 4]), "without a bbox"),
    (_break_first("category_id", KeyError), "not a person"),
    (_break_first("image_id", 999999), "on an image_id not in 'images'"),
], ids=["no-keypoints", "short-keypoints", "text-keypoints", "nan-keypoints", "no-bbox", "text-bbox",
        "no-category", "unknown-image"])
def test_skipped_annotation_leaves_the_metric_too(synth, tmp_path, edit, reason):
    """An annotation the data set skips is also left out of what COCOeval scores: the run finishes after
    asking every other person, counts the skip, and its AP is that of the file without the entry."""
    broken = _edited(synth[0], tmp_path, edit)
    result = _evaluate(broken, synth[1], oracle=Oracle(synth[0], synth[1]))
    assert any(reason in why for why in result["counts"]["skipped_annotations"]), result["counts"]
    without = _edited(synth[0], tmp_path, lambda d: d["annotations"].pop(0), "without.json")
    expected = _evaluate(without, synth[1], oracle=Oracle(synth[0], synth[1]))
    assert result["metrics"] == expected["metrics"]
    assert result["counts"]["persons"] == expected["counts"]["persons"]


def test_missing_categories_are_scored_as_persons(synth, tmp_path):
    """A file without ``categories`` is scored (AP 1 for a perfect model) and the report says what was assumed."""
    result = _evaluate(_edited(synth[0], tmp_path, lambda d: d.pop("categories")), synth[1])
    assert result["metrics"]["AP"] == pytest.approx(1.0)
    assert "no person category" in result["protocol"]["ground_truth_repairs"][0]


def test_missing_area_and_num_keypoints_are_completed_and_stated(synth, tmp_path):
    """Person annotations without ``area`` or ``num_keypoints`` are scored (box area as the OKS scale) and
    the completion is stated, never silent."""
    def edit(data):
        for annotation in data["annotations"]:
            annotation.pop("area", None)
            annotation.pop("num_keypoints", None)
    result = _evaluate(_edited(synth[0], tmp_path, edit), synth[1])
    assert result["metrics"]["AP"] == pytest.approx(1.0)
    repairs = " ".join(result["protocol"]["ground_truth_repairs"])
    assert "without area" in repairs and "without num_keypoints" in repairs


def test_broken_entry_with_held_out_keypoints_and_detector_boxes(synth, tmp_path):
    """The novel-keypoint protocol (which restricts the ground truth) and the detector-box protocol also
    finish on a file with an annotation of the wrong length."""
    broken = _edited(synth[0], tmp_path, _break_first("keypoints", [0, 0, 0]))
    result = _evaluate(broken, synth[1], held_out="paper")
    assert result["metrics"]["novel_keypoints"]["unseen"]["AP"] == pytest.approx(1.0)
    data = json.loads(broken.read_text())
    detections = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 1.0} for a in data["annotations"][1:]]
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    oracle_task = build_task("coco", broken, synth[1], boxes=str(tmp_path / "dets.json"))
    assert oracle_task.items and _evaluate(broken, synth[1], boxes=str(tmp_path / "dets.json"),
                                           oracle=_CenterAnswers())["metrics"]["AP"] is not None


class _CenterAnswers:
    """Answers the crop's centre for every keypoint (detector crops are not the data set's: no oracle)."""

    processor = CropGeometry()

    def localize_many(self, images, regions, keypoints, mode, stand_ins):
        people = []
        for image, image_regions in zip(images, regions, strict=True):
            crops = self.processor(image, image_regions)
            people.append(_people(crops, keypoints, np.full((len(image_regions), len(keypoints), 2), CROP_SIZE / 2)))
        return people


def test_custom_keypoint_field_with_broken_entries(synth, tmp_path, caplog):
    """custom (PCK of your own keypoints): entries whose keypoint field is missing or not numbers are skipped
    and counted; the run finishes."""
    table = tmp_path / "table.json"
    names = ["nose", "neck"]
    table.write_text(json.dumps({name: f"the {name}" for name in names}))

    def edit(data):
        for annotation in data["annotations"]:
            annotation["extra"] = annotation["keypoints"][:6]
        data["annotations"][0].pop("extra")
        data["annotations"][1]["extra"] = "broken"
    broken = _edited(synth[0], tmp_path, edit)
    task = build_task("custom", broken, synth[1], keypoints=load_keypoint_table(table), keypoint_field="extra")
    result = run_evaluation(_CenterAnswers(), task, progress=False)
    skipped = result["counts"]["skipped_annotations"]
    assert sum(skipped.values()) == 2 and result["metrics"]["num_keypoints"] > 0
    assert "ignored by the metric" not in caplog.text  # PCK reads the custom field: no OKS ground truth to warn about


# ------------------------------------------------------------------ predictions file: interruption and resume


def test_interrupted_run_resumes_with_identical_metrics(synth, tmp_path):
    """Interrupted after 2 persons, the same call resumes: only the rest is asked, and metrics and the
    predictions file equal those of an uninterrupted run."""
    annotation, images = synth
    full = _evaluate(annotation, images, predictions=tmp_path / "full.jsonl")
    predictions = tmp_path / "p.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _evaluate(annotation, images, oracle=Oracle(annotation, images, stop_after=2), predictions=predictions)
    oracle = Oracle(annotation, images)
    resumed = _evaluate(annotation, images, oracle=oracle, predictions=predictions)
    assert resumed["persons_resumed"] == 2 and oracle.asked == full["counts"]["persons"] - 2
    assert resumed["metrics"] == full["metrics"]
    assert predictions.read_text() == (tmp_path / "full.jsonl").read_text()


def test_half_written_line_is_asked_again(synth, tmp_path):
    """Killed while a predictions line was written (the file ends mid-line): the cut line is dropped and its
    person asked again; the result is identical."""
    annotation, images = synth
    full = _evaluate(annotation, images, predictions=tmp_path / "full.jsonl")
    predictions = tmp_path / "p.jsonl"
    text = (tmp_path / "full.jsonl").read_text()
    lines = text.splitlines(keepends=True)
    predictions.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # header, 2 persons, half a line
    resumed = _evaluate(annotation, images, predictions=predictions)
    assert resumed["persons_resumed"] == 2 and resumed["metrics"] == full["metrics"]
    assert predictions.read_text() == text


@pytest.mark.parametrize("content, expected", [
    ('{"header": 1}\n', "another evaluation (no header line)"),
    ('{"not": "ours"}\n{"index": 0}\n', "another evaluation (no header line)"),
    ("\x00\x01garbage\n", "line 1: not a predictions line"),
], ids=["foreign-header", "foreign-json", "garbage"])
def test_foreign_predictions_file_is_refused(synth, tmp_path, capsys, content, expected):
    """A predictions file written by something else is never resumed nor overwritten without
    --overwrite-predictions: one line with the fix, exit 1."""
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(content)
    with pytest.raises(ValueError, match="overwrite-predictions") as error:
        _evaluate(*synth, predictions=predictions)
    assert expected in str(error.value)
    assert predictions.read_text() == content


def test_corrupt_line_in_the_middle_names_it(synth, tmp_path):
    """A damaged line inside a predictions file is refused with its number and the two ways on."""
    annotation, images = synth
    _evaluate(annotation, images, predictions=tmp_path / "p.jsonl")
    lines = (tmp_path / "p.jsonl").read_text().splitlines(keepends=True)
    lines[2] = "{broken\n"
    (tmp_path / "p.jsonl").write_text("".join(lines))
    with pytest.raises(ValueError, match=r"line 3: not a predictions line.*remove that line.*overwrite-predictions"):
        _evaluate(annotation, images, predictions=tmp_path / "p.jsonl")


def test_empty_predictions_file_starts_fresh(synth, tmp_path):
    """An empty predictions file (created, never written) is a fresh start."""
    (tmp_path / "p.jsonl").write_text("")
    result = _evaluate(*synth, predictions=tmp_path / "p.jsonl")
    assert result["persons_resumed"] == 0 and result["metrics"]["AP"] == pytest.approx(1.0)


# ------------------------------------------------------------------ changed inputs between interruption and resume


def _fake_checkpoint(folder, weights: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "locllm"}')
    (folder / "trained.safetensors").write_bytes(weights)
    (folder / "optimizer.bin").write_bytes(weights + b"state")  # training state: answers do not depend on it
    return folder


def _interrupted(synth, predictions, checkpoint):
    with pytest.raises(KeyboardInterrupt):
        _evaluate(*synth, oracle=Oracle(*synth, stop_after=2), predictions=predictions, checkpoint=str(checkpoint))


def test_replaced_weights_refuse_to_resume(synth, tmp_path):
    """Weights replaced at the same checkpoint path between an interruption and the resume: the predictions
    file (tied to the checkpoint's content) is refused, never mixed with the new model's answers."""
    checkpoint = _fake_checkpoint(tmp_path / "ckpt", b"weights one")
    predictions = tmp_path / "p.jsonl"
    _interrupted(synth, predictions, checkpoint)
    (checkpoint / "trained.safetensors").write_bytes(b"weights two")
    with pytest.raises(ValueError, match="checkpoint's files changed.*overwrite-predictions"):
        _evaluate(*synth, predictions=predictions, checkpoint=str(checkpoint))
    result = _evaluate(*synth, predictions=predictions, checkpoint=str(checkpoint), overwrite=True)
    assert result["persons_resumed"] == 0


def test_moved_checkpoint_and_new_training_state_still_resume(synth, tmp_path):
    """The same weights at another path (and a changed optimizer state, which no answer depends on) resume."""
    predictions = tmp_path / "p.jsonl"
    _interrupted(synth, predictions, _fake_checkpoint(tmp_path / "a", b"weights"))
    moved = _fake_checkpoint(tmp_path / "b", b"weights")
    (moved / "optimizer.bin").write_bytes(b"other")
    result = _evaluate(*synth, predictions=predictions, checkpoint=str(moved))
    assert result["persons_resumed"] == 2 and result["metrics"]["AP"] == pytest.approx(1.0)


def test_changed_boxes_refuse_to_resume(synth, tmp_path):
    """The annotation file's persons or boxes changed between interruption and resume: refused (the crops
    asked about differ)."""
    predictions = tmp_path / "p.jsonl"
    annotation = tmp_path / "ann.json"
    shutil.copy(synth[0], annotation)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(annotation, synth[1], oracle=Oracle(*synth, stop_after=2), predictions=predictions)
    _edited(synth[0], tmp_path, lambda d: d["annotations"][0]["bbox"].__setitem__(0, 1.0), "ann.json")
    with pytest.raises(ValueError, match="another evaluation.*fingerprint"):
        _evaluate(annotation, synth[1], oracle=Oracle(*synth), predictions=predictions)


def test_changed_ground_truth_keypoints_resume_against_the_new_file(synth, tmp_path):
    """Only the true keypoints changed (the crops did not): the answers stay valid, the resume is allowed and
    the metrics are computed against the file as it is now."""
    predictions = tmp_path / "p.jsonl"
    annotation = tmp_path / "ann.json"
    shutil.copy(synth[0], annotation)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(annotation, synth[1], oracle=Oracle(*synth, stop_after=2), predictions=predictions)

    def move_keypoints(data):
        for annotation_entry in data["annotations"]:
            annotation_entry["keypoints"] = [v + 40 if i % 3 != 2 else v
                                             for i, v in enumerate(annotation_entry["keypoints"])]
    _edited(synth[0], tmp_path, move_keypoints, "ann.json")
    result = _evaluate(annotation, synth[1], oracle=Oracle(*synth), predictions=predictions)
    assert result["persons_resumed"] == 2 and result["metrics"]["AP"] < 0.5


# ------------------------------------------------------------------ the CLI: interruption


@pytest.mark.parametrize("with_predictions", [True, False])
def test_interrupted_cli_says_how_to_resume(synth, tmp_path, monkeypatch, capsys, with_predictions):
    """Ctrl-C or SIGTERM during eval: exit 130 and one line saying how to resume (or that nothing was kept)."""
    import locllm.engine
    import locllm.evaluation.loop

    monkeypatch.setattr(locllm.engine.Localizer, "from_pretrained", classmethod(lambda cls, *a, **k: None))

    def interrupted(*args, **kwargs):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends; turned into an interruption
        raise AssertionError("SIGTERM did not interrupt")
    monkeypatch.setattr(locllm.evaluation.loop, "run_evaluation", interrupted)
    extra = ["--predictions", str(tmp_path / "p.jsonl")] if with_predictions else []
    assert _eval_cli(synth[0], synth[1], *extra) == 130
    line = _one_line(capsys)
    assert ("run the same command again to resume" if with_predictions else "give --predictions") in line


@pytest.mark.slow
def test_cli_refuses_predictions_of_replaced_weights(synth, tmp_path, capsys):
    """End to end with a real (tiny) checkpoint: a predictions file, the weights saved anew at the same path,
    the same command: exit 1 and one line; the first model's answers are kept untouched."""
    from locllm.models import LocLLMForKeypointLocalization
    from locllm.models.tiny import locllm_config
    from locllm.prompts import PromptBuilder, PromptStyle, build_char_tokenizer

    tokenizer = build_char_tokenizer()
    style = PromptStyle(with_description=False, question_template="{name}?", image_token="<im_patch>")
    builder = PromptBuilder(tokenizer, style, 1)
    config = locllm_config("tiny", vocab_size=builder.image_token_id, image_token_id=builder.image_token_id,
                           prompt_style=style.to_dict())
    checkpoint = tmp_path / "ckpt"
    for seed in (0, 1):
        torch.manual_seed(seed)
        LocLLMForKeypointLocalization(config).save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        args = ["eval", "--checkpoint", str(checkpoint), "--dataset", "coco", "--ann", str(synth[0]),
                "--images", str(synth[1]), "--no-progress", "--device", "cpu", "--predictions",
                str(tmp_path / "p.jsonl")]
        if seed == 0:
            assert main(args) == 0
            capsys.readouterr()
            kept = (tmp_path / "p.jsonl").read_text()
    assert main(args) == 1
    assert "checkpoint's files changed" in _one_line(capsys)
    assert (tmp_path / "p.jsonl").read_text() == kept
