"""The LocLLM model: configuration, modeling, vision towers."""

from transformers import AutoConfig

from .configuration_locllm import CLIP_MEAN, CLIP_STD, LocLLMConfig
from .modeling_locllm import LocLLMForKeypointLocalization, build_projector

__all__ = ["CLIP_MEAN", "CLIP_STD", "LocLLMConfig", "LocLLMForKeypointLocalization", "build_projector"]

# Registered so that Auto classes reading a checkpoint's config.json (e.g. AutoTokenizer) know the type.
AutoConfig.register("locllm", LocLLMConfig, exist_ok=True)
