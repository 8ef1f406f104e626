"""Video: frames in, every person's keypoints per frame out, each person keeping an id across frames.

    frames (OpenCV) -> person boxes: a detector every ``detect_every`` frames, and between its runs each
    person's box from its own keypoints of the frame before -> ``Localizer.localize_many`` (persons of
    consecutive frames share batches) -> ids matched by box overlap -> an annotated video + one JSON line a frame

Example:
    >>> summary = localize_video(localizer, "clip.mp4", "clip_keypoints.mp4", "clip_keypoints.jsonl",
    ...                          detector=localizer, detect_every=5)
    >>> summary.frames, summary.skipped, summary.ms_per_frame

A frame whose boxes come from the frame before can only be asked once that frame is answered, so with
``detect_every > 1`` frames go one at a time (its persons still share a batch); with a detector on every
frame, or fixed boxes, frames are independent and go to the model several at a time.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from ..data.images import MAX_IMAGE_PIXELS_ENV, max_image_pixels
from ..data.outputs import staged_files
from ..engine.localizer import Localizer, PersonKeypoints
from ..keypoints import KeypointSet
from ..viz import draw_persons

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
# Joints lie inside the body: a box around them misses the head's top, hands and feet (rtmlib enlarges by 1.25 too).
KEYPOINT_BOX_ENLARGE = 1.25
MATCH_IOU = 0.3  # a detection continues a person only when it overlaps that person's box this much
# A corrupt frame is skipped; this many in a row means the stream itself is broken, not one frame.
MAX_BAD_FRAMES_IN_A_ROW = 25
FOURCC = {".avi": "MJPG"}  # everything else is written as MPEG-4 part 2, which every OpenCV build has


class VideoReadError(ValueError):
    """The video cannot be read at all (not a video, or no frame)."""


class PersonDetector(Protocol):
    """What finds persons in a frame, e.g. a :class:`Localizer` loaded with a detector."""

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB -> boxes (N, 4) x, y, w, h in pixels, scores (N,)."""


@dataclass
class VideoSummary:
    """What one video gave: ``frames`` read (skipped ones included), ``skipped`` that failed to decode,
    ``persons`` answered over all frames, ``tracks`` ids handed out, ``seconds`` the whole run (decoding,
    detecting, localizing, drawing and writing)."""

    frames: int
    skipped: int
    persons: int
    tracks: int
    seconds: float

    @property
    def ms_per_frame(self) -> float:
        answered = self.frames - self.skipped
        return 1000 * self.seconds / answered if answered else 0.0


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, float, int]:
    """An opened video, its frames per second (25 when the file does not say) and its frame count (0: unknown).

    Raises:
        VideoReadError: the file is not a video OpenCV can open, or its frames are larger than the image pixel
            limit (:func:`~locllm.data.images.max_image_pixels`).
    """
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoReadError(f"{path}: not a video OpenCV can read; convert it, e.g. "
                             f"ffmpeg -i {Path(path).name} -c:v libx264 clip.mp4")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > max_image_pixels():  # read from the container before a frame is decoded
        capture.release()
        raise VideoReadError(f"{path}: its frames are {width}x{height} = {width * height:,} pixels, more than the "
                             f"limit of {max_image_pixels():,} (set {MAX_IMAGE_PIXELS_ENV} to allow more)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if np.isfinite(fps) and fps > 0 else 25.0
    return capture, fps, max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)


def read_frames(path: str | Path, capture: cv2.VideoCapture, expected: int) -> Iterator[tuple[int, np.ndarray | None]]:
    """``(index, (H, W, 3) uint8 RGB)`` for every frame of an opened video; ``(index, None)`` for one that
    fails to decode. ``expected``: the container's frame count, which tells a frame that fails to decode
    (grab fails before the count) from the end; the capture is released at the end.

    Raises:
        VideoReadError: the video holds no frame.
    """
    index, bad_in_a_row = 0, 0
    try:
        while True:
            pixels = None
            if capture.grab():
                ok, bgr = capture.retrieve()
                pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None
            elif index >= expected or bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW:
                break
            bad_in_a_row = 0 if pixels is not None else bad_in_a_row + 1
            yield index, pixels
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise VideoReadError(f"{path}: the video holds no frame; check that it plays, or re-encode it")


def keypoint_box(person: PersonKeypoints, width: int, height: int,
                 enlarge: float = KEYPOINT_BOX_ENLARGE) -> np.ndarray | None:
    """The box x, y, w, h around a person's valid keypoints, enlarged about its centre and clipped to the
    image; None when fewer than two keypoints are valid (nothing to follow)."""
    points = person.keypoints[person.valid, :2] if person.error is None else np.zeros((0, 2))
    if len(points) < 2:
        return None
    low, high = points.min(0), points.max(0)
    center, size = (low + high) / 2, np.maximum(high - low, 1.0) * enlarge
    low = np.clip(center - size / 2, 0, [width, height])
    high = np.clip(center + size / 2, 0, [width, height])
    # Rounded as the JSON writes boxes, so that a frame's line states exactly the boxes that were asked.
    return None if (high - low).min() <= 0 else np.round(np.concatenate([low, high - low]), 2)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) boxes x, y, w, h -> (N, M) intersection over union."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(-1)
    union = a[:, 2:].prod(-1)[:, None] + b[:, 2:].prod(-1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class FixedBoxes:
    """A :class:`PersonDetector` that finds the same boxes in every frame (the whole frame when None)."""

    def __init__(self, boxes: np.ndarray | None = None):
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        boxes = np.array([[0.0, 0.0, width, height]]) if self.boxes is None else self.boxes
        return boxes, np.ones(len(boxes))


class KeypointTracker:
    """Person ids across frames: a detection continues the person of the frame before that it overlaps most
    (one-to-one, IoU >= ``MATCH_IOU`` with the box that person was asked in or the box around its keypoints,
    whichever overlaps more); others start new ids. Between detections each person is followed by the box
    around its own keypoints, until it has none."""

    def __init__(self):
        self.boxes = np.zeros((0, 4))  # (T, 4) where each followed person is expected in the next frame
        self.asked = np.zeros((0, 4))  # (T, 4) the boxes they were asked in
        self.ids: list[int] = []
        self.next_id = 0

    def match(self, detections: np.ndarray) -> list[int]:
        """An id for each detected box (D, 4)."""
        ids = [-1] * len(detections)
        if len(detections) and len(self.boxes):
            iou = np.maximum(box_iou(detections, self.boxes), box_iou(detections, self.asked))
            for d, t in zip(*linear_sum_assignment(iou, maximize=True), strict=True):
                if iou[d, t] >= MATCH_IOU:
                    ids[d] = self.ids[t]
        for d, track in enumerate(ids):
            if track < 0:
                ids[d], self.next_id = self.next_id, self.next_id + 1
        return ids

    def follow(self, ids: list[int], persons: list[PersonKeypoints], width: int, height: int) -> None:
        """Remember where the answered persons will be looked for next; one without keypoints is lost."""
        boxes = [(track, keypoint_box(p, width, height), p.box) for track, p in zip(ids, persons, strict=True)]
        kept = [(track, box, asked) for track, box, asked in boxes if box is not None]
        self.ids = [track for track, _, _ in kept]
        self.boxes = np.array([box for _, box, _ in kept]).reshape(-1, 4)
        self.asked = np.array([asked for _, _, asked in kept]).reshape(-1, 4)


def draw_frame(pixels: np.ndarray, ids: list[int], persons: list[PersonKeypoints], kp_set: KeypointSet) -> np.ndarray:
    """(H, W, 3) RGB with every person's box, id and skeleton."""

    def corners(person: PersonKeypoints):
        x, y, w, h = (round(float(v)) for v in person.box)
        return (x, y), (x + w, y + h)

    return draw_persons(pixels, persons, kp_set, box_corners=corners, tags=[f"#{track}" for track in ids])


def frame_record(index: int, fps: float, ids: list[int] | None, persons: list[PersonKeypoints] | None,
                 detected: bool = False, error: str | None = None) -> dict:
    """One JSON line: the frame, its time, whether the detector ran, and each person with its id."""
    return {"frame": index, "time_s": round(index / fps, 4), "detected": detected, "error": error,
            "persons": [{"id": track, **p.to_dict()} for track, p in zip(ids or [], persons or [], strict=True)]}


def localize_video(localizer: Localizer, video: str | Path, out_video: str | Path | None, out_jsonl: str | Path | None,
                   keypoints="coco", mode: str = "fast", detector: PersonDetector | None = None,
                   detect_every: int = 1, progress: bool = True) -> VideoSummary:
    """Every person's keypoints in every frame of ``video``.

    Args:
        localizer: answers the persons.
        video: a file OpenCV reads (mp4, avi, ...).
        out_video: the annotated video (``.avi``: MJPG, else MPEG-4); None: none written.
        out_jsonl: one JSON line per frame (see :func:`frame_record`); a frame that failed to decode gets
            a line with its ``error``. None: none written.
        keypoints, mode: as in :meth:`Localizer.localize`.
        detector: finds the persons (default: the whole frame is one person, see :class:`FixedBoxes`).
        detect_every: run the detector on every N-th frame; between, follow each person by its keypoints.

    Both outputs are written into temporaries beside them and take their names only when every frame is
    done: an interrupted or failed run keeps earlier outputs byte for byte and leaves no partial file.

    Raises:
        VideoReadError: the video cannot be read or has no frame (nothing is written then).
    """
    if detect_every < 1:
        raise ValueError(f"detect_every must be at least 1, got {detect_every}")
    detector = detector or FixedBoxes()
    kp_set = localizer.keypoint_set(keypoints)
    capture, fps, total = open_video(video)
    frames = read_frames(video, capture, total)
    first = next(frames)  # raises VideoReadError before any file is opened for writing
    try:
        with staged_files([out_video, out_jsonl]) as (video_partial, jsonl_partial):
            return _localize_frames(localizer, itertools.chain([first], frames), video, video_partial,
                                    jsonl_partial, kp_set, mode, detector, detect_every, fps, total, progress)
    finally:
        frames.close()  # releases the capture also when the loop stops early


def _localize_frames(localizer: Localizer, frames: Iterator[tuple[int, np.ndarray | None]], video: str | Path,
                     out_video: Path | None, out_jsonl: Path | None, kp_set, mode: str, detector, detect_every: int,
                     fps: float, total: int, progress: bool) -> VideoSummary:
    """The frame loop of :func:`localize_video`, writing into the staged outputs."""
    tracker, writer, summary = KeypointTracker(), None, VideoSummary(0, 0, 0, 0, 0.0)
    pending: list[tuple[int, np.ndarray, np.ndarray, bool]] = []  # frames whose boxes are known, not yet asked
    lines = open(out_jsonl, "w") if out_jsonl else None  # noqa: SIM115 (written frame by frame, closed below)
    bar = tqdm(total=total or None, unit="frame", desc=Path(video).name, disable=not progress)

    def flush() -> None:
        """Ask the pending frames' persons in shared batches, then give ids, draw and write in frame order."""
        nonlocal writer
        if not pending:
            return
        answers = localizer.localize_many([p for _, p, _, _ in pending], [b for _, _, b, _ in pending], kp_set, mode)
        for (index, pixels, boxes, detected), persons in zip(pending, answers, strict=True):
            ids = tracker.match(boxes) if detected else list(tracker.ids)
            height, width = pixels.shape[:2]
            tracker.follow(ids, persons, width, height)
            summary.persons += len(persons)
            if lines:
                lines.write(json.dumps(frame_record(index, fps, ids, persons, detected)) + "\n")
            if out_video:
                writer = writer or open_writer(out_video, fps, width, height)
                writer.write(cv2.cvtColor(draw_frame(pixels, ids, persons, kp_set), cv2.COLOR_RGB2BGR))
            bar.update()
        pending.clear()

    start = time.perf_counter()
    try:
        for index, pixels in frames:
            summary.frames += 1
            if pixels is None:
                summary.skipped += 1
                flush()  # keeps the lines in frame order
                if lines:
                    lines.write(json.dumps(frame_record(index, fps, None, None, error="could not be decoded")) + "\n")
                bar.update()
                continue
            if index % detect_every:
                flush()  # this frame's boxes come from the keypoints of the frame before
            detected = index % detect_every == 0 or not len(tracker.boxes)
            boxes = np.asarray(detector.detect(pixels)[0], dtype=np.float64).reshape(-1, 4) if detected \
                else tracker.boxes.copy()
            pending.append((index, pixels, boxes, detected))
            if sum(len(b) for _, _, b, _ in pending) >= localizer.persons_per_batch:
                flush()
        flush()
    finally:
        bar.close()
        if lines:
            lines.close()
        if writer is not None:
            writer.release()
    summary.seconds = time.perf_counter() - start
    summary.tracks = tracker.next_id
    return summary


def open_writer(path: str | Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC.get(path.suffix.lower(), "mp4v")), fps,
                             (width, height))
    if not writer.isOpened():
        raise ValueError(f"{path}: OpenCV cannot write this video format; name it .mp4 or .avi")
    return writer
