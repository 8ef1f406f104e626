"""Fast mode's decoding options on held-out SynthPose scenes: AP, PCK, ECE and ms/person, alone and combined.

    PYTHONPATH=. python benchmarks/decoding_options.py --fit data/s13 \\
        --sets s12=data/s12 s11=data/s11 \\
        --json benchmarks/results/decoding_options.json --diagram docs/reliability.png

Every folder is a ``locllm synth`` output (its ``annotations/train.json`` and ``images``); the demo checkpoint
was trained on seed 0, so every other seed is unseen. ``--fit`` fits the checkpoint's confidence calibration
on its folder (raw confidence -> within PCK@0.1, isotonic) and saves it as ``calibration.json`` beside the
weights, as ``locllm calibrate CHECKPOINT --data FOLDER`` does (an existing one only with ``--overwrite``); the
measured sets must be other scenes. The model's answers are computed once per crop and pass
(original, mirrored) and shared by the rows (a cache around ``fast_decode``); ms/person is timed apart,
uncached, on the first ``--timing-persons`` persons of the first set (their images read beforehand; cutting
the crops is timed with the answers, as the evaluation loop does it).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time
from pathlib import Path

import torch

from locllm.apis.calibration import CalibrationScenes, calibrate
from locllm.apis.demo import demo_checkpoint
from locllm.data.images import read_image_rgb
from locllm.engine import Localizer, text_answerer
from locllm.engine.refinement import DecodingOptions
from locllm.evaluation.calibration import (
    draw_reliability_diagram,
    expected_calibration_error,
    scores_and_hits,
)
from locllm.evaluation.loop import ask_task, crop_regions

ROWS = {
    "greedy (paper)": DecodingOptions(),
    "subdigit": DecodingOptions(decode="subdigit"),
    "beam": DecodingOptions(decode="beam"),
    "flip": DecodingOptions(flip=True),
    "calibrated score": DecodingOptions(score="calibrated"),
    "subdigit + calibrated": DecodingOptions(decode="subdigit", score="calibrated"),
    "subdigit + flip": DecodingOptions(decode="subdigit", flip=True),
    "subdigit + flip + calibrated": DecodingOptions(decode="subdigit", flip=True, score="calibrated"),
    "beam + calibrated": DecodingOptions(decode="beam", score="calibrated"),
}


def cache_model_answers() -> dict:
    """Memoize ``fast_decode`` by image features and queries: the option rows share the model's answers."""
    answers: dict = {}
    original = text_answerer.fast_decode

    def cached(model, image_features, prefix_ids, query_ids, *args):
        key = hashlib.sha1(image_features.float().numpy().tobytes() + repr((query_ids, args[-1])).encode()).hexdigest()
        if key not in answers:
            answers[key] = original(model, image_features, prefix_ids, query_ids, *args)
        return answers[key]

    text_answerer.fast_decode = cached
    return {"original": original, "answers": answers}


def run_rows(localizer: Localizer, scenes: CalibrationScenes) -> tuple[dict, dict]:
    table, curves = {}, {}
    for name, options in ROWS.items():
        localizer.answerer.options = options
        # the loop's records (run_evaluation returns only metrics): the same persons, crops and answers
        records = ask_task(localizer, scenes.coco, mode="fast", batch_size=8)
        metrics = scenes.coco.metrics(records)
        pck = scenes.pck.metrics(records)
        scores, hit = scores_and_hits(records, scenes.pck)
        table[name] = {"options": options.to_dict(), "AP": metrics["AP"], "AP50": metrics["AP50"],
                       "AP75": metrics["AP75"], "PCK@0.05": pck["pck@0.05"], "PCK@0.1": pck["pck@0.1"],
                       "ECE": expected_calibration_error(scores, hit)}
        curves[name] = (scores, hit)
        print(f"  {name:30s} " + " ".join(f"{k} {v:.4f}" for k, v in table[name].items() if k != "options"), flush=True)
    return table, curves


def time_rows(localizer: Localizer, scenes: CalibrationScenes, persons: int, cache: dict, rounds: int) -> dict:
    """Uncached ms/person per row on the first ``persons`` persons (batches of 8, after a warm-up on the first
    image's persons): the fastest of ``rounds`` rounds, the rows interleaved, so that a busy shared machine
    disturbs them alike."""
    text_answerer.fast_decode = cache["original"]
    images, regions = [], []  # the persons of one image are consecutive
    for file_name, items in itertools.groupby(scenes.coco.items[:persons], key=lambda item: item.file_name):
        images.append(read_image_rgb(scenes.coco.image_root / file_name))
        regions.append(crop_regions(list(items)))
    localizer.localize_many(images[:1], regions[:1], scenes.coco.keypoints)
    timing = {name: float("inf") for name in ROWS}
    for _ in range(rounds):
        for name, options in ROWS.items():
            localizer.answerer.options = options
            start = time.perf_counter()
            localizer.localize_many(images, regions, scenes.coco.keypoints)
            timing[name] = min(timing[name], round(1000 * (time.perf_counter() - start) / sum(map(len, regions)), 1))
    for name, ms in timing.items():
        print(f"  {name:30s} {ms} ms/person", flush=True)
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped demo checkpoint")
    parser.add_argument("--fit", metavar="FOLDER", help="fit and save the checkpoint's calibration on these scenes")
    parser.add_argument("--fit-decode", default="subdigit")
    parser.add_argument("--overwrite", action="store_true", help="with --fit: replace the checkpoint's calibration.json")
    parser.add_argument("--sets", nargs="+", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--timing-persons", type=int, default=48)
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--timing-only", action="store_true", help="time the rows again into the --json file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/decoding_options.json")
    parser.add_argument("--diagram", default="docs/reliability.png")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint or demo_checkpoint())
    result: dict = {"checkpoint": str(checkpoint), "machine": f"CPU, torch threads {args.threads}", "sets": {}}
    if args.fit and not args.timing_only:  # before the checkpoint is loaded: it reads the calibration it replaces
        print(f"fitting the calibration on {args.fit}", flush=True)
        calibration, path = calibrate(checkpoint, args.fit, decode=args.fit_decode, device="cpu",
                                      overwrite=args.overwrite)
        print(f"  wrote {path} ({len(calibration.raw)} knots)", flush=True)
        result["calibration"] = calibration.about
    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    cache = cache_model_answers()
    if args.timing_only:
        result = json.loads(Path(args.json).read_text())
        result["ms_per_person"] = time_rows(localizer, CalibrationScenes(args.sets[0].split("=", 1)[1]),
                                            args.timing_persons, cache, args.timing_rounds)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        return
    diagram_curves = {}
    for entry in args.sets:
        name, folder = entry.split("=", 1)
        scenes = CalibrationScenes(folder)
        print(f"{name}: {scenes.describe}", flush=True)
        table, curves = run_rows(localizer, scenes)
        result["sets"][name] = {**scenes.describe, "rows": table}
        if not diagram_curves:
            diagram_curves = {"mean max prob (paper)": curves["greedy (paper)"],
                              "calibrated (subdigit)": curves["subdigit + calibrated"]}
            diagram_title = f"demo checkpoint, {scenes.describe['scenes']} SynthPose scenes ({name})"
    first = CalibrationScenes(args.sets[0].split("=", 1)[1])
    print(f"timing on {args.timing_persons} persons", flush=True)
    result["ms_per_person"] = time_rows(localizer, first, args.timing_persons, cache, args.timing_rounds)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json} and {draw_reliability_diagram(diagram_curves, args.diagram, diagram_title)}")


if __name__ == "__main__":
    main()
