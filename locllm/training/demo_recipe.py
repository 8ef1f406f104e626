"""The demo checkpoint: a tiny LocLLM trained on SynthPose by one reproducible command.

    # the shipped checkpoint (about 6 min on one H100/H200, data and evaluation included)
    python -m locllm.training.demo_recipe --out locllm/assets/demo --device cuda --minutes 4.5
    # about the same run counted in steps (the defaults: 500 + 7,000), the same steps on any machine
    python -m locllm.training.demo_recipe --out locllm/assets/demo --device cuda
    # a CPU smoke test of every stage (minutes; far from the bar)
    python -m locllm.training.demo_recipe --out /tmp/demo --device cpu --minutes 2 --train-images 2000

What it does, in order:

1. Data: single-figure SynthPose scenes (difficulty "normal" by default: any facing, rolls up to 45
   degrees, some figures cut by the border) rendered at a random size of 64-160 px; the person is cut
   out by its box into a 64 px crop exactly as :class:`~locllm.engine.Localizer` cuts it (top-down,
   box padded to a square, no enlargement). Training scenes come from seed 0, the held-out scenes of
   this run from seed 1 (the test of the shipped checkpoint uses seed 2). On "easy" scenes the
   image-blind mean pose alone already scores PCK@0.1 ~0.67, so "normal" is what shows the model looking.
2. Vision pre-training (:mod:`.vision_pretrain`): a Dinov2 tower (128-d, 4 layers, patch 8 -> 64
   patch tokens) learns which patch holds each keypoint; its head is dropped and the tower frozen.
   The tower is thus pre-trained on SynthPose itself: the honest stand-in for the paper's DINOv2.
3. LocLLM stage: the projector and a randomly initialized Llama (128-d, 4 layers), trained with
   exactly the paper's objective, next-token cross-entropy on the answer tokens only, on multi-round
   conversations (up to 5 keypoints) with keypoint descriptions (the paper's default prompt), built
   by the training collator of ``locllm train``. The LM has no pretraining, so all its weights train
   (no LoRA). Prompts use a word-level tokenizer trained on the prompt vocabulary
   (:mod:`locllm.prompts.demo_tokenizer`): ~385 tokens for 5 rounds instead of ~1,230 with characters.
4. Save, reload with ``Localizer.from_pretrained`` (fast grammar-constrained decoding) and report
   held-out PCK next to the image-blind mean-pose baseline, both computed here on the same scenes.

Keypoints: the 17 COCO ones plus the neck, which the demo asks by (name, description); the pelvis is
never trained, on either stage, and is reported as a novel keypoint asked zero-shot.

PCK@t counts a labelled keypoint (v >= 1) as correct when its prediction lies within t x the crop side
(the person box padded to a square, in image pixels) of the truth; an answer that does not parse is a miss.

Speed: on an H200 the LocLLM stage runs ~32 steps/s (batch 64, 5 rounds); on a 2-core CPU shared with
other work it ran 0.06-0.15 steps/s, so the full recipe is a GPU job there (hours on such a CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import LlamaConfig

from ..codecs import DecimalCodec
from ..data.datasets import PoseSample
from ..data.geometry import PIXEL_STD, box_to_center_scale, crop_image, crop_to_image, image_to_crop
from ..data.synth import render_scene
from ..engine import Localizer
from ..evaluation.pck import pck
from ..keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS, KeypointSet
from ..models import LocLLMConfig, LocLLMForKeypointLocalization
from ..models.processing_locllm import LocLLMImageProcessor, LocLLMProcessor
from ..prompts import IGNORE_INDEX, PromptStyle
from ..prompts.demo_tokenizer import build_demo_tokenizer
from .collator import TrainingCollator
from .vision_pretrain import TrainingBudget, build_demo_tower, pretrain_vision_tower

CROP_SIZE = 64
RENDER_SIZES = (64, 160)  # scenes are rendered at a size drawn from this inclusive range
TRAIN_SEED, HELDOUT_SEED = 0, 1
DEFAULT_DIFFICULTY = "normal"
SETTING_FILE = "synthpose_demo.json"
_EXTRA = [EXTRA_KEYPOINTS.index("neck"), EXTRA_KEYPOINTS.index("pelvis")]
DEMO_KEYPOINTS = KeypointSet("synthpose-demo", (*COCO_KEYPOINTS.keypoints, *(EXTRA_KEYPOINTS[i] for i in _EXTRA)),
                             COCO_KEYPOINTS.skeleton)
NOVEL_KEYPOINTS = ("pelvis",)  # never trained: asked zero-shot, by its description
TRAINED = np.array([name not in NOVEL_KEYPOINTS for name in DEMO_KEYPOINTS.names])
REPORT_GROUPS = {  # what the held-out report lists, and which keypoints of DEMO_KEYPOINTS each holds
    "coco": list(range(len(COCO_KEYPOINTS))),
    "neck": [DEMO_KEYPOINTS.index("neck")],
    "pelvis": [DEMO_KEYPOINTS.index("pelvis")],
}


# ---------------------------------------------------------------------------- data


@dataclass
class PersonScene:
    """One rendered scene with one person, labelled in ``DEMO_KEYPOINTS`` order."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    box: np.ndarray  # (4,) x, y, w, h person box holding every labelled keypoint
    points: np.ndarray  # (K, 2) keypoint x, y in image pixels
    labelled: np.ndarray  # (K,) bool: v >= 1, i.e. inside the image (visible or occluded)


def render_person(seed: np.random.SeedSequence, difficulty: str = DEFAULT_DIFFICULTY) -> PersonScene:
    """The demo's SynthPose setting: one figure, rendered at a random size."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(RENDER_SIZES[0], RENDER_SIZES[1] + 1))
    image, (person,) = render_scene(rng, size=size, num_persons=1, difficulty=difficulty)
    joints = np.concatenate([person["keypoints"], person["extra_keypoints"][_EXTRA]])
    return PersonScene(image, person["bbox"], joints[:, :2], joints[:, 2] > 0)


def crop_geometry(box) -> tuple[np.ndarray, np.ndarray]:
    """Center and scale of a person's crop, as ``LocLLMImageProcessor.crop_persons`` computes them."""
    return box_to_center_scale(np.asarray(box, dtype=np.float64), 1.0, 1.0, PIXEL_STD)


@dataclass
class DemoCrops:
    """Person crops with their keypoints; arrays over M crops and the K ``DEMO_KEYPOINTS``."""

    crops: np.ndarray  # (M, S, S, 3) uint8
    points: np.ndarray  # (M, K, 2) float32 crop pixels
    labelled: np.ndarray  # (M, K) bool: v >= 1 in the scene
    inside: np.ndarray  # (M, K) bool: inside the crop, i.e. writable as coordinates in [0, 1)
    centers: np.ndarray  # (M, 2) float32 crop centres in scene pixels
    scales: np.ndarray  # (M, 2) float32 crop scales (units of PIXEL_STD)
    scene_sizes: np.ndarray  # (M,) side of each scene in pixels

    def __len__(self) -> int:
        return len(self.crops)

    def askable(self) -> np.ndarray:
        """(M, K) the keypoints training may ask: labelled, inside the crop and not a novel keypoint."""
        return self.labelled & self.inside & TRAINED[None]


def _crop_person(seed: np.random.SeedSequence, difficulty: str) -> tuple:
    person = render_person(seed, difficulty)
    center, scale = crop_geometry(person.box)
    crop = crop_image(person.image, center, scale, 0.0, CROP_SIZE)
    points = image_to_crop(person.points, center, scale, CROP_SIZE)
    inside = ((points >= 0) & (points < CROP_SIZE)).all(axis=1)
    return crop, points.astype(np.float32), person.labelled, inside, center, scale, person.image.shape[0]


def make_crops(num_images: int, seed: int, difficulty: str = DEFAULT_DIFFICULTY, workers: int = 1,
               cache_dir: str | Path | None = None) -> DemoCrops:
    """Render ``num_images`` scenes (scene i from the i-th child of ``SeedSequence(seed)``) and crop them.

    ``workers`` > 1 renders in fresh ("spawn") processes; the crops are the same for any number.
    With ``cache_dir`` the crops are kept there as ``.npz`` and read back by later runs.
    """
    cache = Path(cache_dir) / f"synthpose-demo-{difficulty}-seed{seed}-{num_images}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            return DemoCrops(**{name: stored[name] for name in stored.files})
    seeds = np.random.SeedSequence(seed).spawn(num_images)
    if workers > 1:
        # spawn, not fork: the parent's torch and OpenCV thread pools would be inherited broken
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            records = list(pool.map(_crop_person, seeds, [difficulty] * num_images,
                                    chunksize=max(1, min(256, num_images // (4 * workers)))))
    else:
        records = [_crop_person(s, difficulty) for s in seeds]
    fields = zip(*records, strict=True)
    data = DemoCrops(*(np.stack(values) for values in fields))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **vars(data))
    return data


def mean_pose(data: DemoCrops) -> np.ndarray:
    """(K, 2) every keypoint's mean position over the crops where it is labelled, as a fraction of the crop."""
    mask = (data.labelled & data.inside)[..., None]
    return (data.points * mask).sum(axis=0) / np.maximum(mask.sum(axis=0), 1) / CROP_SIZE


def save_demo_setting(folder: Path, difficulty: str, pose: np.ndarray, num_crops: int) -> None:
    """What a held-out evaluation of the checkpoint needs: its SynthPose difficulty and the mean training pose."""
    payload = {
        "difficulty": difficulty,
        "render_sizes": list(RENDER_SIZES),
        "crop_size": CROP_SIZE,
        "mean_pose_about": f"mean training pose (x, y as fractions of the crop) over {num_crops} training crops: "
                           "the image-blind baseline's answer for every image",
        "mean_pose": {name: [round(float(v), 5) for v in xy] for name, xy in zip(DEMO_KEYPOINTS.names, pose, strict=True)},
    }
    (folder / SETTING_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def load_demo_setting(folder: str | Path) -> tuple[str, np.ndarray]:
    """The SynthPose difficulty and the (K, 2) mean training pose a demo checkpoint was saved with."""
    payload = json.loads((Path(folder) / SETTING_FILE).read_text())
    pose = np.array([payload["mean_pose"][name] for name in DEMO_KEYPOINTS.names], dtype=np.float64)
    return payload["difficulty"], pose


# ---------------------------------------------------------------------------- evaluation


def evaluate_pck(localizer: Localizer, num_images: int, seed: int, mean_pose: np.ndarray,
                 difficulty: str = DEFAULT_DIFFICULTY) -> dict:
    """Held-out PCK of ``localizer`` on fresh demo scenes, next to the mean-pose baseline on the same scenes.

    Each scene's person is localized through the whole inference path (box -> crop -> fast decoding ->
    image pixels) for every keypoint of ``DEMO_KEYPOINTS``; the baseline answers ``mean_pose`` (K, 2), as
    fractions of the crop, for every scene. Distances are divided by the crop side in image pixels.

    Returns:
        ``{"num_images", "seed", "normalizer", "malformed_answers", "seconds", "coco" | "neck" | "pelvis":
        {"pck@0.1", "pck@0.05", "baseline_pck@0.1", "baseline_pck@0.05", "num_keypoints"}}``; ``coco``
        also has ``per_keypoint_pck@0.1``. Scenes are of the given SynthPose ``difficulty``.
    """
    started = time.perf_counter()
    predicted, baseline, truth, labelled, crop_sides = [], [], [], [], []
    malformed = 0
    for scene_seed in np.random.SeedSequence(seed).spawn(num_images):
        person = render_person(scene_seed, difficulty)
        (answer,) = localizer.localize(person.image, boxes=[person.box], keypoints=DEMO_KEYPOINTS)
        center, scale = crop_geometry(person.box)
        predicted.append(answer.keypoints[:, :2])
        malformed += int((~answer.valid).sum())
        baseline.append(crop_to_image(mean_pose * CROP_SIZE, center, scale, CROP_SIZE))
        truth.append(person.points)
        labelled.append(person.labelled)
        crop_sides.append(float(scale[0]) * PIXEL_STD)
    predicted, baseline, truth, labelled = (np.stack(a) for a in (predicted, baseline, truth, labelled))
    report = {"num_images": num_images, "seed": seed, "difficulty": difficulty, "malformed_answers": malformed,
              "normalizer": "the crop side in image pixels (the person box padded to a square)"}
    for group, columns in REPORT_GROUPS.items():
        model = pck(predicted[:, columns], truth[:, columns], labelled[:, columns], crop_sides)
        blind = pck(baseline[:, columns], truth[:, columns], labelled[:, columns], crop_sides)
        report[group] = {"pck@0.1": model["pck@0.1"], "pck@0.05": model["pck@0.05"],
                         "baseline_pck@0.1": blind["pck@0.1"], "baseline_pck@0.05": blind["pck@0.05"],
                         "num_keypoints": model["num_keypoints"]}
        if group == "coco":
            names = [DEMO_KEYPOINTS[i].name for i in columns]
            report[group]["per_keypoint_pck@0.1"] = dict(zip(names, model["per_keypoint"]["pck@0.1"], strict=True))
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


REPORT_LABELS = {"coco": "COCO 17 keypoints", "neck": "neck (trained, asked by description)",
                 "pelvis": "pelvis (never trained, zero-shot)"}


def format_report(report: dict) -> str:
    lines = [
        f"held-out SynthPose ({report['difficulty']}): {report['num_images']} scenes (seed {report['seed']}); "
        "PCK normalizer: "
        f"{report['normalizer']}; {report['malformed_answers']} malformed answers",
        f"{'keypoints':<40} {'PCK@0.1':>8} {'PCK@0.05':>9}   mean-pose baseline: {'PCK@0.1':>8} {'PCK@0.05':>9}",
    ]
    for group, label in REPORT_LABELS.items():
        r = report[group]
        lines.append(f"{label + ' (n=' + str(r['num_keypoints']) + ')':<40} {r['pck@0.1']:>8.3f} {r['pck@0.05']:>9.3f}"
                     f"   {'':<20}{r['baseline_pck@0.1']:>8.3f} {r['baseline_pck@0.05']:>9.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the LocLLM stage


class DemoSamples(Dataset):
    """``(epoch, index)`` -> ``(epoch, index, PoseSample)``: the crops as the training collator takes them."""

    def __init__(self, data: DemoCrops):
        self.data = data
        self.askable = data.askable()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, PoseSample]:
        epoch, index = key
        data = self.data
        joints = np.zeros((len(DEMO_KEYPOINTS), 3), dtype=np.float32)
        joints[:, :2] = data.points[index]
        size = int(data.scene_sizes[index])
        sample = PoseSample(
            image=data.crops[index], joints=joints, visible=self.askable[index], labelled=data.labelled[index],
            keypoints=DEMO_KEYPOINTS, has_depth=False, center=data.centers[index], scale=data.scales[index],
            rotation=0.0, pixel_std=PIXEL_STD, flipped=False, image_size=(size, size), image_id=index,
        )
        return epoch, index, sample


class EpochBatches:
    """Endless batches of ``(epoch, index)`` keys: each epoch a permutation seeded by (seed, epoch)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int):
        if num_samples < batch_size:
            raise ValueError(f"{num_samples} training crops are fewer than one batch of {batch_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            for start in range(0, self.num_samples - self.batch_size + 1, self.batch_size):
                yield [(epoch, int(i)) for i in order[start:start + self.batch_size]]
            epoch += 1


def build_demo_model(tower: torch.nn.Module, tokenizer, style: PromptStyle, seed: int = 0) -> LocLLMForKeypointLocalization:
    """The pre-trained tower (frozen) + a linear projector + a random 128-d, 4-layer Llama trained in full."""
    text = LlamaConfig(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, intermediate_size=512,
        vocab_size=len(tokenizer), max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config = LocLLMConfig(
        vision_config=tower.config, text_config=text, image_size=CROP_SIZE, image_token=style.image_token,
        image_token_id=tokenizer.convert_tokens_to_ids(style.image_token), lora_vision=False, lora_text=False,
        train_vision_base=False, train_text_base=True, prompt_style=style.to_dict(),
        coordinate_codec=DecimalCodec().to_dict(),
    )
    torch.manual_seed(seed)
    return LocLLMForKeypointLocalization(config, vision_tower=tower)


def train_locllm(
    model: LocLLMForKeypointLocalization,
    samples: DemoSamples,
    collator: TrainingCollator,
    budget: TrainingBudget,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    device: str | torch.device = "cpu",
    seed: int = 0,
    loader_workers: int = 0,
    log_every: int = 50,
    eval_every: int = 0,
    evaluate: Callable[[LocLLMForKeypointLocalization], str] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train the model's trainable weights on the answer-token loss; ``evaluate(model)`` every ``eval_every``
    steps (its time is not charged to a timed budget). Returns the run's figures."""
    device = torch.device(device)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
                                   {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
    loader = DataLoader(samples, batch_sampler=EpochBatches(len(samples), batch_size, seed), collate_fn=collator,
                        num_workers=loader_workers, persistent_workers=loader_workers > 0)
    on_gpu = device.type == "cuda"
    step, started, paused = 0, time.perf_counter(), 0.0
    recent_loss, tokens, supervised = [], 0, 0
    summary: dict = {}
    for batch in loader:
        if budget.progress(step, time.perf_counter() - started - paused) >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * budget.lr_factor(step, time.perf_counter() - started - paused)
        tokens += int(batch["attention_mask"].sum())
        supervised += int((batch["labels"] != IGNORE_INDEX).sum())
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            loss = model(**batch).loss
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"LocLLM training diverged at step {step + 1} (loss {loss.item()}); lower the lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        recent_loss.append(loss.item())
        if step % log_every == 0:
            elapsed = time.perf_counter() - started - paused
            summary = {"steps": step, "seconds": round(elapsed, 1), "steps_per_second": round(step / elapsed, 3),
                       "loss": round(float(np.mean(recent_loss)), 4),
                       "tokens_per_sequence": round(tokens / (step * batch_size), 1),
                       "answer_tokens_per_sequence": round(supervised / (step * batch_size), 1)}
            log(f"LocLLM step {step}: loss {summary['loss']:.4f}, lr {optimizer.param_groups[0]['lr']:.2e}, "
                f"{summary['steps_per_second']:.2f} steps/s, {summary['tokens_per_sequence']:.0f} tokens/sequence")
            recent_loss = []
        if evaluate is not None and eval_every and step % eval_every == 0:
            paused_from = time.perf_counter()
            log(evaluate(model))
            model.train()
            paused += time.perf_counter() - paused_from
    elapsed = time.perf_counter() - started - paused
    summary.update({"steps": step, "seconds": round(elapsed, 1), "steps_per_second": round(step / elapsed, 3)})
    if recent_loss:
        summary["loss"] = round(float(np.mean(recent_loss)), 4)
    return summary


# ---------------------------------------------------------------------------- the command


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} GPU"
    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def run(args: argparse.Namespace, command: str) -> dict:
    """Make the demo checkpoint in ``args.out`` as the module docstring describes; return the run's figures."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    workers = args.workers or os.cpu_count() or 1
    log = print
    log(f"{command}\ndevice: {device_name(device)}")
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]

    train = make_crops(args.train_images, TRAIN_SEED, args.difficulty, workers, args.cache_dir)
    data_seconds = time.perf_counter() - started
    log(f"{len(train)} training crops ({args.difficulty}) in {data_seconds:.0f} s")
    if args.minutes is not None:
        pretrain_budget = TrainingBudget(seconds=args.minutes * 60 * args.pretrain_share, warmup_steps=100)
        locllm_budget = TrainingBudget(seconds=args.minutes * 60 * (1 - args.pretrain_share), warmup_steps=100)
    else:
        pretrain_budget = TrainingBudget(steps=args.pretrain_steps, warmup_steps=100)
        locllm_budget = TrainingBudget(steps=args.steps, warmup_steps=100)

    processor = LocLLMImageProcessor(CROP_SIZE)  # CLIP mean/std: the LocLLMConfig default
    tower = build_demo_tower(image_size=CROP_SIZE, seed=args.seed)
    pretrain = pretrain_vision_tower(tower, train.crops, train.points, train.askable(), processor, pretrain_budget,
                                     batch_size=args.batch_size, lr=args.pretrain_lr, device=device, seed=args.seed,
                                     log=log)

    tokenizer = build_demo_tokenizer()
    style = PromptStyle.default()
    model = build_demo_model(tower.cpu(), tokenizer, style, seed=args.seed)
    collator = TrainingCollator(LocLLMProcessor.from_config(model.config, tokenizer), max_rounds=args.rounds,
                                seed=args.seed)
    pose = mean_pose(train)

    def evaluate(current: LocLLMForKeypointLocalization) -> str:
        localizer = Localizer.from_model(current, tokenizer, device=device)
        return format_report(evaluate_pck(localizer, args.eval_images, HELDOUT_SEED, pose, args.difficulty))

    loader_workers = args.loader_workers
    if loader_workers is None:  # on a GPU the conversations are built in parallel; on a CPU they cost little
        loader_workers = min(8, workers) if device.type == "cuda" else 0
    locllm = train_locllm(model, DemoSamples(train), collator, locllm_budget, batch_size=args.batch_size, lr=args.lr,
                          device=device, seed=args.seed, loader_workers=loader_workers, eval_every=args.eval_every,
                          evaluate=evaluate, log=log)
    training_seconds = time.perf_counter() - started

    model.cpu().save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_demo_setting(out, args.difficulty, pose, len(train))
    localizer = Localizer.from_pretrained(out, device=device)
    report = evaluate_pck(localizer, args.heldout_images, HELDOUT_SEED, pose, args.difficulty)
    log(format_report(report))
    summary = {
        "command": command, "device": device_name(device), "load_average_at_start": round(load_at_start, 2),
        "difficulty": args.difficulty, "train_images": len(train), "data_seconds": round(data_seconds, 1),
        "batch_size": args.batch_size, "rounds": args.rounds, "lr": args.lr, "pretrain_lr": args.pretrain_lr,
        "vision_pretraining": pretrain, "locllm_stage": locllm, "total_seconds": round(training_seconds, 1),
        "trainable_parameters": model.trainable_parameter_count(),
        "parameters": sum(p.numel() for p in model.parameters()), "vocabulary": len(tokenizer),
        "checkpoint_bytes": sum(f.stat().st_size for f in out.iterdir() if f.is_file() and f.name != "TRAINING.md"),
        "heldout": report,
    }
    (out / "TRAINING.md").write_text(training_notes(summary))
    passed = report["coco"]["pck@0.1"] >= 0.5
    log(f"COCO PCK@0.1 {report['coco']['pck@0.1']:.3f} {'meets' if passed else 'misses'} the demo's bar of 0.5 "
        f"(mean-pose baseline {report['coco']['baseline_pck@0.1']:.3f}); checkpoint in {out} "
        f"({summary['checkpoint_bytes'] / 1e6:.1f} MB)")
    return summary


def training_notes(summary: dict) -> str:
    """TRAINING.md of the checkpoint folder: how it was made and what it scores, from the run's figures."""
    pre, stage, report = summary["vision_pretraining"], summary["locllm_stage"], summary["heldout"]
    rows = "\n".join(
        f"| {REPORT_LABELS[g]} | {report[g]['num_keypoints']} | {report[g]['pck@0.1']:.3f} | {report[g]['pck@0.05']:.3f} "
        f"| {report[g]['baseline_pck@0.1']:.3f} | {report[g]['baseline_pck@0.05']:.3f} |" for g in REPORT_LABELS)
    per_keypoint = ", ".join(f"{name} {value:.2f}" for name, value in report["coco"]["per_keypoint_pck@0.1"].items())
    batch = summary["batch_size"]
    return f"""# The demo checkpoint

A tiny LocLLM ({summary['parameters'] / 1e6:.2f}M parameters) that answers "where is the left knee of this person?" with
`[0.412,0.655]` on SynthPose person crops. It is what `locllm demo` runs with no download.

## How it was made

    {summary['command']}

- Device: {summary['device']}; load average {summary['load_average_at_start']} at the start. Total time, data and evaluation included: {summary['total_seconds'] / 60:.1f} min. Files: {summary['checkpoint_bytes'] / 1e6:.1f} MB.
- Data: {summary['train_images']} single-figure SynthPose scenes (difficulty "{summary['difficulty']}", rendered at {RENDER_SIZES[0]}-{RENDER_SIZES[1]} px, seed {TRAIN_SEED}), each person cut out by its box into a {CROP_SIZE} px crop as the inference path does; rendered in {summary['data_seconds']:.0f} s.
- Vision tower: a Dinov2 (128-d, 4 layers, 4 heads, patch 8, 64 patch tokens) **pre-trained on SynthPose itself**, the honest stand-in for the paper's DINOv2: a linear head per keypoint classified which patch holds each keypoint (cross-entropy over the 64 patches, soft bilinear targets); {pre['steps']} steps of {batch} crops, AdamW lr {summary['pretrain_lr']:g}, cosine, {pre['seconds']:.0f} s, final patch accuracy {pre['patch_accuracy']:.2f}. The head was then dropped and the tower frozen.
- LocLLM stage: exactly the paper's objective, next-token cross-entropy on the answer tokens only. The projector and a randomly initialized Llama (128-d, 4 layers, 4 heads) trained in full (the LM has no pretraining, so no LoRA); {stage['steps']} steps of {batch} conversations with up to {summary['rounds']} keypoints each (the paper's multi-round samples) and the keypoint descriptions (the paper's default prompt); AdamW lr {summary['lr']:g}, weight decay 0.05, cosine; {stage['seconds']:.0f} s at {stage['steps_per_second']:.2f} steps/s, {stage.get('tokens_per_sequence', 0):.0f} tokens per sequence on average.
- Tokenizer: a word-level BPE trained in code on our prompt vocabulary (`locllm.prompts.demo_tokenizer`, {summary['vocabulary']} tokens); digits, `.`, `,`, `[`, `]` are single tokens, so answers are the paper's decimal text with 3 decimals.
- Keypoints: the 17 COCO keypoints and the neck (which `locllm demo` asks by description). The pelvis was never trained, in either stage: it is asked zero-shot, by its description only.

## Held-out figures

{report['num_images']} fresh "{report['difficulty']}" scenes (seed {report['seed']}), through the full inference path (`Localizer.from_pretrained`, fast grammar-constrained decoding, predictions mapped back to image pixels). PCK@t: a labelled keypoint is correct within t x {report['normalizer']}. The baseline answers the mean training pose (in crop coordinates) for every image, without looking at it. {report['malformed_answers']} malformed answers.

| keypoints | n | PCK@0.1 | PCK@0.05 | mean-pose PCK@0.1 | mean-pose PCK@0.05 |
|---|---|---|---|---|---|
{rows}

Per COCO keypoint, PCK@0.1: {per_keypoint}.

These figures hold for this toy setting only: the tower was pre-trained on the same synthetic world it is tested on, so they say nothing about real photographs.

## Reproducing it

Run the command above. A timed run (`--minutes`) anneals its learning rate over wall-clock time, so on another machine it takes another number of steps; `--steps {stage['steps']} --pretrain-steps {pre['steps']}` instead follows the same cosine counted in steps. `pytest -m slow tests/training/test_demo_checkpoint.py` checks the shipped checkpoint on 30 scenes it has never seen (seed 2).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m locllm.training.demo_recipe", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint folder to write (e.g. locllm/assets/demo)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=7000, help="LocLLM-stage steps (default 7000)")
    budget.add_argument("--minutes", type=float,
                        help="train for this long instead of step counts (both stages; see --pretrain-share)")
    parser.add_argument("--pretrain-steps", type=int, default=500, help="vision pre-training steps (default 500)")
    parser.add_argument("--pretrain-share", type=float, default=0.15, help="with --minutes: the pre-training share")
    parser.add_argument("--difficulty", choices=("easy", "normal"), default=DEFAULT_DIFFICULTY, help="SynthPose scene difficulty")
    parser.add_argument("--batch-size", type=int, default=64, help="crops per step in both stages (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="keypoints asked per training conversation (default 5)")
    parser.add_argument("--lr", type=float, default=2e-3, help="LocLLM-stage peak learning rate")
    parser.add_argument("--pretrain-lr", type=float, default=1e-3, help="vision pre-training peak learning rate")
    parser.add_argument("--train-images", type=int, default=40000, help="training scenes (default 40000)")
    parser.add_argument("--heldout-images", type=int, default=500, help="held-out scenes of the final report")
    parser.add_argument("--eval-every", type=int, default=0, help="LocLLM steps between interim held-out reports")
    parser.add_argument("--eval-images", type=int, default=100, help="held-out scenes of an interim report")
    parser.add_argument("--seed", type=int, default=0, help="model initialization and data order")
    parser.add_argument("--workers", type=int, help="processes rendering scenes (default: one per CPU)")
    parser.add_argument("--loader-workers", type=int, help="data loader processes (default: 0 on a CPU, up to 8 on a GPU)")
    parser.add_argument("--cache-dir", help="keep the rendered training crops here as .npz and reuse them")
    parser.add_argument("--json", metavar="PATH", help="also write the run's figures to PATH as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    summary = run(args, command="python -m locllm.training.demo_recipe " + " ".join(argv))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
