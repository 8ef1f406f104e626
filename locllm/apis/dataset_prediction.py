"""Keypoints for a whole data set: streamed, resumable, sharded over processes, COCO results at the end.

    source (apis/image_sources: folder, list, COCO images) -> this rank's images not yet answered
    -> read (data/images) -> person boxes (apis/person_boxes) -> Localizer.localize_many
    -> one JSON line per image (evaluation/predictions_log, the log eval resumes from)
    -> rank 0: the ranks' lines merged by index -> COCO keypoint results (apis/coco_results)

Example (the CLI is ``locllm predict DIR --jsonl OUT``)::

    summary = predict_dataset(Localizer.from_pretrained("ckpt"), ImageSource("photos/"), "photos.jsonl",
                              keypoints="coco", coco_results="photos_coco.json")

An image's line holds what ``locllm predict --json`` writes per image (``image``, ``persons``, ``error``) and
its ``index`` and ``image_id``; each person also its ``box_score``. The file's header ties it to the images,
the checkpoint's content, the keypoints and their descriptions, the boxes and the decoding: the same run
started again answers only the images the file lacks, another run is refused. Memory does not grow with the
number of images: the source is streamed and no answer is kept; a resumed run holds the indices already
answered (about 80 bytes each: 80 MiB for a million).

Several processes (``torchrun`` / ``accelerate launch``, see :mod:`locllm.evaluation.distributed`): rank r
answers the images whose index is r modulo the number of ranks into ``OUT.rank<r>``; rank 0 merges the parts
into ``OUT`` once every rank is done. On several machines, ``OUT`` must be on a file system they all see.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..data.images import ImageReadError, read_image_rgb
from ..evaluation.checkpoint_identity import checkpoint_sha256
from ..evaluation.distributed import Ranks
from ..evaluation.loop import decoding_record
from ..evaluation.predictions_log import PredictionLog, resume
from ..keypoints import KeypointSet
from .coco_results import write_coco_results
from .image_sources import ImageEntry, ImageSource
from .person_boxes import PersonBoxes

logger = logging.getLogger(__name__)

PREDICTIONS_FORMAT = "locllm-dataset-predictions/1"
START_OVER = "--overwrite"


def predict_dataset(localizer, source: ImageSource, jsonl: str | Path, *, keypoints="coco",
                    mode: str = "fast", boxes: PersonBoxes | None = None, coco_results: str | Path | None = None,
                    overwrite: bool = False, progress: bool = True, ranks: Ranks | None = None,
                    checkpoint: str | None = None) -> dict:
    """Answer every image of ``source`` into ``jsonl`` (resumed if it exists, unless ``overwrite``).

    Args:
        localizer: a :class:`~locllm.engine.Localizer`; ``persons_per_batch`` images go to it at a time.
        keypoints: what to ask: a set name, names, or a ``KeypointSet`` (as :meth:`Localizer.keypoint_set` reads it).
        boxes: where the persons are (default: the localizer's detector, else the whole image).
        coco_results: also write the COCO keypoint results file here at the end (main process).
        ranks: this process among several; default one process.
        checkpoint: the checkpoint folder, whose content the header records.

    Returns (every rank, counted over all ranks): ``{"images", "images_resumed", "images_answered",
    "persons", "unreadable_images", "images_without_persons", "seconds", "images_per_second",
    "predictions_file", "coco_results"}``.
    """
    ranks = ranks or Ranks()
    boxes = boxes or PersonBoxes()
    kp_set = localizer.keypoint_set(keypoints)
    survey = source.survey()
    header = {"format": PREDICTIONS_FORMAT, "images": {**source.describe(), "count": survey.count,
                                                       "sha256": survey.sha256},
              "checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256(checkpoint), "mode": mode,
              "keypoints": [[kp.name, kp.description] for kp in kp_set], "boxes": boxes.describe(_detector_name(localizer)),
              "decoding": decoding_record(localizer, mode), "crop": localizer.processor.crop_settings()}
    log = PredictionLog(jsonl, header, ranks, run="prediction run", start_over=START_OVER)
    finished = resume(log, overwrite, ranks, keep_records=False)
    todo = sum(1 for index in range(ranks.rank, survey.count, ranks.world_size) if index not in finished)

    counts: Counter = Counter()
    start = time.perf_counter()
    log.open()
    try:
        bar = tqdm(total=todo, unit="image", disable=not (progress and ranks.is_main), desc="predict")
        group: list[ImageEntry] = []
        for entry in source.entries():
            if ranks.owns(entry.index) and entry.index not in finished:
                group.append(entry)
            if len(group) == localizer.persons_per_batch:
                _answer(localizer, group, kp_set, mode, boxes, log, counts, bar)
        if group:
            _answer(localizer, group, kp_set, mode, boxes, log, counts, bar)
        bar.close()
    finally:
        log.close()
    seconds = time.perf_counter() - start

    everyone = ranks.all_gather((counts, seconds))  # also waits until every rank closed its file
    total = sum((part for part, _ in everyone), Counter())
    slowest = max(part_seconds for _, part_seconds in everyone)
    if ranks.is_main:
        log.merge()
        if coco_results is not None:
            write_coco_results(jsonl, coco_results)
    ranks.barrier()  # every rank returns once the merged file and the results exist
    return {"images": survey.count, "images_resumed": len(finished), "images_answered": total["images"],
            "persons": total["persons"], "unreadable_images": total["unreadable"],
            "images_without_persons": total["no_person"], "seconds": round(slowest, 3),
            "images_per_second": round(total["images"] / slowest, 3) if total["images"] and slowest > 0 else None,
            "predictions_file": str(jsonl), "coco_results": str(coco_results) if coco_results is not None else None}


def _answer(localizer, group: list[ImageEntry], kp_set: KeypointSet, mode: str, boxes: PersonBoxes,
            log: PredictionLog, counts: Counter, bar: tqdm) -> None:
    """Answer ``group`` (its persons share batches) and append one line per image, in index order; empties it."""
    pixels, errors, person_boxes, box_scores = [], {}, [], []
    for entry in group:
        try:
            image = read_image_rgb(entry.path)
        except ImageReadError as error:  # logged and counted; the run goes on
            errors[entry.index] = str(error)
            logger.warning("%s: no answer", error)
            continue
        found = boxes.from_file(entry)
        if found is None and localizer.detector is not None:
            found = localizer.detect(image)
        if found is None:
            height, width = image.shape[:2]
            found = ([[0.0, 0.0, width, height]], [1.0])
        counts["no_person"] += not len(found[1])
        pixels.append(image)
        person_boxes.append(found[0])
        box_scores.append(found[1])
    answers = iter(localizer.localize_many(pixels, person_boxes, kp_set, mode) if pixels else [])
    scores = iter(box_scores)
    for entry in group:
        persons = [] if entry.index in errors else [
            {**person.to_dict(), "box_score": round(float(box_score), 4)}
            for person, box_score in zip(next(answers), next(scores), strict=True)]
        log.append({"index": entry.index, "image": str(entry.path), "image_id": entry.image_id, "persons": persons,
                    "error": errors.get(entry.index)})
        counts["images"] += 1
        counts["persons"] += len(persons)
        counts["unreadable"] += entry.index in errors
        bar.update(1)
    bar.set_postfix({"persons": counts["persons"], "unreadable": counts["unreadable"]}, refresh=False)
    group.clear()


def _detector_name(localizer) -> str | None:
    detector = localizer.detector
    if detector is None:
        return None
    return str(getattr(getattr(detector, "model", None), "name_or_path", None) or type(detector).__name__)
