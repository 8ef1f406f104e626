"""The LocLLM model: configuration, modeling, vision towers."""

from .configuration_locllm import CLIP_MEAN, CLIP_STD, LocLLMConfig
from .modeling_locllm import LocLLMForKeypointLocalization, build_projector

__all__ = ["CLIP_MEAN", "CLIP_STD", "LocLLMConfig", "LocLLMForKeypointLocalization", "build_projector"]
