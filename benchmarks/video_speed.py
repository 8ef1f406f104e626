"""ms/frame of ``locllm predict`` on a video, with the detector on every frame and with tracking by keypoints.

    OMP_NUM_THREADS=1 python benchmarks/video_speed.py --frames 40 --detect-every 1 5 --json video_speed.json

The clip: a 3-person SynthPose scene (256 px) whose figures sway left and right (up to 12 px), as mp4; the shipped
demo checkpoint answers the 17 COCO keypoints. The detector finds the scene's known boxes; with
``--detector-cost yolos-tiny`` it also runs, on every call, a random-weight YOLOS with yolos-tiny's
architecture (6.5M parameters) on the frame at 512 px, so that each detector run costs what a small real
detector costs (no detector weights can be downloaded here).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from locllm.apis.demo import demo_checkpoint
from locllm.apis.video import localize_video
from locllm.data.synth import render_scene
from locllm.engine import Localizer

SWAY = 12  # pixels; the figures stay in the image, so every id can last the whole clip


def sway(t: int) -> int:
    return round(SWAY * np.sin(t / 6))


class KnownBoxes:
    """Finds the scene's boxes moved with the frame (recognised by the figures' shift); optionally pays
    for a forward pass of ``model`` on the frame."""

    def __init__(self, frames, boxes, model=None):
        self.frames, self.boxes, self.model = frames, boxes, model

    def detect(self, image):
        if self.model is not None:
            pixels = cv2.resize(image, (512, 512)).astype(np.float32) / 255
            with torch.no_grad():
                self.model(pixel_values=torch.from_numpy(pixels).permute(2, 0, 1)[None])
        t = int(np.argmin([np.abs(image[::8, ::8].astype(int) - f[::8, ::8]).mean() for f in self.frames]))
        return self.boxes + [sway(t), 0, 0, 0], np.ones(len(self.boxes))


def yolos_tiny():
    from transformers import YolosConfig, YolosForObjectDetection

    config = YolosConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                         image_size=[512, 512], num_labels=91)
    return YolosForObjectDetection(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--detector-cost", choices=("none", "yolos-tiny"), nargs="+", default=["none", "yolos-tiny"])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting, interleaved; the fastest counts")
    parser.add_argument("--json")
    args = parser.parse_args()

    image, persons = render_scene(np.random.default_rng(3), size=256, num_persons=3, difficulty="easy")
    boxes = np.array([p["bbox"] for p in persons], dtype=np.float64)
    localizer = Localizer.from_pretrained(demo_checkpoint(), device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "walk.mp4"
        writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (256, 256))
        frames = [np.roll(image, sway(t), axis=1) for t in range(args.frames)]
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        for cost in args.detector_cost:
            detector = KnownBoxes(frames, boxes, yolos_tiny() if cost == "yolos-tiny" else None)
            start = time.perf_counter()
            detector.detect(frames[0])
            detect_ms = 1000 * (time.perf_counter() - start)
            runs = {every: [] for every in args.detect_every}
            for _ in range(args.repeats):  # interleaved, so that a busy spell of a shared machine hits both
                for every in args.detect_every:
                    runs[every].append(localize_video(localizer, clip, Path(folder) / "out.mp4",
                                                      Path(folder) / "out.jsonl", detector=detector,
                                                      detect_every=every, progress=False))
            for every, summaries in runs.items():
                rows.append({"detector_cost": cost, "detector_ms": round(detect_ms, 1), "detect_every": every,
                             "frames": summaries[0].frames, "persons": summaries[0].persons,
                             "ids": summaries[0].tracks,
                             "ms_per_frame": [round(s.ms_per_frame, 1) for s in summaries]})
                print(rows[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"torch_threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
