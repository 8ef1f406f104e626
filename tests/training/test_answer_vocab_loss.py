"""The answer-vocabulary loss (optim.loss: answer_vocab) and 2-decimal answers (prompt.decimals)."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from locllm.codecs import DecimalCodec
from locllm.engine import Localizer
from locllm.models import LocLLMForKeypointLocalization
from locllm.models.processing_locllm import CropRegions, LocLLMImageProcessor, LocLLMProcessor
from locllm.models.tiny import locllm_config
from locllm.prompts import IGNORE_INDEX, PromptBuilder, PromptStyle, build_char_tokenizer
from locllm.prompts.grammar import answer_choices, build_answer_grammar
from locllm.training.collator import TrainingCollator
from locllm.training.config import load_config
from locllm.training.model_types import answer_codec

SIZE = 56


def _processor(decimals: int) -> LocLLMProcessor:
    return LocLLMProcessor(LocLLMImageProcessor(image_size=SIZE), build_char_tokenizer(), PromptStyle.default(),
                           DecimalCodec(decimals=decimals), num_image_tokens=16)


def _tiny_model(processor: LocLLMProcessor) -> LocLLMForKeypointLocalization:
    builder = processor.builder
    config = locllm_config("tiny", vocab_size=max(len(processor.tokenizer), builder.image_token_id + 1),
                           image_token_id=builder.image_token_id)  # 56 px, patch 14: 16 image tokens
    torch.manual_seed(0)
    return LocLLMForKeypointLocalization(config).eval()


@pytest.mark.parametrize("decimals", [2, 3])
def test_choices_are_the_value_digits_after_the_point(decimals, pose_samples):
    processor = _processor(decimals)
    choices = answer_choices(build_answer_grammar(processor.builder, processor.codec))
    collator = TrainingCollator(processor, max_rounds=4, answer_choices=choices)
    batch = collator(pose_samples(2))
    chosen = batch["labels"][:, 1:][batch["answer_choice_mask"]]
    assert batch["answer_choice_mask"].sum(dim=1).tolist() == [4 * 2 * decimals] * 2  # rounds x values x digits
    assert set(processor.tokenizer.convert_ids_to_tokens(chosen.tolist())) <= set("0123456789")
    # the "0" before each point is forced: supervised, but never a choice
    zeros = (batch["labels"][:, 1:] == processor.tokenizer.convert_tokens_to_ids("0")).sum()
    assert int(zeros) > int((chosen == processor.tokenizer.convert_tokens_to_ids("0")).sum())


@pytest.mark.parametrize("decimals", [2, 3])
def test_answer_vocab_loss_is_the_full_logits_restricted_to_the_allowed_tokens(decimals, pose_samples):
    processor = _processor(decimals)
    choices = answer_choices(build_answer_grammar(processor.builder, processor.codec))
    batch = TrainingCollator(processor, max_rounds=3, answer_choices=choices)(pose_samples(3))
    model = _tiny_model(processor)
    with torch.no_grad():
        loss = model(**batch, supervised_logits_only=True).loss
        full = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                     attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    ids = torch.tensor(choices.choice_ids)
    mask = batch["answer_choice_mask"]
    restricted = full[:, :-1][mask][:, ids]  # (S, C): the constrained decoder's logits at each choice
    targets = batch["labels"][:, 1:][mask]
    expected = F.cross_entropy(restricted, (targets[:, None] == ids).int().argmax(dim=1))
    assert torch.allclose(loss, expected, atol=1e-5)
    whole_vocabulary = F.cross_entropy(full[:, :-1][mask], targets)
    assert loss < whole_vocabulary  # a softmax over 10 digits, not the vocabulary: not the same number


def test_without_choices_the_loss_is_the_papers(pose_samples):
    processor = _processor(3)
    batch = TrainingCollator(processor, max_rounds=3)(pose_samples(2))
    assert "answer_choice_mask" not in batch
    model = _tiny_model(processor)
    with torch.no_grad():
        loss = model(**batch, supervised_logits_only=True).loss
        full = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                     attention_mask=batch["attention_mask"]).logits
    supervised = batch["labels"][:, 1:] != IGNORE_INDEX
    assert torch.allclose(loss, F.cross_entropy(full[:, :-1][supervised], batch["labels"][:, 1:][supervised]), atol=1e-5)


def test_two_decimal_answers_are_written_parsed_and_constrained():
    codec = DecimalCodec(decimals=2)
    assert codec.encode(np.array([0.4123, 0.655])) == "[0.41,0.66]"  # rounded to the 1/100 grid
    coords, valid = codec.decode("[0.41,0.66]")
    assert valid and np.allclose(coords, [0.41, 0.66])
    processor = _processor(2)
    grammar = build_answer_grammar(processor.builder, processor.codec)
    assert sum(not item.forced for item in grammar.items) == 4  # two digits of x, two of y


def test_a_two_decimal_checkpoint_answers_with_two_decimals(tmp_path):
    tokenizer = build_char_tokenizer()
    builder = PromptBuilder(tokenizer, PromptStyle(), 1)  # adds the image token
    config = locllm_config("tiny", vocab_size=max(len(tokenizer), builder.image_token_id + 1),
                           image_token_id=builder.image_token_id, coordinate_codec=DecimalCodec(decimals=2).to_dict())
    torch.manual_seed(0)
    LocLLMForKeypointLocalization(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    crops = np.random.default_rng(0).integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
    # each crop is an image of the model's size, asked about as a whole: answers in its pixels
    found = [person for (person,) in Localizer.from_pretrained(tmp_path, device="cpu").localize_many(
        list(crops), [CropRegions.whole(SIZE)] * len(crops), keypoints="coco")]
    texts = [text for person in found for text in person.answers]
    assert len(texts) == 2 * 17 and all(re.fullmatch(r"\s*\[[01]\.\d\d,[01]\.\d\d\]\s*", t) for t in texts), texts[:3]
    assert all(person.valid.all() for person in found)
    written = np.array([DecimalCodec(decimals=2).decode(t)[0] for t in texts])
    assert np.allclose(written * SIZE, np.concatenate([p.keypoints[:, :2] for p in found]), atol=1e-4)


def _config(**prompt_and_optim):
    raw = {"output_dir": "unused", "model": {"size": "tiny", "tokenizer": "char"},
           "data": {"datasets": [{"type": "coco"}]}, **prompt_and_optim}
    return load_config(base=raw)


def test_config_decimals_reach_the_codec_and_default_to_the_papers():
    assert answer_codec(_config()).to_dict()["decimals"] == 3
    assert answer_codec(_config(prompt={"decimals": 2})).to_dict()["decimals"] == 2
    assert _config().optim.loss == "full_vocab"


@pytest.mark.parametrize("section, message", [
    ({"prompt": {"decimals": 7}}, "prompt.decimals must be 2 or 3, got 7"),
    ({"prompt": {"coordinates": "location_tokens", "decimals": 2}}, "prompt.decimals applies to decimal answers"),
    ({"optim": {"loss": "digits"}}, "optim.loss must be 'full_vocab' or 'answer_vocab', got 'digits'"),
])
def test_bad_values_are_one_clear_line(section, message):
    with pytest.raises(ValueError, match=message) as error:
        _config(**section)
    assert "\n" not in str(error.value)
