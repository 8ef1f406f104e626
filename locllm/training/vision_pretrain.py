"""Pre-train the demo's vision tower on SynthPose crops: which patch holds each keypoint.

The paper's tower (DINOv2) arrives knowing parts and positions. A tiny tower trained from scratch by
the LocLLM text loss alone learns only the mean pose in CPU minutes (``locllm/assets/demo/TRAINING.md``), so the CPU
demo pre-trains its tower first, on SynthPose itself: the honest stand-in for DINOv2. A linear head
per keypoint scores every patch token, and cross-entropy over the patches pulls the score towards
the patches the keypoint lies in. The head is then dropped and the tower frozen; the LocLLM stage
that follows trains with the paper's objective only.

The targets are soft: a keypoint between patch centres is shared among its (up to) four nearest
patches with bilinear weights, so the features must keep where inside a patch it lies, which the
three-decimal answers need, not only which patch.

    crops (B, S, S, 3) uint8 -> normalized -> tower -> (B, N, D) patch tokens -> head -> (B, K, N) logits

It is ``model.type: patch_classifier`` of the one training loop (``configs/synthpose/demo_vision.yaml``);
a LocLLM run takes the trained tower with ``model.vision_tower_from``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, Dinov2Config
from transformers.utils import ModelOutput

from ..data.tensor_files import load_tensor_file
from ..models.processing_locllm import LocLLMImageProcessor
from ..models.vision import build_vision_tower, patch_features

WEIGHTS_FILE = "patch_classifier.safetensors"


def build_demo_tower(config: Dinov2Config, seed: int = 0) -> nn.Module:
    """A random Dinov2Model (initialized from ``seed``) whose learned position embeddings start as a 2D
    sin-cos grid.

    The sin-cos start (the demo recipe's prototype kept such a grid fixed) gives every patch a
    distinct, smoothly varying position code from the first step; here it stays trainable.
    """
    torch.manual_seed(seed)
    tower = build_vision_tower(config)
    grid = config.image_size // config.patch_size
    with torch.no_grad():
        table = tower.embeddings.position_embeddings  # (1, 1 + grid * grid, D): CLS first
        table[0, 1:] = sincos_position_grid(grid, config.hidden_size)
        table[0, 0] = 0.0
    return tower


def sincos_position_grid(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) 2D sin-cos position codes, rows first: half the channels code y, half x."""
    if dim % 4:
        raise ValueError(f"a 2D sin-cos code needs a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    positions = torch.arange(grid, dtype=torch.float64)
    angles = positions[:, None] * frequencies[None]  # (grid, dim / 4)
    codes = torch.cat([angles.sin(), angles.cos()], dim=1)  # (grid, dim / 2)
    rows = codes[:, None, :].expand(grid, grid, dim // 2)
    columns = codes[None, :, :].expand(grid, grid, dim // 2)
    return torch.cat([rows, columns], dim=-1).reshape(grid * grid, dim).float()


def patch_targets(points: torch.Tensor, patch_size: int, grid: int) -> torch.Tensor:
    """(B, K, 2) crop pixel x, y -> (B, K, grid * grid) bilinear weights over the patches (rows sum to 1).

    Pixel centres sit on integers, so patch ``c`` covers ``[c * p - 0.5, (c + 1) * p - 0.5)`` and its
    centre is at ``c * p + (p - 1) / 2``; points beyond the outer centres go to the border patches.
    """
    cell = ((points - (patch_size - 1) / 2) / patch_size).clamp(0, grid - 1)  # (B, K, 2) in patch units
    low = cell.floor().clamp(max=grid - 2)
    fraction = cell - low
    low = low.long()
    targets = torch.zeros(*points.shape[:2], grid * grid, dtype=points.dtype, device=points.device)
    for dy in (0, 1):
        for dx in (0, 1):
            weight = (fraction[..., 0] if dx else 1 - fraction[..., 0]) * (fraction[..., 1] if dy else 1 - fraction[..., 1])
            index = (low[..., 1] + dy) * grid + low[..., 0] + dx
            targets.scatter_add_(2, index[..., None], weight[..., None])
    return targets


class PatchClassifier(nn.Module):
    """The tower with one linear scorer per keypoint over its patch tokens: (B, 3, S, S) -> (B, K, N).

    Saved as the tower's ``config.json`` and ``patch_classifier.safetensors`` (tower and head).
    """

    def __init__(self, tower: nn.Module, num_keypoints: int):
        super().__init__()
        self.tower = tower
        self.config = tower.config  # the loop reads config.image_size
        self.head = nn.Linear(tower.config.hidden_size, num_keypoints)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(patch_features(self.tower, pixel_values)).transpose(1, 2)

    def save_pretrained(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(folder)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, Path(folder) / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PatchClassifier:
        state = load_tensor_file(Path(folder) / WEIGHTS_FILE)
        model = cls(build_vision_tower(AutoConfig.from_pretrained(folder)), state["head.weight"].shape[0])
        model.load_state_dict(state)
        return model


def tower_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The tower tensors of a patch-classifier checkpoint, named as in the tower (head dropped)."""
    state = load_tensor_file(Path(folder) / WEIGHTS_FILE)
    return {key.removeprefix("tower."): value for key, value in state.items() if key.startswith("tower.")}


class PatchCollator:
    """``(epoch, index, PoseSample)`` items -> ``pixel_values`` (B, 3, S, S), soft patch ``targets`` (B, K, N)
    and the ``mask`` (B, K) of keypoints to learn (the samples' ``visible``)."""

    def __init__(self, processor: LocLLMImageProcessor, patch_size: int):
        self.processor, self.patch_size = processor, patch_size

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        samples = [sample for _, _, sample in items]
        pixel_values = self.processor.normalize([sample.image for sample in samples])
        points = torch.from_numpy(np.stack([sample.joints[:, :2] for sample in samples])).float()
        grid = pixel_values.shape[-1] // self.patch_size
        return {"pixel_values": pixel_values, "targets": patch_targets(points, self.patch_size, grid),
                "mask": torch.from_numpy(np.stack([sample.visible for sample in samples]))}


def patch_loss(model: PatchClassifier, batch: dict[str, torch.Tensor], num_items: torch.Tensor) -> ModelOutput:
    """``.loss``: soft cross-entropy over the patches, summed over the masked keypoints and divided by
    ``num_items``; ``.logits`` (B, K, N)."""
    logits = model(batch["pixel_values"]).float()  # (B, K, N)
    per_keypoint = -(batch["targets"] * logits.log_softmax(-1)).sum(-1)  # (B, K)
    return ModelOutput(loss=per_keypoint[batch["mask"]].sum() / num_items, logits=logits)
