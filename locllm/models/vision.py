"""Vision towers: build or load one, and read its normalized patch tokens.

Any Hugging Face vision backbone works; the output is always the final-normalized patch tokens
without CLS (and without register tokens), shape (B, N, D).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from .reference_dinov2 import load_reference_dinov2


def build_vision_tower(config: PretrainedConfig) -> nn.Module:
    """A randomly initialized tower from its config (weights are loaded afterwards)."""
    if config.model_type in ("clip_vision_model", "siglip_vision_model"):
        from transformers import CLIPVisionModel, SiglipVisionModel

        cls = CLIPVisionModel if config.model_type == "clip_vision_model" else SiglipVisionModel
        return cls(config)
    return AutoModel.from_config(config)


def load_vision_tower(name_or_path: str, **kwargs) -> nn.Module:
    """A pretrained tower from a Hugging Face folder, or from a reference DINOv2 ``.pth`` file.

    ``kwargs``: Hugging Face loading keywords (``dtype``, ``device_map``, ``attn_implementation``).
    """
    path = Path(name_or_path)
    if path.suffix in (".pth", ".pt", ".bin") and path.is_file():
        return load_reference_dinov2(path, **kwargs)
    config = AutoConfig.from_pretrained(name_or_path)
    if config.model_type == "clip":
        from transformers import CLIPVisionModel

        return CLIPVisionModel.from_pretrained(name_or_path, **kwargs)
    if config.model_type == "siglip":
        from transformers import SiglipVisionModel

        return SiglipVisionModel.from_pretrained(name_or_path, **kwargs)
    return AutoModel.from_pretrained(name_or_path, **kwargs)


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
