"""Held-out PCK of a demo checkpoint on fresh SynthPose demo scenes, next to the image-blind mean-pose baseline."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from ..data.synth.demo import DEFAULT_DIFFICULTY, DEMO_KEYPOINTS, render_person
from ..keypoints import COCO_KEYPOINTS
from .metrics import PCKMetric

if TYPE_CHECKING:
    from ..engine import Localizer

REPORT_GROUPS = {  # what the held-out report lists, and which keypoints of DEMO_KEYPOINTS each holds
    "coco": list(range(len(COCO_KEYPOINTS))),
    "neck": [DEMO_KEYPOINTS.index("neck")],
    "pelvis": [DEMO_KEYPOINTS.index("pelvis")],
}


def evaluate_pck(localizer: Localizer, num_images: int, seed: int, mean_pose: np.ndarray,
                 difficulty: str = DEFAULT_DIFFICULTY) -> dict:
    """Held-out PCK of ``localizer`` on fresh demo scenes, next to the mean-pose baseline on the same scenes.

    Each scene's person is localized through the whole inference path (box -> crop -> fast decoding ->
    image pixels) for every keypoint of ``DEMO_KEYPOINTS``; the baseline answers ``mean_pose`` (K, 2), as
    fractions of the crop, for every scene. Distances are divided by the crop side in image pixels.

    Returns:
        ``{"num_images", "seed", "normalizer", "malformed_answers", "seconds", "coco" | "neck" | "pelvis":
        {"pck@0.1", "pck@0.05", "baseline_pck@0.1", "baseline_pck@0.05", "num_keypoints"}}``; ``coco``
        also has ``per_keypoint_pck@0.1``. Scenes are of the given SynthPose ``difficulty``.
    """
    started = time.perf_counter()
    processor = localizer.processor
    predicted, baseline, truth, labelled, crop_sides = [], [], [], [], []
    malformed = 0
    for scene_seed in np.random.SeedSequence(seed).spawn(num_images):
        person = render_person(scene_seed, difficulty)
        (answer,) = localizer.localize(person.image, boxes=[person.box], keypoints=DEMO_KEYPOINTS)
        region = processor.regions([person.box])
        predicted.append(answer.keypoints[:, :2])
        malformed += int((~answer.valid).sum())
        baseline.append(processor.post_process(mean_pose[None], region)[0])
        truth.append(person.points)
        labelled.append(person.labelled)
        crop_sides.append(float(region.boxes()[0, 2]))
    predicted, baseline, truth, labelled = (np.stack(a) for a in (predicted, baseline, truth, labelled))
    report = {"num_images": num_images, "seed": seed, "difficulty": difficulty, "malformed_answers": malformed,
              "normalizer": "the crop side in image pixels (the person box padded to a square)"}
    for group, columns in REPORT_GROUPS.items():
        metric = PCKMetric([DEMO_KEYPOINTS[i].name for i in columns], truth=truth[:, columns],
                           labelled=labelled[:, columns], normalizers=crop_sides, mean_pose=baseline[:, columns])
        scores = metric.compute(predicted[:, columns])
        blind = scores["mean_pose_baseline"]
        report[group] = {"pck@0.1": scores["pck@0.1"], "pck@0.05": scores["pck@0.05"],
                         "baseline_pck@0.1": blind["pck@0.1"], "baseline_pck@0.05": blind["pck@0.05"],
                         "num_keypoints": scores["num_keypoints"]}
        if group == "coco":
            report[group]["per_keypoint_pck@0.1"] = scores["per_keypoint"]["pck@0.1"]
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
