"""Train LocLLM. One process on a CPU or a GPU; several processes (DDP) with ``accelerate launch`` or ``torchrun``.

    locllm train configs/synthpose/tiny_cpu.yaml                                  # one process
    locllm train configs/paper/stage2_coco_12e.yaml --set optim.micro_batch_size=2
    accelerate launch --config_file configs/accelerate/ddp_4gpu.yaml -m locllm train configs/paper/stage2_coco_12e.yaml
    torchrun --nproc_per_node 4 -m locllm train configs/paper/stage2_coco_12e.yaml
    locllm train configs/paper/stage2_coco_12e.yaml --resume                      # continue the latest checkpoint

Stage 1 trains the projector alone on image-caption pairs; stage 2 trains LoRA (tower and LM) and the
projector on keypoint conversations (paper 4.2). The bases stay frozen (bf16 on a GPU).

One optimizer step sees ``optim.batch_size`` samples, split over the processes and, within each, into
micro-batches of ``micro_batch_size`` (gradient accumulation). Its loss is the mean cross-entropy over
every supervised answer token of the whole batch, whatever the split, so one process with accumulation
and several without take the same steps. The data order is a permutation seeded by (seed, epoch); with
the datasets' and the collator's per-sample seeds and the saved RNG states this makes ``--resume``
continue exactly where the checkpoint was written.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from ..codecs import DecimalCodec, LocationTokenCodec, build_codec
from ..data.datasets import (
    CaptionDataset,
    CocoKeypointDataset,
    Human36MDataset,
    MixtureDataset,
    MpiiDataset,
    PoseDataset,
)
from ..keypoints import load_keypoint_table
from ..models import LocLLMConfig, LocLLMForKeypointLocalization
from ..models.clip_baseline import CLIPBaselineForKeypointHeatmaps, clip_baseline_config
from ..models.modeling_locllm import TRAINED_WEIGHTS, read_checkpoint_tensors
from ..models.processing_locllm import CLIPBaselineProcessor, LocLLMProcessor
from ..models.tiny import locllm_config
from ..prompts import IGNORE_INDEX, PromptStyle, build_char_tokenizer
from . import checkpoint as ckpt
from .clip_baseline_collator import CLIPBaselineCollator
from .collator import TrainingCollator
from .config import TrainConfig, dump_config

logger = logging.getLogger(__name__)

DATASET_TYPES = {"coco": CocoKeypointDataset, "mpii": MpiiDataset, "h36m": Human36MDataset, "captions": CaptionDataset}
SAMPLER_STREAM = 2  # keeps the data order independent of the other seeded draws
DESCRIPTIONS_FILE = "descriptions.json"  # a checkpoint's keypoint table, as Localizer.from_pretrained reads it


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; the weights were not updated with it."""


@dataclass
class TrainResult:
    global_step: int
    total_steps: int
    loss: float  # mean loss of the last optimizer step
    checkpoint: Path | None  # the last complete checkpoint
    steps_per_second: float  # of this run's steps (excluding start-up and checkpoint writing)
    samples_per_second: float
    trainable_parameters: int


# ---------------------------------------------------------------------------- construction


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
    tokenizer = build_char_tokenizer() if name == "char" else AutoTokenizer.from_pretrained(name)
    tokenizer.add_tokens([style.image_token], special_tokens=True)  # a no-op when the tokenizer has it
    if config.prompt.coordinates == "location_tokens":
        tokenizer.add_tokens(answer_codec(config).new_tokens())
    return tokenizer


def answer_codec(config: TrainConfig) -> DecimalCodec | LocationTokenCodec:
    """The coordinate format of the answers: prompt.coordinates names a codec type."""
    return build_codec({"type": config.prompt.coordinates, "ndim": config.prompt.ndim})


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
                                    image_size=start.image_size, image_mean=start.image_mean, image_std=start.image_std,
                                    image_token_id=image_token_id)
    for sub_config, overrides in ((model_config.vision_config, m.vision), (model_config.text_config, m.text)):
        for key, value in overrides.items():
            if not hasattr(sub_config, key):
                raise ValueError(f"model: {type(sub_config).__name__} has no field {key!r}")
            setattr(sub_config, key, value)
    if m.image_size is not None:
        model_config.image_size = m.image_size
    stage1 = config.optim.stage == 1
    model_config.vision_model_name_or_path = m.vision_model_name_or_path or model_config.vision_model_name_or_path
    model_config.text_model_name_or_path = m.text_model_name_or_path or model_config.text_model_name_or_path
    model_config.image_token = style.image_token
    model_config.projector_type = m.projector_type
    model_config.lora_vision = m.lora_vision and not stage1
    model_config.lora_text = m.lora_text and not stage1
    model_config.train_vision_base = m.train_vision_base and not stage1
    model_config.train_text_base = m.train_text_base and not stage1
    model_config.lora_r, model_config.lora_alpha, model_config.lora_dropout = m.lora_r, m.lora_alpha, m.lora_dropout
    model_config.vision_lora_targets, model_config.text_lora_targets = m.vision_lora_targets, m.text_lora_targets
    model_config.prompt_style = style.to_dict()
    model_config.coordinate_ndim = config.prompt.ndim
    model_config.coordinate_codec = answer_codec(config).to_dict()  # inference reads answers the same way
    return model_config


def build_model(config: TrainConfig, model_config: LocLLMConfig, base_dtype: torch.dtype | None):
    """A fresh model: bases from their paths (or random for a ``size``), projector random, LoRA B zero;
    then ``model.init_from``'s weights (a stage-1 checkpoint) where it has them."""
    if config.prompt.coordinates == "location_tokens" and config.model.text_model_name_or_path:
        raise ValueError(
            "prompt.coordinates=location_tokens adds vocabulary, but a checkpoint whose LM is loaded from "
            "text_model_name_or_path cannot restore resized embeddings yet; use a model without a text base path"
        )
    torch.manual_seed(config.seed)  # random bases and projector are the same in every process
    model = LocLLMForKeypointLocalization.from_bases(model_config, dtype=base_dtype)
    if config.model.init_from:
        load_initial_weights(model, starting_checkpoint(config.model.init_from))
    return model


def starting_checkpoint(init_from: str | Path | None) -> Path | None:
    """``model.init_from`` as a checkpoint folder: itself, or a run's output_dir's newest checkpoint."""
    if init_from is None:
        return None
    folder = Path(init_from)
    return folder if (folder / "config.json").is_file() else ckpt.latest_checkpoint(folder)


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


# Set by the model section's own fields; model.clip_baseline holds only what the baseline alone has.
CLIP_BASELINE_SHARED_FIELDS = ("image_size", "lora_vision", "lora_text", "lora_r", "lora_alpha", "lora_dropout",
                               "train_vision_base", "train_text_base")


def build_clip_baseline(config: TrainConfig, resume: str | Path | None,
                        base_dtype: torch.dtype | None) -> tuple[CLIPBaselineForKeypointHeatmaps, object]:
    """``model.type: clip_baseline``: the model and its tokenizer, from ``resume`` or fresh (head random,
    LoRA B zero) on the CLIP weights of ``model.clip_baseline.clip_model_name_or_path`` or of a ``size``."""
    if resume is not None:
        return (CLIPBaselineForKeypointHeatmaps.from_pretrained(resume, dtype=base_dtype),
                AutoTokenizer.from_pretrained(resume))
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
    for sub_config, overrides in ((towers.vision_config, m.vision), (towers.text_config, m.text)):
        for key, value in overrides.items():
            if not hasattr(sub_config, key):
                raise ValueError(f"model: {type(sub_config).__name__} has no field {key!r}")
            setattr(sub_config, key, value)
    for key in CLIP_BASELINE_SHARED_FIELDS:
        if getattr(m, key) is not None:
            setattr(model_config, key, getattr(m, key))
    for key, value in m.clip_baseline.items():
        if not hasattr(model_config, key):
            raise ValueError(f"model.clip_baseline: CLIPBaselineConfig has no field {key!r}")
        setattr(model_config, key, value)
    model_config.check_geometry()
    torch.manual_seed(config.seed)  # random towers and head are the same in every process
    return CLIPBaselineForKeypointHeatmaps.from_bases(model_config, dtype=base_dtype), tokenizer


def build_dataset(config: TrainConfig, crop_size: int) -> MixtureDataset:
    """The mixture of the config's datasets, in training mode. A dataset's ``keypoints``, when given, is the
    path of a keypoint table (:func:`~locllm.keypoints.load_keypoint_table`): its own keypoints, in the order
    of its annotations (with ``keypoint_field`` for a COCO file that keeps them under another key)."""
    parts = []
    for i, spec in enumerate(config.data.datasets):
        if spec.type not in DATASET_TYPES:
            raise ValueError(f"data.datasets.{i}.type {spec.type!r} is unknown; known: {', '.join(DATASET_TYPES)}")
        if spec.type == "captions":
            managed = {"image_size": crop_size}
        else:
            managed = {"train": True, "crop_size": crop_size, "augmentation": config.data.augmentation,
                       "exclude_keypoints": config.data.exclude_keypoints, "seed": config.seed}
        clash = sorted(set(spec.args) & set(managed))
        if clash:
            raise ValueError(f"data.datasets.{i}: {clash} are set by the trainer (data.crop_size, data.augmentation, ...)")
        args = dict(spec.args)
        if "keypoints" in args:
            args["keypoints"] = load_keypoint_table(args["keypoints"])
        try:
            parts.append(DATASET_TYPES[spec.type](**args, **managed))
        except TypeError as error:
            raise ValueError(f"data.datasets.{i} ({spec.type}): {error}") from None
    return MixtureDataset(parts, [spec.repeat for spec in config.data.datasets], seed=config.seed)


def trained_descriptions(dataset: MixtureDataset) -> dict[str, str]:
    """Every keypoint the datasets ask about, with the description its prompts give: the checkpoint's
    ``descriptions.json``, so that inference asks a keypoint by its name alone, in the words it was trained with."""
    descriptions: dict[str, str] = {}
    for part in dataset.datasets:
        if isinstance(part, PoseDataset):
            for keypoint in part.keypoints:
                descriptions.setdefault(keypoint.name, keypoint.description)
    return descriptions


class _EpochItems(Dataset):
    """Keys ``(epoch, index)`` -> ``(epoch, index, sample)``: the collator seeds its choices with them."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        return epoch, index, self.dataset[index]


def epoch_micro_batches(num_samples: int, batch_size: int, micro_batch_size: int, seed: int, epoch: int,
                        rank: int, world_size: int, first_step: int = 0) -> list[list[tuple[int, int]]]:
    """This process's micro-batches of ``(epoch, index)`` keys, from optimizer step ``first_step`` of the epoch.

    The epoch is a permutation seeded by (seed, epoch) cut into global batches (an incomplete last one
    is dropped); each global batch is cut into ``world_size`` contiguous shares, one per process, and a
    share into micro-batches.
    """
    order = np.random.default_rng([seed, SAMPLER_STREAM, epoch]).permutation(num_samples)
    steps = num_samples // batch_size
    share = batch_size // world_size
    batches = []
    for step in range(first_step, steps):
        mine = order[step * batch_size + rank * share: step * batch_size + (rank + 1) * share]
        for start in range(0, share, micro_batch_size):
            batches.append([(epoch, int(i)) for i in mine[start: start + micro_batch_size]])
    return batches


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight matrices decay, biases do not (as Hugging Face's Trainer)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.optim.lr)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    """Linear warm-up, then cosine to 0 at the last step (or constant)."""
    warmup = config.optim.warmup(total_steps)
    if config.optim.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


# ---------------------------------------------------------------------------- the loop


def train(config: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Run (or with ``resume``, a checkpoint folder, continue) the training ``config`` describes."""
    on_gpu = torch.cuda.is_available()
    use_bf16 = config.optim.bf16 if config.optim.bf16 is not None else on_gpu
    # cpu=True is what lets accelerate run several CPU processes (gloo) under torchrun
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision="bf16" if use_bf16 else "no")
    base_dtype = torch.bfloat16 if use_bf16 else None
    world_size, rank = accelerator.num_processes, accelerator.process_index
    accumulation = config.optim.accumulation_steps(world_size)
    output_dir = Path(config.output_dir)
    set_seed(config.seed)

    # -- model, tokenizer and prompts
    if resume is None and ckpt.list_checkpoints(output_dir):
        raise ValueError(f"{output_dir} already holds checkpoints of a run: continue it with --resume, "
                         "or choose another output_dir")
    if config.model.type == "clip_baseline":
        model, tokenizer = build_clip_baseline(config, resume, base_dtype)
    elif resume is not None:
        resume = Path(resume)
        model = LocLLMForKeypointLocalization.from_pretrained(resume, dtype=base_dtype)
        tokenizer = AutoTokenizer.from_pretrained(resume)
        style = PromptStyle.from_dict(model.config.prompt_style)
    else:
        style = build_prompt_style(config)
        tokenizer = build_tokenizer(config, style)
        model = build_model(config, build_model_config(config, tokenizer, style), base_dtype)
    if config.model.type == "locllm":
        # after the model: a base path's tower decides the number of image tokens
        processor = LocLLMProcessor.from_config(model.config, tokenizer)
        if config.prompt.coordinates == "location_tokens":
            train_embeddings_for_new_tokens(model)
        if config.model.gradient_checkpointing:
            model.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable_parameters = model.trainable_parameter_count()

    # -- data
    crop_size = config.data.crop_size or model.config.image_size
    dataset = build_dataset(config, crop_size)
    descriptions = trained_descriptions(dataset)
    if len(dataset) < config.optim.batch_size:
        raise ValueError(f"the data has {len(dataset)} samples, fewer than one batch of {config.optim.batch_size}")
    steps_per_epoch = len(dataset) // config.optim.batch_size
    total_steps = config.optim.max_steps or config.optim.epochs * steps_per_epoch
    if config.model.type == "clip_baseline":
        collator = CLIPBaselineCollator(CLIPBaselineProcessor.from_config(model.config, tokenizer),
                                        keypoints_per_sample=config.prompt.max_rounds, seed=config.seed)
    else:
        collator = TrainingCollator(processor, max_rounds=config.prompt.max_rounds, seed=config.seed,
                                    supervise_unknown_depth=config.prompt.supervise_unknown_depth)

    # -- optimizer, schedule, and where to start
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps)
    global_step, position = 0, ckpt.DataPosition(epoch=0, step_in_epoch=0, sampler_seed=config.seed)
    if resume is not None:
        state = ckpt.load_training_state(resume)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        global_step = state["global_step"]
        position = ckpt.DataPosition(state["epoch"], state["step_in_epoch"], state["sampler_seed"])
        if not ckpt.load_rng_state(resume, rank):
            logger.warning("%s has no RNG state for process %d (saved by %d processes): dropout masks will "
                           "differ from the uninterrupted run", resume, rank, state["world_size"])
    model = accelerator.prepare_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, output_dir / "config.yaml")
        logger.info("training %d parameters on %d samples: %d steps of %d samples (%d processes x %d micro-batches "
                    "of %d), from step %d", trainable_parameters, len(dataset), total_steps, config.optim.batch_size,
                    world_size, accumulation, config.optim.micro_batch_size, global_step)
    writer = _summary_writer(config, output_dir) if accelerator.is_main_process else None
    progress = tqdm(total=total_steps, initial=global_step, desc="train", dynamic_ncols=True,
                    disable=not (accelerator.is_main_process and config.logging.progress_bar))

    last_checkpoint = ckpt.latest_checkpoint(output_dir) if ckpt.list_checkpoints(output_dir) else None
    loss_value, run_steps, run_seconds = math.nan, 0, 0.0
    epoch, first_step = position.epoch, position.step_in_epoch
    while global_step < total_steps:
        dataset.set_epoch(epoch)  # before the loader copies the dataset into its workers
        loader = DataLoader(
            _EpochItems(dataset),
            batch_sampler=epoch_micro_batches(len(dataset), config.optim.batch_size, config.optim.micro_batch_size,
                                              position.sampler_seed, epoch, rank, world_size, first_step),
            collate_fn=collator,
            num_workers=config.data.num_workers,
            # the loader's own generator, so creating it does not advance torch's global RNG
            generator=torch.Generator().manual_seed(config.seed + epoch),
        )
        micro_batches = iter(loader)
        for step_in_epoch in range(first_step, steps_per_epoch):
            started = time.perf_counter()
            batches = [next(micro_batches) for _ in range(accumulation)]
            loss_value, grad_norm = _optimizer_step(model, batches, optimizer, scheduler, trainable, accelerator,
                                                    config, global_step)
            global_step += 1
            run_steps += 1
            run_seconds += time.perf_counter() - started
            lr = scheduler.get_last_lr()[0]
            samples_per_second = run_steps * config.optim.batch_size / run_seconds
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", samples_s=f"{samples_per_second:.1f}")
            if writer is not None and global_step % config.logging.every_steps == 0:
                writer.add_scalar("train/loss", loss_value, global_step)
                writer.add_scalar("train/lr", lr, global_step)
                writer.add_scalar("train/grad_norm", grad_norm, global_step)
                writer.add_scalar("train/samples_per_second", samples_per_second, global_step)
            next_position = ckpt.DataPosition(epoch, step_in_epoch + 1, position.sampler_seed)
            if step_in_epoch + 1 == steps_per_epoch:
                next_position = ckpt.DataPosition(epoch + 1, 0, position.sampler_seed)
            if global_step % config.checkpoint.every_steps == 0 or global_step == total_steps:
                last_checkpoint = _save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, config,
                                                   global_step, next_position, descriptions)
            if global_step == total_steps:
                break
        epoch, first_step = epoch + 1, 0
    progress.close()
    if writer is not None:
        writer.close()
    accelerator.end_training()
    return TrainResult(
        global_step=global_step, total_steps=total_steps, loss=loss_value, checkpoint=last_checkpoint,
        steps_per_second=run_steps / run_seconds if run_seconds else 0.0,
        samples_per_second=run_steps * config.optim.batch_size / run_seconds if run_seconds else 0.0,
        trainable_parameters=trainable_parameters,
    )


def _optimizer_step(model, batches, optimizer, scheduler, trainable, accelerator, config, global_step):
    """Forward and backward every micro-batch, then one update; returns (mean loss, gradient norm).

    Each micro-batch's loss is its summed token loss divided by the supervised tokens of the whole global
    batch (the CLIP baseline: summed heatmap losses by supervised queries); DDP averages gradients over
    processes, so the loss is multiplied by their number.
    """
    device = accelerator.device
    local_tokens = sum(int(b["target_weights"].sum()) if "target_weights" in b
                       else int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)  # labels shift by one
    global_tokens = accelerator.reduce(torch.tensor(local_tokens, device=device), reduction="sum")
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        last = i == len(batches) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            output = model(**batch, num_items_in_batch=global_tokens)
            accelerator.backward(output.loss * accelerator.num_processes)
        loss_sum += output.loss.detach().float()
    loss = accelerator.reduce(loss_sum, reduction="sum").item()
    max_norm = config.optim.max_grad_norm if config.optim.max_grad_norm is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, max_norm).item()
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        last = ckpt.list_checkpoints(config.output_dir)
        raise TrainingDiverged(
            f"training diverged at step {global_step + 1}: loss {loss}, gradient norm {grad_norm}; the weights were "
            f"not updated. Last good checkpoint: {last[-1] if last else 'none written yet'}. --resume restores its "
            "optimizer and schedule as they were; to change them, train again with a lower optim.lr or a longer warm-up"
        )
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm


def _save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, config, global_step, position,
                     descriptions: dict[str, str]) -> Path:
    temporary = ckpt.temporary_checkpoint_dir(config.output_dir, global_step)
    if accelerator.is_main_process:
        ckpt.begin_checkpoint(config.output_dir, global_step)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / DESCRIPTIONS_FILE).write_text(json.dumps(descriptions, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
        dump_config(config, temporary / "train_config.yaml")
        ckpt.save_training_state(temporary, optimizer, scheduler, global_step, position, accelerator.num_processes)
    ckpt.save_rng_state(temporary, accelerator.process_index)
    accelerator.wait_for_everyone()
    final = temporary.with_name(ckpt.checkpoint_name(global_step))
    if accelerator.is_main_process:
        ckpt.finish_checkpoint(temporary, config.checkpoint.keep_last)
    accelerator.wait_for_everyone()
    return final


def _summary_writer(config: TrainConfig, output_dir: Path):
    if not config.logging.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(output_dir / "tensorboard"))
