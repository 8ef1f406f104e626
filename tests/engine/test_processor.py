"""LocLLMProcessor / CLIPBaselineProcessor: built from a checkpoint's config alone (checkpoints written
before processors were saved), saved and loaded unchanged; the one padding helper; what callers ask of
them (training examples, prompts, pixel values, reading answers and heatmaps)."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from locllm.apis.demo import demo_checkpoint
from locllm.codecs import DecimalCodec, LocationTokenCodec
from locllm.engine import Localizer
from locllm.engine.localizer import strategy
from locllm.keypoints import COCO_KEYPOINTS
from locllm.models import LocLLMConfig
from locllm.models.configuration_clip_baseline import clip_baseline_config
from locllm.models.processing_clip_baseline import CLIPBaselineProcessor
from locllm.models.processing_locllm import (
    PROCESSOR_FILE,
    LocLLMImageProcessor,
    LocLLMProcessor,
)
from locllm.prompts import IGNORE_INDEX, PromptStyle, build_char_tokenizer
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


def _char_processor(ndim=2, image_size=32):
    return LocLLMProcessor(LocLLMImageProcessor(image_size), build_char_tokenizer(), PromptStyle(with_description=False),
                           DecimalCodec(ndim=ndim), num_image_tokens=4)


def test_training_example_asks_each_round_and_answers_its_coordinates():
    processor = _char_processor(ndim=3)
    rounds = [(COCO_KEYPOINTS[0], [0.25, 0.5, 100.0]), (COCO_KEYPOINTS[9], [0.125, 0.75, math.nan])]
    example = processor.training_example(rounds)
    builder, codec = processor.builder, processor.codec
    assert example == builder.training_example([(keypoint, codec.answer_pieces(coords)) for keypoint, coords in rounds])
    supervised = processor.tokenizer.decode([t for t, label in zip(example["input_ids"], example["labels"],
                                                                   strict=True) if label != IGNORE_INDEX])
    assert supervised == " [0.250,0.500,0.550000]</s> [0.125,0.750,]</s>"  # unknown depth: its filler unsupervised
    forced = processor.training_example(rounds, supervise_depth=True)
    assert forced["input_ids"] == example["input_ids"] and forced["labels"] != example["labels"]


def test_caption_example_supervises_the_caption_and_eos_after_the_image_prefix():
    processor = _char_processor()
    example = processor.caption_example("A red kite.")
    prefix, _ = processor.prompt_ids([])
    caption_ids = processor.tokenizer.encode("A red kite.", add_special_tokens=False) + [processor.eos_token_id]
    assert example == {"input_ids": prefix + caption_ids, "labels": [IGNORE_INDEX] * len(prefix) + caption_ids}


def test_prompt_ids_and_the_image_token_check():
    processor = _char_processor()
    prefix, queries = processor.prompt_ids(COCO_KEYPOINTS[:2])
    assert prefix + queries[1] == processor.builder.inference_ids(COCO_KEYPOINTS[1])
    assert processor.image_token_id in prefix
    processor.check_image_token(processor.image_token_id)
    with pytest.raises(ValueError, match=rf"tokenizer maps '<image>' to {processor.image_token_id}, the model expects 7$"):
        processor.check_image_token(7)


def test_pixel_values_normalize_crops_of_the_model_size_only():
    processor = _char_processor(image_size=32)
    crops = [np.full((32, 32, 3), 200, dtype=np.uint8), np.zeros((32, 32, 3), dtype=np.uint8)]
    assert torch.equal(processor.pixel_values(crops), processor.image_processor.normalize(crops))
    with pytest.raises(ValueError, match=r"a crop has shape \(16, 16, 3\) but the model takes \(32, 32, 3\) images"):
        processor.pixel_values([np.zeros((16, 16, 3), dtype=np.uint8)])


def test_decode_answers_reads_texts_coordinates_and_validity():
    processor = _char_processor()
    answers = [" [0.412,0.655]", "[0.4", "[0.100,0.200]"]
    token_ids = [processor.tokenizer.encode(text, add_special_tokens=False) + [processor.eos_token_id]
                 for text in answers]
    texts, coords, valid = processor.decode_answers(token_ids)
    assert texts == ["[0.412,0.655]", "[0.4", "[0.100,0.200]"]
    assert valid.tolist() == [True, False, True]
    np.testing.assert_array_equal(coords[[0, 2]], [[0.412, 0.655], [0.1, 0.2]])
    assert np.isnan(coords[1]).all()


def _one_hot_steps(values, decimals=3):
    """Per value, one-hot (1, 10) distributions of its digits: the steps of an answer decoded with certainty."""
    return [[np.eye(10)[[int(f"{value:.{decimals}f}"[2 + place])]] for place in range(decimals)] for value in values]


def test_subdigit_and_beam_coordinates_of_certain_answers_are_their_written_values():
    processor = _char_processor(ndim=3)
    steps = _one_hot_steps([0.412, 0.655]) + _one_hot_steps([0.55], decimals=6)
    np.testing.assert_allclose(processor.subdigit_coordinates(steps), [[0.412, 0.655, 100.0]], atol=1e-9)
    runner_up = _one_hot_steps([0.512, 0.755]) + _one_hot_steps([0.65], decimals=6)
    np.testing.assert_allclose(processor.beam_coordinates(steps, runner_up), [[0.412, 0.655, 100.0]], atol=1e-9)


def test_value_scores_average_the_tokens_of_each_written_value():
    processor = _char_processor()
    ids = processor.tokenizer.encode("[0.4,0.6]", add_special_tokens=False) + [processor.eos_token_id]
    probs = torch.tensor([[0.9, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.4, 1.0]])
    assert probs.shape[1] == len(ids)  # one character per token
    scores = processor.value_scores([ids], probs)  # "0.4": tokens 1-3, "0.6": tokens 5-7
    np.testing.assert_allclose(scores, [[0.2, 0.7]], rtol=1e-6)
    assert np.isnan(processor.value_scores([ids[:4]], probs)[0, 1])  # y not written


def test_clip_baseline_heatmaps_round_trip_to_normalized_keypoints():
    tokenizer = build_char_tokenizer()
    processor = CLIPBaselineProcessor.from_config(clip_baseline_config("tiny", tokenizer=tokenizer), tokenizer)
    cell = processor.image_size / processor.codec.heatmap_size
    points = np.array([[cell * 3.5, cell * 5.5], [cell * 8.5, cell * 1.5]])  # heatmap cell centres
    heatmaps, weights = processor.heatmap_targets(points)
    assert heatmaps.shape == (2, processor.codec.heatmap_size, processor.codec.heatmap_size) and weights.tolist() == [1, 1]
    normalized, peaks = processor.decode_heatmaps(heatmaps)
    assert normalized.dtype == peaks.dtype == np.float64
    np.testing.assert_allclose(normalized, points / processor.image_size, atol=0.5 * cell / processor.image_size)
    np.testing.assert_allclose(peaks, heatmaps.flatten(1).max(dim=1).values.double().numpy())
