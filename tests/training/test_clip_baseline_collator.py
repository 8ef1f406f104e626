import numpy as np
import pytest

from locllm.data.augment import NO_AUGMENTATION
from locllm.data.datasets import CocoKeypointDataset
from locllm.keypoints import COCO_KEYPOINTS, PAPER_HELD_OUT
from locllm.models.configuration_clip_baseline import clip_baseline_config
from locllm.models.processing_clip_baseline import CLIPBaselineProcessor
from locllm.prompts import build_char_tokenizer
from locllm.training.clip_baseline_collator import CLIPBaselineCollator


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def test_collator_asks_visible_keypoints_with_matching_targets(synth, tokenizer):
    annotations, images = synth
    config = clip_baseline_config("tiny", tokenizer=tokenizer)
    dataset = CocoKeypointDataset(annotations / "train.json", images, train=True, crop_size=64,
                                  augmentation=NO_AUGMENTATION, exclude_keypoints=PAPER_HELD_OUT)
    items = [(0, i, dataset[i]) for i in range(len(dataset))]
    processor = CLIPBaselineProcessor.from_config(config, tokenizer)
    batch = CLIPBaselineCollator(processor)(items)
    visible = sum(int(sample.visible.sum()) for _, _, sample in items)
    assert batch["pixel_values"].shape == (len(items), 3, 64, 64)
    assert batch["target_heatmaps"].shape == (visible, 32, 32) and batch["target_weights"].sum() == visible
    # each distinct keypoint text is encoded once; the held-out keypoints are never asked
    texts = [tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
             for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    by_text = {processor.keypoint_text(keypoint): k for k, keypoint in enumerate(COCO_KEYPOINTS)}
    asked = [by_text[text] for text in texts]
    assert len(set(asked)) == len(asked) and not {COCO_KEYPOINTS.names[k] for k in asked} & set(PAPER_HELD_OUT)
    # each target decodes to its own sample's keypoint (stride 2: within a quarter cell, 0.5 px)
    decoded, _ = config.heatmap_codec().decode(batch["target_heatmaps"])
    for query, (row, text) in enumerate(zip(batch["image_index"].tolist(), batch["text_index"].tolist(), strict=True)):
        sample, k = items[row][2], asked[text]
        assert sample.visible[k]
        assert np.abs(decoded[query].numpy() - sample.joints[k, :2]).max() <= 0.5 + 1e-5


def test_collator_one_keypoint_per_sample_is_seeded(synth, tokenizer):
    annotations, images = synth
    config = clip_baseline_config("tiny", tokenizer=tokenizer)
    dataset = CocoKeypointDataset(annotations / "train.json", images, train=True, crop_size=64,
                                  augmentation=NO_AUGMENTATION)
    collator = CLIPBaselineCollator(CLIPBaselineProcessor.from_config(config, tokenizer), keypoints_per_sample=1, seed=5)

    def asked(epoch):
        batch = collator([(epoch, i, dataset[i]) for i in range(len(dataset))])
        assert batch["image_index"].tolist() == list(range(len(dataset)))
        return [batch["input_ids"][t].tolist() for t in batch["text_index"]]

    assert asked(0) == asked(0)  # the same (seed, epoch, index), the same keypoints
    assert any(asked(epoch) != asked(0) for epoch in range(1, 6))
    with pytest.raises(ValueError, match="keypoints_per_sample"):
        CLIPBaselineCollator(CLIPBaselineProcessor.from_config(config, tokenizer), keypoints_per_sample=0)
