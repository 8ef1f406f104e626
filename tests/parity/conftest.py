"""Shared by the parity tests: the reference's tiny checkpoint, rebuilt from its recording and imported."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from locllm.cli import main
from locllm.models import LocLLMForKeypointLocalization


def _reference_state_dict(model_dir):
    """The recorded state dict: fp32 tensors plus the two vocabulary matrices decoded from 4-bit codes."""
    state = load_file(model_dir / "state_dict_nonvocab.safetensors")
    codes = np.load(model_dir / "vocab_tensors_int4.npz")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        stem = key.replace(".", "__")
        nibbles = codes[f"{stem}__nibbles"]
        flat = np.empty(2 * nibbles.size, dtype=np.float32)
        flat[0::2] = nibbles & 0x0F
        flat[1::2] = nibbles >> 4
        state[key] = torch.from_numpy((flat - 8) * np.float32(2**-6)).reshape(*codes[f"{stem}__shape"].tolist())
    manifest = json.loads((model_dir / "state_dict_manifest.json").read_text())
    for entry in manifest["tensors"]:
        digest = hashlib.sha256(state[entry["key"]].numpy().astype("<f4").tobytes()).hexdigest()
        assert digest == entry["sha256_fp32_le"], entry["key"]
    assert len(state) == manifest["num_tensors"]
    return state


@pytest.fixture(scope="session")
def golden_model_dir(golden_dir):
    return golden_dir / "model"


@pytest.fixture(scope="session")
def imported(golden_model_dir, tmp_path_factory):
    """The reference checkpoint folder rebuilt from the recording, imported with the CLI: (folder, model)."""
    tokenizer_dir = golden_model_dir.parents[1] / "tokenizers" / "llama2"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        pytest.skip(f"{tokenizer_dir} is absent")
    src = tmp_path_factory.mktemp("reference_ckpt")
    state = _reference_state_dict(golden_model_dir)
    torch.save(state, src / "pytorch_model.bin")
    ref_config = json.loads((golden_model_dir / "config.json").read_text())
    # The DINOv2 file the config names: the tower's base weights, without LoRA (as the reference's file).
    torch.save({k.removeprefix("vision_model."): v for k, v in state.items()
                if k.startswith("vision_model.") and "lora_" not in k}, src / ref_config["dino_path"])
    shutil.copy(golden_model_dir / "config.json", src / "config.json")
    # The reference's tokenizer files (<im_patch> = 32000) on the fast Llama-2 tokenizer model.
    for path in (golden_model_dir / "ckpt_tokenizer").iterdir():
        shutil.copy(path, src / path.name)
    shutil.copy(tokenizer_dir / "tokenizer.json", src / "tokenizer.json")

    tiny = json.loads((golden_model_dir / "tiny_config.json").read_text())
    out = tmp_path_factory.mktemp("ours")
    assert main(["import-reference", str(src), str(out), "--vision-heads", str(tiny["vit_size"]["num_heads"])]) == 0
    return out, LocLLMForKeypointLocalization.from_pretrained(out).eval()
