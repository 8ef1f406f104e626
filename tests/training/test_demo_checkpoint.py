"""The demo checkpoint: its pieces (tokenizer, patch targets, PCK, budget), the recipe end to end at toy
scale, and the shipped checkpoint's held-out PCK next to the image-blind mean-pose baseline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from locllm.codecs import DecimalCodec
from locllm.evaluation.pck import pck
from locllm.keypoints import COCO_KEYPOINTS, custom_keypoint
from locllm.prompts import IGNORE_INDEX, PromptBuilder, PromptStyle
from locllm.prompts.demo_tokenizer import build_demo_tokenizer
from locllm.training.trainer import TrainingBudget
from locllm.training.vision_pretrain import patch_targets

SHIPPED = Path(__file__).resolve().parents[2] / "locllm" / "assets" / "demo"
TEST_SEED = 2  # the recipe trains on seed 0 and reports on seed 1: these scenes are new to the checkpoint
TEST_IMAGES = 30


@pytest.fixture(scope="module")
def demo_tokenizer():
    return build_demo_tokenizer()


def test_demo_tokenizer_writes_prompts_in_words_and_answers_in_characters(demo_tokenizer, tmp_path):
    builder = PromptBuilder(demo_tokenizer, PromptStyle.default(), num_image_tokens=64)
    knee = COCO_KEYPOINTS[COCO_KEYPOINTS.index("left knee")]
    example = builder.training_example([(knee, DecimalCodec().answer_pieces([0.57, 0.771]))])  # checks the labels
    assert len(builder.query_ids(knee)) < 60  # the character tokenizer needs about 220
    assert " knee" in demo_tokenizer.convert_ids_to_tokens(builder.query_ids(knee))
    supervised = [i for i, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE_INDEX]
    assert demo_tokenizer.decode(supervised) == " [0.570,0.771]</s>"  # the separator opens the answer
    # a user's description with words it never saw still encodes, in smaller pieces
    novel = custom_keypoint("belly button", "The navel, in the middle of the belly.")
    assert demo_tokenizer.unk_token_id not in builder.query_ids(novel)

    demo_tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.encode("Where is the left knee? [0.412,0.655]") == demo_tokenizer.encode(
        "Where is the left knee? [0.412,0.655]")


def test_patch_targets_share_a_point_among_its_nearest_patch_centres():
    # patch 8: patch centres at 3.5, 11.5, ...; (7.5, 3.5) lies halfway between patches (0, 0) and (1, 0)
    targets = patch_targets(torch.tensor([[[7.5, 3.5], [3.5, 3.5], [63.0, 63.0]]]), patch_size=8, grid=8)
    assert targets.shape == (1, 3, 64)
    assert torch.allclose(targets.sum(-1), torch.ones(1, 3))
    assert targets[0, 0, 0] == pytest.approx(0.5) and targets[0, 0, 1] == pytest.approx(0.5)
    assert targets[0, 1, 0] == pytest.approx(1.0)
    assert targets[0, 2, 63] == pytest.approx(1.0)  # beyond the last centre: the corner patch


def test_pck_counts_only_masked_keypoints_and_unparsed_answers_as_misses():
    truth = np.zeros((2, 2, 2))
    predicted = np.array([[[5.0, 0.0], [np.nan, np.nan]], [[20.0, 0.0], [0.0, 9.0]]])
    report = pck(predicted, truth, np.array([[True, True], [True, False]]), np.array([100.0, 100.0]))
    assert report["num_keypoints"] == 3
    assert report["pck@0.1"] == pytest.approx(1 / 3)
    assert report["pck@0.05"] == pytest.approx(1 / 3)
    assert report["per_keypoint"]["pck@0.1"] == [0.5, 0.0]


def test_training_budget_warms_up_then_anneals_to_zero():
    steps = TrainingBudget(steps=1000, warmup_steps=100)
    assert steps.lr_factor(0, 0.0) == pytest.approx(0.01)
    assert steps.lr_factor(99, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.099)))  # warm, and annealing
    assert steps.lr_factor(1000, 0.0) == pytest.approx(0.0)
    timed = TrainingBudget(seconds=60.0, warmup_steps=0)
    assert timed.lr_factor(5, 30.0) == pytest.approx(0.5)
    assert timed.progress(10**6, 59.0) < 1 <= timed.progress(1, 60.0)
    with pytest.raises(ValueError):
        TrainingBudget(steps=10, seconds=1.0)


@pytest.mark.slow
def test_recipe_runs_end_to_end_at_toy_scale(tmp_path):
    from locllm.cli.demo_recipe import main
    from locllm.data.synth.demo import DEMO_KEYPOINTS, load_demo_setting
    from locllm.engine import Localizer

    out = tmp_path / "demo"
    summary_file = tmp_path / "summary.json"
    assert main(["--out", str(out), "--steps", "3", "--pretrain-steps", "3", "--batch-size", "8",
                 "--train-images", "24", "--heldout-images", "2", "--workers", "1", "--json", str(summary_file),
                 "--runs", str(tmp_path / "runs")]) == 0
    for name in ("config.json", "trained.safetensors", "base.safetensors", "tokenizer.json", "TRAINING.md"):
        assert (out / name).is_file(), name
    difficulty, pose = load_demo_setting(out)
    assert difficulty == "normal" and pose.shape == (len(DEMO_KEYPOINTS), 2)
    localizer = Localizer.from_pretrained(out, device="cpu")
    assert localizer.model.config.train_text_base and not localizer.model.config.lora_text
    assert summary_file.is_file()


@pytest.mark.slow
def test_shipped_demo_checkpoint_localizes_heldout_synthpose():
    if not (SHIPPED / "config.json").is_file():
        pytest.skip(f"no demo checkpoint in {SHIPPED}: make it with `python -m locllm.cli.demo_recipe "
                    "--out locllm/assets/demo` (see locllm/assets/demo/TRAINING.md)")
    from locllm.cli.demo import format_report
    from locllm.data.synth.demo import load_demo_setting
    from locllm.engine import Localizer
    from locllm.evaluation.demo import evaluate_pck

    difficulty, mean_pose = load_demo_setting(SHIPPED)
    torch.manual_seed(0)
    localizer = Localizer.from_pretrained(SHIPPED, device="cpu")
    report = evaluate_pck(localizer, TEST_IMAGES, TEST_SEED, mean_pose, difficulty)
    print("\n" + format_report(report))
    coco = report["coco"]
    assert report["malformed_answers"] == 0
    assert coco["pck@0.1"] >= 0.5
    # the mean pose alone scores high at 0.1 on these centred crops; the model must look at the image
    assert coco["pck@0.05"] >= coco["baseline_pck@0.05"] + 0.2
    assert not math.isnan(report["neck"]["pck@0.1"])
