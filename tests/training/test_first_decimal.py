"""logging.first_decimal: the first decimal of each coordinate found in training examples, its loss, and
the image-blind value it is logged against."""

import math
import re

import pytest
import torch

from locllm.codecs import DecimalCodec
from locllm.keypoints import COCO_KEYPOINTS
from locllm.models import LocLLMForKeypointLocalization
from locllm.models.processing_locllm import LocLLMImageProcessor, LocLLMProcessor
from locllm.models.tiny import locllm_config
from locllm.prompts import PromptStyle, build_char_tokenizer
from locllm.prompts.grammar import answer_choices, build_answer_grammar
from locllm.training.collator import TrainingCollator
from locllm.training.config import load_config
from locllm.training.first_decimal import NOT_A_FIRST_DECIMAL, FirstDecimalMonitor

SIZE = 56
QUESTION = re.compile(r"Where is the (.+?) of this person")


def _processor(ndim: int = 2) -> LocLLMProcessor:
    return LocLLMProcessor(LocLLMImageProcessor(image_size=SIZE), build_char_tokenizer(), PromptStyle.default(),
                           DecimalCodec(ndim=ndim), num_image_tokens=16)


def _monitor(processor: LocLLMProcessor) -> FirstDecimalMonitor:
    builder = processor.builder
    return FirstDecimalMonitor(builder.unit_token_ids(), builder.eos_token_id, COCO_KEYPOINTS.names,
                               processor.codec.ndim)


@pytest.mark.parametrize("ndim", [2, 3])
def test_groups_mark_each_coordinates_first_decimal_with_its_keypoint_and_axis(ndim, pose_samples):
    processor = _processor(ndim)
    collator = TrainingCollator(processor, max_rounds=3, first_decimal=_monitor(processor))
    batch = collator(pose_samples(2, has_depth=True))
    tokenizer = processor.tokenizer
    for row in range(2):
        ids, groups = batch["input_ids"][row], batch["first_decimal_group"][row]
        marked = torch.nonzero(groups != NOT_A_FIRST_DECIMAL).flatten()
        asked = QUESTION.findall(tokenizer.decode(ids))
        expected = [COCO_KEYPOINTS.names.index(name) * ndim + axis for name in asked for axis in range(ndim)]
        assert groups[marked].tolist() == expected
        assert tokenizer.convert_ids_to_tokens(ids[marked].tolist()) == ["."] * len(expected)
        # the label after each marked point is the coordinate's first decimal, as the answer text writes it
        answers = re.findall(r"\[([^\]]+)\]", tokenizer.decode(ids))
        firsts = [value.split(".")[1][0] for answer in answers for value in answer.split(",")]
        assert tokenizer.convert_ids_to_tokens(batch["labels"][row, marked + 1].tolist()) == firsts


def test_unsupervised_depth_is_not_counted(pose_samples):
    processor = _processor(3)
    collator = TrainingCollator(processor, max_rounds=2, first_decimal=_monitor(processor))
    groups = collator(pose_samples(1, has_depth=False))["first_decimal_group"][0]  # depth unknown: a filler
    axes = groups[groups != NOT_A_FIRST_DECIMAL] % 3
    assert axes.tolist() == [0, 1, 0, 1]


def test_record_scores_the_model_and_the_image_blind_frequencies():
    monitor = FirstDecimalMonitor({**{d: 10 + int(d) for d in "0123456789"}, ".": 5}, 2, ["a", "b"], 2)
    # one row: positions 0..3 predict labels 1..4; positions 1 and 3 are first decimals of "a" x and "b" y
    labels = torch.tensor([[-100, 13, 17, 2, 17]])
    groups = torch.tensor([[NOT_A_FIRST_DECIMAL, 0, NOT_A_FIRST_DECIMAL, 3]])
    logits = torch.randn(4, 20)  # every supervised position: 13, 17, 2, 17
    monitor.record(groups, {"labels": labels}, logits)
    expected = (torch.nn.functional.cross_entropy(logits[[1, 3]], torch.tensor([17, 17]), reduction="sum") / 2)
    first = monitor.report()
    assert first["first_decimal_loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert first["first_decimal_loss_image_blind"] == pytest.approx(math.log(10))  # nothing counted before
    monitor.record(groups, {"labels": labels}, logits)  # the same digits again: each group saw a 7 once
    assert monitor.report()["first_decimal_loss_image_blind"] == pytest.approx(-math.log(2 / 11))
    assert math.isnan(monitor.report()["first_decimal_loss"])  # nothing since the last report


def test_record_under_the_answer_vocabulary_loss_reads_the_choice_columns(pose_samples):
    processor = _processor()
    choices = answer_choices(build_answer_grammar(processor.builder, processor.codec))
    monitor = _monitor(processor)
    batch = TrainingCollator(processor, max_rounds=2, answer_choices=choices, first_decimal=monitor)(pose_samples(2))
    config = locllm_config("tiny", vocab_size=max(len(processor.tokenizer), processor.builder.image_token_id + 1),
                           image_token_id=processor.builder.image_token_id)
    torch.manual_seed(0)
    model = LocLLMForKeypointLocalization(config).eval()
    groups = batch.pop("first_decimal_group")
    with torch.no_grad():
        output = model(**batch, supervised_logits_only=True)
        full = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                     attention_mask=batch["attention_mask"]).logits
    monitor.record(groups, batch, output.logits)
    marked = groups != NOT_A_FIRST_DECIMAL
    ids = torch.tensor(choices.choice_ids)
    restricted = full[:, :-1][marked][:, ids]
    truth = (batch["labels"][:, 1:][marked][:, None] == ids).int().argmax(1)
    expected = torch.nn.functional.cross_entropy(restricted, truth)
    assert monitor.report()["first_decimal_loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_first_decimal_needs_decimal_answers():
    with pytest.raises(ValueError, match="logging.first_decimal reads decimal answers"):
        load_config(base={"output_dir": "x", "model": {"size": "tiny", "tokenizer": "char"}, "data": {"datasets": [{"type": "synthpose_demo", "num_images": 8}]},
                          "prompt": {"coordinates": "location_tokens"}, "logging": {"first_decimal": True}})
