"""Writing user outputs so that nothing is lost and nothing half-written is left: every target is checked
before the work that fills it, files and folders are written into a temporary sibling and renamed into
place (``os.replace`` is atomic within a file system), and a failure or an interruption removes the
temporary and leaves any earlier output as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, a file target that cannot be written: a folder, or a parent that is a file
    or not writable. Creates the parent folders."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"the {what} {path} is a folder: give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"cannot write the {what} {path}: a parent of it is a file, not a folder") from None
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write the {what} {path}: {path.parent} is not writable (choose another path)")
    return path


def check_not_replacing(paths: list[str | Path], overwrite: bool) -> None:
    """Refuse, before any work, output files that would replace existing ones, unless ``overwrite``."""
    existing = [Path(path) for path in paths if Path(path).exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} already exists{more}: choose another path, or replace it with --overwrite")


def check_picture_file(path: str | Path) -> Path:
    """As :func:`check_output_file`, and the extension must be one OpenCV writes (``.png``, ``.jpg``, ...)."""
    path = Path(path)
    if not cv2.haveImageWriter(str(path)):
        raise ValueError(f"cannot write the picture {path}: OpenCV has no writer for {path.suffix or 'no extension'!r} "
                         "(use .png or .jpg)")
    return check_output_file(path, "picture")


def check_output_folder(path: str | Path, overwrite: bool, what: str) -> Path:
    """Refuse, before any work, a folder target that is a file, holds an earlier output (unless
    ``overwrite``: it is then replaced as a whole) or whose parent cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"the {what} {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"the {what} {path} is not empty (an earlier one?): choose another folder, "
                              "or replace it as a whole with --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write the {what}: {path.parent} is not writable")
    return path


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(temporary)`` then rename the temporary to ``path``; on any failure (a full disk, an
    interruption) the temporary is removed and an earlier ``path`` is kept unchanged."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_picture_atomically(path: str | Path, rgb: np.ndarray) -> Path:
    """An ``(H, W, 3)`` uint8 RGB picture, encoded by its extension; an encoding or write failure raises
    (``cv2.imwrite`` would only return False)."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode the picture {path} as {path.suffix!r}")
    return write_atomically(path, lambda temporary: temporary.write_bytes(encoded.tobytes()))


@contextmanager
def staged_folder(out_dir: str | Path) -> Iterator[Path]:
    """A temporary sibling folder to write an output folder into; renamed to ``out_dir`` when the block
    ends without an error (an earlier ``out_dir`` is removed only after that), removed otherwise, so an
    interrupted or failed run leaves no partial output and a replaced one no orphaned files."""
    target = Path(out_dir).resolve()  # a name to put the sibling next to, also for "."
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    staging.mkdir()
    try:
        yield staging
        earlier = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        if target.exists():
            target.rename(earlier)
        staging.rename(target)
        shutil.rmtree(earlier, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_files(paths: list[str | Path | None]) -> Iterator[list[Path | None]]:
    """Temporary siblings to write several output files into (streams: a video, its JSON lines), each with
    its target's extension (a container is chosen by it); all renamed into place when the block ends
    without an error, all removed otherwise, so an interrupted run keeps every earlier output byte for byte
    and a killed one leaves no half-written file at a target's name. ``None`` entries stay ``None``."""
    targets = [None if path is None else Path(path) for path in paths]
    temporaries = [None if target is None else target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
                   for target in targets]
    try:
        yield temporaries
        for temporary, target in zip(temporaries, targets, strict=True):
            if temporary is not None and temporary.exists():
                os.replace(temporary, target)
    finally:
        for temporary in temporaries:
            if temporary is not None:
                temporary.unlink(missing_ok=True)
