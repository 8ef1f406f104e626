import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from locllm.data.synth import generate_synthpose
from locllm.models import LocLLMForKeypointLocalization
from locllm.training import checkpoint as ckpt
from locllm.training import trainer
from locllm.training.config import dump_config, load_config
from locllm.training.data import epoch_micro_batches
from locllm.training.model_types import build_model, build_model_config, build_prompt_style, build_tokenizer
from locllm.training.trainer import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = sorted((REPO / "configs" / "paper").glob("*.yaml"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Small SynthPose sets in the three annotation layouts, and LLaVA-style captions of the COCO one."""
    root = tmp_path_factory.mktemp("synth")
    for fmt in ("coco", "mpii", "h36m"):
        generate_synthpose(root / fmt, num_images=12, seed=1, size=64, persons=1, fmt=fmt, difficulty="easy",
                           val_fraction=0.0)
    images = json.loads((root / "coco" / "annotations" / "train.json").read_text())["images"]
    captions = [{"id": str(image["id"]), "image": image["file_name"], "conversations": [
        {"from": "human", "value": "<image>\nDescribe the picture."},
        {"from": "gpt", "value": f"A figure standing, number {image['id']}."}]} for image in images]
    (root / "captions.json").write_text(json.dumps(captions))
    return root


def _datasets(synth, kind):
    coco = {"type": "coco", "annotation_file": str(synth / "coco" / "annotations" / "train.json"),
            "image_root": str(synth / "coco" / "images")}
    return {
        "coco": [coco],
        "captions": [{"type": "captions", "annotation_file": str(synth / "captions.json"),
                      "image_root": str(synth / "coco" / "images")}],
        "3d": [{"type": "h36m", "annotation_file": str(synth / "h36m" / "annotations" / "train.json"),
                "image_root": str(synth / "h36m" / "images")},
               {"type": "mpii", "annotation_file": str(synth / "mpii" / "annot" / "train.json"),
                "image_root": str(synth / "mpii" / "images"), "repeat": 0.5}],
    }[kind]


def _tiny_config(synth, output_dir, *overrides):
    """A tiny model on 12 crops: 3 steps per epoch of 4 samples in 2 micro-batches."""
    base = {
        "output_dir": str(output_dir),
        "model": {"size": "tiny", "tokenizer": "char", "lora_dropout": 0.1},
        "data": {"datasets": _datasets(synth, "coco"), "num_workers": 0},
        "prompt": {"with_description": False, "max_rounds": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 1, "batch_size": 4, "micro_batch_size": 2, "max_steps": 5},
        "checkpoint": {"every_steps": 2, "keep_last": 2},
        "logging": {"progress_bar": False, "tensorboard": False, "every_steps": 1},
    }
    return load_config(base=base, overrides=list(overrides))


def _trained(checkpoint):
    return load_file(Path(checkpoint) / "trained.safetensors")


def test_micro_batches_partition_each_global_batch():
    keys = [epoch_micro_batches(20, 8, 2, seed=3, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert [len(k) for k in keys] == [4, 4]  # 2 steps (the last 4 samples are dropped) x 2 micro-batches
    for step in range(2):
        rank0, rank1 = keys[0][2 * step: 2 * step + 2], keys[1][2 * step: 2 * step + 2]
        one_process = epoch_micro_batches(20, 8, 2, seed=3, epoch=1, rank=0, world_size=1)[4 * step: 4 * step + 4]
        assert sum(rank0 + rank1, []) == sum(one_process, [])
    assert all(epoch == 1 for batch in keys[0] for epoch, _ in batch)
    assert epoch_micro_batches(20, 8, 2, 3, 1, 0, 1, first_step=1) == epoch_micro_batches(20, 8, 2, 3, 1, 0, 1)[4:]
    assert epoch_micro_batches(20, 8, 2, 3, 1, 0, 1) != epoch_micro_batches(20, 8, 2, 3, 2, 0, 1)


def _interrupt_after(monkeypatch, step):
    """Make the run die (as if killed) right after it wrote the checkpoint of ``step``."""
    save = trainer._save_checkpoint

    def save_then_die(*args):
        folder = save(*args)
        if folder.name == ckpt.checkpoint_name(step):
            raise KeyboardInterrupt
        return folder

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_die)


def test_resume_ends_with_the_same_weights(synth, tmp_path, monkeypatch):
    # 5 steps over 2 epochs with LoRA dropout: resuming at step 2 must replay the data order, augmentation,
    # round choice, dropout masks, optimizer moments and learning rate exactly.
    # gradient checkpointing on: its recomputed forward must replay the same dropout masks
    full = train(_tiny_config(synth, tmp_path / "full", "logging.tensorboard=true", "model.gradient_checkpointing=true"))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "full")] == ["step-0000004", "step-0000005"]  # keep_last
    assert list((tmp_path / "full" / "tensorboard").iterdir())

    config = _tiny_config(synth, tmp_path / "interrupted", "model.gradient_checkpointing=true")
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(config)
    resumed = train(config, resume=ckpt.latest_checkpoint(config.output_dir))
    assert resumed.global_step == 5 and resumed.loss == full.loss
    full_weights, resumed_weights = _trained(full.checkpoint), _trained(resumed.checkpoint)
    assert full_weights.keys() == resumed_weights.keys()
    for key in full_weights:
        assert torch.equal(full_weights[key], resumed_weights[key]), key


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(synth, tmp_path, monkeypatch):
    forward = LocLLMForKeypointLocalization.forward
    calls = []

    def nan_from_step_3(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) > 4:  # 2 micro-batches per step: steps 1 and 2 are fine
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(LocLLMForKeypointLocalization, "forward", nan_from_step_3)
    config = _tiny_config(synth, tmp_path / "run", "checkpoint.every_steps=1", "checkpoint.keep_last=5")
    with pytest.raises(TrainingDiverged, match="diverged at step 3: loss nan") as error:
        train(config)
    assert "step-0000002" in str(error.value)
    assert [p.name for p in ckpt.list_checkpoints(config.output_dir)] == ["step-0000001", "step-0000002"]
    assert all(torch.isfinite(v).all() for v in _trained(tmp_path / "run" / "checkpoints" / "step-0000002").values())


def test_a_run_without_progress_bar_logs_its_steps(synth, tmp_path, caplog):
    with caplog.at_level("INFO", logger="locllm.training.trainer"):
        train(_tiny_config(synth, tmp_path / "run", "optim.max_steps=3", "logging.every_steps=2"))
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(":")[0] for line in steps] == ["step 2/3", "step 3/3"]  # every 2 steps, and the last
    assert all("loss" in line and "samples/s" in line for line in steps)


def test_a_run_logs_the_first_decimal_next_to_its_image_blind_value(synth, tmp_path, caplog):
    with caplog.at_level("INFO", logger="locllm.training.trainer"):
        train(_tiny_config(synth, tmp_path / "run", "optim.max_steps=2", "optim.micro_batch_size=4",
                             "logging.first_decimal=true"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    found = [re.search(r"first decimal (\S+) \(image-blind (\S+)\)", line) for line in lines]
    assert len(found) == 2 and all(found)
    assert float(found[0].group(2)) == pytest.approx(math.log(10), abs=1e-4)  # step 1: nothing trained on before it
    assert all(math.isfinite(float(f.group(1))) for f in found)


def test_fresh_run_refuses_a_folder_with_checkpoints(synth, tmp_path):
    config = _tiny_config(synth, tmp_path / "run", "optim.max_steps=1")
    train(config)
    with pytest.raises(ValueError, match="--resume"):
        train(config)


def test_stage2_starts_from_the_stage1_projector(synth, tmp_path):
    stage1 = _tiny_config(synth, tmp_path / "stage1", "optim.stage=1", "optim.max_steps=1",
                          f"data.datasets={json.dumps(_datasets(synth, 'captions'))}")
    result = train(stage1)
    assert set(_trained(result.checkpoint)) == {"projector.weight", "projector.bias"}  # no LoRA in stage 1
    stage2 = _tiny_config(synth, tmp_path / "stage2", f"model.init_from={tmp_path / 'stage1'}")
    style = build_prompt_style(stage2)
    tokenizer = build_tokenizer(stage2, style)
    model = build_model(stage2, build_model_config(stage2, tokenizer, style), None)
    stage1_model = LocLLMForKeypointLocalization.from_pretrained(result.checkpoint)
    torch.testing.assert_close(model.projector.weight, stage1_model.projector.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.language_model.lm_head.weight, stage1_model.language_model.lm_head.weight,
                               rtol=0, atol=0)  # a tiny model's own bases come along
    assert any("lora_" in name for name, _ in model.named_parameters())


@pytest.mark.slow
def test_two_processes_take_the_same_steps_as_one(synth, tmp_path):
    # The same global batch of 4: one process with 2 micro-batches, or two processes (DDP, gloo) with one
    # each. The loss is a mean over the global batch's answer tokens, so both give the same numbers.
    overrides = ["model.lora_dropout=0.0", "optim.max_steps=3", "checkpoint.every_steps=3"]
    one = train(_tiny_config(synth, tmp_path / "one", *overrides))
    config = _tiny_config(synth, tmp_path / "two", *overrides)
    config_file = tmp_path / "two.yaml"
    dump_config(config, config_file)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "locllm", "train", str(config_file), "--json", str(tmp_path / "two.json")],
        env=env, capture_output=True, text=True, timeout=170,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "2 processes x 1 micro-batches" in completed.stderr
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["global_step"] == 3
    assert abs(two["loss"] - one.loss) < 1e-5
    for key, value in _trained(one.checkpoint).items():
        torch.testing.assert_close(_trained(two["checkpoint"])[key], value, rtol=1e-4, atol=1e-6)


def _tiny_bases(synth, config_path, output_dir):
    """--set overrides that run a paper config with tiny random bases for 2 steps."""
    overrides = [
        f"output_dir={output_dir}", "model.size=tiny", "model.vision_model_name_or_path=null",
        "model.text_model_name_or_path=null", "model.tokenizer=char", "model.image_size=null",
        "model.init_from=null", "data.num_workers=0", "optim.max_steps=2", "optim.batch_size=4",
        "optim.micro_batch_size=2", "checkpoint.every_steps=2", "logging.progress_bar=false",
        "logging.tensorboard=false",
    ]
    stage = load_config(config_path).optim.stage
    ndim = load_config(config_path).prompt.ndim
    kind = "captions" if stage == 1 else "3d" if ndim == 3 else "coco"
    return overrides + [f"data.datasets={json.dumps(_datasets(synth, kind))}"]


@pytest.mark.slow
@pytest.mark.parametrize("config_path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_configs_run_with_tiny_bases(synth, tmp_path, config_path):
    config = load_config(config_path, _tiny_bases(synth, config_path, tmp_path / "run"))
    result = train(config)
    assert result.global_step == 2 and np.isfinite(result.loss)
    model = LocLLMForKeypointLocalization.from_pretrained(result.checkpoint)
    assert model.config.coordinate_codec["type"] == config.prompt.coordinates
    assert model.config.lora_vision == (config.model.lora_vision and config.optim.stage == 2)
    assert model.config.lora_text == (config.model.lora_text and config.optim.stage == 2)
    if config.prompt.coordinates == "location_tokens":
        assert "language_model.lm_head.weight" in _trained(result.checkpoint)  # new vocabulary learns


@pytest.mark.parametrize("stage", [1, 2])
def test_model_section_reaches_the_model(synth, tmp_path, stage):
    config = _tiny_config(synth, tmp_path, f"optim.stage={stage}", "model.train_text_base=true",
                          "model.lora_r=4", "model.text_lora_targets=[q_proj]", "model.projector_type=mlp2x_gelu",
                          f"data.datasets={json.dumps(_datasets(synth, 'captions' if stage == 1 else 'coco'))}")
    style = build_prompt_style(config)
    tokenizer = build_tokenizer(config, style)
    model = build_model(config, build_model_config(config, tokenizer, style), None)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert model.config.projector_type == "mlp2x_gelu"
    if stage == 1:  # the projector alone, whatever the model section says
        assert trained and all(name.startswith("projector.") for name in trained)
    else:
        assert "language_model.lm_head.weight" in trained
        text_lora = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained if "lora_" in n and "language_model" in n}
        assert text_lora == {"q_proj"}
        assert model.language_model.model.layers[0].self_attn.q_proj.r["default"] == 4
