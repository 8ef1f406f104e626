import re

import numpy as np
import pytest
import torch

from locllm.codecs import DecimalCodec
from locllm.data.datasets import CaptionSample, PoseSample
from locllm.keypoints import COCO_KEYPOINTS
from locllm.models import CLIP_MEAN, CLIP_STD
from locllm.models.processing_locllm import LocLLMImageProcessor, LocLLMProcessor
from locllm.prompts import IGNORE_INDEX, PromptStyle, build_char_tokenizer
from locllm.training.collator import TrainingCollator

SIZE = 56
QUESTION = re.compile(r"Question: Where is the (.+?) of this person")


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def _collator(tokenizer, ndim=2, max_rounds=5, **kwargs):
    processor = LocLLMProcessor(LocLLMImageProcessor(image_size=SIZE), tokenizer, PromptStyle.default(),
                                DecimalCodec(ndim=ndim), num_image_tokens=16)
    return TrainingCollator(processor, max_rounds=max_rounds, seed=0, **kwargs)


def _sample(visible, has_depth=False, seed=0):
    rng = np.random.default_rng(seed)
    joints = np.zeros((17, 3), dtype=np.float32)
    joints[:, :2] = rng.uniform(0, SIZE, size=(17, 2))
    joints[:, 2] = rng.uniform(-500, 500, size=17) if has_depth else 0.0
    visible = np.asarray(visible, dtype=bool)
    return PoseSample(
        image=rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8), joints=joints, visible=visible,
        labelled=visible.copy(), keypoints=COCO_KEYPOINTS, has_depth=has_depth,
        center=np.array([28.0, 28.0], dtype=np.float32), scale=np.array([0.28, 0.28], dtype=np.float32),
        rotation=0.0, pixel_std=200.0, flipped=False, image_size=(SIZE, SIZE), image_id=seed,
    )


def _asked(tokenizer, ids):
    return QUESTION.findall(tokenizer.decode(ids))


def _supervised_rounds(tokenizer, ids, labels):
    """The supervised text of each round (runs of labels != IGNORE_INDEX, split at EOS)."""
    text = "".join(tokenizer.decode([t]) if l != IGNORE_INDEX else "|" for t, l in zip(ids.tolist(), labels.tolist(), strict=True))
    return [r for r in re.split(r"\|+", text) if r]


def test_rounds_ask_visible_keypoints_with_their_answers(tokenizer):
    visible = np.zeros(17, dtype=bool)
    visible[[0, 5, 9, 13, 14, 15, 16]] = True
    sample = _sample(visible)
    batch = _collator(tokenizer)([(0, 3, sample)])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    asked = _asked(tokenizer, ids)
    assert len(asked) == 5 and len(set(asked)) == 5
    assert set(asked) <= {COCO_KEYPOINTS[k].name for k in np.flatnonzero(visible)}
    answers = [DecimalCodec().encode(sample.joints[COCO_KEYPOINTS.index(name), :2] / SIZE) + "</s>" for name in asked]
    assert [r.strip() for r in _supervised_rounds(tokenizer, ids, labels)] == answers


def test_fewer_visible_keypoints_than_rounds(tokenizer):
    visible = np.zeros(17, dtype=bool)
    visible[[3, 7]] = True
    batch = _collator(tokenizer)([(0, 0, _sample(visible))])
    assert sorted(_asked(tokenizer, batch["input_ids"][0])) == ["left ear", "left elbow"]


def test_choice_is_seeded_by_epoch_and_index(tokenizer):
    collator = _collator(tokenizer, max_rounds=3)
    sample = _sample(np.ones(17, dtype=bool))

    def asked(epoch, index):
        return _asked(tokenizer, collator([(epoch, index, sample)])["input_ids"][0])

    assert asked(0, 5) == asked(0, 5)
    draws = {tuple(asked(epoch, index)) for epoch in range(3) for index in range(3)}
    assert len(draws) > 5


def test_padding_and_pixels(tokenizer):
    one = np.zeros(17, dtype=bool)
    one[0] = True
    short, long = _sample(one), _sample(np.ones(17, dtype=bool), seed=1)
    mean_image = np.tile(np.round(np.array(CLIP_MEAN) * 255).astype(np.uint8), (SIZE, SIZE, 1))
    short.image = mean_image
    batch = _collator(tokenizer)([(0, 0, short), (0, 1, long)])
    n_short = int(batch["attention_mask"][0].sum())
    assert batch["attention_mask"][1].all() and n_short < batch["input_ids"].shape[1]
    assert (batch["input_ids"][0, n_short:] == tokenizer.pad_token_id).all()
    assert (batch["labels"][0, n_short:] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape == (2, 3, SIZE, SIZE) and batch["pixel_values"].dtype == torch.float32
    assert batch["pixel_values"][0].abs().max() < 0.5 / 255 / min(CLIP_STD)  # the mean colour maps to ~0


def test_3d_depth_is_supervised_only_when_known(tokenizer):
    one = np.zeros(17, dtype=bool)
    one[11] = True
    with_depth, without_depth = _sample(one, has_depth=True), _sample(one, has_depth=False)
    collator = _collator(tokenizer, ndim=3)
    batch = collator([(0, 0, with_depth), (0, 1, without_depth)])
    known = _supervised_rounds(tokenizer, batch["input_ids"][0], batch["labels"][0])
    x, y, depth = with_depth.joints[11]
    assert "".join(known).strip() == DecimalCodec(ndim=3).encode([x / SIZE, y / SIZE, depth]) + "</s>"
    unknown = _supervised_rounds(tokenizer, batch["input_ids"][1], batch["labels"][1])
    text = tokenizer.decode(batch["input_ids"][1])
    assert ",0.000000]" in text  # the filler stays in the prompt, as the reference writes it
    assert [r.strip() for r in unknown] == [DecimalCodec().encode(without_depth.joints[11, :2] / SIZE)[:-1] + ",", "]</s>"]
    reference_like = _collator(tokenizer, ndim=3, supervise_unknown_depth=True)([(0, 1, without_depth)])
    assert "0.000000]" in "".join(_supervised_rounds(tokenizer, reference_like["input_ids"][0], reference_like["labels"][0]))


def test_caption_sample_supervises_caption_only(tokenizer):
    sample = CaptionSample(image=np.zeros((SIZE, SIZE, 3), dtype=np.uint8), instruction="Describe.",
                           caption="A red kite.", sample_id="1")
    batch = _collator(tokenizer)([(0, 0, sample)])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert tokenizer.decode(ids).startswith("<s>Image: <image>")
    assert _supervised_rounds(tokenizer, ids, labels) == ["A red kite.</s>"]
    assert "Describe" not in tokenizer.decode(ids)


def test_errors(tokenizer):
    with pytest.raises(ValueError, match="no visible keypoint"):
        _collator(tokenizer)([(0, 0, _sample(np.zeros(17, dtype=bool)))])
    sample = _sample(np.ones(17, dtype=bool))
    sample.image = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="data.crop_size"):
        _collator(tokenizer)([(0, 0, sample)])


def test_coordinates_are_normalized_by_crop_size(tokenizer):
    one = np.zeros(17, dtype=bool)
    one[0] = True
    sample = _sample(one)
    sample.joints[0, :2] = [SIZE * 0.25, SIZE * 0.5]
    batch = _collator(tokenizer)([(0, 0, sample)])
    assert "".join(_supervised_rounds(tokenizer, batch["input_ids"][0], batch["labels"][0])).strip() == "[0.250,0.500]</s>"
