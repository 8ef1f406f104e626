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

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import logging as hf_logging

from ..prompts import IGNORE_INDEX
from .configuration_locllm import LocLLMConfig
from .gguf import resolve_base_path
from .modeling_base import BaseSpec, PreTrainedModelOnBases
from .vision import build_vision_tower, load_vision_tower, patch_features, resample_position_grid


def build_projector(projector_type: str, vision_dim: int, text_dim: int) -> nn.Module:
    if projector_type == "linear":
        return nn.Linear(vision_dim, text_dim)
    if projector_type == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))
    raise ValueError(f"unknown projector type {projector_type!r}")


def loss_targets(targets: torch.Tensor, answer_choice_ids: torch.Tensor | None = None,
                 answer_choice_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the training loss is taken and what it is taken against, the one rule for the model's
    :meth:`~LocLLMForKeypointLocalization.supervised_loss` and whoever reads its logits again.

    Args:
        targets: (B, T - 1) the labels each position predicts (labels shifted by one).
        answer_choice_ids, answer_choice_mask: the answer-vocabulary loss's (C,) choice tokens and (B, T - 1)
            positions; ``None``: the paper's loss over the whole vocabulary at every supervised label.

    Returns:
        The (B, T - 1) mask of the S positions the loss takes, in row-major order one row of its logits each,
        and (S,) the logit column of each one's label: its token id, or its index among the choices.
    """
    if answer_choice_mask is None:
        supervised = targets != IGNORE_INDEX
        return supervised, targets[supervised]
    return answer_choice_mask, (targets[answer_choice_mask][:, None] == answer_choice_ids).int().argmax(dim=1)


def load_language_model(name_or_path: str, **kwargs) -> nn.Module:
    """A causal LM from a folder, or from ``smollm2`` (the installed package's, see locllm.models.gguf)."""
    # Keeping the first N layers leaves the others' tensors in the file, and transformers warns of each
    # one as unexpected: expected then, so only errors are let through while it loads.
    verbosity = hf_logging.get_verbosity()
    if "num_hidden_layers" in kwargs:
        hf_logging.set_verbosity_error()
    try:
        return AutoModelForCausalLM.from_pretrained(resolve_base_path(name_or_path), **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def kept_text_layers(config: LocLLMConfig) -> dict:
    """``text_num_layers`` as the LM loader's keyword: transformers then builds and loads only the first N."""
    return {} if config.text_num_layers is None else {"num_hidden_layers": config.text_num_layers}


class LocLLMPreTrainedModel(PreTrainedModelOnBases):
    config_class = LocLLMConfig
    base_model_prefix = "locllm"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    # Hugging Face's Dinov2 has a mask token (for masked pre-training) that reference towers lack.
    _keys_to_ignore_on_load_missing = [r"mask_token$"]
    bases = (
        BaseSpec("vision_tower", "vision_model_name_or_path", "vision_config", load_vision_tower),
        BaseSpec("language_model", "text_model_name_or_path", "text_config", load_language_model, kept_text_layers),
    )
    own_modules = ("projector",)
    trained_whole_when = {"train_vision_base": ("vision_tower.",), "train_text_base": ("language_model.",)}

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
        self.freeze_bases_and_add_lora()

    # ---------------------------------------------------------------- what trains

    def lora_targets(self) -> dict[str, tuple[str, ...]]:
        targets = {}
        if self.config.lora_vision:
            targets["vision_tower"] = self.config.resolved_vision_lora_targets()
        if self.config.lora_text:
            targets["language_model"] = self.config.resolved_text_lora_targets()
        return targets

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
        supervised_logits_only: bool = False,
        answer_choice_ids: torch.LongTensor | None = None,
        answer_choice_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            input_ids: (B, T) prompt ids with ``config.num_image_tokens`` image tokens in each row that
                carries an image (a continuation step of generation carries none).
            pixel_values: (M, 3, S, S) normalized crops, one per row with image tokens; or give
                ``image_features`` (M, N, D_text) computed once with ``get_image_features``.
            labels: (B, T) with -100 everywhere but the supervised answer tokens.
            supervised_logits_only: with ``labels``, apply the LM head only where a label is predicted
                (training: most positions are image and prompt tokens, and a 49k-word head on each of them
                is most of a small LM's work); the loss is the same, ``logits`` is then (S, V) for the S
                supervised positions in row-major order.
            answer_choice_ids, answer_choice_mask: with ``supervised_logits_only``, the answer-vocabulary loss
                (``locllm.training.collator``): cross-entropy over the (C,) choice ids at the (B, T - 1) positions
                that predict a chosen token only; ``logits`` is then (S, C).
        """
        if inputs_embeds is None:
            if pixel_values is not None and image_features is None:
                image_features = self.get_image_features(pixel_values)
            if image_features is not None and not (input_ids == self.config.image_token_id).any():
                # Generation steps after the prefill carry no image tokens; the reference still
                # re-encodes the image there, which is what the "reference" decoding mode measures.
                image_features = None
            inputs_embeds = self.embed(input_ids, image_features)
        if labels is not None and supervised_logits_only:
            return self.supervised_loss(inputs_embeds, labels, attention_mask, position_ids,
                                        answer_choice_ids=answer_choice_ids, answer_choice_mask=answer_choice_mask,
                                        **kwargs)
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

    def supervised_loss(self, inputs_embeds: torch.Tensor, labels: torch.Tensor, attention_mask=None,
                        position_ids=None, num_items_in_batch: torch.Tensor | int | None = None,
                        answer_choice_ids: torch.LongTensor | None = None,
                        answer_choice_mask: torch.Tensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """The causal LM's loss (as transformers computes it: token t predicts label t + 1, summed over
        the supervised tokens and divided by ``num_items_in_batch``, else their mean) from the decoder's
        hidden states (B, T, D) with the LM head applied only at the S supervised positions."""
        hidden = self.language_model.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                                   position_ids=position_ids, use_cache=False,
                                                   **kwargs).last_hidden_state
        targets = labels[:, 1:].to(hidden.device)  # (B, T - 1): what each position but the last predicts
        head = self.language_model.get_output_embeddings()
        if answer_choice_mask is None:
            supervised, chosen = loss_targets(targets)
            logits = head(hidden[:, :-1][supervised])  # (S, V)
        else:  # the head's rows of the choice tokens only: a softmax over what the constrained decoder may pick
            choice_ids = answer_choice_ids.to(hidden.device)
            supervised, chosen = loss_targets(targets, choice_ids, answer_choice_mask.to(hidden.device))
            bias = head.bias[choice_ids] if head.bias is not None else None
            logits = F.linear(hidden[:, :-1][supervised], head.weight[choice_ids], bias)  # (S, C)
        loss = F.cross_entropy(logits.float(), chosen, reduction="sum")
        loss = loss / (num_items_in_batch if num_items_in_batch is not None else supervised.sum())
        return CausalLMOutputWithPast(loss=loss, logits=logits)


__all__ = ["LocLLMForKeypointLocalization", "LocLLMPreTrainedModel", "build_projector", "loss_targets"]
