"""A data-set prediction file -> a COCO keypoint results file, which pycocotools' ``COCO.loadRes`` reads::

    [{"image_id": int, "category_id": 1, "keypoints": [x1, y1, s1, ..., xK, yK, sK], "score": float,
      "bbox": [x, y, w, h], "box_score": float}, ...]

One entry per answered person, as ``locllm eval`` builds them (``evaluation/tasks/coco.py``): ``score`` is
the mean of the keypoint scores; a keypoint without a valid answer gets score 0 and the place the reference
gives it, its crop's top-left corner; ``bbox`` and ``box_score`` are what the detector-box protocol rescores
with. The file is written as a stream (one person in memory at a time) into a temporary file renamed at the
end, so an interrupted write leaves no half file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.outputs import write_atomically
from ..models.image_processing_locllm import LocLLMImageProcessor

PERSON_CATEGORY = 1


def write_coco_results(predictions: str | Path, out: str | Path) -> Path:
    """Write the COCO results of every person answered in ``predictions`` (a merged prediction file) to ``out``."""

    def write(temporary: Path) -> None:
        with Path(predictions).open(encoding="utf-8") as lines, temporary.open("w", encoding="utf-8") as file:
            crop = json.loads(next(lines))["header"]["crop"]
            image_processor = LocLLMImageProcessor(image_size=crop["image_size"], pixel_std=crop["pixel_std"],
                                                   box_scale_factor=crop["box_scale_factor"])
            file.write("[")
            separator = "\n"
            for line in lines:
                record = json.loads(line)
                for person in record["persons"]:
                    if person["error"] is None:
                        file.write(separator + json.dumps(coco_result(record["image_id"], person, image_processor)))
                        separator = ",\n"
            file.write("\n]\n")

    return write_atomically(out, write)


def coco_result(image_id: int, person: dict, image_processor: LocLLMImageProcessor) -> dict:
    """One person of a prediction line (``PersonKeypoints.to_dict`` and its ``box_score``) as a COCO result;
    ``image_processor``: the crop settings the predictions were made with (the file header's ``crop``), which
    place an unanswered keypoint."""
    corner = None
    keypoints = []
    for answer in person["keypoints"].values():
        if answer["xy"] is None:
            if corner is None:
                corner = [float(v) for v in image_processor.stand_ins(image_processor.regions([person["box"]]))[0]]
            keypoints += [*corner, 0.0]
        else:
            keypoints += [*answer["xy"][:2], answer["score"]]
    return {"image_id": image_id, "category_id": PERSON_CATEGORY, "keypoints": keypoints, "score": person["score"],
            "bbox": person["box"], "box_score": person.get("box_score", 1.0)}
