"""What each ``model.type`` brings to the one training loop: its config checks, a builder, a collator and a loss.

    MODEL_TYPES = {"locllm": ModelType(...), "clip_baseline": ModelType(...), ...}

A row's checks say which configs the type accepts: ``check_model`` runs on the model section as it
is read, ``check_config`` on the whole config (both raise ValueError). A builder returns
``(model, processor)``: fresh from the config, or the checkpoint ``resume`` being continued; the
processor (tokenizer, prompts, codec, crop geometry) is saved with every checkpoint, and None for a
model that needs none beyond its config. A collator turns the loader's ``(epoch, index, sample)`` items into the model's keyword
arguments. ``supervised(batch)`` counts what one micro-batch supervises (answer tokens, heatmap
queries, keypoints): the loop divides every micro-batch's summed loss by the count of the whole global
batch, so the step is the same however the batch is split over processes and micro-batches. A new
model type is one more entry in ``MODEL_TYPES`` (and its files under ``models/`` and its Localizer strategy:
the README's "Layout").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPVisionConfig, Dinov2Config

from ..codecs import DecimalCodec, LocationTokenCodec, build_codec
from ..models import LocLLMConfig, LocLLMForKeypointLocalization
from ..models.configuration_clip_baseline import clip_baseline_config
from ..models.gguf import resolve_base_path
from ..models.modeling_base import TRAINED_WEIGHTS, read_checkpoint_tensors
from ..models.modeling_clip_baseline import CLIPBaselineForKeypointHeatmaps
from ..models.processing_clip_baseline import CLIPBaselineProcessor
from ..models.processing_locllm import LocLLMImageProcessor, LocLLMProcessor
from ..models.tiny import locllm_config
from ..models.vision import build_vision_tower
from ..prompts import IGNORE_INDEX, PromptStyle, build_char_tokenizer
from ..prompts.demo_tokenizer import build_demo_tokenizer
from ..prompts.grammar import answer_choices
from .checkpoint import latest_checkpoint
from .clip_baseline_collator import CLIPBaselineCollator
from .collator import TrainingCollator
from .config import ModelConfig, TrainConfig, register_model_types
from .first_decimal import FirstDecimalMonitor
from .vision_pretrain import PatchClassifier, PatchCollator, build_demo_tower, patch_loss, tower_weights


@dataclass(frozen=True)
class ModelType:
    """One row of ``MODEL_TYPES``: how the loop builds, feeds and scores a model type."""

    build: Callable[[TrainConfig, Path | None, torch.dtype | None], tuple[torch.nn.Module, object | None]]
    # (config, model, processor, the keypoints the data asks) -> the collator
    collator: Callable[[TrainConfig, torch.nn.Module, object | None, list[str]], Callable]
    supervised: Callable[[dict], int]  # the loss's denominator contribution of one micro-batch
    # (model, batch, global count) -> the model's output: .loss this micro-batch's summed loss / global count
    # (and, for logging.first_decimal, .logits those of the positions the loss supervised)
    forward: Callable[[torch.nn.Module, dict, torch.Tensor], object] = (
        lambda model, batch, num_items: model(**batch, num_items_in_batch=num_items))
    check_model: Callable[[ModelConfig], None] = lambda model: None  # the model section, when it is read
    check_config: Callable[[TrainConfig], None] = lambda config: None  # the whole config, once it is read


FIRST_DECIMAL_NEEDS = ("logging.first_decimal reads decimal answers: it needs model.type locllm and "
                       "prompt.coordinates decimal")


def no_first_decimal(config: TrainConfig) -> None:
    """``check_config`` of a type whose answers are not text: logging.first_decimal is LocLLM's."""
    if config.logging.first_decimal:
        raise ValueError(FIRST_DECIMAL_NEEDS)


# ---------------------------------------------------------------------------- locllm


def check_locllm_model(m: ModelConfig) -> None:
    """``model.type: locllm``: bases either random-initialized from a named ``size`` of :mod:`locllm.models.tiny`
    (``vision`` / ``text`` override fields of its Dinov2 / Llama configs) or loaded from ``*_name_or_path``;
    a path replaces the ``size``'s config of that part."""
    bases_named = bool(m.vision_model_name_or_path and m.text_model_name_or_path)
    if m.size is None and not (bases_named or m.init_from):
        raise ValueError("model.size may only be null when both base paths are given, or with model.init_from "
                         "(whose architecture is then used)")
    if m.tokenizer is None and not (m.text_model_name_or_path or (m.size is None and m.init_from)):
        raise ValueError("model.tokenizer is needed without a text_model_name_or_path (use 'char' for tiny models)")
    if m.text_num_layers is not None and (not m.text_model_name_or_path or m.text_num_layers < 1):
        raise ValueError("model.text_num_layers keeps the first N >= 1 layers of a text_model_name_or_path; "
                         "a random LM's depth is model.text.num_hidden_layers")


def check_locllm_config(config: TrainConfig) -> None:
    if config.logging.first_decimal and config.prompt.coordinates != "decimal":
        raise ValueError(FIRST_DECIMAL_NEEDS)


def build_prompt_style(config: TrainConfig) -> PromptStyle:
    style = PromptStyle.reference() if config.prompt.style == "reference" else PromptStyle.default()
    changes = {"with_description": config.prompt.with_description}
    if config.prompt.question_template is not None:
        changes["question_template"] = config.prompt.question_template
    return PromptStyle.from_dict({**style.to_dict(), **changes})


def build_tokenizer(config: TrainConfig, style: PromptStyle):
    """The model's tokenizer with every token the prompts need: the image token (Llama: a new id 32000, as
    in the reference) and, for that coordinate format, the location tokens. Its length is final here."""
    m = config.model
    name = m.tokenizer or m.text_model_name_or_path or starting_checkpoint(m.init_from)
    builders = {"char": build_char_tokenizer, "demo": build_demo_tokenizer}
    tokenizer = builders[name]() if name in builders else AutoTokenizer.from_pretrained(resolve_base_path(name))
    tokenizer.add_tokens([style.image_token], special_tokens=True)  # a no-op when the tokenizer has it
    if config.prompt.coordinates == "location_tokens":
        tokenizer.add_tokens(answer_codec(config).new_tokens())
    return tokenizer


def answer_codec(config: TrainConfig) -> DecimalCodec | LocationTokenCodec:
    """The coordinate format of the answers: prompt.coordinates names a codec type."""
    spec = {"type": config.prompt.coordinates, "ndim": config.prompt.ndim}
    if config.prompt.coordinates == "decimal":
        spec["decimals"] = config.prompt.decimals
    return build_codec(spec)


# The model section's fields LocLLMConfig has under the same names. They are set on the config its size, base
# paths or starting checkpoint describe (not passed to LocLLMConfig(...), so the section's null keeps that
# config's value); the base paths are read with ``or`` (an empty one keeps it too), and stage 1 turns the
# training switches off.
TRAINING_SWITCHES = ("lora_vision", "lora_text", "train_vision_base", "train_text_base")
LOCLLM_SHARED_FIELDS = ("image_size", "text_num_layers", "projector_type", "lora_r", "lora_alpha", "lora_dropout",
                        "vision_lora_targets", "text_lora_targets", *TRAINING_SWITCHES)


def build_model_config(config: TrainConfig, tokenizer, style: PromptStyle) -> LocLLMConfig:
    """The LocLLMConfig the config's model section describes (bases not loaded yet)."""
    m = config.model
    image_token_id = tokenizer.convert_tokens_to_ids(style.image_token)
    if m.size is not None:
        model_config = locllm_config(m.size, vocab_size=len(tokenizer), image_token_id=image_token_id)
    elif m.vision_model_name_or_path and m.text_model_name_or_path:
        model_config = LocLLMConfig(image_token_id=image_token_id)
    else:  # the architecture of the checkpoint training starts from: its towers, crop size and normalization
        start = LocLLMConfig.from_pretrained(starting_checkpoint(m.init_from))
        model_config = LocLLMConfig(vision_config=start.vision_config, text_config=start.text_config,
                                    vision_model_name_or_path=start.vision_model_name_or_path,
                                    text_model_name_or_path=start.text_model_name_or_path,
                                    text_num_layers=start.text_num_layers,
                                    image_size=start.image_size, image_mean=start.image_mean, image_std=start.image_std,
                                    image_token_id=image_token_id)
    override_towers(model_config.vision_config, model_config.text_config, config)
    set_shared_fields(model_config, m, LOCLLM_SHARED_FIELDS)
    model_config.vision_model_name_or_path = m.vision_model_name_or_path or model_config.vision_model_name_or_path
    model_config.text_model_name_or_path = m.text_model_name_or_path or model_config.text_model_name_or_path
    if config.optim.stage == 1:  # the projector alone trains
        for key in TRAINING_SWITCHES:
            setattr(model_config, key, False)
    model_config.image_token = style.image_token
    model_config.prompt_style = style.to_dict()
    model_config.coordinate_ndim = config.prompt.ndim
    model_config.coordinate_codec = answer_codec(config).to_dict()  # inference reads answers the same way
    return model_config


def override_towers(vision_config, text_config, config: TrainConfig) -> None:
    """Set the model section's ``vision`` / ``text`` fields on the two towers' configs (unknown ones are errors)."""
    set_known_fields(vision_config, config.model.vision, "model")
    set_known_fields(text_config, config.model.text, "model")


def set_known_fields(target, values: dict, where: str) -> None:
    """Set ``values`` on the config ``target``; a key it has no field for is an error naming ``where``."""
    for key, value in values.items():
        if not hasattr(target, key):
            raise ValueError(f"{where}: {type(target).__name__} has no field {key!r}")
        setattr(target, key, value)


def set_shared_fields(model_config, m: ModelConfig, names: tuple[str, ...]) -> None:
    """Set the model section's fields ``names`` on the model config, which has them under the same names;
    one the section leaves null keeps the model config's value."""
    for key in names:
        if getattr(m, key) is not None:
            setattr(model_config, key, getattr(m, key))


def build_model(config: TrainConfig, model_config: LocLLMConfig, base_dtype: torch.dtype | None):
    """A fresh model: bases from their paths (or random for a ``size``), projector random, LoRA B zero;
    then ``model.init_from``'s weights (a stage-1 checkpoint) where it has them, and ``model.vision_tower_from``'s
    tower (a pre-trained patch classifier)."""
    if config.prompt.coordinates == "location_tokens" and config.model.text_model_name_or_path:
        raise ValueError(
            "prompt.coordinates=location_tokens adds vocabulary, but a checkpoint whose LM is loaded from "
            "text_model_name_or_path cannot restore resized embeddings yet; use a model without a text base path"
        )
    torch.manual_seed(config.seed)  # random bases and projector are the same in every process
    model = LocLLMForKeypointLocalization.from_bases(model_config, dtype=base_dtype)
    if config.model.init_from:
        load_initial_weights(model, starting_checkpoint(config.model.init_from))
    if config.model.vision_tower_from:
        model.vision_tower.load_state_dict(tower_weights(starting_checkpoint(config.model.vision_tower_from)))
    return model


def starting_checkpoint(init_from: str | Path | None) -> Path | None:
    """``model.init_from`` as a checkpoint folder: itself, or a run's output_dir's newest checkpoint."""
    if init_from is None:
        return None
    folder = Path(init_from)
    return folder if (folder / "config.json").is_file() else latest_checkpoint(folder)


def load_initial_weights(model: LocLLMForKeypointLocalization, folder: Path) -> None:
    """Copy every tensor of checkpoint ``folder`` into ``model``: the projector (and a stage-1 LoRA-free
    checkpoint's own bases, for models without base paths); new LoRA weights keep their initialization."""
    state = read_checkpoint_tensors(folder)
    if not state:
        raise FileNotFoundError(f"model.init_from: {folder} holds no {TRAINED_WEIGHTS}")
    own = model.state_dict()
    # a layer that gained LoRA keeps its weight under .base_layer (stage 1 has none)
    state = {_base_layer_name(key, own): value for key, value in state.items()}
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    if unexpected or mismatched or not any(k.startswith("projector.") for k in state):
        raise ValueError(
            f"model.init_from: {folder} does not fit this model: unknown tensors {unexpected[:5]}, "
            f"other shapes {mismatched[:5]}; it must hold the projector"
        )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)


def _base_layer_name(key: str, own: dict) -> str:
    module, _, leaf = key.rpartition(".")
    wrapped = f"{module}.base_layer.{leaf}"
    return wrapped if key not in own and wrapped in own else key


def train_embeddings_for_new_tokens(model: LocLLMForKeypointLocalization) -> None:
    """Location tokens are new vocabulary: their input and output embeddings must learn (the paper's ablation)."""
    for embedding in (model.language_model.get_input_embeddings(), model.language_model.get_output_embeddings()):
        embedding.weight.data = embedding.weight.data.float()
        embedding.weight.requires_grad_(True)


def build_locllm(config: TrainConfig, resume: Path | None,
                 base_dtype: torch.dtype | None) -> tuple[LocLLMForKeypointLocalization, LocLLMProcessor]:
    """``model.type: locllm``: the model and its processor, from ``resume`` or fresh (the processor from the
    model config: a base path's tower decides the number of image tokens)."""
    if resume is not None:
        model = LocLLMForKeypointLocalization.from_pretrained(resume, dtype=base_dtype)
        processor = LocLLMProcessor.from_pretrained(resume)
    else:
        style = build_prompt_style(config)
        tokenizer = build_tokenizer(config, style)
        model = build_model(config, build_model_config(config, tokenizer, style), base_dtype)
        processor = LocLLMProcessor.from_config(model.config, tokenizer)
    if config.prompt.coordinates == "location_tokens":
        train_embeddings_for_new_tokens(model)
    if config.model.gradient_checkpointing:
        model.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model, processor


def locllm_collator(config: TrainConfig, model: LocLLMForKeypointLocalization, processor: LocLLMProcessor,
                    keypoint_names: list[str]) -> TrainingCollator:
    choices = None
    if config.optim.loss == "answer_vocab":
        choices = answer_choices(processor.grammar)
    first_decimal = None
    if config.logging.first_decimal:
        first_decimal = FirstDecimalMonitor(processor.unit_token_ids(), processor.eos_token_id, keypoint_names,
                                            processor.ndim)
    return TrainingCollator(processor, max_rounds=config.prompt.max_rounds, seed=config.seed,
                            supervise_unknown_depth=config.prompt.supervise_unknown_depth, answer_choices=choices,
                            first_decimal=first_decimal)


def answer_tokens_supervised(batch: dict) -> int:
    """Supervised answer tokens of a micro-batch: the chosen ones under the answer-vocabulary loss (forced
    tokens cost nothing there), else all of them (labels shifted by one)."""
    if "answer_choice_mask" in batch:
        return int(batch["answer_choice_mask"].sum())
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


# ---------------------------------------------------------------------------- clip_baseline


def check_clip_baseline_model(m: ModelConfig) -> None:
    """``model.type: clip_baseline``: the paper's CLIP baseline (:mod:`locllm.models.modeling_clip_baseline`).
    ``size`` (tiny | paper), ``tokenizer``, ``vision`` / ``text`` (fields of its two CLIP towers),
    ``image_size``, the LoRA fields and ``train_*_base`` (the image / text tower) mean what they mean for
    LocLLM; ``clip_baseline`` holds its own fields (``clip_model_name_or_path``, the head, the text
    template), and each sample is asked about ``prompt.max_rounds`` of its visible keypoints."""
    clip_path = m.clip_baseline.get("clip_model_name_or_path")
    if m.size is None and not clip_path:
        raise ValueError("model.size may only be null with model.clip_baseline.clip_model_name_or_path")
    if m.tokenizer is None and not clip_path:
        raise ValueError("model.tokenizer is needed without a clip_model_name_or_path (use 'char' for tiny models)")


# The model section's fields CLIPBaselineConfig has under the same names; model.clip_baseline holds only what
# the baseline alone has (its other CLIPBaselineConfig fields).
CLIP_BASELINE_SHARED_FIELDS = ("image_size", "lora_vision", "lora_text", "lora_r", "lora_alpha", "lora_dropout",
                               "train_vision_base", "train_text_base")


def build_clip_baseline(config: TrainConfig, resume: str | Path | None,
                        base_dtype: torch.dtype | None) -> tuple[CLIPBaselineForKeypointHeatmaps, CLIPBaselineProcessor]:
    """``model.type: clip_baseline``: the model and its processor, from ``resume`` or fresh (head random,
    LoRA B zero) on the CLIP weights of ``model.clip_baseline.clip_model_name_or_path`` or of a ``size``."""
    if resume is not None:
        return (CLIPBaselineForKeypointHeatmaps.from_pretrained(resume, dtype=base_dtype),
                CLIPBaselineProcessor.from_pretrained(resume))
    m = config.model
    if config.optim.stage != 2 or m.init_from:
        raise ValueError("model.type clip_baseline trains in one stage (optim.stage 2), without model.init_from")
    shared = sorted(set(m.clip_baseline) & set(CLIP_BASELINE_SHARED_FIELDS))
    if shared:
        raise ValueError(f"model.clip_baseline: set {shared} in the model section itself")
    path = m.clip_baseline.get("clip_model_name_or_path")
    tokenizer = build_char_tokenizer() if m.tokenizer == "char" else AutoTokenizer.from_pretrained(m.tokenizer or path)
    model_config = clip_baseline_config(m.size or "paper", tokenizer=tokenizer)  # a path replaces these towers
    towers = model_config.clip_config
    override_towers(towers.vision_config, towers.text_config, config)
    set_shared_fields(model_config, m, CLIP_BASELINE_SHARED_FIELDS)
    set_known_fields(model_config, m.clip_baseline, "model.clip_baseline")
    model_config.check_geometry()
    torch.manual_seed(config.seed)  # random towers and head are the same in every process
    model = CLIPBaselineForKeypointHeatmaps.from_bases(model_config, dtype=base_dtype)
    return model, CLIPBaselineProcessor.from_config(model_config, tokenizer)


def clip_baseline_collator(config: TrainConfig, model: CLIPBaselineForKeypointHeatmaps,
                           processor: CLIPBaselineProcessor, keypoint_names: list[str]) -> CLIPBaselineCollator:
    return CLIPBaselineCollator(processor, keypoints_per_sample=config.prompt.max_rounds, seed=config.seed)


# ---------------------------------------------------------------------------- patch_classifier


PATCH_CLASSIFIER_TOWERS = ("dinov2", "clip_vision_model")


def check_patch_classifier_model(m: ModelConfig) -> None:
    """``model.type: patch_classifier`` pre-trains a vision tower alone (:mod:`locllm.training.vision_pretrain`):
    a random tower of ``vision_model_type`` (Dinov2 by default, its position table started as a sin-cos grid;
    or a CLIP image tower) with the ``vision`` fields (``patch_size``, ``hidden_size``, ...) and a linear
    head scoring each of ``num_keypoints`` keypoints over the patches. A LocLLM run starts its tower
    from such a run with ``vision_tower_from``."""
    if not m.num_keypoints:
        raise ValueError("model.type patch_classifier needs model.num_keypoints")
    if m.vision_model_type not in PATCH_CLASSIFIER_TOWERS:
        raise ValueError(f"model.vision_model_type must be one of {PATCH_CLASSIFIER_TOWERS}, "
                         f"got {m.vision_model_type!r}")


def build_patch_classifier(config: TrainConfig, resume: Path | None, base_dtype: torch.dtype | None):
    """``model.type: patch_classifier``: a random tower of the ``vision`` fields (a Dinov2 started with a
    sin-cos position grid, or a CLIP image tower) and its head."""
    if resume is not None:
        return PatchClassifier.from_pretrained(resume), None
    m = config.model
    if m.vision_model_type == "clip_vision_model":
        torch.manual_seed(config.seed)
        tower = build_vision_tower(CLIPVisionConfig(**{"image_size": m.image_size or 64, **m.vision}))
    else:
        tower_config = Dinov2Config(**{"image_size": m.image_size or 64, "layer_norm_eps": 1e-6,
                                       "drop_path_rate": 0.0, **m.vision})
        tower = build_demo_tower(tower_config, seed=config.seed)
    return PatchClassifier(tower, m.num_keypoints), None


def patch_classifier_collator(config: TrainConfig, model: PatchClassifier, processor: None,
                              keypoint_names: list[str]) -> PatchCollator:
    return PatchCollator(LocLLMImageProcessor(model.config.image_size), model.config.patch_size)


# ---------------------------------------------------------------------------- the table


MODEL_TYPES = {
    "locllm": ModelType(build_locllm, locllm_collator,
                        supervised=answer_tokens_supervised,
                        forward=lambda model, batch, num_items: model(**batch, num_items_in_batch=num_items,
                                                                      supervised_logits_only=True),
                        check_model=check_locllm_model, check_config=check_locllm_config),
    "clip_baseline": ModelType(build_clip_baseline, clip_baseline_collator,
                               supervised=lambda batch: int(batch["target_weights"].sum()),
                               check_model=check_clip_baseline_model, check_config=no_first_decimal),
    "patch_classifier": ModelType(build_patch_classifier, patch_classifier_collator, forward=patch_loss,
                                  supervised=lambda batch: int(batch["mask"].sum()),
                                  check_model=check_patch_classifier_model, check_config=no_first_decimal),
}
register_model_types(MODEL_TYPES)
