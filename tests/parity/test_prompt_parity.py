"""Our prompts against the reference's, token for token (reference-golden/prompts).

The recordings come from the reference's slow sentencepiece Llama tokenizer. With
``PromptStyle.reference()`` our builder, running on the fast Llama-2 tokenizer, must give the same
``input_ids`` and ``labels`` for the three training samples (COCO, MPII in mixed 3D training,
Human3.6M) and the same left-padded batches for the three evaluation persons.

Keypoint names and descriptions are read from the recorded prompt texts: the reference's descriptions
are test data only and never part of our package.
"""

import copy
import json
import math
import re

import numpy as np
import pytest

from locllm.codecs import DecimalCodec
from locllm.keypoints import Keypoint
from locllm.prompts import IGNORE_INDEX, PromptBuilder, PromptStyle
from locllm.prompts.conversation import DEFAULT_QUESTION

CROP_SIZE = 224
NUM_IMAGE_TOKENS = 256
# (training recording, evaluation recording with the same keypoint list, ndim, most rounds per sample)
DATASETS = {"coco": ("eval_coco", 2, 5), "mpii3d": ("eval_mpii", 3, 4), "h36m": ("eval_h36m", 3, 4)}
_ROUND = re.compile(
    re.escape("Keypoint: ") + "(?P<description>.+?)" + re.escape("\nQuestion: ")
    + re.escape(DEFAULT_QUESTION).replace(re.escape("{name}"), "(?P<name>.+?)") + re.escape("\nAnswer:")
)


@pytest.fixture(scope="module")
def builder(llama2_tokenizer):
    tokenizer = copy.deepcopy(llama2_tokenizer)
    tokenizer.pad_token = tokenizer.unk_token  # the reference pads with <unk> (id 0)
    return PromptBuilder(tokenizer, PromptStyle.reference(), NUM_IMAGE_TOKENS)


def _load(golden_dir, name):
    return json.loads((golden_dir / "prompts" / f"{name}.json").read_text())


def _keypoints_in(prompt_text):
    """The keypoints a recorded prompt asks for, in order, with the reference's names and descriptions."""
    return [Keypoint(m["name"], m["description"]) for m in _ROUND.finditer(prompt_text)]


def _reference_rounds(record, keypoints, ndim, max_rounds, codec, supervise_missing_depth=True):
    """The reference's choice of rounds: the first visible keypoints inside the crop, in the drawn order.

    COCO joints are crop pixels; MPII-3D and Human3.6M joints are already normalized, Human3.6M's third
    column is z = depth / 2000 + 0.5 (we pass the recorded depth in mm). MPII has no depth: the reference
    writes z = 0 and supervises it; ``supervise_missing_depth=True`` asks for that, False for our default.
    """
    joints = np.asarray(record["crop_joints"], dtype=np.float32)
    visible = np.asarray(record["crop_joints_vis"], dtype=np.float32)[:, 0]
    if ndim == 2:
        joints = joints / np.float32(CROP_SIZE)  # float32 division, as the reference's x / self.size
    rounds = []
    for index in record["shuffled_keypoint_order"]:
        x, y = joints[index, 0], joints[index, 1]
        if visible[index] < 1 or not (0 <= x < 1 and 0 <= y < 1):
            continue
        if ndim == 2:
            pieces = codec.answer_pieces([x, y])
        elif "h36m_gt" in record:
            if not 0 <= joints[index, 2] <= 1:
                continue
            pieces = codec.answer_pieces([x, y, record["h36m_gt"]["joint_img"][index][2]])
        else:
            pieces = codec.answer_pieces([x, y, math.nan], supervise_depth=True if supervise_missing_depth else None)
        rounds.append((keypoints[index], pieces))
        if len(rounds) == max_rounds:
            break
    return rounds


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_training_sample_ids_and_labels(golden_dir, builder, dataset):
    eval_name, ndim, max_rounds = DATASETS[dataset]
    record = _load(golden_dir, f"{dataset}_train")
    keypoints = [_keypoints_in(prompt)[0] for prompt in _load(golden_dir, eval_name)["prompts"]]
    rounds = _reference_rounds(record, keypoints, ndim, max_rounds, DecimalCodec(ndim=ndim))
    assert [kp for kp, _ in rounds] == _keypoints_in(record["prompt_text"])

    example = builder.training_example(rounds)
    assert builder.training_text(rounds) == record["prompt_text"]
    assert example["input_ids"] == record["input_ids"]
    assert example["labels"] == record["labels"]
    supervised = [i for i, label in enumerate(example["labels"]) if label != IGNORE_INDEX]
    assert supervised == record["supervised_positions"]
    assert example["input_ids"].index(builder.image_token_id) == record["first_image_patch_index"]
    assert example["input_ids"].count(builder.image_token_id) == record["num_image_patch_tokens"]


def test_mpii_depth_is_not_supervised_by_default(golden_dir, builder):
    """The reference means to mask MPII's fake depth but does not; by default we do."""
    record = _load(golden_dir, "mpii3d_train")
    keypoints = [_keypoints_in(prompt)[0] for prompt in _load(golden_dir, "eval_mpii")["prompts"]]
    rounds = _reference_rounds(record, keypoints, 3, 4, DecimalCodec(ndim=3), supervise_missing_depth=False)
    ours = builder.training_example(rounds)
    assert ours["input_ids"] == record["input_ids"]  # the same text ...
    newly_masked = [i for i, (a, b) in enumerate(zip(ours["labels"], record["labels"], strict=True)) if a != b]
    assert len(newly_masked) == 4 * len("0.000000")  # ... minus the depth characters of each round
    assert all(ours["labels"][i] == IGNORE_INDEX for i in newly_masked)
    depth_text = builder.tokenizer.decode([record["input_ids"][i] for i in newly_masked])
    assert depth_text == "0.000000" * 4


def test_a_whole_text_fast_tokenization_would_differ(golden_dir, builder):
    """Why ids are built segment by segment: the fast tokenizer on the whole text does not match the slow one."""
    recorded = json.loads((golden_dir / "prompts" / "tokenizer_slow_vs_fast.json").read_text())
    for dataset in DATASETS:
        record = _load(golden_dir, f"{dataset}_train")
        whole_text = builder.tokenizer(record["prompt_text"]).input_ids
        assert whole_text == recorded[f"{dataset}_train"]["fast_input_ids"]
        assert whole_text != record["input_ids"]


@pytest.mark.parametrize("name", ["eval_coco", "eval_mpii", "eval_h36m"])
def test_evaluation_batch(golden_dir, builder, name):
    record = _load(golden_dir, name)
    assert record["padding_side"] == "left" and record["pad_token_id"] == builder.tokenizer.pad_token_id
    keypoints = [_keypoints_in(prompt)[0] for prompt in record["prompts"]]
    assert len(keypoints) == record["num_prompts"]
    assert [builder.inference_text(kp) for kp in keypoints] == record["prompts"]
    prompts = [builder.inference_ids(kp) for kp in keypoints]
    prefix = builder.prefix_ids()
    assert all(prompt[: len(prefix)] == prefix for prompt in prompts)  # one shared prefix per person
    batch = builder.tokenizer.pad({"input_ids": prompts}, padding_side="left", return_attention_mask=True)
    assert batch["input_ids"] == record["input_ids"]
    assert batch["attention_mask"] == record["attention_mask"]
