"""Tiny configurations of the real architectures, for tests, benchmarks and the CPU demo.

``paper`` is the paper's size (DINOv2 ViT-L/14 at 224 px + a Llama-2-7B config); build it on the
``meta`` device or a GPU, never on a laptop CPU.
"""

from __future__ import annotations

from transformers import Dinov2Config, LlamaConfig

from .configuration_locllm import LocLLMConfig

SIZES = {
    # name: (vision hidden, vision layers, vision heads, patch, image size, text hidden, text layers, text heads)
    "tiny": (32, 2, 2, 14, 56, 64, 2, 4),
    "small": (192, 6, 3, 14, 224, 512, 8, 8),
    "paper": (1024, 24, 16, 14, 224, 4096, 32, 32),
}


def locllm_config(size: str = "tiny", vocab_size: int = 32000, image_token_id: int | None = None,
                  **overrides) -> LocLLMConfig:
    """A LocLLMConfig with DINOv2 + Llama bases of the named size, randomly initialized when built."""
    try:
        v_dim, v_layers, v_heads, patch, image_size, t_dim, t_layers, t_heads = SIZES[size]
    except KeyError:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}") from None
    vision = Dinov2Config(
        hidden_size=v_dim, num_hidden_layers=v_layers, num_attention_heads=v_heads, mlp_ratio=4,
        patch_size=patch, image_size=518 if size == "paper" else image_size, layer_norm_eps=1e-6,
    )
    text = LlamaConfig(
        hidden_size=t_dim, num_hidden_layers=t_layers, num_attention_heads=t_heads, num_key_value_heads=t_heads,
        intermediate_size=11008 if size == "paper" else 2 * t_dim if size == "tiny" else 4 * t_dim,
        vocab_size=vocab_size, max_position_embeddings=4096, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return LocLLMConfig(vision_config=vision, text_config=text, image_size=image_size,
                        image_token_id=vocab_size if image_token_id is None else image_token_id, **overrides)
