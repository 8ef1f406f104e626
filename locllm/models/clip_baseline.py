"""The CLIP baseline of the paper (3.4): one text-conditioned heatmap per asked keypoint.

    pixel_values (B, 3, S, S) -> CLIP image tower -> (B, N, Dv) patch tokens -> post-norm, visual projection
        -> (B, P, G, G) feature map, unit length at every position
    keypoint texts (T, L) -> CLIP text tower -> EOS token -> text projection -> (T, P), unit length
    query q asks text ``text_index[q]`` about image ``image_index[q]``:
        feature map * text embedding (element-wise, every position) -> head -> (Q, H, H) heatmap

The head (SimpleBaseline's deconvolutions, then one 1x1 convolution to a single channel) learns where
"this" keypoint is from the product alone: it is keypoint-agnostic, and any keypoint can be asked by
its text, as with LocLLM. Training regresses Gaussian targets (:mod:`.heatmap`) with MSE over the
visible keypoints. Which towers train (LoRA on their q/v projections, or all their weights) is set in
the config; the head always trains. Its batch norm sees each micro-batch's statistics, so unlike
LocLLM's loss a step depends a little on how a batch is split over micro-batches and processes.

``locllm train`` builds it with ``model.type: clip_baseline`` (:class:`CLIPBaselineCollator` makes the
batches); ``locllm eval`` / ``predict`` load it through ``Localizer.from_pretrained``, which hands a
checkpoint of this type to :class:`~locllm.engine.heatmap_localizer.HeatmapLocalizer`.

Checkpoints follow LocLLM's: ``config.json``, the trained weights (LoRA, head, and any tower trained
whole) in ``trained.safetensors``, and in ``base.safetensors`` the CLIP weights that cannot be loaded
from ``clip_model_name_or_path`` (tiny models' random ones).

Example:
    >>> model = CLIPBaselineForKeypointHeatmaps.from_pretrained("runs/clip-baseline/checkpoints/step-0001000")
    >>> ids, mask = tokenize_keypoint_texts(tokenizer, ["The left knee is ..."], model.config.max_text_length)
    >>> out = model(pixel_values=crops, input_ids=ids, attention_mask=mask,
    ...             image_index=torch.arange(len(crops)), text_index=torch.zeros(len(crops), dtype=torch.long))
    >>> out.heatmaps  # (B, H, H): where the left knee is in each crop
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, CLIPConfig, CLIPModel, PretrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

from ..codecs import HeatmapCodec
from ..keypoints import Keypoint
from .configuration_locllm import CLIP_MEAN, CLIP_STD
from .modeling_locllm import BASE_WEIGHTS, TRAINED_WEIGHTS, read_checkpoint_config, read_checkpoint_tensors

MODEL_TYPE = "locllm_clip_baseline"
LORA_TARGETS = ("self_attn.q_proj", "self_attn.v_proj")  # query and value of every attention layer, as LocLLM


class CLIPBaselineConfig(PretrainedConfig):
    r"""Configuration of [`CLIPBaselineForKeypointHeatmaps`].

    Args:
        clip_config: the CLIP model (both towers and the projection size).
        clip_model_name_or_path: a CLIP folder to load the towers from (e.g. ``openai/clip-vit-large-patch14``
            downloaded beforehand); ``None``: the weights live in the checkpoint (tiny models).
        image_size: side of the square crop (224 in the paper); a tower trained at another size has its
            position embeddings interpolated.
        image_mean / image_std: pixel normalization (CLIP's).
        text_template: what the text tower reads for a keypoint, with ``{name}`` and ``{description}``
            (the paper: its description).
        head_channels: channels of the head's deconvolutions.
        num_deconv_layers: each doubles the resolution: the heatmap side is the patch grid's times
            ``2 ** num_deconv_layers`` (ViT-L/14 at 224 px: 16 -> 64).
        heatmap_sigma: standard deviation of the target Gaussians, in heatmap cells.
        lora_vision / lora_text: LoRA on the q/v projections of the image / text tower; ``lora_r``,
            ``lora_alpha``, ``lora_dropout``.
        train_vision_base / train_text_base: train all weights of the tower (and its projection)
            instead of only LoRA (towers without pretraining, such as tiny ones).
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {"clip_config": SubConfigSpec(config_class=CLIPConfig)}

    clip_config: dict | PretrainedConfig | None = None
    clip_model_name_or_path: str | None = None
    image_size: int = 224
    image_mean: tuple[float, ...] | list[float] = CLIP_MEAN
    image_std: tuple[float, ...] | list[float] = CLIP_STD
    text_template: str = "{description}"
    head_channels: int = 256
    num_deconv_layers: int = 2
    heatmap_sigma: float = 2.0
    lora_vision: bool = True
    lora_text: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    train_vision_base: bool = False
    train_text_base: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_geometry()
        if self.num_deconv_layers < 0 or self.head_channels < 1:
            raise ValueError("num_deconv_layers must be >= 0 and head_channels >= 1")
        if "{name}" not in self.text_template and "{description}" not in self.text_template:
            raise ValueError(f"text_template must contain {{name}} or {{description}}, got {self.text_template!r}")

    def check_geometry(self) -> None:
        """The crop must be a whole number of patches (checked again once a CLIP folder gives the towers)."""
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the patch size {self.patch_size}")

    @property
    def patch_size(self) -> int:
        return self.clip_config.vision_config.patch_size

    @property
    def grid_size(self) -> int:
        """Side of the patch grid: the feature map is (P, grid_size, grid_size)."""
        return self.image_size // self.patch_size

    @property
    def heatmap_size(self) -> int:
        return self.grid_size * 2**self.num_deconv_layers

    @property
    def max_text_length(self) -> int:
        return self.clip_config.text_config.max_position_embeddings

    def heatmap_codec(self) -> HeatmapCodec:
        return HeatmapCodec(self.image_size, self.heatmap_size, self.heatmap_sigma)

    def keypoint_text(self, keypoint: Keypoint) -> str:
        """What the text tower reads for ``keypoint``."""
        return self.text_template.format(name=keypoint.name, description=keypoint.description)


AutoConfig.register(MODEL_TYPE, CLIPBaselineConfig, exist_ok=True)

SIZES = {
    # name: (vision hidden, layers, heads, patch, image size, text hidden, layers, heads, text positions,
    #        projection, head channels)
    "tiny": (32, 2, 2, 8, 64, 32, 2, 2, 256, 32, 32),  # character-level descriptions need ~130 positions
    "paper": (1024, 24, 16, 14, 224, 768, 12, 12, 77, 768, 256),  # CLIP ViT-L/14
}


def clip_baseline_config(size: str = "tiny", tokenizer=None, **overrides) -> CLIPBaselineConfig:
    """A CLIPBaselineConfig with CLIP towers of the named size, randomly initialized when built.

    With a ``tokenizer`` the text tower takes its vocabulary and special-token ids; without one, CLIP's.
    """
    try:
        v_dim, v_layers, v_heads, patch, image_size, t_dim, t_layers, t_heads, positions, projection, head = SIZES[size]
    except KeyError:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}") from None
    text = {"hidden_size": t_dim, "intermediate_size": 4 * t_dim, "num_hidden_layers": t_layers,
            "num_attention_heads": t_heads, "max_position_embeddings": positions, "projection_dim": projection}
    if tokenizer is not None:
        text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    clip = CLIPConfig(
        vision_config={"hidden_size": v_dim, "intermediate_size": 4 * v_dim, "num_hidden_layers": v_layers,
                       "num_attention_heads": v_heads, "patch_size": patch, "image_size": image_size,
                       "projection_dim": projection},
        text_config=text,
        projection_dim=projection,
    )
    return CLIPBaselineConfig(clip_config=clip, **{"image_size": image_size, "head_channels": head, **overrides})


def tokenize_keypoint_texts(tokenizer, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> right-padded ``input_ids`` and ``attention_mask`` (T, L), each text ending in EOS.

    The model reads each text at its last real token, so EOS must be there: CLIP's tokenizer adds it,
    others (the character tokenizer of tiny models) get it appended; a text too long is cut before it.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token, which the text tower is read at")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        if ids[-1] != eos:
            ids = ids + [eos]
        rows.append(ids if len(ids) <= max_length else ids[: max_length - 1] + [eos])
    length = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


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


class CLIPBaselinePreTrainedModel(PreTrainedModel):
    config_class = CLIPBaselineConfig
    base_model_prefix = "clip_baseline"
    main_input_name = "pixel_values"

    def _init_weights(self, module):
        # The CLIP towers come initialized (or pretrained) and the head initializes itself.
        return


class CLIPBaselineForKeypointHeatmaps(CLIPBaselinePreTrainedModel):
    """CLIP towers + keypoint-agnostic heatmap head. See the module docstring for the data flow."""

    def __init__(self, config: CLIPBaselineConfig, clip_model: CLIPModel | None = None):
        super().__init__(config)
        self.clip = clip_model if clip_model is not None else CLIPModel(config.clip_config)
        self.head = HeatmapHead(config.clip_config.projection_dim, config.head_channels, config.num_deconv_layers)
        self.post_init()
        self._set_trainable()

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_bases(cls, config: CLIPBaselineConfig, dtype: torch.dtype | None = None) -> CLIPBaselineForKeypointHeatmaps:
        """A fresh model (head random, LoRA B = 0) on the CLIP weights the config names, if any."""
        clip = None
        if config.clip_model_name_or_path:
            clip = CLIPModel.from_pretrained(config.clip_model_name_or_path, dtype=dtype)
            config.clip_config = clip.config
            config.check_geometry()
        return cls(config, clip_model=clip)

    def _set_trainable(self) -> None:
        self.clip.requires_grad_(False)
        patterns = []
        for enabled, tower in ((self.config.lora_vision, "vision_model"), (self.config.lora_text, "text_model")):
            if enabled:
                patterns += [rf"clip\.{tower}\..*{re.escape(target)}" for target in LORA_TARGETS]
        if patterns:
            lora = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                              lora_dropout=self.config.lora_dropout,
                              target_modules="|".join(f"(?:{p})" for p in patterns))
            inject_adapter_in_model(lora, self)  # B starts at zero: the towers start as they were
        trained_prefixes = ["head."]
        if self.config.train_vision_base:
            trained_prefixes += ["clip.vision_model.", "clip.visual_projection."]
        if self.config.train_text_base:
            trained_prefixes += ["clip.text_model.", "clip.text_projection."]
        for name, param in self.named_parameters():
            param.requires_grad = name.startswith(tuple(trained_prefixes)) or "lora_" in name
        self._keep_trainable_fp32()

    def _keep_trainable_fp32(self) -> None:
        """Frozen towers may be bf16; what trains stays fp32 so small updates are not rounded away."""
        for param in self.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

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
            input_ids / attention_mask: (T, L) keypoint texts (:func:`tokenize_keypoint_texts`).
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

    # ---------------------------------------------------------------- checkpoints

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes: trainable parameters and the head's batch-norm statistics."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t.detach() for n, t in self.state_dict().items() if n in trainable or n.startswith("head.")}

    def save_pretrained(self, save_directory: str | Path, **_) -> None:
        """Write ``config.json``, the trained weights, and the CLIP weights no path can restore."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(out)
        trained = {k: v.contiguous() for k, v in self.trained_state_dict().items()}
        save_file(trained, out / TRAINED_WEIGHTS)
        if self.config.clip_model_name_or_path is None:
            base = {k: v.contiguous() for k, v in self.state_dict().items() if k not in trained and "lora_" not in k}
            save_file(base, out / BASE_WEIGHTS)

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, **_) -> CLIPBaselineForKeypointHeatmaps:
        """Rebuild the model from its CLIP weights and load the checkpoint's (safetensors only)."""
        folder = Path(checkpoint)
        config = read_checkpoint_config(folder, CLIPBaselineConfig)
        model = cls.from_bases(config, dtype=dtype)
        state = read_checkpoint_tensors(folder)
        missing, unexpected = model.load_state_dict(state, strict=False)
        trained = model.trained_state_dict()
        restorable = config.clip_model_name_or_path is not None
        missing = [k for k in missing if k in trained or not (restorable and k.startswith("clip."))]
        if unexpected or missing:
            raise KeyError(f"{folder}: checkpoint does not match the model: unexpected {unexpected[:5]}, "
                           f"missing {missing[:5]}")
        model._keep_trainable_fp32()
        if dtype is not None:
            model.to_base_dtype(dtype)
        return model.to(device) if device is not None else model

    def to_base_dtype(self, dtype: torch.dtype) -> CLIPBaselineForKeypointHeatmaps:
        """Cast the frozen towers to ``dtype`` (e.g. bf16 on a GPU); trained weights stay fp32."""
        for param in self.clip.parameters():
            if not param.requires_grad:
                param.data = param.data.to(dtype)
        return self


__all__ = ["CLIPBaselineConfig", "CLIPBaselineForKeypointHeatmaps", "CLIPBaselineOutput",
           "HeatmapHead", "clip_baseline_config", "tokenize_keypoint_texts"]
