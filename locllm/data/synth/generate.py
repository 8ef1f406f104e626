"""Writing a SynthPose data set: images, annotation files, a summary and an optional contact sheet.

    locllm synth --out /tmp/s --num-images 200 --seed 3 --json /tmp/s.json

Image i is rendered from the i-th child of ``np.random.SeedSequence(seed)``, so any number of worker
processes gives byte-identical files for the same arguments. The last ``round(num_images *
val_fraction)`` images form the ``val`` split, the others ``train``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ...viz import draw_keypoints
from ..images import read_image_rgb
from ..outputs import check_output_folder, staged_folder, write_atomically
from .render import MAX_PERSONS, get_difficulty, render_scene
from .writers import coco_self_check, get_writer

JPEG_QUALITY = 95
SPLITS = ("train", "val")


@dataclass(frozen=True)
class _Job:
    image_id: int
    seed: np.random.SeedSequence
    size: int
    persons: tuple[int, int]
    difficulty: str
    fmt: str
    image_dir: Path


def generate_synthpose(
    out_dir: str | Path,
    num_images: int,
    seed: int,
    size: int = 256,
    persons: int | tuple[int, int] = (1, 3),
    fmt: str = "coco",
    val_fraction: float = 0.1,
    difficulty: str = "normal",
    workers: int | None = None,
    contact_sheet: str | Path | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> dict:
    """Render ``num_images`` scenes and write them in one annotation format (see :mod:`.writers`).

    Args:
        out_dir: where ``images/`` and the annotation files go (created if absent).
        num_images: how many images, train and val together.
        seed: the only source of randomness.
        size: images are ``size`` x ``size`` pixels.
        persons: figures per image, a fixed number or an inclusive range ``(min, max)``.
        fmt: ``"coco"``, ``"mpii"`` or ``"h36m"``.
        val_fraction: share of the images in the val split.
        difficulty: ``"easy"`` or ``"normal"`` (see ``render.DIFFICULTIES``).
        workers: processes rendering images; None: one for fewer than 64 images, else one per CPU.
            More than one starts fresh ("spawn") processes, so a script calling this needs the usual
            ``if __name__ == "__main__":`` guard.
        contact_sheet: if given, a PNG grid of the first 16 images with their annotations drawn.
        progress: show a progress bar.
        overwrite: replace a non-empty ``out_dir`` (and an existing ``contact_sheet``) as a whole; without it
            they are refused before any work. The data set is written into a temporary sibling folder and
            renamed into place when complete, so an interrupted run leaves no partial data set and a
            replaced one leaves no orphaned files.

    Returns:
        A summary: the arguments, ``splits`` ``{"train" | "val": {"images", "persons",
        "labelled_keypoints" (v >= 1), "visible_keypoints" (v = 2), "annotation_file"}}`` counted in
        the format's keypoint set, for ``coco`` ``self_check_ap`` ``{split: AP}`` (COCOeval of the
        ground truth as predictions; 1.0 for a consistent file, None for a split without persons),
        ``contact_sheet`` and ``seconds``.
    """
    persons = (persons, persons) if isinstance(persons, int) else tuple(persons)
    if len(persons) != 2 or not 1 <= persons[0] <= persons[1] <= MAX_PERSONS:
        raise ValueError(f"persons must be a count or a range (min, max) within 1..{MAX_PERSONS}, got {persons}")
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if size < 32:
        raise ValueError(f"SynthPose images must be at least 32 px wide, got size={size}")
    writer = get_writer(fmt)
    get_difficulty(difficulty)
    if workers is None:
        workers = 1 if num_images < 64 else os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")

    start = time.perf_counter()
    out_dir = Path(out_dir)
    _check_targets(out_dir, contact_sheet, overwrite)
    with staged_folder(out_dir) as staging:
        summary, results = _write_data_set(staging, out_dir, writer, num_images, seed, size, persons, fmt,
                                           val_fraction, difficulty, workers, progress)
    if contact_sheet is not None:
        summary["contact_sheet"] = str(_write_contact_sheet(Path(contact_sheet), out_dir / "images", writer,
                                                            results[:16]))
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def _check_targets(out_dir: Path, contact_sheet: str | Path | None, overwrite: bool) -> None:
    """Refuse, before any work, a target that would be overwritten without ``overwrite`` or cannot be written."""
    check_output_folder(out_dir, overwrite, "SynthPose output folder")
    if contact_sheet is not None and Path(contact_sheet).exists() and not overwrite:
        raise FileExistsError(f"the contact sheet {contact_sheet} exists: choose another path, or --overwrite")


def _write_data_set(folder: Path, out_dir: Path, writer, num_images: int, seed: int, size: int,
                    persons: tuple[int, int], fmt: str, val_fraction: float, difficulty: str, workers: int,
                    progress: bool) -> tuple[dict, list]:
    """Render and write the data set into ``folder``: its summary (naming the files as they will be in
    ``out_dir``) and each image's (file name, annotation record, counts)."""
    image_dir = folder / "images"
    image_dir.mkdir(parents=True)
    seeds = np.random.SeedSequence(seed).spawn(num_images)
    jobs = [_Job(i + 1, seeds[i], size, persons, difficulty, fmt, image_dir) for i in range(num_images)]
    results = _run(jobs, workers, progress)

    num_train = num_images - round(num_images * val_fraction)
    summary = {"format": fmt, "out_dir": str(out_dir), "seed": seed, "num_images": num_images, "size": size,
               "persons": list(persons), "difficulty": difficulty, "val_fraction": val_fraction, "workers": workers,
               "splits": {}}
    info = {"description": "SynthPose: rendered figures with exact keypoints, written by `locllm synth`",
            "seed": seed, "size": size, "persons": list(persons), "difficulty": difficulty}
    self_check = {}
    for split, chosen in zip(SPLITS, (results[:num_train], results[num_train:]), strict=True):
        path = writer.annotation_path(folder, split)
        writer.write(path, [record for _, record, _ in chosen], {**info, "split": split})
        if fmt == "coco":
            self_check[split] = coco_self_check(path)
        counts = np.array([stats for _, _, stats in chosen], dtype=np.int64).reshape(-1, 3).sum(0)
        summary["splits"][split] = {"images": len(chosen), "persons": int(counts[0]),
                                    "labelled_keypoints": int(counts[1]), "visible_keypoints": int(counts[2]),
                                    "annotation_file": str(writer.annotation_path(out_dir, split))}
    if self_check:
        summary["self_check_ap"] = self_check
    return summary, results


def _run(jobs: list[_Job], workers: int, progress: bool) -> list[tuple[str, dict, tuple[int, int, int]]]:
    if workers == 1:
        return [_render_image(job) for job in tqdm(jobs, desc="synth", disable=not progress)]
    # spawn, not fork: the parent may hold OpenCV or torch thread pools that a forked child would inherit broken.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        results = pool.map(_render_image, jobs, chunksize=max(1, min(32, len(jobs) // (4 * workers))))
        return list(tqdm(results, total=len(jobs), desc="synth", disable=not progress))


def _render_image(job: _Job) -> tuple[str, dict, tuple[int, int, int]]:
    """Render and save one image; return its file name, annotation record and (persons, labelled, visible)."""
    rng = np.random.default_rng(job.seed)
    num_persons = int(rng.integers(job.persons[0], job.persons[1] + 1))
    image, persons = render_scene(rng, job.size, num_persons, job.difficulty)
    file_name = f"{job.image_id:06d}.jpg"
    ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode image {file_name}")
    (job.image_dir / file_name).write_bytes(encoded.tobytes())
    writer = get_writer(job.fmt)
    visibility = np.stack([person[writer.person_key][:, 2] for person in persons])
    stats = (len(persons), int((visibility > 0).sum()), int((visibility == 2).sum()))
    return file_name, writer.encode(job.image_id, file_name, job.size, persons), stats


def _write_contact_sheet(path: Path, image_dir: Path, writer, results) -> Path:
    """A grid of images with what their annotation records say drawn on them (occluded points: dark centre)."""
    tiles = []
    for file_name, record, _ in results:
        tile = read_image_rgb(image_dir / file_name)
        # Small images are blown up so that the markers do not hide the figure.
        zoom = max(1, 256 // tile.shape[0])
        tile = np.ascontiguousarray(cv2.resize(tile, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST))
        for keypoints, box in writer.sheet_persons(record):
            points = (keypoints[:, :2] + 0.5) * zoom - 0.5  # pixel centres of the enlarged image
            tile = draw_keypoints(tile, points, writer.keypoint_set, visible=keypoints[:, 2] > 0)
            for x, y in points[keypoints[:, 2] == 1]:
                cv2.circle(tile, (round(x), round(y)), 1, (0, 0, 0), -1)
            x, y, w, h = np.asarray(box) * zoom
            cv2.rectangle(tile, (round(x), round(y)), (round(x + w) - 1, round(y + h) - 1), (255, 255, 255), 1)
        tiles.append(tile)
    columns = int(np.ceil(np.sqrt(len(tiles))))
    rows = -(-len(tiles) // columns)
    size, gap = tiles[0].shape[0], 2
    sheet = np.full((rows * (size + gap) - gap, columns * (size + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        top, left = (i // columns) * (size + gap), (i % columns) * (size + gap)
        sheet[top : top + size, left : left + size] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", sheet[..., ::-1])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the contact sheet {path}")
    return write_atomically(path, lambda temporary: temporary.write_bytes(encoded.tobytes()))
