"""Keypoints on images given one by one: the files of ``locllm predict IMG...`` and the web demo's upload.

Both answer through :class:`ImagePrediction`, which asks the persons of a group of images in shared batches
and reports the answers as ``locllm predict --json`` writes them (:func:`~.report.prediction_report`), so the
two give the same JSON for the same image. Image files are read a group at a time
(:meth:`ImagePrediction.predict_files`); an unreadable one is recorded, not fatal.

Example:
    >>> prediction = ImagePrediction("fast", localizer.keypoint_set("coco"))
    >>> for path, pixels, persons in prediction.predict_files(localizer, paths, given_boxes("dets.json", 0.5, paths)):
    ...     print(path, len(persons))
    >>> prediction.report()["persons"]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.images import ImageReadError, read_image_rgb
from ..engine.localizer import Localizer, PersonKeypoints
from ..keypoints import KeypointSet
from .person_boxes import PersonBoxes, parse_box
from .report import prediction_report


def check_image_files(images: list[Path]) -> None:
    """Refuse a folder or a missing file among ``images`` before any work."""
    for path in images:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder: give its image files, e.g. {path}/*.jpg, or answer "
                                    "it as a data set with --jsonl OUT.jsonl")
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")


def given_boxes(text: str | None, score_threshold: float, images: list[Path]) -> np.ndarray | PersonBoxes | None:
    """The person boxes ``--boxes`` gives: ``'x,y,w,h'`` (1, 4) for every image, or a COCO detection-results
    ``.json`` (at least one of ``images`` must be named in it); None without (the localizer's detector finds
    the persons, else the whole image is one)."""
    if not text:
        return None
    if Path(text).suffix != ".json":
        return parse_box(text)
    detections = PersonBoxes(text, score_threshold)
    if not any(detections.image_key(path) for path in images):
        raise ValueError(f"no detection in {text} (scored >= {score_threshold}) names any of the "
                         f"{len(images)} images, by file_name or by image_id = the number in the file name "
                         "(000000000139.jpg): nothing to ask")
    return detections


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class ImagePrediction:
    """The answers of one run: ``images`` (image name, persons) in the order asked, ``errors`` why an image
    has no answer (unreadable), ``seconds`` spent localizing."""

    mode: str
    kp_set: KeypointSet
    images: list[tuple[str, list[PersonKeypoints]]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def answer(self, localizer: Localizer, group: list[tuple[str, np.ndarray | None, np.ndarray | None]]
               ) -> list[list[PersonKeypoints]]:
        """The persons of each ``(name, pixels, boxes)`` of ``group``, asked in shared batches and recorded;
        ``pixels`` None (an image that could not be read) has none. ``boxes`` as in
        :meth:`~locllm.engine.localizer.Localizer.localize`."""
        readable = [(pixels, boxes) for _, pixels, boxes in group if pixels is not None]
        start = time.perf_counter()
        answers = iter(localizer.localize_many([pixels for pixels, _ in readable], [boxes for _, boxes in readable],
                                               self.kp_set, self.mode))
        self.seconds += time.perf_counter() - start
        persons = [[] if pixels is None else next(answers) for _, pixels, _ in group]
        self.images += [(name, answered) for (name, _, _), answered in zip(group, persons, strict=True)]
        return persons

    def predict_files(self, localizer: Localizer, paths: list[Path], boxes: np.ndarray | PersonBoxes | None = None,
                      warn: Callable[[str], None] = _to_stderr) -> Iterator[tuple[Path, np.ndarray | None, list]]:
        """``(path, pixels, persons)`` for every image file, in order; ``pixels`` None for one that cannot be
        read (its error recorded, and said with ``warn``). Images go to the localizer a group at a time, so
        persons of different images share batches while only one group's pixels are held.

        ``boxes``: the same boxes for every image, a detections file (an image it does not name has no
        person, and ``warn`` says so), or None (see :func:`given_boxes`)."""
        for first in range(0, len(paths), localizer.persons_per_batch):
            group = []
            for path in paths[first:first + localizer.persons_per_batch]:
                try:
                    pixels = read_image_rgb(path)
                except ImageReadError as error:  # one unreadable file does not lose the others' answers
                    self.errors[str(path)] = str(error)
                    warn(f"{path.name}: skipped: {error}")
                    group.append((path, None, None))
                    continue
                image_boxes = boxes
                if isinstance(boxes, PersonBoxes):
                    if boxes.image_key(path) is None:
                        warn(f"{path.name}: no detection in {boxes.given_as} names this image")
                    image_boxes = boxes.for_image_file(path)
                group.append((path, pixels, image_boxes))
            answers = self.answer(localizer, [(str(path), pixels, image_boxes) for path, pixels, image_boxes in group])
            for (path, pixels, _), persons in zip(group, answers, strict=True):
                yield path, pixels, persons

    def report(self) -> dict:
        """What ``locllm predict --json`` writes (the web demo returns the same for its one image)."""
        return prediction_report(self.mode, self.kp_set, self.images, self.seconds, self.errors)
