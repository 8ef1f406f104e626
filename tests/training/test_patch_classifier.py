"""The vision-tower pre-training as ``model.type: patch_classifier`` of the one loop, on the demo's
``synthpose_demo`` crops: a checkpoint round trip, resume, and the tower handed to a LocLLM run."""

from pathlib import Path

import torch
from safetensors.torch import load_file

from locllm.data.synth.demo import DEMO_KEYPOINTS, NOVEL_KEYPOINTS, SynthPoseDemoDataset
from locllm.models import LocLLMForKeypointLocalization
from locllm.training import checkpoint as ckpt
from locllm.training.config import load_config
from locllm.training.trainer import train
from locllm.training.vision_pretrain import WEIGHTS_FILE, PatchClassifier, tower_weights

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "synthpose"


def _toy(name, tmp_path, *overrides):
    """A demo config at toy size: 16 crops, batches of 4 in 2 micro-batches, 3 steps, a checkpoint each."""
    return load_config(CONFIGS / name, [
        f"output_dir={tmp_path / name.removesuffix('.yaml')}", "data.datasets.0.num_images=16",
        "data.datasets.0.workers=1", f"data.datasets.0.cache_dir={tmp_path / 'crops'}", "optim.max_steps=3",
        "optim.batch_size=4", "optim.micro_batch_size=2", "optim.warmup_steps=1", "checkpoint.every_steps=1",
        "checkpoint.keep_last=3", "logging.progress_bar=false", *overrides])


def test_demo_dataset_never_asks_the_novel_keypoint(tmp_path):
    dataset = SynthPoseDemoDataset(8, workers=1, cache_dir=tmp_path)
    sample = dataset[3]
    assert sample.image.shape == (64, 64, 3) and sample.keypoints is DEMO_KEYPOINTS
    novel = [DEMO_KEYPOINTS.index(name) for name in NOVEL_KEYPOINTS]
    assert not dataset.askable[:, novel].any() and dataset.askable.any()
    assert list(tmp_path.glob("*.npz"))  # cached for the next stage


def test_patch_classifier_trains_resumes_and_hands_its_tower_on(tmp_path):
    full = train(_toy("demo_vision.yaml", tmp_path))
    assert full.global_step == 3 and 0 < full.loss < 5
    assert not (full.checkpoint / "model.safetensors").exists()  # weights travel in our export only
    reloaded = PatchClassifier.from_pretrained(full.checkpoint)
    assert reloaded.head.out_features == len(DEMO_KEYPOINTS)

    first = ckpt.list_checkpoints(tmp_path / "demo_vision")[0]
    resumed = train(_toy("demo_vision.yaml", tmp_path, f"output_dir={tmp_path / 'resumed'}"), resume=first)
    assert resumed.loss == full.loss
    a, b = load_file(full.checkpoint / WEIGHTS_FILE), load_file(resumed.checkpoint / WEIGHTS_FILE)
    assert all(torch.equal(a[key], b[key]) for key in a)

    locllm = train(_toy("demo_locllm.yaml", tmp_path, "optim.max_steps=1",
                        f"model.vision_tower_from={tmp_path / 'demo_vision'}"))
    model = LocLLMForKeypointLocalization.from_pretrained(locllm.checkpoint)
    own = model.vision_tower.state_dict()
    assert all(torch.equal(own[key], value) for key, value in tower_weights(full.checkpoint).items())
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
