"""LocLLM and the CLIP heatmap baseline trained with the same budget on the same SynthPose data.

    OMP_NUM_THREADS=1 python benchmarks/synthpose_side_by_side.py --out runs/side_by_side

Both models train through ``locllm train`` on the same 1,800 SynthPose images (easy, 64 px, one
person), the same crops and augmentation, the same number of steps of batch 16 and up to 5 keypoints
per crop. Two starting points:

- ``random towers``: each model as its SynthPose config builds it (``configs/synthpose/tiny_cpu.yaml``,
  ``configs/synthpose/clip_baseline.yaml``, each with its own learning rate), 5 epochs (560 steps).
- ``pretrained tower``: both models share one frozen image tower (a tiny CLIP vision tower)
  pre-trained on the training crops to find the keypoints' patches (``locllm train`` of a
  ``patch_classifier``, the demo's stand-in for a pretrained DINOv2 or CLIP; in the held-out protocol it
  never sees the held-out types), then train what is theirs at lr 2e-3 for 20 epochs (2,240 steps):
  LocLLM its projector and whole (random) LM, the baseline its head over the frozen random text
  tower.

Two protocols: all 17 keypoints trained, and the paper's novel-keypoint protocol (right elbow, left
wrist, left knee and right ankle never asked in training, scored on their own). Every model is
scored by ``locllm eval`` on the 200 validation persons with ground-truth boxes; the floor is the
image-blind mean pose (each keypoint's mean position in the crop over the training crops, the same
answer for every person). Writes ``results.json`` and a Markdown table into ``--out`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from transformers import CLIPModel, CLIPVisionModel

from locllm.evaluation.coco import evaluate_coco_keypoints
from locllm.evaluation.pck import pck
from locllm.keypoints import COCO_KEYPOINTS, PAPER_HELD_OUT
from locllm.models.configuration_clip_baseline import clip_baseline_config
from locllm.models.image_processing_locllm import LocLLMImageProcessor
from locllm.prompts.char_tokenizer import build_char_tokenizer
from locllm.training.checkpoint import latest_checkpoint
from locllm.training.vision_pretrain import tower_weights

REPO = Path(__file__).resolve().parent.parent
MODELS = {"LocLLM": "configs/synthpose/tiny_cpu.yaml", "CLIP baseline": "configs/synthpose/clip_baseline.yaml"}
PROTOCOLS = {"all 17 trained": [], "4 held out": list(PAPER_HELD_OUT)}
STARTS = ("random towers", "pretrained tower")
CROP_SIZE = 64
TOWER = {"patch_size": 8, "image_size": CROP_SIZE, "hidden_size": 64, "intermediate_size": 256,
         "num_attention_heads": 4, "num_hidden_layers": 2}  # the towers of both SynthPose configs
PRETRAIN_STEPS = 3000
# What each model trains on top of the shared frozen tower (the demo recipe's LocLLM stage).
PRETRAINED_OVERRIDES = {
    "LocLLM": ["model.lora_vision=false", "model.train_vision_base=false", "model.lora_text=false",
               "model.train_text_base=true", "model.lora_dropout=0.0", "optim.lr=2.0e-3"],
    "CLIP baseline": ["model.train_vision_base=false", "optim.lr=2.0e-3"],
}


def locllm(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "locllm", *args], check=True, cwd=REPO)


def crop_frames(annotations: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Centres and sides of the crops the models see (the box padded to a square, not enlarged: both models'
    processors make a box's region so)."""
    regions = LocLLMImageProcessor(image_size=CROP_SIZE).regions([a["bbox"] for a in annotations])
    return regions.centers.astype(np.float64), regions.boxes()[:, 2]


def keypoint_groups(held_out: list[str]) -> dict[str, list[int]]:
    unseen = [COCO_KEYPOINTS.index(n) for n in held_out]
    return {"all": list(range(len(COCO_KEYPOINTS))),
            "seen": [i for i in range(len(COCO_KEYPOINTS)) if i not in unseen], "unseen": unseen}


def scores(val_file: Path, predictions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """COCO AP and PCK@0.1 of the crop side, over all keypoints, the seen ones and the held-out ones.

    ``predictions``: per annotation id, (K, 2) keypoints in image pixels, (K,) scores and (K,) whether
    the answer parsed (PCK counts an unparsed one as a miss; AP scores the stand-in point given)."""
    val = json.loads(val_file.read_text())["annotations"]
    _, sides = crop_frames(val)
    truth = np.array([a["keypoints"] for a in val], dtype=np.float64).reshape(len(val), -1, 3)
    results, answers = [], []
    for annotation in val:
        points, confidence, valid = predictions[annotation["id"]]
        results.append({"image_id": annotation["image_id"], "category_id": 1,
                        "keypoints": np.column_stack([points, confidence]).reshape(-1).tolist(),
                        "score": float(confidence.mean())})
        answers.append(np.where(valid[:, None], points, np.nan))
    answers = np.stack(answers)
    figures = {}
    for group, indices in keypoint_groups(list(PAPER_HELD_OUT)).items():
        counted = np.zeros(truth.shape[:2], dtype=bool)
        counted[:, indices] = truth[:, indices, 2] > 0
        figures[f"AP_{group}"] = evaluate_coco_keypoints(val_file, results, boxes="gt", keypoint_indices=indices)["AP"]
        figures[f"PCK@0.1_{group}"] = pck(answers, truth[..., :2], counted, sides, (0.1,))["pck@0.1"]
    return figures


def mean_pose_floor(data: Path) -> dict:
    """The image-blind answer: each keypoint at its mean position in the training crops, for everyone."""
    train = json.loads((data / "annotations/train.json").read_text())["annotations"]
    centers, sides = crop_frames(train)
    points = np.array([a["keypoints"] for a in train], dtype=np.float64).reshape(len(train), -1, 3)
    labelled = points[..., 2:] > 0
    in_crop = (points[..., :2] - centers[:, None]) / sides[:, None, None]
    mean = (in_crop * labelled).sum(axis=0) / labelled.sum(axis=0)  # (K, 2)
    val_file = data / "annotations/val.json"
    val = json.loads(val_file.read_text())["annotations"]
    centers, sides = crop_frames(val)
    everywhere = np.ones(len(mean))
    return scores(val_file, {a["id"]: (c + mean * side, everywhere, everywhere > 0)
                             for a, c, side in zip(val, centers, sides, strict=True)})


def pretrained_tower(out: Path, data: Path, held_out: list[str]) -> Path:
    """A CLIP folder (tokenizer included) whose image tower learnt on the training crops where the
    keypoints not held out lie (``locllm train`` of a ``patch_classifier``, the held-out types excluded from
    its targets); its text tower is random. Both models of the pretrained setting load it."""
    folder = out / ("tower-" + ("held_out" if held_out else "all"))
    if (folder / "config.json").exists():
        return folder
    run = folder.with_name(folder.name + "-patch_classifier")
    config = {
        "output_dir": str(run), "seed": 0,
        "model": {"type": "patch_classifier", "vision_model_type": "clip_vision_model", "image_size": CROP_SIZE,
                  "vision": {k: v for k, v in TOWER.items() if k != "image_size"},
                  "num_keypoints": len(COCO_KEYPOINTS)},
        "data": {"datasets": [{"type": "coco", "annotation_file": str(data / "annotations/train.json"),
                               "image_root": str(data / "images")}],
                 "exclude_keypoints": held_out, "crop_size": CROP_SIZE,
                 "augmentation": {"flip_prob": 0.0, "scale_sigma": 0.0, "rotation_prob": 0.0}},
        "optim": {"lr": 1.0e-3, "weight_decay": 0.05, "warmup_steps": 0, "schedule": "cosine",
                  "max_steps": PRETRAIN_STEPS, "batch_size": 64, "micro_batch_size": 64},
        "checkpoint": {"every_steps": PRETRAIN_STEPS, "keep_last": 1},
        "logging": {"tensorboard": False},
    }
    config_file = run.with_suffix(".yaml")
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(config))
    locllm("train", str(config_file))
    tokenizer = build_char_tokenizer()
    clip_config = clip_baseline_config("tiny", tokenizer=tokenizer).clip_config
    for key, value in TOWER.items():
        setattr(clip_config.vision_config, key, value)
    tower = CLIPVisionModel(clip_config.vision_config)
    tower.load_state_dict(tower_weights(latest_checkpoint(run)))
    clip = CLIPModel(clip_config)
    clip.vision_model.load_state_dict(tower.state_dict())
    clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train(out: Path, data: Path, model: str, protocol: str, start: str) -> dict:
    run = out / f"{model}-{protocol}-{start}".replace(" ", "_")
    held_out = PROTOCOLS[protocol]
    overrides = [f"output_dir={run}",
                 f"data.datasets=[{{type: coco, annotation_file: {data}/annotations/train.json, "
                 f"image_root: {data}/images}}]",
                 f"data.exclude_keypoints=[{', '.join(held_out)}]"]
    if start == "random towers":
        overrides.append("optim.epochs=5")
    else:
        tower = pretrained_tower(out, data, held_out)
        path_key = "model.vision_model_name_or_path" if model == "LocLLM" else "model.clip_baseline.clip_model_name_or_path"
        overrides += ["optim.epochs=20", f"{path_key}={tower}", *PRETRAINED_OVERRIDES[model]]
    began = time.perf_counter()
    locllm("train", MODELS[model], *[arg for o in overrides for arg in ("--set", o)])
    return {"model": model, "protocol": protocol, "start": start, "train_minutes": (time.perf_counter() - began) / 60,
            "checkpoint": str(latest_checkpoint(run))}


def evaluate(data: Path, run: dict) -> dict:
    """``locllm eval`` of a trained run; AP as it reports it, and PCK from its predictions file."""
    folder = Path(run["checkpoint"]).parent.parent
    report, predictions_file = folder / "eval.json", folder / "predictions.jsonl"
    val_file = data / "annotations/val.json"
    locllm("eval", "--checkpoint", run["checkpoint"], "--dataset", "coco", "--no-progress", "--ann", str(val_file),
           "--images", str(data / "images"), "--predictions", str(predictions_file), "--overwrite-predictions",
           "--json", str(report))
    predictions = {}
    for line in predictions_file.read_text().splitlines():
        record = json.loads(line)
        if "keypoints" in record:  # not the header line
            predictions[record["annotation_id"]] = (np.asarray(record["keypoints"], dtype=np.float64)[:, :2],
                                                    np.asarray(record["scores"], dtype=np.float64),
                                                    np.asarray(record["valid"], dtype=bool))
    figures = scores(val_file, predictions)
    reported = json.loads(report.read_text())["metrics"]["AP"]
    if not np.isclose(reported, figures["AP_all"], atol=1e-6):
        raise RuntimeError(f"{report}: AP {reported} but {figures['AP_all']} recomputed from the predictions")
    return figures


def table(rows: list[dict], floor: dict) -> str:
    groups = ("all", "seen", "unseen")
    lines = ["| start | model | trained on | AP all / seen 13 / held-out 4 | PCK@0.1 all / seen 13 / held-out 4 "
             "| training (min) |", "|---|---|---|---|---|---|"]

    def cells(figures):
        return (" / ".join(f"{100 * figures[f'AP_{g}']:.1f}" for g in groups) + " | "
                + " / ".join(f"{figures[f'PCK@0.1_{g}']:.3f}" for g in groups))

    lines.append(f"| | image-blind mean pose (floor) | all 17 | {cells(floor)} | 0 |")
    for row in sorted(rows, key=lambda r: (STARTS.index(r["start"]), list(PROTOCOLS).index(r["protocol"]))):
        lines.append(f"| {row['start']} | {row['model']} | {row['protocol']} | {cells(row['figures'])} | "
                     f"{row['train_minutes']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/side_by_side", type=Path)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS)
    args = parser.parse_args()
    out = args.out.resolve()
    data = out / "data"
    if not (data / "annotations/val.json").exists():
        locllm("synth", "--out", str(data), "--num-images", "2000", "--size", "64", "--persons", "1",
               "--difficulty", "easy")
    results_file = out / "results.json"
    runs = json.loads(results_file.read_text())["runs"] if results_file.exists() else []
    floor = mean_pose_floor(data)
    for start in args.starts:
        for model in args.models:
            for protocol in PROTOCOLS:
                if any((r["model"], r["protocol"], r["start"]) == (model, protocol, start) for r in runs):
                    continue  # trained by an earlier call
                runs.append(train(out, data, model, protocol, start))
                results_file.write_text(json.dumps({"runs": runs}, indent=2))
    for run in runs:
        run["figures"] = evaluate(data, run)
    results_file.write_text(json.dumps({"mean_pose_floor": floor, "runs": runs,
                                        "threads": os.environ.get("OMP_NUM_THREADS")}, indent=2))
    text = table(runs, floor)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
