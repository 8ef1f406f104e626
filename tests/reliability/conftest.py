"""Bad inputs and faults, built on the fly: damaged files of every kind a command reads, a pickle that would
run code if it were ever unpickled, a full disk and an interruption in the middle of a write.

The tests run as root, which ignores file permissions, so unwritable outputs are simulated by failing the
writes themselves (``Path.write_bytes`` / ``write_text``), not with chmod.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ..engine.conftest import tiny_checkpoint

IMAGE = (np.random.default_rng(0).random((96, 64, 3)) * 255).astype(np.uint8)


class RunsCode:
    """Unpickling this runs ``touch <marker>``: a payload a weights-only loader must never execute."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------- damaged files


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Keep the first ``keep`` share of the file's bytes, as an interrupted copy does."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def code_pickle(path: Path, marker: Path) -> Path:
    """A torch-style ``.bin`` / ``.pth`` whose unpickling would create ``marker``."""
    torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, path)
    return path


def raw_code_pickle(path: Path, marker: Path) -> Path:
    """The same payload as a bare pickle (not torch's zip layout)."""
    path.write_bytes(pickle.dumps({"payload": RunsCode(marker)}))
    return path


def foreign_safetensors(path: Path) -> Path:
    """A valid safetensors file of another model."""
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2)}, str(path))
    return path


FILE_FAULTS = {  # name -> how to damage a file that held something valid
    "truncated": truncate,
    "empty": empty,
    "garbage": garbage,
}


# ---------------------------------------------------------------- failing writes


def fail_writes(monkeypatch, error: BaseException, matching: str = "", after_bytes: int = 10) -> list[Path]:
    """Every ``Path.write_bytes`` / ``write_text`` to a file whose name contains ``matching`` writes
    ``after_bytes`` bytes, then raises ``error``: a disk that fills up (``OSError(ENOSPC)``) or a Ctrl-C
    (``KeyboardInterrupt``) in the middle of a write. Returns the paths the failed writes were made to."""
    attempted = []
    write_bytes, write_text = Path.write_bytes, Path.write_text

    def failing_write(self, data, *args, **kwargs):
        if matching not in self.name:
            return (write_text if isinstance(data, str) else write_bytes)(self, data, *args, **kwargs)
        attempted.append(self)
        with open(self, "wb") as handle:
            handle.write((data.encode() if isinstance(data, str) else data)[:after_bytes])
        raise error

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    monkeypatch.setattr(Path, "write_text", failing_write)
    return attempted


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a write left behind (``.name.partial-<pid>``, ``.replaced-``)."""
    return sorted(p.name for p in Path(folder).rglob(".*") if ".partial-" in p.name or ".replaced-" in p.name)


def one_line_error(stderr: str) -> str:
    """The error line of a run that must fail with exactly one line and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="package")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("reliability_ckpt"))


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "person.png"
    cv2.imwrite(str(path), IMAGE)
    return path
