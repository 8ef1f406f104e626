"""The limits on numbers and strings read from outside (a checkpoint's JSON files, a user's tables): each
value is checked where it is read, and one out of range is one ValueError naming the field, its value and
the range allowed. A checkpoint is data from elsewhere: a ``num_image_tokens`` of 10**9 must be a message,
not 23 GB of prompt.

The ranges hold every model of the paper (ViT-L/14 + Vicuna-7B: 256 image tokens at 224 px, 4096-d, 32
layers, 32k words) with a wide margin.
"""

from __future__ import annotations

import math

# Sizes of a model's config and its sub-configs (any nesting), checked before a tensor is allocated.
CONFIG_SIZE_LIMITS = {
    "hidden_size": 65_536, "intermediate_size": 262_144, "num_hidden_layers": 1_024, "num_attention_heads": 1_024,
    "num_key_value_heads": 1_024, "vocab_size": 2_097_152, "max_position_embeddings": 1_048_576,
    "image_size": 4_096, "patch_size": 1_024, "num_channels": 16, "projection_dim": 65_536,
    "num_image_tokens": 16_384, "heatmap_size": 4_096, "max_text_length": 8_192, "lora_r": 4_096,
    "text_num_layers": 1_024, "num_register_tokens": 1_024,
}
MAX_TEXT_CHARS = 2_000  # a prompt word, template or separator
MAX_KEYPOINTS = 1_000  # in one checkpoint's descriptions or one table
MAX_KEYPOINT_NAME_CHARS = 100


def check_range(field: str, value, low: float, high: float, integer: bool = True):
    """``value`` if it is a number (a whole one when ``integer``) in ``[low, high]``; else a ValueError saying
    so. Booleans are not numbers here."""
    kind = "a whole number" if integer else "a number"
    number_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, number_type) or (
            not integer and not math.isfinite(value)) or not low <= value <= high:
        raise ValueError(f"{field} = {_shown(value)} is out of range: {kind} from {low:g} to {high:g} is allowed")
    return value


def check_text(field: str, value, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` if it is a string of at most ``limit`` characters; else a ValueError saying so."""
    if not isinstance(value, str):
        raise ValueError(f"{field} = {_shown(value)} is not a text")
    if len(value) > limit:
        raise ValueError(f"{field} has {len(value):,} characters: at most {limit:,} are allowed")
    return value


def check_config_sizes(config: dict, path: str = "") -> None:
    """Every size field of ``CONFIG_SIZE_LIMITS`` in a config dict and its nested dicts is a whole number from 0
    to its limit (0: some configs use it for "none")."""
    for key, value in config.items():
        name = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            check_config_sizes(value, name)
        elif key in CONFIG_SIZE_LIMITS and value is not None:
            check_range(name, value, 0, CONFIG_SIZE_LIMITS[key])


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["CONFIG_SIZE_LIMITS", "MAX_KEYPOINTS", "MAX_KEYPOINT_NAME_CHARS", "MAX_TEXT_CHARS", "check_config_sizes",
           "check_range", "check_text"]
