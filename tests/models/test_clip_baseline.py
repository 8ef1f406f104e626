"""The CLIP baseline (paper 3.4): tiny-config model, heatmap codec, collator, checkpoints, Localizer API, eval."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from locllm.cli import main
from locllm.codecs import HeatmapCodec
from locllm.data.augment import NO_AUGMENTATION
from locllm.data.datasets import CocoKeypointDataset
from locllm.engine import HeatmapAnswerer, Localizer
from locllm.keypoints import COCO_KEYPOINTS, PAPER_HELD_OUT
from locllm.models.configuration_clip_baseline import clip_baseline_config
from locllm.models.modeling_base import BASE_WEIGHTS, TRAINED_WEIGHTS
from locllm.models.modeling_clip_baseline import CLIPBaselineForKeypointHeatmaps
from locllm.models.processing_clip_baseline import CLIPBaselineProcessor
from locllm.models.processing_locllm import CropRegions
from locllm.prompts import build_char_tokenizer
from locllm.training import checkpoint as ckpt
from locllm.training import trainer
from locllm.training.clip_baseline_collator import CLIPBaselineCollator
from locllm.training.config import load_config

IMAGE = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
BOXES = [[10, 10, 50, 80], [0, 0, 90, 120], [30, 5, 40, 40]]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def _tiny(tokenizer, seed=0, **overrides):
    torch.manual_seed(seed)
    return CLIPBaselineForKeypointHeatmaps(clip_baseline_config("tiny", tokenizer=tokenizer, **overrides))


def _make_lora_matter(model, std=0.1):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=std)


def _texts(model, tokenizer, names):
    processor = CLIPBaselineProcessor.from_config(model.config, tokenizer)
    return processor.tokenize_texts([processor.keypoint_text(COCO_KEYPOINTS[COCO_KEYPOINTS.index(n)]) for n in names])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny random CLIP baseline whose LoRA matters, saved with its tokenizer."""
    folder = tmp_path_factory.mktemp("clip_baseline")
    model = _tiny(tokenizer)
    _make_lora_matter(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------- the model


def test_forward_backward_reach_only_trained_weights(tokenizer):
    model = _tiny(tokenizer)
    input_ids, attention_mask = _texts(model, tokenizer, ["nose", "left knee"])
    size, side = model.config.image_size, model.config.heatmap_size
    pixels = torch.randn(3, 3, size, size)
    out = model(pixels, input_ids, attention_mask, image_index=torch.tensor([0, 1, 2, 2]),
                text_index=torch.tensor([0, 1, 0, 1]), target_heatmaps=torch.rand(4, side, side),
                target_weights=torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert out.heatmaps.shape == (4, side, side) == (4, 32, 32)
    out.loss.backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("clip.vision_model.") and "lora_B" in n for n in trained)
    assert not any(n.startswith("clip.text_model.") for n in trained)  # default: the text tower stays as is
    assert all(model.get_parameter(n).grad is not None for n in trained if n.startswith("head."))
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []


def test_loss_is_the_weighted_mean_of_each_heatmaps_mse(tokenizer):
    model = _tiny(tokenizer).eval()
    input_ids, attention_mask = _texts(model, tokenizer, ["nose", "left knee"])
    pixels = torch.randn(2, 3, 64, 64)
    targets = torch.rand(2, 32, 32)
    with torch.no_grad():
        out = model(pixels, input_ids, attention_mask, target_heatmaps=targets, target_weights=torch.tensor([0.0, 1.0]))
        halved = model(pixels, input_ids, attention_mask, target_heatmaps=targets,
                       target_weights=torch.tensor([0.0, 1.0]), num_items_in_batch=2)
    expected = ((out.heatmaps[1] - targets[1]) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(halved.loss, expected / 2)


def test_each_query_pairs_its_image_with_its_text(tokenizer):
    model = _tiny(tokenizer).eval()
    _make_lora_matter(model)
    input_ids, attention_mask = _texts(model, tokenizer, ["nose", "left knee", "right ankle"])
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        together = model(pixels, input_ids, attention_mask, image_index=torch.tensor([1, 0, 1]),
                         text_index=torch.tensor([2, 0, 0])).heatmaps
        for query, (image, text) in enumerate([(1, 2), (0, 0), (1, 0)]):
            alone = model(pixels[image:image + 1], input_ids[text:text + 1], attention_mask[text:text + 1]).heatmaps
            torch.testing.assert_close(together[query], alone[0], atol=1e-5, rtol=1e-4)
        # the keypoint asked changes the heatmap: the head is conditioned by the text alone
        assert not torch.allclose(together[0], together[2])


def test_padding_does_not_change_a_texts_embedding(tokenizer):
    model = _tiny(tokenizer).eval()
    processor = CLIPBaselineProcessor.from_config(model.config, tokenizer)
    short, short_mask = processor.tokenize_texts(["neck"])
    padded, padded_mask = processor.tokenize_texts(["neck", "a much longer text than neck"])
    assert short[0, -1] == tokenizer.eos_token_id and padded_mask[0].sum() == short.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_embeddings(short, short_mask)[0],
                                   model.get_text_embeddings(padded, padded_mask)[0], atol=1e-6, rtol=1e-5)


def test_config_checks_its_geometry_and_template():
    config = clip_baseline_config("tiny")
    assert (config.grid_size, config.heatmap_size, config.max_text_length) == (8, 32, 256)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        clip_baseline_config("tiny", image_size=60)
    with pytest.raises(ValueError, match="text_template"):
        clip_baseline_config("tiny", text_template="a keypoint")
    processor = CLIPBaselineProcessor.from_config(clip_baseline_config("tiny", text_template="{name}"),
                                                  build_char_tokenizer())
    assert processor.keypoint_text(COCO_KEYPOINTS[0]) == "nose"


# ----------------------------------------------------------------------------------------- the codec


def test_heatmap_round_trip_within_a_quarter_cell():
    codec = HeatmapCodec(image_size=64, heatmap_size=32, sigma=2.0)  # stride 2
    points = torch.from_numpy(np.random.default_rng(1).uniform(1, 62, size=(200, 2))).float()
    heatmaps, weights = codec.encode(points, np.ones(len(points), dtype=bool))
    assert heatmaps.shape == (200, 32, 32) and (weights == 1).all()
    decoded, scores = codec.decode(heatmaps)
    error = (decoded - points).abs()  # (200, 2) crop pixels
    cells = codec.crop_to_heatmap(points).round()
    interior = (cells > 0) & (cells < 31)
    assert error[interior].max() <= 0.25 * codec.stride + 1e-5  # argmax + quarter-cell shift: 0.5 px here
    assert error.max() <= 0.5 * codec.stride + 1e-5  # the outermost cells are not shifted
    assert ((scores > 0.9) & (scores <= 1)).all()


def test_heatmap_cells_are_aligned_with_crop_pixels():
    codec = HeatmapCodec(image_size=224, heatmap_size=56, sigma=2.0)  # stride 4: cell 0 spans pixels 0..3
    cell_centre = torch.tensor([[1.5, 1.5], [9.5, 113.5]])  # the centres of cells (0, 0) and (2, 28)
    decoded, _ = codec.decode(codec.encode(cell_centre, [True, True])[0])
    torch.testing.assert_close(decoded, cell_centre)
    heatmaps, weights = codec.encode(torch.tensor([[10.0, 10.0], [-3.0, 10.0]]), [False, True])
    assert weights.tolist() == [0.0, 0.0] and heatmaps.abs().sum() == 0  # hidden, and outside the crop


# -------------------------------------------------------------------------------------- the collator


# ------------------------------------------------------------------------------------- checkpoints


def test_save_load_round_trip_identical_heatmaps(checkpoint, tokenizer):
    names = {path.name for path in checkpoint.iterdir()}
    assert {"config.json", TRAINED_WEIGHTS, BASE_WEIGHTS} <= names
    model = _tiny(tokenizer)
    _make_lora_matter(model)
    loaded = CLIPBaselineForKeypointHeatmaps.from_pretrained(checkpoint)
    assert loaded.trained_state_dict().keys() == model.trained_state_dict().keys()
    assert all(k.startswith("head.") or "lora_" in k for k in loaded.trained_state_dict())
    input_ids, attention_mask = _texts(model, tokenizer, ["nose", "left knee"])
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(pixels, input_ids, attention_mask).heatmaps,
                                   loaded.eval()(pixels, input_ids, attention_mask).heatmaps)


def test_a_checkpoint_of_another_model_is_refused(checkpoint, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "locllm"}))
    with pytest.raises(ValueError, match="model_type"):
        CLIPBaselineForKeypointHeatmaps.from_pretrained(tmp_path)


# ------------------------------------------------------------------------- the Localizer API and eval


def test_localizer_from_pretrained_picks_the_heatmap_localizer(checkpoint):
    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    assert isinstance(localizer.answerer, HeatmapAnswerer)
    people = localizer.localize(IMAGE, BOXES, "coco")
    assert len(people) == 3
    for person in people:
        assert person.keypoints.shape == (17, 2) and person.scores.shape == (17,) and person.valid.all()
        assert ((person.scores >= 0) & (person.scores <= 1)).all()
        # crop coordinates land inside the (square-padded) box
        x, y, w, h = person.box
        side = max(w, h)
        assert (np.abs(person.keypoints - [x + w / 2, y + h / 2]) <= side / 2).all()
        assert person.to_dict()["keypoints"]["nose"]["xy"] is not None


def test_localizer_asks_described_keypoints_and_reports_bad_boxes(checkpoint):
    localizer = Localizer.from_pretrained(checkpoint, device="cpu", persons_per_batch=2)
    asked = ["left knee", ("belly button", "The navel, in the middle of the belly.")]
    people = localizer.localize(IMAGE, BOXES + [[0, 0, 0, 10]], asked, mode="reference")
    assert [p.names for p in people[:3]] == [["left knee", "belly button"]] * 3
    assert people[3].error and np.isnan(people[3].keypoints).all()
    # a data set's own regions (the evaluation loop's way), here three times the image's top-left 64 px as the
    # crop itself: keypoints in its pixels; a region that gives no crop is its person's error
    in_crop = localizer.localize(IMAGE, CropRegions.concatenate([CropRegions.whole(64)] * 3), asked)
    assert len(in_crop) == 3 and all(p.keypoints.shape == (2, 2) for p in in_crop)
    assert all(((p.keypoints >= -0.5) & (p.keypoints < 63.5)).all() for p in in_crop)
    (no_crop,) = localizer.localize(IMAGE, CropRegions.of([[32.0, 32.0]], [[0.0, 0.0]], 1.0), asked)
    assert "give no crop" in no_crop.error and np.isnan(no_crop.keypoints).all()


def test_locllm_eval_scores_a_heatmap_checkpoint(checkpoint, synth, tmp_path, capsys):
    annotations, images = synth
    out = tmp_path / "metrics.json"
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataset", "coco", "--ann", str(annotations / "val.json"),
                 "--images", str(images), "--held-out", "paper", "--device", "cpu", "--no-progress",
                 "--predictions", str(tmp_path / "predictions.jsonl"), "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["counts"]["persons_answered"] == result["counts"]["persons"] > 0
    assert result["counts"]["keypoints_unparsed"] == 0
    assert 0 <= result["metrics"]["AP"] <= 1 and "unseen" in result["metrics"]["novel_keypoints"]


# --------------------------------------------------------------------------------------- training


@pytest.mark.slow
def test_overfits_a_few_crops(synth, tokenizer):
    """Trained on two SynthPose crops (all their keypoints), the model finds every keypoint again."""
    annotations, images = synth
    model = _tiny(tokenizer, train_vision_base=True, lora_vision=False)
    dataset = CocoKeypointDataset(annotations / "train.json", images, train=True, crop_size=64,
                                  augmentation=NO_AUGMENTATION)
    samples = [dataset[i] for i in range(len(dataset))]
    batch = CLIPBaselineCollator(CLIPBaselineProcessor.from_config(model.config, tokenizer))([(0, i, s) for i, s in enumerate(samples)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    model.train()
    for _ in range(120):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    localizer = Localizer.from_model(model, tokenizer)
    people = [person for (person,) in localizer.localize_many([s.image for s in samples],
                                                              [CropRegions.whole(64)] * len(samples), COCO_KEYPOINTS)]
    for sample, person in zip(samples, people, strict=True):
        error = np.linalg.norm(person.keypoints - sample.joints[:, :2], axis=1)[sample.visible]
        assert error.max() <= 2.0, error  # 2 px = one heatmap cell
        assert person.scores[sample.visible].min() > 0.5


def _train_config(synth, output_dir):
    """``locllm train`` with ``model.type: clip_baseline``: 3 crops, 1 step per epoch of 2 micro-batches."""
    annotations, images = synth
    return load_config(base={
        "output_dir": str(output_dir),
        "model": {"type": "clip_baseline", "size": "tiny", "tokenizer": "char", "lora_dropout": 0.1,
                  "clip_baseline": {"head_channels": 16}},
        "data": {"datasets": [{"type": "coco", "annotation_file": str(annotations / "train.json"),
                               "image_root": str(images)}],
                 "crop_size": 64, "exclude_keypoints": list(PAPER_HELD_OUT), "num_workers": 0},
        "prompt": {"max_rounds": 3},
        "optim": {"lr": 1e-3, "warmup_steps": 1, "batch_size": 2, "micro_batch_size": 1, "max_steps": 3},
        "checkpoint": {"every_steps": 1, "keep_last": 3},
        "logging": {"progress_bar": False, "tensorboard": False},
    })


def test_locllm_train_resumes_exactly_and_its_checkpoint_evaluates(synth, tmp_path, monkeypatch, capsys):
    full = trainer.train(_train_config(synth, tmp_path / "full"))
    assert full.global_step == 3 and np.isfinite(full.loss)
    assert {"config.json", TRAINED_WEIGHTS, BASE_WEIGHTS, "tokenizer.json"} <= {p.name for p in full.checkpoint.iterdir()}

    config = _train_config(synth, tmp_path / "interrupted")
    save = trainer._save_checkpoint

    def save_then_die(*args):
        folder = save(*args)
        if folder.name == ckpt.checkpoint_name(1):
            raise KeyboardInterrupt
        return folder

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "_save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            trainer.train(config)
    resumed = trainer.train(config, resume=ckpt.latest_checkpoint(config.output_dir))
    full_weights, resumed_weights = (load_file(Path(r.checkpoint) / TRAINED_WEIGHTS) for r in (full, resumed))
    assert full_weights.keys() == resumed_weights.keys() and any("running_mean" in k for k in full_weights)
    for key in full_weights:
        assert torch.equal(full_weights[key], resumed_weights[key]), key

    annotations, images = synth
    code = main(["eval", "--checkpoint", str(full.checkpoint), "--dataset", "coco", "--ann",
                 str(annotations / "val.json"), "--images", str(images), "--held-out", "paper", "--device", "cpu",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "unseen keypoints (right elbow, left wrist, left knee, right ankle)" in capsys.readouterr().out
