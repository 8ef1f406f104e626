"""The models: LocLLM and the paper's CLIP baseline on one base (``modeling_base``), vision towers.

Both configs and models are registered with the Auto classes, so ``AutoConfig.from_pretrained(ckpt)``
and ``AutoModel.from_pretrained(ckpt)`` give the right class for any checkpoint of ours.
"""

from transformers import AutoConfig, AutoModel

from .configuration_clip_baseline import CLIPBaselineConfig
from .configuration_locllm import CLIP_MEAN, CLIP_STD, LocLLMConfig
from .modeling_base import BASE_WEIGHTS, TRAINED_WEIGHTS, read_checkpoint_config, read_checkpoint_tensors
from .modeling_clip_baseline import CLIPBaselineForKeypointHeatmaps
from .modeling_locllm import LocLLMForKeypointLocalization, build_projector

__all__ = ["BASE_WEIGHTS", "CLIP_MEAN", "CLIP_STD", "CLIPBaselineConfig", "CLIPBaselineForKeypointHeatmaps",
           "LocLLMConfig", "LocLLMForKeypointLocalization", "TRAINED_WEIGHTS", "build_projector",
           "read_checkpoint_config", "read_checkpoint_tensors"]

for _config, _model in ((LocLLMConfig, LocLLMForKeypointLocalization),
                        (CLIPBaselineConfig, CLIPBaselineForKeypointHeatmaps)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
