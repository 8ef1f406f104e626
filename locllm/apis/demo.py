"""The shipped demo checkpoint, and the pictures ``locllm demo`` draws with it."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from ..data.outputs import write_picture_atomically
from ..data.synth import render_scene
from ..keypoints import KeypointSet
from ..viz import draw_persons

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo"
ZOOM = 3
PICTURE_SEED = 20261126  # held out: the demo checkpoint was trained and validated on other seeds


def demo_checkpoint() -> Path:
    """The checkpoint shipped inside the package."""
    if not (DEMO_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(
            f"the demo checkpoint is missing from {DEMO_CHECKPOINT}; rebuild it with "
            "`python -m locllm.cli.demo_recipe --out locllm/assets/demo` or pass --checkpoint"
        )
    return DEMO_CHECKPOINT


def write_demo_pictures(localizer, keypoints: KeypointSet, labelled: list[str], out_dir: str | Path,
                        num_pictures: int = 3, image_size: int = 192, persons: int = 2,
                        difficulty: str = "normal", mode: str = "fast") -> dict:
    """Render held-out multi-person SynthPose scenes, localize ``keypoints`` for every person (ground-truth
    boxes) and write the annotated pictures; ``labelled`` names the keypoints drawn with their name.

    Returns ``{"pictures": [paths], "persons": n, "ms_per_person": t}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [kp.name if kp.name in labelled else "" for kp in keypoints]
    rng = np.random.default_rng(PICTURE_SEED)
    pictures, people_done, seconds = [], 0, 0.0
    for n in range(num_pictures):
        image, people = render_scene(rng, size=image_size, num_persons=persons, difficulty=difficulty)
        boxes = np.array([p["bbox"] for p in people], dtype=np.float64)
        start = time.perf_counter()
        results = localizer.localize(image, boxes, keypoints, mode=mode)
        seconds += time.perf_counter() - start
        people_done += len(results)
        # Drawn on an enlarged copy so the markers and labels stay readable on small scenes.
        picture = cv2.resize(image, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_CUBIC)
        picture = draw_persons(picture, results, keypoints, labels=labels, score_text=False,
                               to_picture=lambda points: (points + 0.5) * ZOOM - 0.5)
        path = out_dir / f"demo_{n:02d}.png"
        write_picture_atomically(path, picture)  # a picture that cannot be written is an error, not a silent skip
        pictures.append(str(path))
    return {"pictures": pictures, "persons": people_done, "ms_per_person": 1000 * seconds / max(1, people_done)}
