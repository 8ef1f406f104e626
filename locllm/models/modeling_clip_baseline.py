"""The CLIP baseline of the paper (3.4): one text-conditioned heatmap per asked keypoint.

    pixel_values (B, 3, S, S) -> CLIP image tower -> (B, N, Dv) patch tokens -> post-norm, visual projection
        -> (B, P, G, G) feature map, unit length at every position
    keypoint texts (T, L) -> CLIP text tower -> EOS token -> text projection -> (T, P), unit length
    query q asks text ``text_index[q]`` about image ``image_index[q]``:
        feature map * text embedding (element-wise, every position) -> head -> (Q, H, H) heatmap

The head (SimpleBaseline's deconvolutions, then one 1x1 convolution to a single channel) learns where
"this" keypoint is from the product alone: it is keypoint-agnostic, and any keypoint can be asked by
its text, as with LocLLM. Training regresses Gaussian targets (:mod:`locllm.codecs.heatmap`) with MSE over the
visible keypoints. Which towers train (LoRA on their q/v projections, or all their weights) is set in
the config; the head always trains. Its batch norm sees each micro-batch's statistics, so unlike
LocLLM's loss a step depends a little on how a batch is split over micro-batches and processes.

``locllm train`` builds it with ``model.type: clip_baseline`` (``locllm.training.clip_baseline_collator``
makes the batches); ``locllm eval`` / ``predict`` load it through ``Localizer.from_pretrained``, which answers
a checkpoint of this type with :class:`~locllm.engine.heatmap_answerer.HeatmapAnswerer`. Its keypoint texts
and heatmap codec are in :class:`~locllm.models.processing_clip_baseline.CLIPBaselineProcessor`.

Checkpoints follow LocLLM's: ``config.json``, the trained weights (LoRA, head, and any tower trained
whole) in ``trained.safetensors``, and in ``base.safetensors`` the CLIP weights that cannot be loaded
from ``clip_model_name_or_path`` (tiny models' random ones).

Example:
    >>> model = CLIPBaselineForKeypointHeatmaps.from_pretrained("runs/clip-baseline/checkpoints/step-0001000")
    >>> processor = CLIPBaselineProcessor.from_pretrained("runs/clip-baseline/checkpoints/step-0001000")
    >>> ids, mask = processor.tokenize_texts(["The left knee is ..."])
    >>> out = model(pixel_values=crops, input_ids=ids, attention_mask=mask,
    ...             image_index=torch.arange(len(crops)), text_index=torch.zeros(len(crops), dtype=torch.long))
    >>> out.heatmaps  # (B, H, H): where the left knee is in each crop
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPModel
from transformers.utils import ModelOutput

from .configuration_clip_baseline import CLIPBaselineConfig
from .modeling_base import BaseSpec, PreTrainedModelOnBases

LORA_TARGETS = ("self_attn.q_proj", "self_attn.v_proj")  # query and value of every attention layer, as LocLLM


@dataclass
class CLIPBaselineOutput(ModelOutput):
    """``loss``: weighted MSE (when targets are given); ``heatmaps``: (Q, H, H), one per query."""

    loss: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None


class HeatmapHead(nn.Module):
    """(Q, P, G, G) conditioned features -> (Q, 1, H, H): deconvolutions (x2 each, BN, ReLU), then a 1x1 conv."""

    def __init__(self, in_channels: int, channels: int, num_deconv_layers: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(num_deconv_layers):
            layers += [nn.ConvTranspose2d(in_channels, channels, kernel_size=4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            in_channels = channels
        layers.append(nn.Conv2d(in_channels, 1, kernel_size=1))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # SimpleBaseline's initialization: small weights, so the first heatmaps are near zero.
        for module in self.layers:
            if isinstance(module, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class CLIPBaselinePreTrainedModel(PreTrainedModelOnBases):
    config_class = CLIPBaselineConfig
    base_model_prefix = "clip_baseline"
    main_input_name = "pixel_values"
    bases = (BaseSpec("clip", "clip_model_name_or_path", "clip_config", CLIPModel.from_pretrained),)
    own_modules = ("head",)
    trained_whole_when = {"train_vision_base": ("clip.vision_model.", "clip.visual_projection."),
                          "train_text_base": ("clip.text_model.", "clip.text_projection.")}

    def _init_weights(self, module):
        # The CLIP towers come initialized (or pretrained) and the head initializes itself.
        return


class CLIPBaselineForKeypointHeatmaps(CLIPBaselinePreTrainedModel):
    """CLIP towers + keypoint-agnostic heatmap head. See the module docstring for the data flow."""

    def __init__(self, config: CLIPBaselineConfig, clip: CLIPModel | None = None):
        super().__init__(config)
        config.check_geometry()  # again: a pretrained CLIP (``from_bases``) brings its own patch size
        self.clip = clip if clip is not None else CLIPModel(config.clip_config)
        self.head = HeatmapHead(config.clip_config.projection_dim, config.head_channels, config.num_deconv_layers)
        self.post_init()
        self.freeze_bases_and_add_lora()

    # ---------------------------------------------------------------- what trains

    def lora_targets(self) -> dict[str, tuple[str, ...]]:
        return {tower: LORA_TARGETS for enabled, tower in ((self.config.lora_vision, "clip.vision_model"),
                                                           (self.config.lora_text, "clip.text_model")) if enabled}

    # ---------------------------------------------------------------- forward

    def get_feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalized crops -> (B, P, G, G) projected patch features of unit length."""
        tower = self.clip.vision_model
        dtype = self.clip.visual_projection.weight.dtype
        trained_size = tower.config.image_size
        hidden = tower(pixel_values=pixel_values.to(dtype),
                       interpolate_pos_encoding=self.config.image_size != trained_size).last_hidden_state
        # CLIP normalizes only its CLS token on the way out; the patches get the same norm here.
        tokens = self.clip.visual_projection(tower.post_layernorm(hidden[:, 1:]))  # (B, N, P)
        tokens = F.normalize(tokens.float(), dim=-1)
        batch, _, channels = tokens.shape
        side = self.config.grid_size
        return tokens.transpose(1, 2).reshape(batch, channels, side, side)

    def get_text_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(T, L) right-padded keypoint texts ending in EOS -> (T, P) projected embeddings of unit length."""
        hidden = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # CLIP's pooled output is its EOS token; it is found from the mask, which works for any tokenizer.
        eos = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos]
        return F.normalize(self.clip.text_projection(pooled).float(), dim=-1)

    def predict_heatmaps(self, feature_map: torch.Tensor, text_embeddings: torch.Tensor, image_index: torch.Tensor,
                         text_index: torch.Tensor) -> torch.Tensor:
        """Query q = (image ``image_index[q]``, text ``text_index[q]``) -> (Q, H, H) heatmaps."""
        channels = feature_map.shape[1]
        # The product of two unit vectors has entries of about 1 / P; times P they are of order 1, the
        # scale the head's initialization expects (and its channel sum is P x their cosine similarity).
        conditioned = feature_map[image_index] * text_embeddings[text_index][:, :, None, None] * channels
        head_dtype = self.head.layers[-1].weight.dtype
        return self.head(conditioned.to(head_dtype)).squeeze(1)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        image_index: torch.LongTensor | None = None,
        text_index: torch.LongTensor | None = None,
        target_heatmaps: torch.FloatTensor | None = None,
        target_weights: torch.FloatTensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> CLIPBaselineOutput:
        r"""
        Args:
            pixel_values: (B, 3, S, S) normalized crops.
            input_ids / attention_mask: (T, L) keypoint texts (:meth:`~locllm.models.processing_clip_baseline.CLIPBaselineProcessor.tokenize_texts`).
            image_index / text_index: (Q,) which image and which text each query pairs; both ``None``
                pairs image i with text i (B = T).
            target_heatmaps: (Q, H, H) Gaussian targets (:meth:`CLIPBaselineConfig.heatmap_codec`).
            target_weights: (Q,) 1 for a supervised query, 0 for one that is not; default all 1.
            num_items_in_batch: what the summed query losses are divided by (the supervised queries of a
                whole batch split into micro-batches); default the sum of ``target_weights``.

        Returns:
            ``loss`` (the weighted mean, over queries, of each heatmap's MSE) and ``heatmaps`` (Q, H, H).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if image_index is None and text_index is None:
            if pixel_values.shape[0] != input_ids.shape[0]:
                raise ValueError(f"{pixel_values.shape[0]} images and {input_ids.shape[0]} texts: give image_index "
                                 "and text_index to pair them")
            image_index = text_index = torch.arange(pixel_values.shape[0], device=pixel_values.device)
        elif image_index is None or text_index is None:
            raise ValueError("give both image_index and text_index, or neither")
        heatmaps = self.predict_heatmaps(self.get_feature_map(pixel_values),
                                         self.get_text_embeddings(input_ids, attention_mask), image_index, text_index)
        loss = None
        if target_heatmaps is not None:
            if target_heatmaps.shape != heatmaps.shape:
                raise ValueError(f"target_heatmaps {tuple(target_heatmaps.shape)} must match the heatmaps "
                                 f"{tuple(heatmaps.shape)}")
            if target_weights is None:
                target_weights = torch.ones(heatmaps.shape[0], device=heatmaps.device)
            per_query = ((heatmaps.float() - target_heatmaps.float()) ** 2).mean(dim=(1, 2))
            divisor = target_weights.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
            loss = (per_query * target_weights.float()).sum() / divisor
        return CLIPBaselineOutput(loss=loss, heatmaps=heatmaps)


__all__ = ["CLIPBaselineForKeypointHeatmaps", "CLIPBaselineOutput", "HeatmapHead"]
