"""The demo checkpoint: a tiny LocLLM trained on SynthPose by one reproducible command.

    # the shipped checkpoint's recipe (about 6 min on one H100/H200, data and evaluation included)
    python -m locllm.cli.demo_recipe --out locllm/assets/demo --minutes 4.5
    # about the same run counted in steps (the defaults: 500 + 7,000), the same steps on any machine
    python -m locllm.cli.demo_recipe --out locllm/assets/demo
    # a CPU smoke test of every stage (minutes; far from the bar)
    python -m locllm.cli.demo_recipe --out /tmp/demo --runs /tmp/demo-runs --minutes 2 --train-images 2000

The two training stages are plain ``locllm train`` runs of ``configs/synthpose/demo_vision.yaml`` and
``configs/synthpose/demo_locllm.yaml`` (into ``--runs``; this command's options become their ``--set``
overrides); this command then copies the last checkpoint's model into ``--out``, writes the setting
file (``synthpose_demo.json``: difficulty, mean training pose) that ``locllm demo`` reads, the held-out
report and ``TRAINING.md``. It runs on a GPU when one is visible (``CUDA_VISIBLE_DEVICES=`` for the CPU).

What it does, in order:

1. Data: single-figure SynthPose scenes (difficulty "normal" by default: any facing, rolls up to 45
   degrees, some figures cut by the border) rendered at a random size of 64-160 px; the person is cut
   out by its box into a 64 px crop exactly as :class:`~locllm.engine.Localizer` cuts it (top-down,
   box padded to a square, no enlargement). Training scenes come from seed 0, the held-out scenes of
   this run from seed 1 (the test of the shipped checkpoint uses seed 2). On "easy" scenes the
   image-blind mean pose alone already scores PCK@0.1 ~0.67, so "normal" is what shows the model looking.
2. Vision pre-training (:mod:`locllm.training.vision_pretrain`, ``model.type: patch_classifier``): a Dinov2 tower (128-d, 4 layers, patch 8 -> 64
   patch tokens) learns which patch holds each keypoint; its head is dropped and the tower frozen.
   The tower is thus pre-trained on SynthPose itself: the honest stand-in for the paper's DINOv2.
3. LocLLM stage: the projector and a randomly initialized Llama (128-d, 4 layers), trained with
   exactly the paper's objective, next-token cross-entropy on the answer tokens only, on multi-round
   conversations (up to 5 keypoints) with keypoint descriptions (the paper's default prompt), built
   by the training collator of ``locllm train``, on the frozen tower (``model.vision_tower_from``). The LM has no pretraining, so all its weights train
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
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from ..data.synth.demo import (
    CROP_SIZE,
    DEFAULT_DIFFICULTY,
    RENDER_SIZES,
    make_crops,
    mean_pose,
    save_demo_setting,
)
from ..engine import Localizer
from ..evaluation.demo import evaluate_pck
from ..training.config import load_config
from ..training.trainer import TrainResult, train
from .common import write_json
from .demo import REPORT_LABELS, format_report

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "synthpose"
TRAIN_SEED, HELDOUT_SEED = 0, 1
TRAINING_ONLY = ("optimizer.bin", "scheduler.bin", "training_state.json", "train_config.yaml")  # not copied to --out


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} GPU"
    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def stage_overrides(args: argparse.Namespace, workers: int, cache_dir: Path) -> tuple[list[str], list[str]]:
    """The ``--set`` overrides of the two stage configs that this command's options stand for."""
    runs = Path(args.runs)
    common = [f"seed={args.seed}", f"data.datasets.0.num_images={args.train_images}",
              f"data.datasets.0.render_seed={TRAIN_SEED}", f"data.datasets.0.difficulty={args.difficulty}",
              f"data.datasets.0.workers={workers}", f"data.datasets.0.cache_dir={cache_dir}",
              f"optim.batch_size={args.batch_size}", f"optim.micro_batch_size={args.batch_size}",
              "logging.progress_bar=false"]
    vision = [f"output_dir={runs / 'vision'}", f"optim.lr={args.pretrain_lr}", f"optim.max_steps={args.pretrain_steps}"]
    locllm = [f"output_dir={runs / 'locllm'}", f"model.vision_tower_from={runs / 'vision'}", f"optim.lr={args.lr}",
              f"optim.max_steps={args.steps}", f"prompt.max_rounds={args.rounds}"]
    if args.loader_workers is not None:
        locllm.append(f"data.num_workers={args.loader_workers}")
    if args.minutes is not None:
        vision.append(f"optim.max_minutes={args.minutes * args.pretrain_share}")
        locllm.append(f"optim.max_minutes={args.minutes * (1 - args.pretrain_share)}")
    return common + vision, common + locllm


def run(args: argparse.Namespace, command: str) -> dict:
    """Make the demo checkpoint in ``args.out`` as the module docstring describes; return the run's figures."""
    out = Path(args.out)
    workers = args.workers or os.cpu_count() or 1
    cache_dir = Path(args.cache_dir or Path(args.runs) / "crops")
    print(f"{command}\ndevice: {device_name()}")
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]

    crops = make_crops(args.train_images, TRAIN_SEED, args.difficulty, workers, cache_dir)  # both stages read the cache
    data_seconds = time.perf_counter() - started
    print(f"{len(crops)} training crops ({args.difficulty}) in {data_seconds:.0f} s")
    vision_overrides, locllm_overrides = stage_overrides(args, workers, cache_dir)
    pretrain = train(load_config(CONFIGS / "demo_vision.yaml", vision_overrides))
    locllm = train(load_config(CONFIGS / "demo_locllm.yaml", locllm_overrides))
    training_seconds = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    for file in locllm.checkpoint.iterdir():
        if file.name not in TRAINING_ONLY and not file.name.startswith("random_states_"):
            shutil.copy2(file, out / file.name)
    pose = mean_pose(crops)
    save_demo_setting(out, args.difficulty, pose, len(crops))
    localizer = Localizer.from_pretrained(out)
    report = evaluate_pck(localizer, args.heldout_images, HELDOUT_SEED, pose, args.difficulty)
    print(format_report(report))
    model = localizer.model
    summary = {
        "command": command, "device": device_name(), "load_average_at_start": round(load_at_start, 2),
        "difficulty": args.difficulty, "train_images": len(crops), "data_seconds": round(data_seconds, 1),
        "batch_size": args.batch_size, "rounds": args.rounds, "lr": args.lr, "pretrain_lr": args.pretrain_lr,
        "vision_pretraining": stage_figures(pretrain), "locllm_stage": stage_figures(locllm),
        "total_seconds": round(training_seconds, 1), "trainable_parameters": locllm.trainable_parameters,
        "parameters": sum(p.numel() for p in model.parameters()), "vocabulary": len(localizer.processor.tokenizer),
        "checkpoint_bytes": sum(f.stat().st_size for f in out.iterdir() if f.is_file() and f.name != "TRAINING.md"),
        "heldout": report,
    }
    (out / "TRAINING.md").write_text(training_notes(summary))
    passed = report["coco"]["pck@0.1"] >= 0.5
    print(f"COCO PCK@0.1 {report['coco']['pck@0.1']:.3f} {'meets' if passed else 'misses'} the demo's bar of 0.5 "
          f"(mean-pose baseline {report['coco']['baseline_pck@0.1']:.3f}); checkpoint in {out} "
          f"({summary['checkpoint_bytes'] / 1e6:.1f} MB)")
    return summary


def stage_figures(result: TrainResult) -> dict:
    seconds = result.global_step / result.steps_per_second if result.steps_per_second else 0.0
    return {"steps": result.global_step, "seconds": round(seconds, 1), "steps_per_second": round(result.steps_per_second, 3),
            "loss": round(result.loss, 4), "checkpoint": str(result.checkpoint)}


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
- Vision tower: a Dinov2 (128-d, 4 layers, 4 heads, patch 8, 64 patch tokens) **pre-trained on SynthPose itself**, the honest stand-in for the paper's DINOv2: a linear head per keypoint classified which patch holds each keypoint (cross-entropy over the 64 patches, soft bilinear targets); {pre['steps']} steps of {batch} crops, AdamW lr {summary['pretrain_lr']:g}, cosine, {pre['seconds']:.0f} s, final loss {pre['loss']:.3f}. The head was then dropped and the tower frozen.
- LocLLM stage: exactly the paper's objective, next-token cross-entropy on the answer tokens only. The projector and a randomly initialized Llama (128-d, 4 layers, 4 heads) trained in full (the LM has no pretraining, so no LoRA); {stage['steps']} steps of {batch} conversations with up to {summary['rounds']} keypoints each (the paper's multi-round samples) and the keypoint descriptions (the paper's default prompt); AdamW lr {summary['lr']:g}, weight decay 0.05, cosine; {stage['seconds']:.0f} s at {stage['steps_per_second']:.2f} steps/s, final loss {stage['loss']:.3f}.
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

Run the command above: it runs `locllm train configs/synthpose/demo_vision.yaml` and `configs/synthpose/demo_locllm.yaml` with its options as `--set` overrides. A timed run (`--minutes`) anneals its learning rate over wall-clock time, so on another machine it takes another number of steps; `--steps {stage['steps']} --pretrain-steps {pre['steps']}` instead follows the same cosine counted in steps. `pytest -m slow tests/training/test_demo_checkpoint.py` checks the shipped checkpoint on 30 scenes it has never seen (seed 2).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m locllm.cli.demo_recipe", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint folder to write (e.g. locllm/assets/demo)")
    parser.add_argument("--runs", default="runs/synthpose/demo", help="the two stages' output_dirs go here")
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
    parser.add_argument("--seed", type=int, default=0, help="model initialization and data order")
    parser.add_argument("--workers", type=int, help="processes rendering scenes (default: one per CPU)")
    parser.add_argument("--loader-workers", type=int, help="data loader processes of the LocLLM stage (default: the config's)")
    parser.add_argument("--cache-dir", help="keep the rendered training crops here as .npz and reuse them (default: RUNS/crops)")
    parser.add_argument("--json", metavar="PATH", help="also write the run's figures to PATH as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if not CONFIGS.is_dir():  # the stage configs live in the repository, not in an installed wheel
        print(f"demo_recipe: error: {CONFIGS} not found: the demo recipe trains from the repository's "
              "configs/synthpose; run it from a source checkout of locllm", file=sys.stderr)
        return 2
    summary = run(args, command="python -m locllm.cli.demo_recipe " + " ".join(argv))
    write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
