"""Fast mode's decoding options on held-out SynthPose scenes: AP, PCK, ECE and ms/person, alone and combined.

    PYTHONPATH=. python benchmarks/decoding_options.py --fit data/s13 \\
        --sets s12=data/s12 s11=data/s11 \\
        --json benchmarks/results/decoding_options.json --diagram docs/reliability.png

Every folder is a ``locllm synth`` output (its ``annotations/train.json`` and ``images``); the demo checkpoint
was trained on seed 0, so every other seed is unseen. ``--fit`` fits the checkpoint's confidence calibration
on its folder (raw confidence -> within PCK@0.1, isotonic) and saves it as ``calibration.json`` beside the
weights; the measured sets must be other scenes. The model's answers are computed once per crop and pass
(original, mirrored) and shared by the rows (a cache around ``fast_decode``); ms/person is timed apart,
uncached, on the first ``--timing-persons`` persons of the first set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from locllm.apis.demo import demo_checkpoint
from locllm.data.geometry import crop_image
from locllm.data.images import read_image_rgb
from locllm.engine import Localizer, text_answerer
from locllm.engine.calibration import Calibration
from locllm.engine.refinement import DecodingOptions
from locllm.evaluation.calibration import draw_reliability_diagram, expected_calibration_error
from locllm.evaluation.tasks import CustomTask, asked_keypoints, build_task
from locllm.evaluation.tasks.base import predicted_points

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
IDENTITY = Calibration((0.0, 1.0), (0.0, 1.0))  # score="calibrated" with it reports the raw confidence


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


class Scenes:
    """One SynthPose folder: its COCO task (AP) and the same persons as a custom task (PCK of the crop side)."""

    def __init__(self, folder: str):
        ann, images = Path(folder) / "annotations" / "train.json", Path(folder) / "images"
        self.coco = build_task("coco", ann, images)
        self.pck = CustomTask(ann, images, keypoints=asked_keypoints("coco"))
        if [i.image_id for i in self.coco.items] != [i.image_id for i in self.pck.items]:
            raise ValueError(f"{folder}: the COCO and PCK tasks list different persons")
        self.describe = {"folder": str(folder), "scenes": len({i.image_id for i in self.coco.items}),
                         "persons": len(self.coco.items)}

    def hits(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Labelled keypoints' (scores, within PCK@0.1) over all records, flattened."""
        points = predicted_points(records)[..., :2]
        distance = np.linalg.norm(points - self.pck.truth, axis=-1) / self.pck.crop_sides[:, None]
        scores = np.array([r["scores"] for r in records])
        return scores[self.pck.labelled], distance[self.pck.labelled] <= 0.1


def run_rows(localizer: Localizer, scenes: Scenes) -> tuple[dict, dict]:
    from locllm.evaluation import loop

    table, curves = {}, {}
    for name, options in ROWS.items():
        localizer.answerer.options = options
        # the loop's records (run_evaluation returns only metrics): the same persons, crops and answers
        records = loop._ask(localizer, scenes.coco, scenes.coco.items, "fast", int(localizer.config.image_size), 8,
                            None, False)
        metrics = scenes.coco.metrics(records)
        pck = scenes.pck.metrics(records)
        scores, hit = scenes.hits(records)
        table[name] = {"options": options.to_dict(), "AP": metrics["AP"], "AP50": metrics["AP50"],
                       "AP75": metrics["AP75"], "PCK@0.05": pck["pck@0.05"], "PCK@0.1": pck["pck@0.1"],
                       "ECE": expected_calibration_error(scores, hit)}
        curves[name] = (scores, hit)
        print(f"  {name:30s} " + " ".join(f"{k} {v:.4f}" for k, v in table[name].items() if k != "options"), flush=True)
    return table, curves


def fit_calibration(localizer: Localizer, folder: str, decode: str) -> Calibration:
    from locllm.evaluation import loop

    scenes = Scenes(folder)
    localizer.answerer.options, localizer.answerer.calibration = DecodingOptions(decode=decode, score="calibrated"), IDENTITY
    records = loop._ask(localizer, scenes.coco, scenes.coco.items, "fast", int(localizer.config.image_size), 8, None,
                        False)
    raw, hit = scenes.hits(records)
    about = {"feature": "first-digit mass of the greedy digit and its neighbours, x times y",
             "target": "within PCK@0.1 of the crop side", "decode": decode, **scenes.describe}
    return Calibration.fit(raw, hit, about)


def time_rows(localizer: Localizer, scenes: Scenes, persons: int, cache: dict, rounds: int) -> dict:
    """Uncached ms/person per row on the first ``persons`` persons (batches of 8, after one warm-up batch): the
    fastest of ``rounds`` rounds, the rows interleaved, so that a busy shared machine disturbs them alike."""
    text_answerer.fast_decode = cache["original"]
    size = int(localizer.config.image_size)
    crops = []
    for item in scenes.coco.items[:persons]:
        image = read_image_rgb(scenes.coco.image_root / item.file_name)
        crops.append(crop_image(image, item.center, item.scale, 0.0, size, pixel_std=item.pixel_std))
    crops = np.stack(crops)
    localizer.localize_crops(crops[:8], scenes.coco.keypoints)
    timing = {name: float("inf") for name in ROWS}
    for _ in range(rounds):
        for name, options in ROWS.items():
            localizer.answerer.options = options
            start = time.perf_counter()
            localizer.localize_crops(crops, scenes.coco.keypoints)
            timing[name] = min(timing[name], round(1000 * (time.perf_counter() - start) / len(crops), 1))
    for name, ms in timing.items():
        print(f"  {name:30s} {ms} ms/person", flush=True)
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped demo checkpoint")
    parser.add_argument("--fit", metavar="FOLDER", help="fit and save the checkpoint's calibration on these scenes")
    parser.add_argument("--fit-decode", default="subdigit")
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
    localizer = Localizer.from_pretrained(checkpoint, device="cpu")
    cache = cache_model_answers()
    result: dict = {"checkpoint": str(checkpoint), "machine": f"CPU, torch threads {args.threads}", "sets": {}}
    if args.timing_only:
        result = json.loads(Path(args.json).read_text())
        result["ms_per_person"] = time_rows(localizer, Scenes(args.sets[0].split("=", 1)[1]), args.timing_persons,
                                            cache, args.timing_rounds)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        return
    if args.fit:
        print(f"fitting the calibration on {args.fit}", flush=True)
        calibration = fit_calibration(localizer, args.fit, args.fit_decode)
        print(f"  wrote {calibration.save(checkpoint)} ({len(calibration.raw)} knots)", flush=True)
        result["calibration"] = calibration.about
    localizer.answerer.calibration = Calibration.load(checkpoint)
    diagram_curves = {}
    for entry in args.sets:
        name, folder = entry.split("=", 1)
        scenes = Scenes(folder)
        print(f"{name}: {scenes.describe}", flush=True)
        table, curves = run_rows(localizer, scenes)
        result["sets"][name] = {**scenes.describe, "rows": table}
        if not diagram_curves:
            diagram_curves = {"mean max prob (paper)": curves["greedy (paper)"],
                              "calibrated (subdigit)": curves["subdigit + calibrated"]}
            diagram_title = f"demo checkpoint, {scenes.describe['scenes']} SynthPose scenes ({name})"
    first = Scenes(args.sets[0].split("=", 1)[1])
    print(f"timing on {args.timing_persons} persons", flush=True)
    result["ms_per_person"] = time_rows(localizer, first, args.timing_persons, cache, args.timing_rounds)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json} and {draw_reliability_diagram(diagram_curves, args.diagram, diagram_title)}")


if __name__ == "__main__":
    main()
