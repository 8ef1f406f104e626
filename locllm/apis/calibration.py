"""Fit a checkpoint's confidence calibration (``locllm calibrate``): raw keypoint confidence -> the chance of
lying within PCK@0.1, isotonic, on held-out scenes, saved beside the weights and tied to them.

    calibration, path = calibrate("checkpoints/locllm-demo", "data/s13")   # a `locllm synth` folder

The scenes must be ones the checkpoint was not trained on. Every labelled keypoint of every person (ground
truth boxes) is asked with fast decoding read the ``decode`` way; its raw confidence
(:func:`~locllm.codecs.reading.keypoint_confidence`) and whether it lies within 0.1 x the crop side of the
truth are the fit's data. ``score="calibrated"`` then reads that confidence through the saved table.

It sits on both the Localizer and the evaluation's tasks and loop, so above them (``apis/``).
"""

from __future__ import annotations

from pathlib import Path

from ..data.outputs import check_not_replacing
from ..evaluation.calibration import scores_and_hits
from ..evaluation.loop import ask_task
from ..evaluation.tasks import CustomTask, asked_keypoints, build_task
from ..models.calibration import CALIBRATION_FILE, Calibration

RAW_CONFIDENCE = Calibration((0.0, 1.0), (0.0, 1.0))  # score="calibrated" with it reports the raw confidence
ABOUT = {"feature": "first-digit mass of the greedy digit and its neighbours, x times y",
         "target": "within PCK@0.1 of the crop side"}


class CalibrationScenes:
    """A COCO-format folder of scenes (``annotations/train.json`` and ``images/``, as ``locllm synth`` writes):
    its COCO task (AP) and the same persons as a custom task (PCK of the crop side)."""

    def __init__(self, folder: str | Path):
        ann, images = Path(folder) / "annotations" / "train.json", Path(folder) / "images"
        if not ann.is_file() or not images.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder of scenes: it needs annotations/train.json and "
                                    "images/ (what `locllm synth --out` writes)")
        self.coco = build_task("coco", ann, images)
        self.pck = CustomTask(ann, images, keypoints=asked_keypoints("coco"))
        if [i.image_id for i in self.coco.items] != [i.image_id for i in self.pck.items]:
            raise ValueError(f"{folder}: the COCO and PCK tasks list different persons")
        self.describe = {"folder": str(folder), "scenes": len({i.image_id for i in self.coco.items}),
                         "persons": len(self.coco.items)}


def fit_calibration(localizer, scenes: CalibrationScenes, decode: str = "subdigit", batch_size: int = 8,
                    progress: bool = False) -> Calibration:
    """Fit the calibration of ``localizer``'s answers read the ``decode`` way on ``scenes`` (the localizer's
    answerer is left reading raw confidences with those options)."""
    from ..engine.refinement import DecodingOptions

    localizer.answerer.options = DecodingOptions(decode=decode, score="calibrated")
    localizer.answerer.calibration = RAW_CONFIDENCE
    records = ask_task(localizer, scenes.coco, mode="fast", batch_size=batch_size, progress=progress)
    raw, hit = scores_and_hits(records, scenes.pck)
    return Calibration.fit(raw, hit, {**ABOUT, "decode": decode, **scenes.describe})


def calibrate(checkpoint: str | Path, data: str | Path, *, decode: str = "subdigit", batch_size: int = 8,
              device: str | None = None, overwrite: bool = False, progress: bool = False) -> tuple[Calibration, Path]:
    """Fit the calibration of the LocLLM checkpoint folder ``checkpoint`` on the scenes in ``data`` and save it
    as its ``calibration.json``, tied to its weights. An existing calibration is refused before any work
    unless ``overwrite`` (a stale or damaged one included). Returns the calibration as saved (with the
    weights' digest it is tied to) and the file written."""
    from transformers import AutoConfig

    from ..engine import Localizer
    from ..engine.localizer import strategy
    from ..engine.text_answerer import TextAnswerer

    folder = Path(checkpoint)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
    check_not_replacing([folder / CALIBRATION_FILE], overwrite)
    model_type = AutoConfig.from_pretrained(folder).model_type
    if strategy(model_type).answerer_class is not TextAnswerer:
        raise ValueError(f"{folder} is a {model_type} checkpoint: only a LocLLM checkpoint (answers written as "
                         "text) has a confidence calibration")
    scenes = CalibrationScenes(data)
    localizer = Localizer.from_pretrained(folder, device=device, answerer=TextAnswerer())
    calibration = fit_calibration(localizer, scenes, decode, batch_size, progress)
    path = calibration.save(folder)
    return Calibration.load(folder), path


__all__ = ["CalibrationScenes", "RAW_CONFIDENCE", "calibrate", "fit_calibration"]
