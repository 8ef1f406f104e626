"""Prompt ids and label masks with the tokenizers users have (Llama-2, SmolLM2) and our character tokenizer."""

import copy
import math
import string

import pytest
from transformers import AutoTokenizer

from locllm.codecs import DecimalCodec, LocationTokenCodec
from locllm.keypoints import COCO_KEYPOINTS, Keypoint
from locllm.prompts import IGNORE_INDEX, PromptBuilder, PromptStyle, build_char_tokenizer

NUM_IMAGE_TOKENS = 8
CODEC_2D = DecimalCodec()
CODEC_3D = DecimalCodec(ndim=3)
KNEE, NOSE, WRIST = COCO_KEYPOINTS[13], COCO_KEYPOINTS[0], COCO_KEYPOINTS[10]
STYLES = {"default": PromptStyle.default(), "reference": PromptStyle.reference(),
          "no_description": PromptStyle(with_description=False)}


def _private_copy(request, name):
    """A tokenizer of our own: the builder adds its image token to the tokenizer it is given."""
    if name == "char":
        return build_char_tokenizer()
    return copy.deepcopy(request.getfixturevalue(f"{name}_tokenizer"))


@pytest.fixture(scope="module", params=["char", "llama2", "smollm2"])
def tokenizer(request):
    """One copy per module: adding the same image token again changes nothing."""
    return _private_copy(request, request.param)


@pytest.fixture(params=list(STYLES))
def style(request):
    return STYLES[request.param]


def _rounds(count=5):
    points = [[0.57, 0.771], [0.492, 0.101], [0.33, 0.536], [0.469, 0.078], [0.559, 0.559]]
    keypoints = [KNEE, NOSE, WRIST, COCO_KEYPOINTS[2], COCO_KEYPOINTS[11]]
    return [(kp, CODEC_2D.answer_pieces(p)) for kp, p in zip(keypoints[:count], points[:count], strict=True)]


def _supervised_spans(labels):
    """(start, end) of each maximal run of supervised positions."""
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_prefix_and_query_make_the_inference_prompt(tokenizer, style):
    builder = PromptBuilder(tokenizer, style, NUM_IMAGE_TOKENS)
    prefix = builder.prefix_ids()
    for keypoint in (KNEE, NOSE):
        prompt = builder.inference_ids(keypoint)
        assert prompt == prefix + builder.query_ids(keypoint)
        assert prompt.count(builder.image_token_id) == NUM_IMAGE_TOKENS
        first_image = prompt.index(builder.image_token_id)
        assert prompt[first_image: first_image + NUM_IMAGE_TOKENS] == [builder.image_token_id] * NUM_IMAGE_TOKENS
    # a one-round training example is exactly the inference prompt followed by the answer
    example = builder.training_example(_rounds(1))
    prompt = builder.inference_ids(KNEE)
    assert example["input_ids"][: len(prompt)] == prompt
    assert set(example["labels"][: len(prompt)]) == {IGNORE_INDEX}
    assert example["input_ids"][len(prompt):] == builder.answer_ids(CODEC_2D.answer_pieces([0.57, 0.771]))[0]


def test_label_mask_covers_exactly_answers_and_eos(tokenizer, style):
    builder = PromptBuilder(tokenizer, style, NUM_IMAGE_TOKENS)
    rounds = _rounds(5)
    example = builder.training_example(rounds)
    input_ids, labels = example["input_ids"], example["labels"]
    assert len(input_ids) == len(labels)
    spans = _supervised_spans(labels)
    assert len(spans) == 5
    prompt_length = len(builder.inference_ids(rounds[0][0]))
    assert spans[0][0] == prompt_length  # supervision starts right after the first "Answer:"
    for (start, end), (_, pieces) in zip(spans, rounds, strict=True):
        assert labels[start:end] == input_ids[start:end]
        assert input_ids[end - 1] == tokenizer.eos_token_id
        text = tokenizer.decode(input_ids[start:end])
        assert text.strip() == pieces[0][0] + tokenizer.eos_token
    # everything between two answers is the next round's query, token for token
    for (_, end), (next_start, _), (keypoint, _) in zip(spans[:-1], spans[1:], rounds[1:], strict=True):
        assert input_ids[end:next_start] == builder.query_ids(keypoint)
    assert spans[-1][1] == len(input_ids)


def test_multi_round_text_matches_the_ids(tokenizer, style):
    builder = PromptBuilder(tokenizer, style, NUM_IMAGE_TOKENS)
    rounds = _rounds(3)
    text = builder.training_text(rounds)
    assert text.count(tokenizer.eos_token) == 3 and text.count(style.answer_prefix) == 3
    assert ("Keypoint: " in text) == style.with_description
    assert builder.inference_text(KNEE) == text[: text.index(style.answer_prefix) + len(style.answer_prefix)]


def test_char_tokenizer_ids_spell_the_text():
    builder = PromptBuilder(build_char_tokenizer(), PromptStyle.default(), NUM_IMAGE_TOKENS)
    rounds = _rounds(2)
    example = builder.training_example(rounds)
    assert builder.tokenizer.decode(example["input_ids"]) == "<s>" + builder.training_text(rounds)


def test_without_description_drops_the_keypoint_turn(tokenizer):
    with_description = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    without = PromptBuilder(tokenizer, PromptStyle(with_description=False), NUM_IMAGE_TOKENS)
    assert len(without.query_ids(KNEE)) < len(with_description.query_ids(KNEE))
    assert "Keypoint" not in tokenizer.decode(without.inference_ids(KNEE))
    assert "Keypoint" in tokenizer.decode(with_description.inference_ids(KNEE))
    without.training_example(_rounds(2))  # the label check passes


def test_description_is_required_when_asked_with_one(tokenizer):
    builder = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    with pytest.raises(ValueError, match="no description"):
        builder.query_ids(Keypoint("elbow", ""))


def test_3d_depth_without_ground_truth_is_not_supervised(tokenizer):
    builder = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    known = CODEC_3D.answer_pieces([0.412, 0.655, 6.25])
    unknown = CODEC_3D.answer_pieces([0.412, 0.655, math.nan])
    example = builder.training_example([(KNEE, known), (NOSE, unknown)])
    input_ids, labels = example["input_ids"], example["labels"]
    spans = _supervised_spans(labels)
    assert len(spans) == 3  # round 1 whole; round 2 split around its depth
    assert tokenizer.decode(input_ids[slice(*spans[0])]).strip() == "[0.412,0.655,0.503125]" + tokenizer.eos_token
    assert tokenizer.decode(input_ids[slice(*spans[1])]).strip() == "[0.412,0.655,"
    assert tokenizer.decode(input_ids[spans[1][1]: spans[2][0]]) == "0.000000"
    assert tokenizer.decode(input_ids[slice(*spans[2])]) == "]" + tokenizer.eos_token
    # the reference's behaviour, on request: the filler depth is learned
    reference_like = builder.training_example([(NOSE, CODEC_3D.answer_pieces([0.412, 0.655, math.nan], True))])
    assert len(_supervised_spans(reference_like["labels"])) == 1


def test_the_check_catches_a_shifted_mask(tokenizer, monkeypatch):
    builder = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    original = PromptBuilder.answer_ids

    def shifted(self, pieces):
        ids, labels = original(self, pieces)
        return ids, [IGNORE_INDEX] + labels[:-1]  # the off-by-one of counting tokens of separate strings

    monkeypatch.setattr(PromptBuilder, "answer_ids", shifted)
    with pytest.raises(ValueError, match="label mask check failed for tokenizer"):
        builder.training_example(_rounds(2))
    builder.training_example(_rounds(2), check=False)  # the check is what caught it


def test_the_check_catches_a_mask_on_the_wrong_tokens(tokenizer):
    builder = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    rounds = _rounds(2)
    example = builder.training_example(rounds)
    input_ids, labels = example["input_ids"], list(example["labels"])
    start, _ = _supervised_spans(labels)[1]
    labels[start - 1] = input_ids[start - 1]  # also supervise the ':' of "Answer:"
    with pytest.raises(ValueError, match="round 1") as error:
        builder.check_labels(input_ids, labels, [pieces for _, pieces in rounds])
    assert "[0.492,0.101]" in str(error.value)  # names the expected answer
    with pytest.raises(ValueError, match="2 answers"):
        builder.check_labels(input_ids, [IGNORE_INDEX] * len(input_ids), [pieces for _, pieces in rounds])


def test_bos_convention_of_each_tokenizer(tokenizer):
    builder = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    plain = tokenizer.encode("x", add_special_tokens=False)
    assert builder.bos_ids == tokenizer.encode("x")[: len(tokenizer.encode("x")) - len(plain)]
    assert builder.prefix_ids()[: len(builder.bos_ids)] == builder.bos_ids


@pytest.mark.parametrize("name", ["char", "llama2", "smollm2"])
def test_image_token_is_added_once_as_special(request, name):
    tokenizer = _private_copy(request, name)
    size = len(tokenizer)
    builder = PromptBuilder(tokenizer, PromptStyle.reference(), NUM_IMAGE_TOKENS)
    assert tokenizer.convert_ids_to_tokens(builder.image_token_id) == "<im_patch>"
    assert len(tokenizer) == size + 1
    again = PromptBuilder(tokenizer, PromptStyle.reference(), NUM_IMAGE_TOKENS)
    assert again.image_token_id == builder.image_token_id and len(tokenizer) == size + 1


def test_known_ids_of_llama2(llama2_tokenizer):
    tokenizer = copy.deepcopy(llama2_tokenizer)
    builder = PromptBuilder(tokenizer, PromptStyle.reference(), 256)
    assert builder.image_token_id == 32000 and builder.bos_ids == [1] and builder.eos_token_id == 2
    assert builder.answer_start_ids() == [518]  # '▁['
    assert builder.prefix_ids() == [1, 7084, 29901] + [32000] * 256  # '▁Image' ':' and the image
    assert tokenizer.convert_ids_to_tokens(builder.query_ids(KNEE)[:2]) == ["Key", "point"]  # no '▁' after it
    default = PromptBuilder(copy.deepcopy(llama2_tokenizer), PromptStyle.default(), 4)
    assert default.prefix_ids() == [1, 7084, 29901, 29871] + [default.image_token_id] * 4 + [13]


def test_smollm2_has_no_bos_and_its_own_eos(smollm2_tokenizer):
    builder = PromptBuilder(copy.deepcopy(smollm2_tokenizer), PromptStyle.default(), 4)
    assert builder.bos_ids == []
    assert builder.eos_token_id == smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    example = builder.training_example(_rounds(1))
    assert example["labels"][-1] == builder.eos_token_id


def test_allowed_answer_ids_cover_every_answer(tokenizer):
    builder = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    for codec, point in ((CODEC_2D, [0.57, 0.771]), (CODEC_3D, [0.412, 0.655, 6.25])):
        steps = builder.allowed_answer_ids(codec)
        answer, _ = builder.answer_ids(codec.answer_pieces(point))
        assert len(answer) == len(steps)
        assert all(token in allowed for token, allowed in zip(answer, steps, strict=True))
        assert steps[: len(builder.answer_start_ids())] == [[i] for i in builder.answer_start_ids()]
        assert steps[-1] == [builder.eos_token_id]
    digit_ids = builder.unit_token_ids(string.digits)
    assert len(set(digit_ids.values())) == 10
    assert sorted(max(builder.allowed_answer_ids(CODEC_2D), key=len)) == sorted(digit_ids.values())


def test_llama2_grammar_steps(llama2_tokenizer):
    builder = PromptBuilder(copy.deepcopy(llama2_tokenizer), PromptStyle.reference(), 4)
    steps = builder.allowed_answer_ids(CODEC_2D)
    assert len(steps) == 14  # the reference's 13 answer tokens + EOS
    ids = builder.unit_token_ids()
    assert steps[:3] == [[518], [ids["0"]], [ids["."]]] and steps[6] == [ids[","]] and steps[12] == [ids["]"]]


def test_location_tokens_need_the_new_vocabulary():
    codec = LocationTokenCodec(num_bins=50)
    tokenizer = build_char_tokenizer()
    builder = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    pieces = codec.answer_pieces([0.4, 0.6])
    with pytest.raises(ValueError, match="new_tokens"):
        builder.training_example([(KNEE, pieces)])
    tokenizer.add_tokens(codec.new_tokens())
    example = builder.training_example([(KNEE, pieces)])
    answer = example["input_ids"][len(builder.inference_ids(KNEE)):]
    assert tokenizer.convert_ids_to_tokens(answer) == [" ", "[", "<loc_0020>", "<loc_0030>", "]", "</s>"]
    steps = builder.allowed_answer_ids(codec)
    assert len(steps) == len(answer) and len(steps[2]) == 50


def test_style_serialization_and_validation():
    for style in STYLES.values():
        assert PromptStyle.from_dict(style.to_dict()) == style
    assert PromptStyle.reference().image_token == "<im_patch>"
    with pytest.raises(ValueError, match="unknown PromptStyle fields"):
        PromptStyle.from_dict({"image_prefx": "Image: "})
    with pytest.raises(ValueError, match="{name}"):
        PromptStyle(question_template="Where is it?")
    with pytest.raises(ValueError, match="whitespace"):
        PromptStyle(image_suffix="\nNow:", strip_space_around_special_tokens=True)


def test_question_template_is_a_style_field(tokenizer):
    style = PromptStyle(question_template="Locate the {name}.")
    builder = PromptBuilder(tokenizer, style, NUM_IMAGE_TOKENS)
    assert "Question: Locate the left knee.\nAnswer:" in builder.inference_text(KNEE)
    assert "Locate the left knee." in tokenizer.decode(builder.query_ids(KNEE))


def test_builder_errors(tokenizer):
    with pytest.raises(ValueError, match="num_image_tokens"):
        PromptBuilder(tokenizer, PromptStyle.default(), 0)
    builder = PromptBuilder(tokenizer, PromptStyle.default(), NUM_IMAGE_TOKENS)
    with pytest.raises(ValueError, match="at least one round"):
        builder.training_example([])
    with pytest.raises(ValueError, match="must start with"):
        builder.answer_ids([("0.4,0.6]", True)])


def test_char_tokenizer_vocabulary_and_round_trip(tmp_path):
    tokenizer = build_char_tokenizer()
    printable = "".join(chr(c) for c in range(0x20, 0x7F)) + "\n\t"
    ids = tokenizer.encode(printable, add_special_tokens=False)
    assert len(ids) == len(printable) and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == printable
    assert tokenizer.encode("é", add_special_tokens=False) == [tokenizer.unk_token_id]
    assert tokenizer.encode("<image>", add_special_tokens=False) == [tokenizer.convert_tokens_to_ids("<image>")]
    assert tokenizer.encode("a")[0] == tokenizer.bos_token_id
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(tokenizer)
    text = "Image: <image>\nAnswer: [0.412,0.655]</s>"
    assert loaded.encode(text) == tokenizer.encode(text)
    assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
