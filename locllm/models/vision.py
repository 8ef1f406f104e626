"""Vision towers: build or load one, read its normalized patch tokens, and map the reference DINOv2.

Any Hugging Face vision backbone works; the output is always the final-normalized patch tokens
without CLS (and without register tokens), shape (B, N, D).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, Dinov2Config, PretrainedConfig


def build_vision_tower(config: PretrainedConfig) -> nn.Module:
    """A randomly initialized tower from its config (weights are loaded afterwards)."""
    if config.model_type in ("clip_vision_model", "siglip_vision_model"):
        from transformers import CLIPVisionModel, SiglipVisionModel

        cls = CLIPVisionModel if config.model_type == "clip_vision_model" else SiglipVisionModel
        return cls(config)
    return AutoModel.from_config(config)


def load_vision_tower(name_or_path: str, dtype: torch.dtype | None = None) -> nn.Module:
    """A pretrained tower from a Hugging Face folder, or from a reference DINOv2 ``.pth`` file."""
    path = Path(name_or_path)
    if path.suffix in (".pth", ".pt", ".bin") and path.is_file():
        return load_reference_dinov2(path, dtype=dtype)
    config = AutoConfig.from_pretrained(name_or_path)
    if config.model_type == "clip":
        from transformers import CLIPVisionModel

        return CLIPVisionModel.from_pretrained(name_or_path, dtype=dtype)
    if config.model_type == "siglip":
        from transformers import SiglipVisionModel

        return SiglipVisionModel.from_pretrained(name_or_path, dtype=dtype)
    return AutoModel.from_pretrained(name_or_path, dtype=dtype)


def patch_features(tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, D) final-normalized patch tokens, CLS and registers dropped."""
    config = tower.config
    out = tower(pixel_values=pixel_values)
    hidden = out.last_hidden_state
    if config.model_type == "dinov2":
        return hidden[:, 1:]  # Dinov2Model's last_hidden_state is already layer-normed
    if config.model_type == "dinov2_with_registers":
        return hidden[:, 1 + config.num_register_tokens :]
    if config.model_type == "clip_vision_model":
        # CLIP applies its final norm only to the pooled CLS token; apply it to the patches as well.
        return tower.post_layernorm(hidden[:, 1:])
    if config.model_type == "siglip_vision_model":
        return hidden  # no CLS token; last_hidden_state is post-normed
    raise ValueError(f"unsupported vision tower type {config.model_type!r}")


def resample_position_grid(tower: nn.Module, image_size: int) -> None:
    """Resize the tower's position embeddings to ``image_size`` once, the way DINOv2's original code does.

    The reference (DINOv2's own implementation) resizes the 37x37 grid of a 518-px model with bicubic
    interpolation at ``scale_factor = (image_size / patch + 0.1) / 37``; Hugging Face's Dinov2 asks for
    an explicit output size, which gives different numbers (patch tokens off by up to 0.3 on the
    recorded tiny model). Storing the resampled table makes the stock forward use it unchanged.
    """
    config = tower.config
    if config.model_type != "dinov2" or config.image_size == image_size:
        return
    embeddings = tower.embeddings.position_embeddings  # (1, 1 + G*G, D)
    grid = int(math.sqrt(embeddings.shape[1] - 1))
    new_grid = image_size // config.patch_size
    cls_row, patch_rows = embeddings[:, :1], embeddings[:, 1:]
    patch_grid = patch_rows.float().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    factor = (new_grid + 0.1) / grid
    resized = nn.functional.interpolate(patch_grid, scale_factor=(factor, factor), mode="bicubic")
    if resized.shape[-2:] != (new_grid, new_grid):
        raise RuntimeError(f"position grid resampled to {tuple(resized.shape[-2:])}, expected {new_grid}")
    resized = resized.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1).to(embeddings.dtype)
    tower.embeddings.position_embeddings = nn.Parameter(torch.cat([cls_row, resized], dim=1), requires_grad=False)
    config.image_size = image_size


# The reference DINOv2 (timm-style naming, fused qkv) -> Hugging Face Dinov2Model.
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


def load_reference_dinov2(
    path: str | Path, num_attention_heads: int | None = None, dtype: torch.dtype | None = None
) -> nn.Module:
    """A reference ``dinov2_vit*_pretrain.pth`` (loaded with ``weights_only=True``) as a Dinov2Model."""
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = {k: v for k, v in state_dict.items() if "lora_" not in k}
    config = reference_dinov2_config(state_dict)
    if num_attention_heads is not None:
        config.num_attention_heads = num_attention_heads
    model = AutoModel.from_config(config)
    missing, unexpected = model.load_state_dict(convert_reference_dinov2_state_dict(state_dict), strict=False)
    missing = [k for k in missing if not k.endswith("mask_token")]
    if missing or unexpected:
        raise KeyError(f"reference DINOv2 {path}: missing {missing}, unexpected {unexpected}")
    return model.to(dtype) if dtype is not None else model
