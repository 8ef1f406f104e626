"""Where a data set's images come from: a folder (recursive), a text file of paths, or a COCO file's ``images``.

A source is read as a stream, twice: :meth:`ImageSource.survey` once before any work (how many images, that
every listed file exists, a fingerprint of the list that ties a predictions file to it), then
:meth:`ImageSource.entries` while answering. Neither holds the list, so a million paths cost no memory
(a COCO file is JSON and is parsed whole; only each image's id and file name are kept).

Each image gets an ``index`` (its place in the stream: folders are walked in sorted order) and an
``image_id``: a COCO file's own; else the number of a COCO-style file name (``000000000139.jpg`` -> 139),
else the index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageEntry:
    index: int
    path: Path
    image_id: int


@dataclass(frozen=True)
class Survey:
    count: int
    sha256: str  # over every entry's path and image id, in order


class ImageSource:
    """The images of ``source``: a folder, a ``.txt`` file with one path per line, or a COCO ``.json`` file.

    Args:
        source: the folder or file.
        image_root: where the relative paths of a list or COCO file are (default: the current folder for a
            list, the COCO file's folder for a COCO file).
    """

    def __init__(self, source: str | Path, image_root: str | Path | None = None):
        self.source = Path(source)
        if self.source.is_dir():
            self.kind = "folder"
        elif not self.source.is_file():
            raise FileNotFoundError(f"{self.source} does not exist: give a folder of images, a .txt file with one "
                                    "image path per line, or a COCO .json file")
        elif self.source.suffix.lower() == ".json":
            self.kind = "coco"
        else:
            self.kind = "list"
        if image_root is not None and self.kind == "folder":
            raise ValueError("--image-root goes with a list or a COCO file, not a folder")
        default_root = self.source.parent if self.kind == "coco" else Path()
        self.image_root = Path(image_root) if image_root is not None else default_root
        self._coco_images = _coco_images(self.source) if self.kind == "coco" else None
        self._survey: Survey | None = None

    def describe(self) -> dict:
        """What the predictions depend on about the source (for the predictions file's header)."""
        return {"source": str(self.source.resolve()), "kind": self.kind}

    def entries(self) -> Iterator[ImageEntry]:
        """Every image, in order."""
        for index, (path, image_id) in enumerate(self._paths()):
            if image_id is None:
                image_id = int(path.stem) if path.stem.isdigit() else index
            yield ImageEntry(index, path, image_id)

    def survey(self) -> Survey:
        """Count and fingerprint the images; refuse, in one line, a source with none or naming missing files.
        Read once; later calls answer from memory."""
        if self._survey is None:
            self._survey = self._read_survey()
        return self._survey

    def _read_survey(self) -> Survey:
        digest, count, missing, first_missing = hashlib.sha256(), 0, 0, None
        for entry in self.entries():
            count += 1
            digest.update(f"{entry.path}\0{entry.image_id}\n".encode())
            if self.kind != "folder" and not entry.path.is_file():
                missing += 1
                first_missing = first_missing or entry.path
        if missing:
            raise FileNotFoundError(f"{self.source} names {missing} of {count} images that do not exist, e.g. "
                                    f"{first_missing} (relative paths are read from {self.image_root.resolve()}; "
                                    "see --image-root)")
        if not count:
            found = "image files (" + ", ".join(IMAGE_SUFFIXES) + ")" if self.kind == "folder" else "image paths"
            raise ValueError(f"{self.source} holds no {found}: nothing to ask")
        return Survey(count, digest.hexdigest()[:16])

    def _paths(self) -> Iterator[tuple[Path, int | None]]:
        if self.kind == "folder":
            for folder, subfolders, files in os.walk(self.source):
                subfolders.sort()  # os.walk's order is the file system's; the index of an image must not be
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        yield Path(folder) / name, None
        elif self.kind == "list":
            with self.source.open(encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        yield self.image_root / line.strip(), None
        else:
            for image_id, file_name in self._coco_images:
                yield self.image_root / file_name, image_id


def _coco_images(path: Path) -> list[tuple[int, str]]:
    """``(id, file_name)`` of every entry of a COCO file's ``images`` list."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not JSON ({error}); give a COCO file, a folder or a .txt list of images") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{path}: a COCO file has an 'images' list of {{id, file_name}}; this one has none")
    entries = []
    for n, image in enumerate(images):
        try:
            entries.append((int(image["id"]), str(image["file_name"])))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: images entry {n} is not {{id, file_name}}: {image!r:.200}") from None
    return entries
