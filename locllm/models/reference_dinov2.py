"""The reference DINOv2 (github facebookresearch/dinov2, as the LocLLM release ships it: timm-style names,
fused qkv, ``ls1.gamma`` layer scales) -> Hugging Face ``Dinov2Model``: the key table, the config read
off the tensor shapes, and a loader for its ``dinov2_vit*_pretrain.pth`` files.

It lives with the models: their tower loader reads such a file when a config names it as its vision base,
and the importer of the authors' release (``convert/reference.py``) converts the tower it ships.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, Dinov2Config

from ..data.tensor_files import load_tensor_file

_REFERENCE_BLOCK_KEYS = {
    "norm1": "norm1",
    "attn.proj": "attention.o_proj",
    "ls1.gamma": "layer_scale1.lambda1",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "ls2.gamma": "layer_scale2.lambda1",
}
_REFERENCE_TOP_KEYS = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}


def convert_reference_dinov2_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference DINOv2 state dict to Dinov2Model names; the fused qkv is split in thirds.

    LoRA tensors (``lora_A_q`` ...) are not part of a base tower and are rejected here; the checkpoint
    importer maps them onto peft's LoRA layers.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in _REFERENCE_TOP_KEYS:
            converted[_REFERENCE_TOP_KEYS[key]] = value
            continue
        parts = key.split(".")
        if parts[0] != "blocks":
            raise KeyError(f"unexpected key in a reference DINOv2 state dict: {key}")
        layer, rest = parts[1], ".".join(parts[2:])
        prefix = f"encoder.layer.{layer}."
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                converted[f"{prefix}attention.{name}.{kind}"] = chunk.clone()
            continue
        stem, _, kind = rest.rpartition(".")
        if rest in ("ls1.gamma", "ls2.gamma"):
            converted[prefix + _REFERENCE_BLOCK_KEYS[rest]] = value
        elif stem in _REFERENCE_BLOCK_KEYS:
            converted[f"{prefix}{_REFERENCE_BLOCK_KEYS[stem]}.{kind}"] = value
        else:
            raise KeyError(f"unexpected key in a reference DINOv2 state dict: {key}")
    return converted


def reference_dinov2_config(state_dict: dict[str, torch.Tensor], patch_size: int = 14) -> Dinov2Config:
    """The Dinov2Config of a reference tower, read off its tensor shapes."""
    hidden = state_dict["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    grid = int(math.sqrt(state_dict["pos_embed"].shape[1] - 1))
    mlp_hidden = state_dict["blocks.0.mlp.fc1.weight"].shape[0]
    return Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=max(1, hidden // 64),
        mlp_ratio=mlp_hidden // hidden,
        patch_size=patch_size,
        image_size=grid * patch_size,
        layer_norm_eps=1e-6,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        layerscale_value=1.0,
        drop_path_rate=0.0,
    )


def read_reference_dinov2(path: str | Path) -> dict[str, torch.Tensor]:
    """A reference DINOv2 ``.pth`` (loaded with ``weights_only=True``) without LoRA keys (a fine-tuned
    tower's file may have them)."""
    state_dict = load_tensor_file(path)
    return {k: v for k, v in state_dict.items() if "lora_" not in k}


def load_reference_dinov2(path: str | Path, num_attention_heads: int | None = None, dtype: torch.dtype | None = None,
                          device_map: str | torch.device | None = None,
                          attn_implementation: str | None = None) -> nn.Module:
    """A reference ``dinov2_vit*_pretrain.pth`` as a Dinov2Model.

    ``dtype``, ``device_map`` (one device) and ``attn_implementation`` mean what they mean to
    ``Dinov2Model.from_pretrained``.
    """
    state_dict = read_reference_dinov2(path)
    config = reference_dinov2_config(state_dict)
    if num_attention_heads is not None:
        config.num_attention_heads = num_attention_heads
    model = AutoModel.from_config(config, attn_implementation=attn_implementation)
    missing, unexpected = model.load_state_dict(convert_reference_dinov2_state_dict(state_dict), strict=False)
    missing = [k for k in missing if not k.endswith("mask_token")]
    if missing or unexpected:
        raise KeyError(f"reference DINOv2 {path}: missing {missing}, unexpected {unexpected}")
    return model.to(device=device_map, dtype=dtype)
