"""The gated CPU pilot of the novel-keypoint experiment: does arm A learn the seen types at all?

    nice -n 10 python benchmarks/novel_keypoints_pilot.py --out runs/novel_pilot --minutes 17 --publish
    # ~4 min data, ~8 min tower (reused from --out), 17 min training (two learning rates side by side), ~8 min scoring

Arm A of ``novel_keypoints_smollm2.py`` (the first 4 layers of SmolLM2-135M-Instruct, frozen, on the shared
frozen part-naming tower) with the faster recipe: the question by name only, 6 rounds per crop, answers with
2 decimals, the answer-vocabulary loss, an MLP projector, LoRA r 16 on every linear layer of the LM, a
constant learning rate, 2e-3 and 5e-3 side by side (one thread each) for the same wall-clock minutes.

The gate (``novel_keypoints_criteria.PILOT_GATE``) is printed before training and decides what follows:
the A/B main run (``novel_keypoints_smollm2.py`` with this recipe) or the premise test. Scored on the first
100 validation crops: PCK@0.1 of the seen 13, held-out 4 and extras 6 with crop-bootstrap intervals against
the image-blind mean pose, every checkpoint's seen PCK (the learning curve), and the first-decimal loss
(one round per sequence, seen types) against its image-blind value: the cross-entropy of each type's and
axis's first-decimal frequencies in the training crops (add-one smoothed) on the same answers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import novel_keypoints_smollm2 as experiment
import numpy as np
import torch
from novel_keypoints_criteria import (
    CURVE_CROPS,
    PILOT_GATE,
    PILOT_MINIMUM_FIRST_DECIMAL_GAIN,
    PILOT_MINIMUM_PCK,
    difference_with_interval,
    pck_hits,
    pck_with_interval,
)

from locllm.data.synth.demo import CROP_SIZE, DEFAULT_DIFFICULTY, make_crops
from locllm.engine import Localizer
from locllm.keypoints import COCO_KEYPOINTS
from locllm.models.processing_locllm import CropRegions
from locllm.prompts import IGNORE_INDEX
from locllm.training.checkpoint import list_checkpoints

REPO = Path(__file__).resolve().parent.parent
DECIMALS = 2
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def pilot_config(out: Path, tower: Path, lr: float, args) -> dict:
    recipe = argparse.Namespace(layers=4, train=args.train, lr=lr, steps=100_000, batch=args.batch, name_only=True,
                                rounds=6, decimals=DECIMALS, loss="answer_vocab", projector="mlp2x_gelu", lora_r=16,
                                lora_targets=ALL_LINEAR, schedule="constant")
    config = experiment.arm_config("A", out, tower, recipe)
    config["output_dir"] = str(out / f"arm_A_lr{lr:g}")
    config["optim"].update({"warmup_steps": 20, "max_minutes": args.minutes})  # the steps: what the minutes allow
    config["checkpoint"] = {"every_steps": args.checkpoint_every, "keep_last": 1000}  # all: the learning curve
    return config


def train(out: Path, tower: Path, args) -> dict[str, dict]:
    """Both learning rates side by side, one thread each; their ``locllm train --json`` summaries."""
    summaries = experiment.train_side_by_side(out, {f"A_lr{lr:g}": pilot_config(out, tower, lr, args)
                                                    for lr in args.lrs})
    return {f"lr{lr:g}": summaries[f"A_lr{lr:g}"] for lr in args.lrs}


def answers(checkpoint: Path, crops: np.ndarray, names: list[str]) -> np.ndarray:
    """(M, len(names), 2) crop-pixel answers by the library's default decoding; NaN where unparsed."""
    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    with torch.no_grad():
        found = experiment.ask_crops(localizer, crops, names)
    return np.stack([np.where(a.valid[:, None], a.keypoints[:, :2], np.nan) for a in found])


def first_decimal_loss(checkpoint: Path, val: dict, seen: list[int]) -> float:
    """Mean cross-entropy (nats, over the 10 digits) of the first decimal of x and y, teacher-forced, one
    labelled seen type per sequence (no earlier answer to lean on)."""
    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    processor, model = localizer.processor, localizer.model
    # Teacher forcing writes the training example, as the trainer's collator does (locllm/training/collator.py).
    units = processor.unit_token_ids()
    digits = torch.tensor([units[d] for d in "0123456789"])
    point = units["."]
    items = [(m, k) for m in range(len(val["crops"])) for k in seen if val["labelled"][m, k]]
    total, count = 0.0, 0
    for start in range(0, len(items), 64):
        chunk = items[start:start + 64]
        examples = [processor.training_example([(COCO_KEYPOINTS[k], val["points"][m, k] / CROP_SIZE)]) for m, k in chunk]
        input_ids, attention_mask = processor.pad([e["input_ids"] for e in examples])
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, example in enumerate(examples):
            labels[row, :len(example["labels"])] = torch.tensor(example["labels"])
        mask = torch.isin(labels[:, 1:], digits) & (input_ids[:, :-1] == point)
        pixels = torch.cat([processor(val["crops"][m], CropRegions.whole(CROP_SIZE)).pixel_values for m, _ in chunk])
        with torch.no_grad():
            loss = model(input_ids=input_ids, pixel_values=pixels, attention_mask=attention_mask, labels=labels,
                         supervised_logits_only=True, answer_choice_ids=digits, answer_choice_mask=mask).loss
        total += loss.item() * int(mask.sum())
        count += int(mask.sum())
    return total / count


def image_blind_first_decimal_loss(train: dict, val: dict, seen: list[int]) -> float:
    """The best an image-blind answer can do on the first decimal: each (type, axis)'s digit frequencies in the
    training crops (add-one smoothed), their cross-entropy on the validation answers first_decimal_loss reads."""
    def first_decimals(points: np.ndarray) -> np.ndarray:
        return np.vectorize(lambda v: int(f"{min(max(v, 0.0), 1.0):.{DECIMALS}f}"[2]))(points / CROP_SIZE)

    total, count = 0.0, 0
    for k in seen:
        train_digits = first_decimals(train["points"][train["labelled"][:, k], k])  # (N, 2)
        val_digits = first_decimals(val["points"][val["labelled"][:, k], k])
        for axis in range(2):
            frequency = (np.bincount(train_digits[:, axis], minlength=10) + 1) / (len(train_digits) + 10)
            total -= np.log(frequency[val_digits[:, axis]]).sum()
            count += len(val_digits)
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/novel_pilot", type=Path)
    parser.add_argument("--train", type=int, default=10000, help="training crops")
    parser.add_argument("--val", type=int, default=500, help="validation crops rendered (the pilot scores 100)")
    parser.add_argument("--tower-steps", type=int, default=1500)
    parser.add_argument("--minutes", type=float, default=17.0, help="training minutes of each learning rate")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-3, 5e-3])
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/results/novel_keypoints_pilot.json")
    args = parser.parse_args()
    print(PILOT_GATE, flush=True)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    load_before = os.getloadavg()
    train_crops = experiment.crops_with_parts(out, args.train, experiment.TRAIN_SEED)
    val = experiment.crops_with_parts(out, args.val, experiment.VAL_SEED)
    demo = make_crops(args.train, experiment.TRAIN_SEED, DEFAULT_DIFFICULTY, workers=1, cache_dir=out / "demo_crops")
    if not np.array_equal(demo.crops, train_crops["crops"]):
        raise SystemExit("the labelled crops differ from the synthpose_demo crops of the same seeds")
    tower, tower_report = experiment.pretrain_tower(out, train_crops, val, args.tower_steps, 64)
    summaries = train(out, tower, args)
    load_after_training = os.getloadavg()

    val = {key: value[:CURVE_CROPS] for key, value in val.items()}
    seen = experiment.GROUPS["seen"]
    floor_answers = np.broadcast_to(experiment.mean_pose(train_crops), val["points"].shape)
    floor_hits = pck_hits(floor_answers, val["points"], val["labelled"], CROP_SIZE)
    blind = image_blind_first_decimal_loss(train_crops, val, seen)
    results = {
        "gate": PILOT_GATE,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other work; "
                   "each learning rate on 1 thread, at nice 10",
        "load_average_1_5_15_min": {"before": [round(v, 2) for v in load_before],
                                    "after_training": [round(v, 2) for v in load_after_training]},
        "recipe": pilot_config(out, tower, args.lrs[0], args),
        "train_crops": args.train, "scored_crops": CURVE_CROPS, "tower": tower_report,
        "floor": {group: pck_with_interval(floor_hits, columns) for group, columns in experiment.GROUPS.items()},
        "first_decimal_loss_image_blind": round(blind, 4),
        "runs": {},
    }
    for name, summary in summaries.items():
        checkpoints = list_checkpoints(out / f"arm_A_{name}")
        predicted = answers(checkpoints[-1], val["crops"], list(experiment.ASKED))
        hits = pck_hits(predicted, val["points"], val["labelled"], CROP_SIZE)
        seen_figure = pck_with_interval(hits, seen)
        decimal_loss = first_decimal_loss(checkpoints[-1], val, seen)
        curve = {}
        for checkpoint in checkpoints[:-1]:
            seen_names = [experiment.ASKED[k] for k in seen]
            early = pck_hits(answers(checkpoint, val["crops"], seen_names), val["points"][:, seen],
                             val["labelled"][:, seen], CROP_SIZE)
            curve[int(checkpoint.name.split("-")[-1])] = pck_with_interval(early, list(range(len(seen))))["pck@0.1"]
        curve[int(checkpoints[-1].name.split("-")[-1])] = seen_figure["pck@0.1"]
        passed = (seen_figure["pck@0.1"] >= PILOT_MINIMUM_PCK
                  and blind - decimal_loss >= PILOT_MINIMUM_FIRST_DECIMAL_GAIN)
        results["runs"][name] = {
            "train": {**summary, "train_minutes": round(summary["global_step"] / summary["steps_per_second"] / 60, 1),
                      "answers_per_second_at_most": round(6 * summary["samples_per_second"], 1)},
            "pck@0.1": {group: pck_with_interval(hits, columns) for group, columns in experiment.GROUPS.items()},
            "minus_floor": {group: difference_with_interval(hits, floor_hits, columns)
                            for group, columns in experiment.GROUPS.items()},
            "first_decimal_loss": round(decimal_loss, 4),
            "first_decimal_gain_over_image_blind": round(blind - decimal_loss, 4),
            "seen_pck@0.1_by_step": curve,
            "malformed_answers": int(np.isnan(predicted[..., 0]).sum()),
            "passes_gate": bool(passed),
        }
    passing = [name for name, run in results["runs"].items() if run["passes_gate"]]
    results["verdict"] = (f"gate passed ({', '.join(passing)}): the A/B main run follows" if passing else
                          "gate missed at both learning rates: the premise test follows, not the main run")
    results["load_average_1_5_15_min"]["at_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(results, indent=2)
    (out / "results.json").write_text(text + "\n")
    if args.publish:
        (REPO / "benchmarks/results/novel_keypoints_pilot.json").write_text(text + "\n")
    print(PILOT_GATE)
    for name, run in results["runs"].items():
        print(f"{name}: seen PCK@0.1 {run['pck@0.1']['seen']} (floor {results['floor']['seen']['pck@0.1']}), "
              f"first-decimal loss {run['first_decimal_loss']} vs image-blind {results['first_decimal_loss_image_blind']}, "
              f"{run['train']['global_step']} steps; passes: {run['passes_gate']}")
    print(results["verdict"])


if __name__ == "__main__":
    main()
