"""The evaluation loop: a localizer over every person of a task, predictions written as they come, metrics.

    task (tasks/) -> people to ask (EvalItem: image, crop center and scale)
    -> each image read once + its persons' CropRegions -> localizer.localize_many(..., stand_ins=True)
       (the processor cuts the crops and brings the answers back to image pixels)
    -> one prediction record per person (PredictionLog)
    -> the task's metric object (metrics.py over coco.py, mpii.py, h36m.py, pck.py)

Example (the CLI is ``locllm eval``, which also prints the report)::

    task = build_task("coco", "person_keypoints_val2017.json", "val2017")
    result = run_evaluation(Localizer.from_pretrained("ckpt"), task, predictions="preds.jsonl")
    result["metrics"]["AP"], result["counts"], result["protocol"]

Bad samples never stop a run; they are counted in ``result["counts"]``. An unreadable image or an
unusable box costs its persons their answers; an answer that does not parse costs its keypoint. A
keypoint without a valid answer sits where the reference puts it, at the crop's top-left corner with
depth 0 and score 0, so that metrics stay comparable with the reference's; a person without any answer
is left out of the COCO results (a missed person) and placed the same way for MPII and Human3.6M,
whose metrics have a slot for every person.

Resuming and several processes: see :mod:`.predictions_log` and :mod:`.distributed`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.images import ImageReadError, read_image_rgb
from ..models.image_processing_locllm import CropRegions
from .checkpoint_identity import checkpoint_sha256
from .distributed import Ranks
from .predictions_log import PREDICTIONS_FORMAT, PredictionLog, resume
from .tasks import EvalItem, EvaluationTask

logger = logging.getLogger(__name__)

UNREADABLE_IMAGE = "unreadable_image"
UNUSABLE_BOX = "unusable_box"


def run_evaluation(localizer, task: EvaluationTask, *, mode: str = "fast", predictions: str | Path | None = None,
                   overwrite: bool = False, batch_size: int = 8, progress: bool = True, ranks: Ranks | None = None,
                   checkpoint: str | None = None) -> dict:
    """Ask ``localizer`` about every person of ``task`` and compute the task's metrics.

    Args:
        localizer: a :class:`~locllm.engine.Localizer` (anything with ``localize_many(images, regions, keypoints,
            mode, stand_ins)`` and a ``processor`` with ``ndim`` and ``stand_ins(regions)``).
        mode: the localizer's decoding, ``"fast"`` or ``"reference"``.
        predictions: the predictions file (JSON lines); an existing one is resumed unless ``overwrite``.
        batch_size: persons per localizer call; crops of different images share a batch.
        ranks: this process among several (see :mod:`.distributed`); default one process.
        checkpoint: names the checkpoint in the predictions header and the result.

    Returns:
        ``{"dataset", "annotation_file", "images", "checkpoint", "mode", "decoding", "protocol", "keypoints",
        "metrics", "counts", "predictions_file", "persons_resumed", "persons_asked", "seconds",
        "persons_per_second"}``; ``decoding``: fast mode's options, None for the paper's reading; NaN metrics
        (undefined, e.g. PCKh of a joint nobody annotated) are None.
    """
    ranks = ranks or Ranks()
    if localizer.processor.ndim != task.ndim:
        raise ValueError(f"{task.name} needs a checkpoint that answers {task.ndim} coordinates per keypoint; "
                         f"this one answers {localizer.processor.ndim}")
    header = _header(task, checkpoint, mode, decoding_record(localizer, mode))
    log = PredictionLog(predictions, header, ranks) if predictions is not None else None
    finished = resume(log, overwrite, ranks)
    todo = [item for item in _shard_by_image(task.items, ranks) if item.index not in finished]

    start = time.perf_counter()
    if log is not None:
        log.open()
    try:
        asked = _ask(localizer, task, todo, mode, batch_size, log, progress and ranks.is_main)
    finally:
        if log is not None:
            log.close()
    seconds = time.perf_counter() - start

    records = dict(finished)
    gathered = ranks.all_gather(asked)
    for part in gathered:
        records.update((record["index"], record) for record in part)
    ordered = [records[item.index] for item in task.items]
    if log is not None and ranks.is_main:
        log.merge()  # every rank closed its file before the gather above
    persons_asked = sum(len(part) for part in gathered)
    return _without_nan({
        "dataset": task.name, "annotation_file": str(task.annotation_file), "images": str(task.image_root),
        "checkpoint": checkpoint, "mode": mode, "decoding": header.get("decoding"), "protocol": task.protocol(),
        "keypoints": task.keypoints.names,
        "metrics": task.metrics(ordered), "counts": _counts(ordered, task),
        "predictions_file": str(predictions) if predictions is not None else None,
        "persons_resumed": len(finished), "persons_asked": persons_asked, "seconds": round(seconds, 3),
        "persons_per_second": round(len(asked) / seconds, 3) if asked and seconds > 0 else None,
    })


def _header(task: EvaluationTask, checkpoint: str | None, mode: str, decoding: dict | None) -> dict:
    """What the predictions depend on (not the metric's options, such as held-out keypoints): a file written
    with another header is never resumed. The checkpoint counts by its content; its path is only recorded.
    Decoding options beyond the paper's reading join it (so that files written before they existed still resume)."""
    header = {"format": PREDICTIONS_FORMAT, "dataset": task.name, "annotation_file": str(task.annotation_file.resolve()),
              "checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256(checkpoint), "mode": mode,
              "keypoints": task.keypoints.names, "persons": len(task.items), "fingerprint": task.fingerprint()}
    return header if decoding is None else {**header, "decoding": decoding}


def decoding_record(localizer, mode: str) -> dict | None:
    """The options fast mode read the answers with (:class:`~locllm.engine.refinement.DecodingOptions`), None
    for the paper's reading (reference mode, the default options, a model without such options)."""
    options = getattr(getattr(localizer, "answerer", None), "options", None)
    return None if mode != "fast" or options is None or options.is_paper else options.to_dict()


def ask_task(localizer, task: EvaluationTask, *, mode: str = "fast", batch_size: int = 8,
             progress: bool = False) -> list[dict]:
    """One prediction record per person of ``task``, in item order, written nowhere: the records
    :func:`run_evaluation` scores, for what reads them otherwise (a calibration fit)."""
    return _ask(localizer, task, task.items, mode, batch_size, None, progress)


def _shard_by_image(items: list[EvalItem], ranks: Ranks) -> list[EvalItem]:
    """This rank's persons: all persons of every ``world_size``-th image, so each image is read once."""
    by_image: dict[str, list[EvalItem]] = {}
    for item in items:
        by_image.setdefault(item.file_name, []).append(item)
    return [item for group in ranks.shard(list(by_image.values())) for item in group]


def _ask(localizer, task: EvaluationTask, items: list[EvalItem], mode: str, batch_size: int,
         log: PredictionLog | None, progress: bool) -> list[dict]:
    """One prediction record per item, in order, each also appended to ``log``; ``batch_size`` persons per call."""
    records: list[dict] = []
    bad = Counter()
    bar = tqdm(total=len(items), unit="person", disable=not progress, desc=f"{task.name} ({mode})")

    def emit(record: dict) -> None:
        records.append(record)
        if log is not None:
            log.append(record)
        if record["error"]:
            bad[record["error"]] += 1
        else:
            bad["unparsed keypoints"] += len(record["valid"]) - sum(record["valid"])
        bar.update(1)
        bar.set_postfix({"no answer": bad[UNREADABLE_IMAGE] + bad[UNUSABLE_BOX],
                         "unparsed kpts": bad["unparsed keypoints"]}, refresh=False)

    batch: list[tuple[EvalItem, np.ndarray]] = []  # persons to ask, with their image

    def ask_batch() -> None:
        by_image = _by_image(batch)
        images, regions = [image for image, _ in by_image], [crop_regions(group) for _, group in by_image]
        people = localizer.localize_many(images, regions, task.keypoints, mode, stand_ins=True)
        for (_, group), persons in zip(by_image, people, strict=True):
            for item, person in zip(group, persons, strict=True):
                emit(_record(item, person.keypoints, np.where(person.valid, person.scores, 0.0), person.valid,
                             person.answers))
        batch.clear()

    image_path, image, image_error = None, None, None
    for item in items:
        path = task.image_root / item.file_name
        if path != image_path:  # the persons of one image are consecutive: read it once
            image_path, image, image_error = path, None, None
            try:
                image = read_image_rgb(path)
            except ImageReadError as error:
                image_error = str(error)
                logger.warning("%s: its persons get no answer", error)
        if image_error is not None:
            emit(_unanswered(localizer, task, item, UNREADABLE_IMAGE, image_error))
        elif item.problem is not None:
            emit(_unanswered(localizer, task, item, UNUSABLE_BOX, item.problem))
        else:
            batch.append((item, image))
            if len(batch) == batch_size:
                ask_batch()
    if batch:
        ask_batch()
    bar.close()
    return records


def _by_image(batch: list[tuple[EvalItem, np.ndarray]]) -> list[tuple[np.ndarray, list[EvalItem]]]:
    """A batch's persons grouped by their image, in order (the persons of one image are consecutive)."""
    groups: list[tuple[np.ndarray, list[EvalItem]]] = []
    for item, image in batch:
        if groups and groups[-1][0] is image:
            groups[-1][1].append(item)
        else:
            groups.append((image, [item]))
    return groups


def crop_regions(items: list[EvalItem]) -> CropRegions:
    """Where a task cuts these persons' crops (its own center / scale convention), to ask the localizer with."""
    return CropRegions.of([item.center for item in items], [item.scale for item in items],
                          [item.pixel_std for item in items])


def _unanswered(localizer, task: EvaluationTask, item: EvalItem, error: str, detail: str) -> dict:
    """A person not asked about: every keypoint at its stand-in (the processor's ``stand_ins``), depth 0, score 0."""
    k = len(task.keypoints)
    keypoints = np.zeros((k, task.ndim))
    keypoints[:, :2] = localizer.processor.stand_ins(crop_regions([item]))[0]
    return _record(item, keypoints, np.zeros(k), np.zeros(k, dtype=bool), [""] * k, error, detail)


def _record(item: EvalItem, keypoints: np.ndarray, scores, valid, answers, error=None, detail=None) -> dict:
    return {"index": item.index, "image_id": item.image_id, "file_name": item.file_name, **item.identity,
            "keypoints": keypoints.tolist(), "scores": [float(s) for s in scores], "valid": [bool(v) for v in valid],
            "answers": list(answers), "error": error, "error_detail": detail}


def _counts(records: list[dict], task: EvaluationTask) -> dict:
    """What went wrong, by kind: persons without an answer, unparsed keypoints, skipped annotations."""
    no_answer = Counter(record["error"] for record in records if record["error"])
    answered = [record for record in records if not record["error"]]
    unreadable = {record["file_name"] for record in records if record["error"] == UNREADABLE_IMAGE}
    return {
        "persons": len(records),
        "persons_answered": len(answered),
        "persons_without_answer": {kind: no_answer[kind] for kind in (UNREADABLE_IMAGE, UNUSABLE_BOX)},
        "unreadable_images": len(unreadable),
        "keypoints_asked": len(answered) * len(task.keypoints),
        "keypoints_unparsed": sum(len(r["valid"]) - sum(r["valid"]) for r in answered),
        "skipped_annotations": dict(task.skipped_annotations),
    }


def _without_nan(value):
    """NaN (an undefined metric) -> None, so that the result is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value
