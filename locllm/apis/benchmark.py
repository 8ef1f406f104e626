"""``locllm bench``: persons/s of the reference and fast decoding paths on the same random-weight model.

Both modes run on the same model, inputs and device in one process. Random weights do not write
well-formed answers, so the check of identical outputs compares the reference path with the fast
path's unconstrained greedy decoding (the same algorithm without the grammar) token for token; the
timings are those of the default, constrained fast path.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch

from ..data.synth import render_scene
from ..engine.localizer import Localizer
from ..keypoints import get_keypoint_set
from ..models import LocLLMForKeypointLocalization
from ..models.processing_locllm import LocLLMProcessor
from ..models.tiny import locllm_config
from ..prompts import PromptStyle
from ..prompts.demo_tokenizer import build_demo_tokenizer


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, caches
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _synchronize(device)
    return (time.perf_counter() - start) / repeats


@contextmanager
def count_vision_images(model: LocLLMForKeypointLocalization):
    """Within the block, the list yielded collects the number of images of every vision-tower call."""
    counts: list[int] = []
    hook = model.vision_tower.register_forward_pre_hook(
        lambda module, args, kwargs: counts.append(len(kwargs["pixel_values"])), with_kwargs=True)
    try:
        yield counts
    finally:
        hook.remove()


@contextmanager
def measure_kv_cache(model: LocLLMForKeypointLocalization):
    """Within the block, the list yielded gets the bytes of every KV cache the language model writes
    into (keys and values of all layers, as allocated), at its largest, one entry per cache."""
    sizes: list[int] = []
    latest = {}  # the cache of the last call: a new object starts a new entry (ids may be reused)

    def record(module, args, kwargs, output):
        cache = kwargs.get("cache")
        if cache is None:
            return
        if latest.get("cache") is not cache:
            latest["cache"] = cache
            sizes.append(0)
        size = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer.is_initialized)
        sizes[-1] = max(sizes[-1], size)

    hook = model.language_model.register_forward_hook(record, with_kwargs=True)
    try:
        yield sizes
    finally:
        hook.remove()
        latest.clear()


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 4096) -> float:
    """Measured dense matmul throughput, the yardstick of the arithmetic floor."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _time(lambda: a @ b, device, repeats=10)
    return 2 * n**3 / seconds / 1e12


def floor_flops(model: LocLLMForKeypointLocalization, prefix_len: int, query_lens: list[int],
                answer_tokens: int) -> float:
    """FLOPs of the least work one person needs: one vision pass, one prefix prefill, K query suffixes
    and the answer tokens (2 x parameters per token through each part), the LM head on the answer
    tokens only (no other position's logits are needed); attention over the short context adds a few
    percent and is left out."""
    def weights(module, skip: tuple[str, ...] = ()) -> int:
        return sum(p.numel() for n, p in module.named_parameters() if "lora_" not in n and not any(s in n for s in skip))

    vision = weights(model.vision_tower)
    body = weights(model.language_model, skip=("embed_tokens", "lm_head"))
    head = model.language_model.get_output_embeddings().weight.numel()
    text_tokens = prefix_len + sum(query_lens) + len(query_lens) * answer_tokens
    vision_tokens = model.config.num_image_tokens + 1
    return 2 * vision * vision_tokens + 2 * body * text_tokens + 2 * head * len(query_lens) * answer_tokens


def run_benchmark(size: str = "small", persons: int = 8, keypoints: str = "coco", device: str | None = None,
                  dtype: str = "float32", tokenizer=None, repeats: int = 2, seed: int = 0,
                  base: str | None = None, base_layers: int | None = None) -> dict:
    """``base`` (a causal LM folder, or ``smollm2``) replaces the size's random LM with real weights (its
    first ``base_layers`` layers, all when None); the tower and projector stay random."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = getattr(torch, dtype)
    # A word-level tokenizer by default: a round is ~50 tokens, as with Llama-2's (~60); a character
    # tokenizer would make the queries 4x longer than any real tokenizer does.
    tokenizer = tokenizer or build_demo_tokenizer()
    style = PromptStyle()
    tokenizer.add_tokens([style.image_token], special_tokens=True)  # a no-op when the tokenizer has it
    vocab = 32000 if size == "paper" else len(tokenizer)
    config = locllm_config(size, vocab_size=max(vocab, len(tokenizer)),
                           image_token_id=tokenizer.convert_tokens_to_ids(style.image_token),
                           prompt_style=style.to_dict())
    config.text_model_name_or_path, config.text_num_layers = base, base_layers
    torch.manual_seed(seed)
    if base:
        model = LocLLMForKeypointLocalization.from_bases(config).to(device)
    else:
        with torch.device(device):
            model = LocLLMForKeypointLocalization(config)
    model.to_base_dtype(torch_dtype)
    processor = LocLLMProcessor.from_config(config, tokenizer)
    localizer = Localizer(model, processor, device=device, persons_per_batch=persons)
    image, people = render_scene(np.random.default_rng(seed), size=256, num_persons=1)
    boxes = np.repeat(np.asarray(people[0]["bbox"], dtype=np.float64)[None], persons, axis=0)
    kp_set = get_keypoint_set(keypoints)

    autocast = torch.autocast(device.type, dtype=torch_dtype, enabled=torch_dtype != torch.float32)
    with autocast:
        fast_s = _time(lambda: localizer.localize(image, boxes, kp_set, mode="fast"), device, repeats)
        reference_s = _time(lambda: localizer.localize(image, boxes, kp_set, mode="reference"), device, repeats)
        with count_vision_images(model) as reference_images, measure_kv_cache(model) as reference_caches:
            reference = localizer.localize(image, boxes, kp_set, mode="reference")
        with measure_kv_cache(model) as fast_caches:
            localizer.localize(image, boxes, kp_set, mode="fast")
        localizer.answerer.constrained = False
        with count_vision_images(model) as fast_images:
            greedy = localizer.localize(image, boxes, kp_set, mode="fast")
        localizer.answerer.constrained = True
    answers = [(a, b) for p, q in zip(reference, greedy, strict=True) for a, b in zip(p.answers, q.answers, strict=True)]
    result = {
        "config": size, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": dtype, "persons": persons, "keypoints_per_person": len(kp_set),
        "reference_ms_per_person": 1000 * reference_s / persons,
        "fast_ms_per_person": 1000 * fast_s / persons,
        "reference_persons_per_s": persons / reference_s,
        "fast_persons_per_s": persons / fast_s,
        "speedup": reference_s / fast_s,
        "identical_answers_unconstrained": float(np.mean([a == b for a, b in answers])),
        # crops through the vision tower per person (in the untimed check runs): the reference re-encodes
        # the K copies at every decoding step, fast encodes each crop once
        "reference_vision_images_per_person": sum(reference_images) / persons,
        "fast_vision_images_per_person": sum(fast_images) / persons,
        # KV cache bytes as allocated: the reference's cache holds one person's K prompts (one generate
        # per person), the fast path's a batch of persons; their sum over the run, per person
        "reference_kv_cache_mib_per_person": sum(reference_caches) / persons / 2**20,
        "fast_kv_cache_mib_per_person": sum(fast_caches) / persons / 2**20,
        "trainable_parameters": model.trainable_parameter_count(),
    }
    prefix, queries = processor.prompt_ids(kp_set)
    flops = floor_flops(model, len(prefix) - 1 + config.num_image_tokens, [len(q) for q in queries],
                        len(processor.grammar) - 1)
    # a CPU multiplies a 1024 matrix at its full rate already, in a fraction of the time of a 4096 one
    tflops = matmul_tflops(device, torch_dtype, n=4096 if device.type == "cuda" else 1024)
    result.update({"matmul_tflops": tflops, "floor_ms_per_person": 1000 * flops / (tflops * 1e12),
                   "fast_over_floor": (fast_s / persons) / (flops / (tflops * 1e12))})
    return result
