"""Pre-train the demo's vision tower on SynthPose crops: which patch holds each keypoint.

The paper's tower (DINOv2) arrives knowing parts and positions. A tiny tower trained from scratch by
the LocLLM text loss alone learns only the mean pose in CPU minutes (``DEMO-RECIPE.md``), so the CPU
demo pre-trains its tower first, on SynthPose itself: the honest stand-in for DINOv2. A linear head
per keypoint scores every patch token, and cross-entropy over the patches pulls the score towards
the patches the keypoint lies in. The head is then dropped and the tower frozen; the LocLLM stage
that follows trains with the paper's objective only.

The targets are soft: a keypoint between patch centres is shared among its (up to) four nearest
patches with bilinear weights, so the features must keep where inside a patch it lies, which the
three-decimal answers need, not only which patch.

    crops (B, S, S, 3) uint8 -> normalized -> tower -> (B, N, D) patch tokens -> head -> (B, K, N) logits
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import Dinov2Config

from ..models.processing_locllm import LocLLMImageProcessor
from ..models.vision import build_vision_tower, patch_features


@dataclass(frozen=True)
class TrainingBudget:
    """How long a demo stage trains: ``steps`` optimizer steps, or ``seconds`` of wall-clock time.

    The learning rate warms up linearly over ``warmup_steps`` and then follows a cosine to 0 over the
    budget's progress, counted in steps or in seconds: a timed run anneals fully whatever its speed.
    """

    steps: int | None = None
    seconds: float | None = None
    warmup_steps: int = 100

    def __post_init__(self):
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("give a training budget in steps or in seconds, not both or neither")
        if (self.steps is not None and self.steps < 1) or (self.seconds is not None and self.seconds <= 0):
            raise ValueError(f"the training budget must be positive, got {self}")

    def progress(self, step: int, elapsed: float) -> float:
        """The share of the budget used after ``step`` steps and ``elapsed`` seconds (1 ends the stage)."""
        return step / self.steps if self.steps is not None else elapsed / self.seconds

    def lr_factor(self, step: int, elapsed: float) -> float:
        """The multiplier of the peak learning rate for the step after ``step`` steps."""
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, self.progress(step, elapsed))))


def build_demo_tower(image_size: int = 64, patch_size: int = 8, hidden_size: int = 128, num_layers: int = 4,
                     num_heads: int = 4, seed: int = 0) -> nn.Module:
    """A random Dinov2Model (initialized from ``seed``) whose learned position embeddings start as a 2D
    sin-cos grid.

    The sin-cos start (the prototype of DEMO-RECIPE.md kept such a grid fixed) gives every patch a
    distinct, smoothly varying position code from the first step; here it stays trainable.
    """
    config = Dinov2Config(
        hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads, mlp_ratio=4,
        patch_size=patch_size, image_size=image_size, layer_norm_eps=1e-6, drop_path_rate=0.0,
    )
    torch.manual_seed(seed)
    tower = build_vision_tower(config)
    grid = image_size // patch_size
    with torch.no_grad():
        table = tower.embeddings.position_embeddings  # (1, 1 + grid * grid, D): CLS first
        table[0, 1:] = sincos_position_grid(grid, hidden_size)
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
    """The tower with one linear scorer per keypoint over its patch tokens: (B, 3, S, S) -> (B, K, N)."""

    def __init__(self, tower: nn.Module, num_keypoints: int):
        super().__init__()
        self.tower = tower
        self.head = nn.Linear(tower.config.hidden_size, num_keypoints)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(patch_features(self.tower, pixel_values)).transpose(1, 2)


def pretrain_vision_tower(
    tower: nn.Module,
    crops: np.ndarray,
    points: np.ndarray,
    labelled: np.ndarray,
    processor: LocLLMImageProcessor,
    budget: TrainingBudget,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log_every: int = 100,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``tower`` in place to find every keypoint's patch, then freeze it; return the run's figures.

    Args:
        crops: (M, S, S, 3) uint8 training crops.
        points: (M, K, 2) keypoint x, y in crop pixels.
        labelled: (M, K) bool, the keypoints to learn (labelled and inside the crop).
        processor: normalizes crops exactly as the model's inference path will.
        budget: how long to train; AdamW with ``lr`` and ``weight_decay`` (not on biases and norms).

    Returns:
        ``{"steps", "seconds", "steps_per_second", "loss", "patch_accuracy"}``: loss and the share of
        keypoints whose best-scored patch is their nearest patch, both over the last ``log_every`` steps.
    """
    device = torch.device(device)
    patch_size = tower.config.patch_size
    grid = crops.shape[1] // patch_size
    model = PatchClassifier(tower, points.shape[1]).to(device).train()
    model.requires_grad_(True)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    rng = np.random.default_rng(seed)
    on_gpu = device.type == "cuda"
    recent_loss, recent_hits, recent_count = [], 0, 0
    summary: dict = {}
    step, started = 0, time.perf_counter()
    while budget.progress(step, time.perf_counter() - started) < 1:
        for group in optimizer.param_groups:
            group["lr"] = lr * budget.lr_factor(step, time.perf_counter() - started)
        index = rng.integers(0, len(crops), batch_size)
        pixel_values = processor.normalize(crops[index]).to(device)
        target = patch_targets(torch.from_numpy(points[index]).float(), patch_size, grid).to(device)
        mask = torch.from_numpy(labelled[index]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            logits = model(pixel_values).float()  # (B, K, N)
        per_keypoint = -(target * logits.log_softmax(-1)).sum(-1)  # (B, K) soft cross-entropy
        loss = per_keypoint[mask].mean()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"vision pre-training diverged at step {step + 1} (loss {loss.item()}); lower the lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        recent_loss.append(loss.item())
        recent_hits += int(((logits.argmax(-1) == target.argmax(-1)) & mask).sum())
        recent_count += int(mask.sum())
        if step % log_every == 0:
            summary = _log_progress(log, step, time.perf_counter() - started, recent_loss, recent_hits, recent_count)
            recent_loss, recent_hits, recent_count = [], 0, 0
    if recent_loss:
        summary = _log_progress(log, step, time.perf_counter() - started, recent_loss, recent_hits, recent_count)
    tower.requires_grad_(False)
    return summary


def _log_progress(log, step, elapsed, losses, hits, count) -> dict:
    summary = {"steps": step, "seconds": round(elapsed, 1), "steps_per_second": round(step / elapsed, 2),
               "loss": round(float(np.mean(losses)), 4), "patch_accuracy": round(hits / max(1, count), 4)}
    log(f"vision pre-training step {step}: loss {summary['loss']:.4f}, patch accuracy "
        f"{summary['patch_accuracy']:.3f}, {summary['steps_per_second']:.2f} steps/s")
    return summary


__all__ = ["PatchClassifier", "TrainingBudget", "build_demo_tower", "patch_targets", "pretrain_vision_tower", "sincos_position_grid"]
