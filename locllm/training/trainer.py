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

What depends on ``model.type`` (building the model, its collator, its loss) comes from one row of
:data:`~locllm.training.model_types.MODEL_TYPES`; everything else is this one loop. Checkpoints are
``Accelerator.save_state`` (optimizer, schedule, every process's RNG) plus our export of the trained
weights, written atomically (:mod:`.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from ..models.processing_locllm import write_descriptions
from . import checkpoint as ckpt
from .config import TrainConfig, dump_config
from .data import build_dataset, epoch_loader, trained_descriptions
from .first_decimal import FirstDecimalMonitor
from .model_types import MODEL_TYPES, ModelType
from .resume import check_resume, input_fingerprints, write_input_fingerprints

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class TrainingBudget:
    """How long a run trains: ``steps`` optimizer steps, or ``seconds`` of wall-clock time (``optim.max_minutes``).

    The learning rate warms up linearly over ``warmup_steps`` and then follows a cosine to 0 over the
    budget's progress, counted in steps or in seconds: a timed run anneals fully whatever its speed (and
    so takes another number of steps on another machine, or after a ``--resume``).
    """

    steps: int | None = None
    seconds: float | None = None
    warmup_steps: int = 100
    started: float = field(default_factory=time.perf_counter, compare=False)

    def __post_init__(self):
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("give a training budget in steps or in seconds, not both or neither")
        if (self.steps is not None and self.steps < 1) or (self.seconds is not None and self.seconds <= 0):
            raise ValueError(f"the training budget must be positive, got {self}")

    def progress(self, step: int, elapsed: float) -> float:
        """The share of the budget used after ``step`` steps and ``elapsed`` seconds (1 ends the stage)."""
        return step / self.steps if self.steps is not None else elapsed / self.seconds

    def elapsed(self) -> float:
        """Seconds since the budget was made (the start of the run)."""
        return time.perf_counter() - self.started

    def lr_factor(self, step: int, elapsed: float) -> float:
        """The multiplier of the peak learning rate for the step after ``step`` steps."""
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, self.progress(step, elapsed))))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight matrices decay, biases do not (as Hugging Face's Trainer)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.optim.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.optim.lr)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int, budget: TrainingBudget | None = None):
    """Linear warm-up, then cosine to 0 at the last step (or constant); with a timed ``budget``, cosine to 0
    at the end of its time."""
    warmup = config.optim.warmup(total_steps)
    if budget is not None:
        return LambdaLR(optimizer, lambda step: budget.lr_factor(step, budget.elapsed()))
    if config.optim.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def make_accelerator(config: TrainConfig) -> Accelerator:
    on_gpu = torch.cuda.is_available()
    use_bf16 = config.optim.bf16 if config.optim.bf16 is not None else on_gpu
    # cpu=True is what lets accelerate run several CPU processes (gloo) under torchrun; the schedule
    # steps once per optimizer step, whatever the number of processes
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision="bf16" if use_bf16 else "no",
                              step_scheduler_with_optimizer=False)
    # save_state / load_state keep the optimizer, schedule and RNG; the weights travel in our export
    # (trained tensors only, loaded by from_pretrained), so frozen multi-GB bases are never dumped
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, folder: models.clear())
    return accelerator


# ---------------------------------------------------------------------------- the loop


def train(config: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Run (or with ``resume``, a checkpoint folder, continue) the training ``config`` describes."""
    output_dir = Path(config.output_dir)
    if resume is None and ckpt.list_checkpoints(output_dir):
        raise ValueError(f"{output_dir} already holds checkpoints of a run: continue it with --resume, "
                         "or choose another output_dir")
    inputs = input_fingerprints(config)  # the input files as this run reads them, recorded in its checkpoints
    if resume is not None:
        check_resume(config, resume, inputs)  # before any work: a resume continues the run it names, or nothing
    accelerator = make_accelerator(config)
    world_size, rank = accelerator.num_processes, accelerator.process_index
    set_seed(config.seed)

    # -- model and data
    model_type = MODEL_TYPES[config.model.type]
    resume = Path(resume) if resume is not None else None
    base_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else None
    model, processor = model_type.build(config, resume, base_dtype)
    model.train()
    trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dataset = build_dataset(config, config.data.crop_size or model.config.image_size)
    descriptions = trained_descriptions(dataset)
    collator = model_type.collator(config, model, processor, list(descriptions))
    first_decimal = getattr(collator, "first_decimal", None)  # logging.first_decimal's monitor
    batch_size, micro_batch_size = config.optim.batch_size, config.optim.micro_batch_size
    if len(dataset) < batch_size:
        raise ValueError(f"the data has {len(dataset)} samples, fewer than one batch of {batch_size}")
    steps_per_epoch = len(dataset) // batch_size
    total_steps = config.optim.max_steps or config.optim.epochs * steps_per_epoch
    accumulation = config.optim.accumulation_steps(world_size)

    # -- optimizer, schedule, and where to start
    optimizer = make_optimizer(model, config)
    budget = None
    if config.optim.max_minutes is not None:
        budget = TrainingBudget(seconds=60 * config.optim.max_minutes, warmup_steps=config.optim.warmup(total_steps))
    scheduler = make_scheduler(optimizer, config, total_steps, budget)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = ckpt.TrainingState(global_step=0, epoch=0, step_in_epoch=0, sampler_seed=config.seed,
                               world_size=world_size)
    if resume is not None:
        accelerator.load_state(resume)
        state = replace(ckpt.TrainingState.load(resume), world_size=world_size)
        if not (resume / f"random_states_{rank}.pkl").is_file():
            logger.warning("%s has no RNG state for process %d: dropout masks will differ from the "
                           "uninterrupted run", resume, rank)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, output_dir / "config.yaml")
        logger.info("training %d parameters on %d samples: %d steps of %d samples (%d processes x %d micro-batches "
                    "of %d), from step %d", trainable_parameters, len(dataset), total_steps, batch_size,
                    world_size, accumulation, micro_batch_size, state.global_step)
    log = StepLog(config, accelerator.is_main_process, total_steps, state.global_step)

    last_checkpoint = next(reversed(ckpt.list_checkpoints(output_dir)), None)
    loss, run_steps, run_seconds = math.nan, 0, 0.0
    while state.global_step < total_steps:
        micro_batches = iter(epoch_loader(dataset, collator, config, state.epoch, state.step_in_epoch, rank, world_size,
                                          sampler_seed=state.sampler_seed))
        for _ in range(state.step_in_epoch, steps_per_epoch):
            started = time.perf_counter()
            batches = [next(micro_batches) for _ in range(accumulation)]
            loss, grad_norm = _optimizer_step(model, batches, optimizer, scheduler, accelerator, model_type, config,
                                              state.global_step, first_decimal)
            run_steps, run_seconds = run_steps + 1, run_seconds + time.perf_counter() - started
            state.global_step, state.step_in_epoch = state.global_step + 1, state.step_in_epoch + 1
            if state.step_in_epoch == steps_per_epoch:  # a checkpoint written now resumes with the next epoch
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            log.step(state.global_step, loss=loss, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm,
                     samples_per_second=run_steps * batch_size / run_seconds, first_decimal=first_decimal)
            if budget is not None and _time_is_up(accelerator, budget, state.global_step):
                total_steps = state.global_step  # a timed run ends here, with a checkpoint
            if state.global_step % config.checkpoint.every_steps == 0 or state.global_step == total_steps:
                last_checkpoint = _save_checkpoint(accelerator, model, processor, config, state, descriptions, inputs)
            if state.global_step == total_steps:
                break
    log.close()
    accelerator.end_training()
    return TrainResult(
        global_step=state.global_step, total_steps=total_steps, loss=loss, checkpoint=last_checkpoint,
        steps_per_second=run_steps / run_seconds if run_seconds else 0.0,
        samples_per_second=run_steps * batch_size / run_seconds if run_seconds else 0.0,
        trainable_parameters=trainable_parameters,
    )


def _optimizer_step(model, batches, optimizer, scheduler, accelerator: Accelerator, model_type: ModelType,
                    config: TrainConfig, global_step: int,
                    first_decimal: FirstDecimalMonitor | None = None) -> tuple[float, float]:
    """Forward and backward every micro-batch, then one update; returns (mean loss, gradient norm).
    ``first_decimal`` records this process's first-decimal tokens (the main process's are logged).

    Each micro-batch's loss is its summed loss divided by what the whole global batch supervises
    (``model_type.supervised``); DDP averages gradients over processes, so the loss is multiplied by
    their number.
    """
    device = accelerator.device
    local_items = sum(model_type.supervised(batch) for batch in batches)
    global_items = accelerator.reduce(torch.tensor(local_items, device=device), reduction="sum")
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        first_decimal_group = batch.pop("first_decimal_group", None)
        with nullcontext() if i == len(batches) - 1 else accelerator.no_sync(model):
            output = model_type.forward(model, batch, global_items)
            loss = output.loss
            accelerator.backward(loss * accelerator.num_processes)
        if first_decimal is not None:
            with torch.no_grad():
                first_decimal.record(first_decimal_group, batch, output.logits.detach())
        loss_sum += loss.detach().float()
    loss = accelerator.reduce(loss_sum, reduction="sum").item()
    max_norm = config.optim.max_grad_norm if config.optim.max_grad_norm is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm).item()
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


def _time_is_up(accelerator: Accelerator, budget: TrainingBudget, global_step: int) -> bool:
    """Whether the timed budget is spent, by the main process's clock (every process stops at the same step)."""
    spent = torch.tensor(float(budget.progress(global_step, budget.elapsed()) >= 1), device=accelerator.device)
    return bool(broadcast(spent).item())


def _save_checkpoint(accelerator: Accelerator, model, processor, config: TrainConfig, state: ckpt.TrainingState,
                     descriptions: dict[str, str], inputs: dict[str, str]) -> Path:
    """Every process writes into the temporary folder (accelerate: optimizer, schedule, its RNG); the main
    process adds the trained-weights export and the position, then renames the folder into place."""
    temporary = ckpt.temporary_checkpoint_dir(config.output_dir, state.global_step)
    if accelerator.is_main_process:
        ckpt.begin_checkpoint(config.output_dir, state.global_step)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(temporary)
        if processor is not None:
            processor.descriptions = descriptions
            processor.save_pretrained(temporary)
        else:
            write_descriptions(temporary, descriptions)
        dump_config(config, temporary / "train_config.yaml")
        write_input_fingerprints(inputs, temporary)
        state.save(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.finish_checkpoint(temporary, config.checkpoint.keep_last)
    accelerator.wait_for_everyone()
    return temporary.with_name(ckpt.checkpoint_name(state.global_step))


class StepLog:
    """The main process's progress bar and TensorBoard scalars (``output_dir/tensorboard``); without the
    bar (a run whose output goes to a file), a log line every ``logging.every_steps`` steps instead."""

    def __init__(self, config: TrainConfig, is_main_process: bool, total_steps: int, initial_step: int):
        self.every_steps, self.total_steps = config.logging.every_steps, total_steps
        self.log_lines = is_main_process and not config.logging.progress_bar
        self.progress = tqdm(total=total_steps, initial=initial_step, desc="train", dynamic_ncols=True,
                             disable=not (is_main_process and config.logging.progress_bar))
        self.writer = None
        if is_main_process and config.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(config.output_dir) / "tensorboard"))

    def step(self, global_step: int, first_decimal: FirstDecimalMonitor | None = None, **scalars: float) -> None:
        """One step's scalars; every ``every_steps`` steps also the first-decimal losses since the last report."""
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}",
                                  samples_s=f"{scalars['samples_per_second']:.1f}")
        reporting = global_step % self.every_steps == 0 or global_step == self.total_steps
        first = ""
        if first_decimal is not None and reporting:
            scalars.update(first_decimal.report())
            first = (f"first decimal {scalars['first_decimal_loss']:.4f} "
                     f"(image-blind {scalars['first_decimal_loss_image_blind']:.4f})")
        if self.log_lines and reporting:
            logger.info("step %d/%d: loss %.4f, lr %.2e, %.2f samples/s%s", global_step, self.total_steps,
                        scalars["loss"], scalars["lr"], scalars["samples_per_second"], first and f", {first}")
        elif first and not self.progress.disable:
            self.progress.write(f"step {global_step}: {first}")
        if self.writer is not None and global_step % self.every_steps == 0:
            for name, value in scalars.items():
                self.writer.add_scalar(f"train/{name}", value, global_step)

    def close(self) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()
