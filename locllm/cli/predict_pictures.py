"""The pictures of ``locllm predict --out``: where each goes (decided and checked before any inference) and
how it is written (atomically; a failure is reported, not announced as written)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..data.outputs import check_output_file, check_picture_file, write_picture_atomically


def picture_targets(images: list[Path], out: str | Path) -> dict[Path, Path]:
    """Image -> its picture. One image: ``out`` itself (its extension says the format); several: PNGs
    ``<stem>_keypoints.png`` in the folder ``out``, where images of the same name from different folders
    get ``<stem>-2_keypoints.png``, ``-3``... in the order given, so none replaces another's picture.

    Raises before any work if a picture could not be written (extension, folder, permissions).
    """
    out = Path(out)
    if len(images) == 1:
        return {images[0]: check_picture_file(out)}
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file: with several images it names a folder for their pictures")
    targets, taken = {}, set()
    for image in images:
        stem, number = image.stem, 1
        while (name := f"{stem}{'' if number == 1 else f'-{number}'}_keypoints.png") in taken:
            number += 1
        taken.add(name)
        targets[image] = out / name
    check_output_file(next(iter(targets.values())), "picture")  # one folder for all
    return targets


def write_picture(picture: np.ndarray, persons, kp_set, novel: list[bool], target: Path) -> str | None:
    """The image with each person's skeleton, novel keypoints labelled by name, written to ``target``;
    None when written, else why not (also printed). A person with no keypoint on the picture is left out of
    it and said so; the answers are never lost to a picture."""
    from ..apis.report import novel_labels
    from ..viz import draw_persons, drawable_keypoints

    for number, p in enumerate(persons, 1):
        if p.error is None and not (drawable_keypoints(p.keypoints[:, :2], picture.shape) & p.valid).any():
            print(f"{target}: person {number} is not drawn: none of its keypoints lies on the picture",
                  file=sys.stderr)
    picture = draw_persons(picture, persons, kp_set, labels=novel_labels(kp_set, novel))
    try:
        write_picture_atomically(target, picture)
    except (OSError, ValueError) as error:
        print(f"{target}: not written: {error}", file=sys.stderr)
        return f"picture {target} not written: {error}"
    print(f"wrote {target}")
    return None
