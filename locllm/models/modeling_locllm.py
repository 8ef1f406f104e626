"""LocLLM: a vision tower whose patch features, through a projector, replace the image placeholder
tokens of an instruction prompt to a causal LM that answers with the keypoint's coordinates.

    pixel_values (B, 3, S, S) -> vision tower -> (B, N, Dv) patch tokens -> projector -> (B, N, Dt)
    input_ids (B, T) with N consecutive image tokens per row -> embeddings with those rows replaced
    -> causal LM -> logits (B, T, V)

LoRA (peft) sits on the query and value projections of both the tower and the LM; everything else
of the two bases is frozen. A checkpoint holds only what was trained, plus the base weights that
cannot be found elsewhere (a tiny or demo model's own bases).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_locllm import LocLLMConfig
from .vision import build_vision_tower, load_vision_tower, patch_features, resample_position_grid

TRAINED_WEIGHTS = "trained.safetensors"
BASE_WEIGHTS = "base.safetensors"


def read_checkpoint_config(folder: str | Path, config_class: type[PretrainedConfig]) -> PretrainedConfig:
    """A checkpoint folder's ``config.json``, checked to be of ``config_class``'s model type."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a {config_class.model_type} checkpoint (no config.json)")
    config = config_class.from_pretrained(folder)
    if config.model_type != config_class.model_type:
        raise ValueError(f"{folder}: config model_type is {config.model_type!r}, expected {config_class.model_type!r}")
    return config


def read_checkpoint_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (safetensors only): its base weights, where written, and its
    trained ones; empty when it holds neither file."""
    state = {}
    for name in (BASE_WEIGHTS, TRAINED_WEIGHTS):
        if (Path(folder) / name).is_file():
            state.update(load_file(Path(folder) / name))
    return state


def build_projector(projector_type: str, vision_dim: int, text_dim: int) -> nn.Module:
    if projector_type == "linear":
        return nn.Linear(vision_dim, text_dim)
    if projector_type == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))
    raise ValueError(f"unknown projector type {projector_type!r}")


class LocLLMPreTrainedModel(PreTrainedModel):
    config_class = LocLLMConfig
    base_model_prefix = "locllm"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and module.weight.device.type != "meta":
            # Only the projector reaches this: the towers come initialized (or pretrained).
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class LocLLMForKeypointLocalization(LocLLMPreTrainedModel, GenerationMixin):
    """Vision tower + projector + causal LM. See the module docstring for the data flow.

    Example:
        >>> model = LocLLMForKeypointLocalization.from_pretrained("checkpoints/locllm-coco")
        >>> out = model(input_ids=ids, pixel_values=crops, attention_mask=mask, labels=labels)
        >>> out.loss.backward()
    """

    def __init__(self, config: LocLLMConfig, vision_tower: nn.Module | None = None,
                 language_model: nn.Module | None = None):
        super().__init__(config)
        self.vision_tower = vision_tower if vision_tower is not None else build_vision_tower(config.vision_config)
        if config.position_interpolation == "reference":
            resample_position_grid(self.vision_tower, config.image_size)
        self.projector = build_projector(
            config.projector_type, config.vision_config.hidden_size, config.text_config.hidden_size
        )
        self.language_model = (
            language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        )
        self.post_init()
        self._add_lora()

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_bases(cls, config: LocLLMConfig, dtype: torch.dtype | None = None) -> LocLLMForKeypointLocalization:
        """A fresh model (projector random, LoRA B = 0) on pretrained bases named in the config."""
        vision = text = None
        if config.vision_model_name_or_path:
            vision = load_vision_tower(config.vision_model_name_or_path, dtype=dtype)
            config.vision_config = vision.config
        if config.text_model_name_or_path:
            text = AutoModelForCausalLM.from_pretrained(config.text_model_name_or_path, dtype=dtype)
            config.text_config = text.config
        return cls(config, vision_tower=vision, language_model=text)

    def _add_lora(self) -> None:
        for part in (self.vision_tower, self.language_model):
            part.requires_grad_(False)
        patterns = []
        if self.config.lora_vision:
            patterns += [rf"vision_tower\..*{re.escape(t)}" for t in self.config.resolved_vision_lora_targets()]
        if self.config.lora_text:
            patterns += [rf"language_model\..*{re.escape(t)}" for t in self.config.resolved_text_lora_targets()]
        if patterns:
            lora = LoraConfig(
                r=self.config.lora_r,
                lora_alpha=self.config.lora_alpha,
                lora_dropout=self.config.lora_dropout,
                target_modules="|".join(f"(?:{p})" for p in patterns),
            )
            inject_adapter_in_model(lora, self)
            # peft's default init makes B zero, so the model starts as its bases.
        trained_prefixes = ["projector."]
        if self.config.train_vision_base:
            trained_prefixes.append("vision_tower.")
        if self.config.train_text_base:
            trained_prefixes.append("language_model.")
        for name, param in self.named_parameters():
            param.requires_grad = name.startswith(tuple(trained_prefixes)) or "lora_" in name
        self._keep_trainable_fp32()

    def _keep_trainable_fp32(self) -> None:
        """Frozen bases may be bf16; what trains stays fp32 so small updates are not rounded away."""
        for param in self.parameters():
            if param.requires_grad and param.dtype != torch.float32 and param.device.type != "meta":
                param.data = param.data.float()

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---------------------------------------------------------------- forward

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, N, D_text) projected patch features."""
        tower_dtype = next(self.vision_tower.parameters()).dtype
        features = patch_features(self.vision_tower, pixel_values.to(tower_dtype))
        projector_dtype = next(self.projector.parameters()).dtype
        return self.projector(features.to(projector_dtype))

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings of ``input_ids`` (B, T) with each row's image tokens replaced by its image's
        features; ``image_features`` (M, N, D) holds one image per row that has image tokens, in order."""
        is_image = input_ids == self.config.image_token_id
        # The image token may lie outside the embedding table (the reference never resizes it), so it
        # is looked up as id 0 and then overwritten.
        embeds = self.get_input_embeddings()(input_ids.masked_fill(is_image, 0))
        rows_with_image = is_image.any(dim=1)
        if image_features is None:
            if rows_with_image.any():
                raise ValueError("input_ids contain image tokens but no pixel_values / image_features were given")
            return embeds
        num_images, num_patches, _ = image_features.shape
        if int(rows_with_image.sum()) != num_images:
            raise ValueError(
                f"{int(rows_with_image.sum())} sequences contain image tokens but {num_images} images were given"
            )
        counts = is_image.sum(dim=1)[rows_with_image]
        if (counts != num_patches).any():
            raise ValueError(f"each image needs exactly {num_patches} image tokens, found {counts.tolist()}")
        first = is_image.float().argmax(dim=1)[rows_with_image]
        positions = first[:, None] + torch.arange(num_patches, device=first.device)
        if not is_image[rows_with_image].gather(1, positions).all():
            raise ValueError("the image tokens of a sequence must be consecutive")
        return embeds.masked_scatter(is_image[..., None], image_features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            input_ids: (B, T) prompt ids with ``config.num_image_tokens`` image tokens in each row that
                carries an image (a continuation step of generation carries none).
            pixel_values: (M, 3, S, S) normalized crops, one per row with image tokens; or give
                ``image_features`` (M, N, D_text) computed once with ``get_image_features``.
            labels: (B, T) with -100 everywhere but the supervised answer tokens.
        """
        if inputs_embeds is None:
            if pixel_values is not None and image_features is None:
                image_features = self.get_image_features(pixel_values)
            if image_features is not None and not (input_ids == self.config.image_token_id).any():
                # Generation steps after the prefill carry no image tokens; the reference still
                # re-encodes the image there, which is what the "reference" decoding mode measures.
                image_features = None
            inputs_embeds = self.embed(input_ids, image_features)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    # ---------------------------------------------------------------- checkpoints

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def save_pretrained(self, save_directory: str | Path, merge: bool = False, **_) -> None:
        """Write ``config.json`` and the trained weights (LoRA + projector) as safetensors.

        Base weights are written too where the config names no path to load them from. With
        ``merge=True`` LoRA is folded into the bases and the whole model is written standalone.
        """
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        if merge:
            return self._save_merged(out)
        self.config.save_pretrained(out)
        trained = {k: v.contiguous() for k, v in self.trained_state_dict().items()}
        save_file(trained, out / TRAINED_WEIGHTS)
        base = {}
        for prefix, path in (("vision_tower.", self.config.vision_model_name_or_path),
                             ("language_model.", self.config.text_model_name_or_path)):
            if path is None:
                base.update({k: v.contiguous() for k, v in self.state_dict().items()
                             if k.startswith(prefix) and k not in trained and "lora_" not in k})
        if base:
            save_file(_untie(base), out / BASE_WEIGHTS)

    def _save_merged(self, out: Path) -> None:
        from peft.tuners.lora import LoraLayer

        merged = self.__class__(self.config.__class__.from_dict(self.config.to_dict()))
        merged.load_state_dict(self.state_dict())
        for module in merged.modules():
            if isinstance(module, LoraLayer):
                module.merge()
        state = {}
        for key, value in merged.state_dict().items():
            if "lora_" in key:
                continue
            state[key.replace(".base_layer.", ".")] = value.contiguous()
        config = merged.config
        config.vision_model_name_or_path = config.text_model_name_or_path = None
        config.lora_vision = config.lora_text = False
        config.save_pretrained(out)
        save_file(_untie(state), out / BASE_WEIGHTS)

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, **_) -> LocLLMForKeypointLocalization:
        """Rebuild the model from its bases and load the checkpoint's weights (safetensors only)."""
        folder = Path(checkpoint)
        config = read_checkpoint_config(folder, LocLLMConfig)
        model = cls.from_bases(config, dtype=dtype)
        state = read_checkpoint_tensors(folder)
        missing, unexpected = model.load_state_dict(_retie(state, model), strict=False)
        trained_missing = [k for k in missing if k in model.trained_state_dict()]
        base_missing = [k for k in missing if k not in model.trained_state_dict() and _needs_file(k, config)]
        if unexpected or trained_missing or base_missing:
            raise KeyError(
                f"{folder}: checkpoint does not match the model: unexpected {unexpected[:5]}, "
                f"missing trained {trained_missing[:5]}, missing base {base_missing[:5]}"
            )
        model._keep_trainable_fp32()
        if dtype is not None:
            model.to_base_dtype(dtype)
        return model.to(device) if device is not None else model

    def to_base_dtype(self, dtype: torch.dtype) -> LocLLMForKeypointLocalization:
        """Cast the frozen bases to ``dtype`` (e.g. bf16 on a GPU); trained weights stay fp32."""
        for param in self.parameters():
            if not param.requires_grad:
                param.data = param.data.to(dtype)
        return self


def _needs_file(key: str, config: LocLLMConfig) -> bool:
    if "lora_" in key or key.endswith("mask_token"):
        return False
    if key.startswith("vision_tower."):
        return config.vision_model_name_or_path is None
    if key.startswith("language_model."):
        return config.text_model_name_or_path is None
    return True


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): keep one copy of each."""
    seen: dict[int, str] = {}
    out = {}
    for key, value in state.items():
        ptr = value.data_ptr()
        if ptr in seen:
            continue
        seen[ptr] = key
        out[key] = value
    return out


def _retie(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fill the keys ``_untie`` dropped from the tensor they shared in the model."""
    params = dict(model.state_dict())
    by_ptr: dict[int, list[str]] = {}
    for key, value in params.items():
        by_ptr.setdefault(value.data_ptr(), []).append(key)
    for keys in by_ptr.values():
        present = [k for k in keys if k in state]
        if present:
            for k in keys:
                state.setdefault(k, state[present[0]])
    return state


__all__ = ["LocLLMForKeypointLocalization", "LocLLMPreTrainedModel", "build_projector"]
