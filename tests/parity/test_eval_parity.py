"""Our whole evaluation against the reference's, with its tiny checkpoint (reference-golden/e2e).

The reference ran its three evaluation scripts (``utils/valid2d.py``, ``valid2dmpii.py``, ``valid3d.py``)
unmodified with the tiny checkpoint on the fixtures, and recorded every ``generate`` call, its
predictions, its printed output and its metrics. We import the same checkpoint, evaluate the same
fixtures with ``run_evaluation`` (reference decoding, and fast decoding without the grammar, which is
plain greedy decoding) and check:

- the answers are the recorded generated tokens (decoded with our tokenizer);
- every keypoint's prediction: where our codec reads the answer, the reference's coordinates; where it
  does not, we flag it invalid and put it at the reference's stand-in for an unreadable answer (the
  crop's top-left corner, depth 0), which is what the reference recorded wherever it printed "Format
  error" too. The weights are random, so every recorded answer is malformed;
- the recorded metrics, wherever the reference's metric is defined.
"""

import json
import re

import numpy as np
import pytest
from transformers import AutoTokenizer

from locllm.engine import Localizer
from locllm.evaluation.loop import run_evaluation
from locllm.evaluation.tasks import build_task
from locllm.keypoints import Keypoint, KeypointSet
from locllm.models import LocLLMForKeypointLocalization
from locllm.prompts.conversation import DEFAULT_QUESTION

# data set -> (annotation file, image folder) under fixtures/, and the recorded evaluation prompts
FIXTURES = {
    "coco": ("coco/annotations/coco_person.json", "coco/images"),
    "mpii": ("mpii/annot/valid.json", "mpii/images"),
    "h36m": ("h36m/annot.json", "h36m/images"),
}
# The reference's MPII script generates 20 tokens, where 13 hold a 2D answer; we stop at 13.
ANSWER_TOKENS_2D = 13
PIXEL_TOLERANCE = 1e-4  # the reference stores predictions in float32
MODES = [("reference", True), ("fast", False)]  # (mode, constrained): fast without grammar = plain greedy
_ROUND = re.compile(
    re.escape("Keypoint: ") + "(?P<description>.+?)" + re.escape("\nQuestion: ")
    + re.escape(DEFAULT_QUESTION).replace(re.escape("{name}"), "(?P<name>.+?)") + re.escape("\nAnswer:")
)


def _localizer(folder, ndim):
    model = LocLLMForKeypointLocalization.from_pretrained(folder)
    # The reference evaluates the same tiny weights as a 3D model on Human3.6M (what import-reference
    # --coordinate-ndim 3 writes into the config).
    model.config.coordinate_ndim = ndim
    return Localizer.from_model(model, AutoTokenizer.from_pretrained(folder), device="cpu")


def _reference_keypoints(golden_dir, dataset):
    """The keypoints as the reference asks them: names and descriptions read from its recorded prompts."""
    prompts = json.loads((golden_dir / "prompts" / f"eval_{dataset}.json").read_text())["prompts"]
    keypoints = tuple(Keypoint(m["name"], m["description"]) for prompt in prompts for m in _ROUND.finditer(prompt))
    assert len(keypoints) == len(prompts)
    return KeypointSet(dataset, keypoints)


def _format_errors(stdout):
    return {line[len("Format error "):] for line in stdout.splitlines() if line.startswith("Format error ")}


def _evaluate(imported, golden_dir, tmp_path, dataset, mode, constrained):
    folder, _ = imported
    localizer = _localizer(folder, 3 if dataset == "h36m" else 2)
    localizer.answerer.constrained = constrained
    annotation, images = FIXTURES[dataset]
    fixtures = golden_dir / "fixtures"
    task = build_task(dataset, fixtures / annotation, fixtures / images,
                      keypoints=_reference_keypoints(golden_dir, dataset))
    predictions = tmp_path / "predictions.jsonl"
    result = run_evaluation(localizer, task, mode=mode, predictions=predictions, progress=False)
    records = [json.loads(line) for line in predictions.read_text().splitlines()[1:]]
    recorded = json.loads((golden_dir / "e2e" / f"{dataset}_fp32.json").read_text())
    assert recorded["crash"] is None
    return localizer, result, records, recorded


def _check_answers_and_predictions(localizer, records, recorded, reference_predictions, answer_tokens=None):
    """Answers equal the recorded tokens; predictions equal the recorded ones as the module docstring says."""
    format_errors = _format_errors(recorded["stdout"])
    assert len(records) == len(recorded["generate_calls"]) == len(reference_predictions)
    for record, call, reference in zip(records, recorded["generate_calls"], reference_predictions, strict=True):
        expected = [localizer.processor.tokenizer.decode(ids[:answer_tokens], skip_special_tokens=True).strip()
                    for ids in call["generated_ids"]]
        assert record["answers"] == expected
        assert record["error"] is None
        ours = np.asarray(record["keypoints"])
        reference = np.asarray(reference, dtype=np.float64)[:, : ours.shape[1]]
        stand_in = ours[~np.asarray(record["valid"])]
        for joint, (valid, reference_answer) in enumerate(zip(record["valid"], call["decoded_stripped"], strict=True)):
            if valid:
                np.testing.assert_allclose(ours[joint], reference[joint], atol=PIXEL_TOLERANCE)
                continue
            assert record["scores"][joint] == 0.0
            np.testing.assert_allclose(ours[joint], stand_in[0])  # one stand-in per person
            if reference_answer in format_errors:  # the reference could not read it either
                np.testing.assert_allclose(ours[joint], reference[joint], atol=PIXEL_TOLERANCE)
            # Otherwise the reference misread an answer we reject (a dropped minus sign, 10.500 read as
            # 0.500, a lone number given y = 0; see test_answer_parsing_parity): its coordinates are not ours.
        assert not any(record["valid"]), "the recording has no readable answer: random weights"


@pytest.mark.parametrize(("mode", "constrained"), MODES)
def test_coco(imported, golden_dir, tmp_path, mode, constrained):
    localizer, result, records, recorded = _evaluate(imported, golden_dir, tmp_path, "coco", mode, constrained)
    references = [np.reshape(p["keypoints"], (-1, 3))[:, :2] for p in recorded["pred_kpt"]]
    _check_answers_and_predictions(localizer, records, recorded, references)
    assert [r["image_id"] for r in records] == [p["image_id"] for p in recorded["pred_kpt"]]
    # The reference scores a person with the mean of its keypoint scores, unreadable ones counting 0.
    assert [float(np.mean(r["scores"])) for r in records] == [p["score"] for p in recorded["pred_kpt"]]
    metrics = result["metrics"]
    assert [metrics[name] for name in ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")] == \
        pytest.approx(recorded["coco_stats"])
    assert result["protocol"]["boxes"] == "gt"
    assert result["counts"]["keypoints_unparsed"] == 17


@pytest.mark.parametrize(("mode", "constrained"), MODES)
def test_mpii(imported, golden_dir, tmp_path, mode, constrained):
    localizer, result, records, recorded = _evaluate(imported, golden_dir, tmp_path, "mpii", mode, constrained)
    _check_answers_and_predictions(localizer, records, recorded, recorded["evaluate_input_preds"],
                                   answer_tokens=ANSWER_TOKENS_2D)
    for record, prediction in zip(records, recorded["pred_kpt"], strict=True):
        assert record["index"] == prediction["ins_id"]
    # The reference prints PCKh for the 12 joints with a COCO counterpart; it masks head, pelvis, neck and
    # thorax (the novel keypoints of a COCO-trained model), so those have no recorded value to compare.
    table = recorded["PCKh_name_value"]
    ours = result["metrics"]["PCKh@0.5"]
    for group in ("Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"):
        assert ours[group.lower()] == pytest.approx(table[group])
    assert {table[name] for name in ("Head", "Pelv", "Neck", "Thor")} == {"masked"}
    assert ours["mean_coco_joints"] == pytest.approx(table["Mean"]) == pytest.approx(recorded["PCKh_mean"])
    assert result["metrics"]["reference_Mean@0.1 (threshold 0.11)"] == pytest.approx(table["Mean@0.1"])


@pytest.mark.parametrize(("mode", "constrained"), MODES)
def test_h36m(imported, golden_dir, tmp_path, mode, constrained):
    localizer, result, records, recorded = _evaluate(imported, golden_dir, tmp_path, "h36m", mode, constrained)
    references = [recorded["pred_kpt"][str(record["image_id"])] for record in records]
    _check_answers_and_predictions(localizer, records, recorded, references)
    metrics = result["metrics"]
    assert metrics["MPJPE"] == pytest.approx(recorded["MPJPE"], abs=1e-5)  # recorded with 6 decimals
    error_x, error_y, error_z = metrics["MPJPE_xyz"]
    assert (error_x, error_z) == pytest.approx((recorded["err_x"], recorded["err_z"]), abs=1e-5)
    assert error_y == pytest.approx(recorded["err_y"], abs=0.005)  # the reference prints y with 2 decimals
    # The reference prints its per-action errors with 2 decimals and "nan" for actions it has no frame of.
    printed = dict(re.findall(r"(\w+): ([\d.]+|nan)", recorded["stdout"].split("PA MPJPE")[1]))
    assert metrics["MPJPE_per_action"] == pytest.approx(
        {action: float(value) for action, value in printed.items() if value != "nan"}, abs=0.005)
    # Its PA-MPJPE is NaN here: every joint of a person sits at the same stand-in point, and its Procrustes
    # divides by that zero spread. Ours aligns such a pose with scale 0 instead, so it is defined.
    assert recorded["PA_MPJPE"] == "NaN"
    assert np.isfinite(metrics["PA-MPJPE"])
