"""LocLLMProcessor / CLIPBaselineProcessor: built from a checkpoint's config alone (checkpoints written
before processors were saved), saved and loaded unchanged; the one padding helper."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from locllm.apis.demo import demo_checkpoint
from locllm.codecs import DecimalCodec, LocationTokenCodec
from locllm.engine import Localizer
from locllm.engine.localizer import strategy
from locllm.models import LocLLMConfig
from locllm.models.configuration_clip_baseline import clip_baseline_config
from locllm.models.processing_clip_baseline import CLIPBaselineProcessor
from locllm.models.processing_locllm import (
    PROCESSOR_FILE,
    LocLLMImageProcessor,
    LocLLMProcessor,
)
from locllm.prompts import PromptStyle, build_char_tokenizer
from locllm.prompts.padding import pad_sequences, pad_token_id

from .test_localizer import BOXES, IMAGE


def _same(a: LocLLMProcessor, b: LocLLMProcessor) -> None:
    assert a.to_dict() == b.to_dict()
    assert a.builder.prefix_ids() == b.builder.prefix_ids()
    assert a.grammar == b.grammar
    assert a.pad_token_id == b.pad_token_id


def test_demo_checkpoint_processor_is_built_from_its_config():
    folder = demo_checkpoint()
    assert not (folder / PROCESSOR_FILE).exists()
    processor = LocLLMProcessor.from_pretrained(folder)
    config = LocLLMConfig.from_pretrained(folder)
    _same(processor, LocLLMProcessor.from_config(config, AutoTokenizer.from_pretrained(folder)))
    assert processor.image_processor.image_size == config.image_size == 64
    assert processor.builder.image_token_id == config.image_token_id
    assert processor.builder.num_image_tokens == config.num_image_tokens
    assert processor.codec.to_dict() == DecimalCodec().to_dict()


def test_save_load_round_trip_gives_the_same_processor_and_answers(char_checkpoint, tmp_path):
    before = Localizer.from_pretrained(char_checkpoint, device="cpu")
    folder = tmp_path / "with_processor"
    folder.mkdir()
    for path in char_checkpoint.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    before.processor.save_pretrained(folder)
    assert json.loads((folder / PROCESSOR_FILE).read_text())["processor_class"] == "LocLLMProcessor"
    after = Localizer.from_pretrained(folder, device="cpu")
    _same(before.processor, after.processor)
    assert [p.answers for p in after.localize(IMAGE, BOXES)] == [p.answers for p in before.localize(IMAGE, BOXES)]


def test_a_saved_processor_wins_over_the_config(tmp_path):
    tokenizer = build_char_tokenizer()
    processor = LocLLMProcessor(LocLLMImageProcessor(32, mean=(0.5,) * 3, std=(0.25,) * 3), tokenizer,
                                PromptStyle(with_description=False), DecimalCodec(ndim=3, decimals=2), 4)
    processor.save_pretrained(tmp_path)
    loaded = LocLLMProcessor.from_pretrained(tmp_path)  # no config.json at all
    _same(processor, loaded)
    assert torch.equal(loaded.image_processor.std, processor.image_processor.std)
    with pytest.raises(ValueError, match="CLIPBaselineProcessor"):
        CLIPBaselineProcessor.from_pretrained(tmp_path)


def test_location_token_grammar_is_built_on_first_use():
    tokenizer = build_char_tokenizer()
    codec = LocationTokenCodec(num_bins=10)
    processor = LocLLMProcessor(LocLLMImageProcessor(32), tokenizer, codec=codec, num_image_tokens=4)
    tokenizer.add_tokens(codec.new_tokens())  # as the trainer does, after the processor may exist
    assert len(processor.grammar) == len(processor.builder.allowed_answer_ids(codec))


def test_clip_baseline_processor_round_trip(tmp_path):
    tokenizer = build_char_tokenizer()
    config = clip_baseline_config("tiny", tokenizer=tokenizer)
    processor = CLIPBaselineProcessor.from_config(config, tokenizer)
    processor.save_pretrained(tmp_path)
    loaded = CLIPBaselineProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert (loaded.codec.image_size, loaded.codec.heatmap_size) == (config.image_size, config.heatmap_size)
    ids, mask = loaded.tokenize_texts(["neck", "a much longer text than neck"])
    assert ids.shape == mask.shape and mask[0].sum() == len("neck") + 2  # BOS + characters + EOS
    assert ids[0, mask[0].sum() - 1] == tokenizer.eos_token_id and (ids[0, mask[0].sum():] == tokenizer.pad_token_id).all()


def test_pad_sequences_left_and_right():
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_value=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_value=-100)
    assert ids.tolist() == [[5, 6, 7], [8, -100, -100]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="side"):
        pad_sequences([[1]], 0, side="middle")


def test_pad_token_rule_is_pad_then_unk_then_eos():
    tokenizer = build_char_tokenizer()
    assert pad_token_id(tokenizer) == tokenizer.pad_token_id
    tokenizer.pad_token = None
    assert pad_token_id(tokenizer) == tokenizer.unk_token_id
    tokenizer.unk_token = None
    assert pad_token_id(tokenizer) == tokenizer.eos_token_id


def test_an_unknown_model_type_is_refused():
    with pytest.raises(ValueError, match="no localizer for model_type 'bert'"):
        strategy("bert")
