"""``locllm demo``: the embedded default, end to end, with no data and no weights to download.

Renders held-out SynthPose images, localizes the 17 COCO keypoints and one keypoint the model is
given only as a description (the pelvis: SynthPose knows where it is, the demo model never trained
on it), prints PCK against the ground truth next to the time per person, and writes the pictures.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from ..data.synth import render_scene
from ..keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS, Keypoint, KeypointSet
from ..viz import draw_keypoints

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo"
NOVEL = EXTRA_KEYPOINTS[EXTRA_KEYPOINTS.index("pelvis")]
DEMO_SEED = 20261126  # held out: the demo checkpoint's training and validation use other seeds


def demo_checkpoint() -> Path:
    """The checkpoint shipped inside the package."""
    if not (DEMO_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(
            f"the demo checkpoint is missing from {DEMO_CHECKPOINT}; rebuild it with "
            "`python -m locllm.training.demo_recipe --out locllm/assets/demo` or pass --checkpoint"
        )
    return DEMO_CHECKPOINT


def pck(predicted: np.ndarray, truth: np.ndarray, visible: np.ndarray, box_size: float,
        threshold: float) -> tuple[int, int]:
    """Hits and count of visible keypoints within ``threshold`` x ``box_size`` pixels."""
    errors = np.linalg.norm(predicted[visible] - truth[visible], axis=1)
    return int(np.sum(np.nan_to_num(errors, nan=np.inf) <= threshold * box_size)), int(visible.sum())


def run_demo(out_dir: str | Path, checkpoint: str | Path | None = None, num_images: int = 4,
             image_size: int = 192, persons: int = 2, mode: str = "fast", device: str | None = None) -> dict:
    from .localizer import Localizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    localizer = Localizer.from_pretrained(checkpoint or demo_checkpoint(), device=device)
    # The novel keypoint travels as a plain (name, description) pair: nothing but the words says what it is.
    novel = Keypoint(NOVEL.name, NOVEL.description)
    asked = KeypointSet("coco+novel", COCO_KEYPOINTS.keypoints + (novel,), COCO_KEYPOINTS.skeleton)
    labels = [""] * len(COCO_KEYPOINTS) + [novel.name]
    rng = np.random.default_rng(DEMO_SEED)
    hits = {"coco@0.1": [0, 0], "coco@0.05": [0, 0], f"{novel.name}@0.1": [0, 0]}
    seconds, people_done, pictures = 0.0, 0, []
    localizer.localize(np.zeros((image_size, image_size, 3), np.uint8), None, ["nose"], mode=mode)  # warm-up
    for n in range(num_images):
        image, people = render_scene(rng, size=image_size, num_persons=persons, difficulty="easy")
        boxes = np.array([p["bbox"] for p in people], dtype=np.float64)
        start = time.perf_counter()
        results = localizer.localize(image, boxes, asked, mode=mode)
        seconds += time.perf_counter() - start
        people_done += len(results)
        picture = image
        for truth, result in zip(people, results, strict=True):
            box_size = float(max(truth["bbox"][2], truth["bbox"][3]))
            coco_truth = np.asarray(truth["keypoints"], dtype=np.float64)
            visible = coco_truth[:, 2] > 0
            for threshold in (0.1, 0.05):
                h, c = pck(result.keypoints[:17, :2], coco_truth[:, :2], visible, box_size, threshold)
                hits[f"coco@{threshold}"][0] += h
                hits[f"coco@{threshold}"][1] += c
            novel_truth = np.asarray(truth["extra_keypoints"], dtype=np.float64)[EXTRA_KEYPOINTS.index(novel.name)]
            h, c = pck(result.keypoints[17:, :2], novel_truth[None, :2], novel_truth[None, 2] > 0, box_size, 0.1)
            hits[f"{novel.name}@0.1"][0] += h
            hits[f"{novel.name}@0.1"][1] += c
            picture = draw_keypoints(picture, result.keypoints[:, :2], asked, visible=result.valid, labels=labels)
        path = out_dir / f"demo_{n:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(cv2.resize(picture, None, fx=2, fy=2), cv2.COLOR_RGB2BGR))
        pictures.append(str(path))
    return {
        "checkpoint": str(checkpoint or demo_checkpoint()), "mode": mode, "images": num_images,
        "persons": people_done,
        "pck": {name: (h / c if c else None) for name, (h, c) in hits.items()},
        "keypoints_counted": {name: c for name, (_, c) in hits.items()},
        "ms_per_person": 1000 * seconds / max(1, people_done),
        "pictures": pictures,
    }
