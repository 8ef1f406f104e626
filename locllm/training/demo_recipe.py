"""The LocLLM stage of the demo recipe (:mod:`locllm.cli.demo_recipe`): the crops as training samples, the
model (pre-trained tower + projector + random Llama) and its loop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import LlamaConfig

from ..data.datasets import PoseSample
from ..data.geometry import PIXEL_STD
from ..data.synth.demo import CROP_SIZE, DEMO_KEYPOINTS, DemoCrops
from ..models import LocLLMConfig, LocLLMForKeypointLocalization
from ..prompts import IGNORE_INDEX, DecimalCodec, PromptStyle
from .collator import TrainingCollator
from .vision_pretrain import TrainingBudget


class DemoSamples(Dataset):
    """``(epoch, index)`` -> ``(epoch, index, PoseSample)``: the crops as the training collator takes them."""

    def __init__(self, data: DemoCrops):
        self.data = data
        self.askable = data.askable()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, PoseSample]:
        epoch, index = key
        data = self.data
        joints = np.zeros((len(DEMO_KEYPOINTS), 3), dtype=np.float32)
        joints[:, :2] = data.points[index]
        size = int(data.scene_sizes[index])
        sample = PoseSample(
            image=data.crops[index], joints=joints, visible=self.askable[index], labelled=data.labelled[index],
            keypoints=DEMO_KEYPOINTS, has_depth=False, center=data.centers[index], scale=data.scales[index],
            rotation=0.0, pixel_std=PIXEL_STD, flipped=False, image_size=(size, size), image_id=index,
        )
        return epoch, index, sample


class EpochBatches:
    """Endless batches of ``(epoch, index)`` keys: each epoch a permutation seeded by (seed, epoch)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int):
        if num_samples < batch_size:
            raise ValueError(f"{num_samples} training crops are fewer than one batch of {batch_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            for start in range(0, self.num_samples - self.batch_size + 1, self.batch_size):
                yield [(epoch, int(i)) for i in order[start:start + self.batch_size]]
            epoch += 1


def build_demo_model(tower: torch.nn.Module, tokenizer, style: PromptStyle, seed: int = 0) -> LocLLMForKeypointLocalization:
    """The pre-trained tower (frozen) + a linear projector + a random 128-d, 4-layer Llama trained in full."""
    text = LlamaConfig(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, intermediate_size=512,
        vocab_size=len(tokenizer), max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config = LocLLMConfig(
        vision_config=tower.config, text_config=text, image_size=CROP_SIZE, image_token=style.image_token,
        image_token_id=tokenizer.convert_tokens_to_ids(style.image_token), lora_vision=False, lora_text=False,
        train_vision_base=False, train_text_base=True, prompt_style=style.to_dict(),
        coordinate_codec=DecimalCodec().to_dict(),
    )
    torch.manual_seed(seed)
    return LocLLMForKeypointLocalization(config, vision_tower=tower)


def train_locllm(
    model: LocLLMForKeypointLocalization,
    samples: DemoSamples,
    collator: TrainingCollator,
    budget: TrainingBudget,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    device: str | torch.device = "cpu",
    seed: int = 0,
    loader_workers: int = 0,
    log_every: int = 50,
    eval_every: int = 0,
    evaluate: Callable[[LocLLMForKeypointLocalization], str] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train the model's trainable weights on the answer-token loss; ``evaluate(model)`` every ``eval_every``
    steps (its time is not charged to a timed budget). Returns the run's figures."""
    device = torch.device(device)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
                                   {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
    loader = DataLoader(samples, batch_sampler=EpochBatches(len(samples), batch_size, seed), collate_fn=collator,
                        num_workers=loader_workers, persistent_workers=loader_workers > 0)
    on_gpu = device.type == "cuda"
    step, started, paused = 0, time.perf_counter(), 0.0
    recent_loss, tokens, supervised = [], 0, 0
    summary: dict = {}
    for batch in loader:
        if budget.progress(step, time.perf_counter() - started - paused) >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * budget.lr_factor(step, time.perf_counter() - started - paused)
        tokens += int(batch["attention_mask"].sum())
        supervised += int((batch["labels"] != IGNORE_INDEX).sum())
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            loss = model(**batch).loss
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"LocLLM training diverged at step {step + 1} (loss {loss.item()}); lower the lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        recent_loss.append(loss.item())
        if step % log_every == 0:
            elapsed = time.perf_counter() - started - paused
            summary = {"steps": step, "seconds": round(elapsed, 1), "steps_per_second": round(step / elapsed, 3),
                       "loss": round(float(np.mean(recent_loss)), 4),
                       "tokens_per_sequence": round(tokens / (step * batch_size), 1),
                       "answer_tokens_per_sequence": round(supervised / (step * batch_size), 1)}
            log(f"LocLLM step {step}: loss {summary['loss']:.4f}, lr {optimizer.param_groups[0]['lr']:.2e}, "
                f"{summary['steps_per_second']:.2f} steps/s, {summary['tokens_per_sequence']:.0f} tokens/sequence")
            recent_loss = []
        if evaluate is not None and eval_every and step % eval_every == 0:
            paused_from = time.perf_counter()
            log(evaluate(model))
            model.train()
            paused += time.perf_counter() - paused_from
    elapsed = time.perf_counter() - started - paused
    summary.update({"steps": step, "seconds": round(elapsed, 1), "steps_per_second": round(step / elapsed, 3)})
    if recent_loss:
        summary["loss"] = round(float(np.mean(recent_loss)), 4)
    return summary
