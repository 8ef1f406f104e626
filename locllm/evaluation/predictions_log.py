"""The resumable predictions file of an evaluation: a header line, then one JSON line per person.

Each person's line is flushed as soon as it is answered; a rerun with the same file asks only the persons
the file lacks (a line cut by the interruption is dropped). A file written with another header (another
data set, checkpoint content, decoding or set of persons) is never resumed. Several processes (see
:mod:`.distributed`) each write ``<file>.rank<r>``; the main process merges them into the file at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .distributed import Ranks

PREDICTIONS_FORMAT = "locllm-eval-predictions/1"
RECORDED_ONLY = ("checkpoint",)  # header entries that say where, not what: they may differ on resume


class PredictionLog:
    """The predictions file: a header line, then one JSON line per person, each flushed when written.

    One process writes ``path``; with several, rank ``r`` writes ``path.rank<r>`` and the main process
    merges everything into ``path`` at the end (:meth:`merge`).
    """

    def __init__(self, path: str | Path, header: dict, ranks: Ranks):
        self.path = Path(path)
        self.header = json.loads(json.dumps(header))  # as it reads back from the file (tuples are lists)
        single = ranks.world_size == 1
        self.own_path = self.path if single else self.path.with_name(f"{self.path.name}.rank{ranks.rank}")
        self._file = None

    def files(self) -> list[Path]:
        """Every file that may hold finished persons: the merged file and any rank's part."""
        parts = sorted(self.path.parent.glob(f"{self.path.name}.rank*"))
        return [p for p in [self.path, *parts] if p.is_file()]

    def remove(self) -> None:
        for path in self.files():
            path.unlink()

    def finished(self) -> dict[int, dict]:
        """The persons already answered, by item index, from every file (checked against the header)."""
        records: dict[int, dict] = {}
        for path in self.files():
            text = path.read_text(encoding="utf-8")
            # A last line without its newline was cut by an interruption: it is dropped (and asked again).
            lines = text[: text.rfind("\n") + 1].splitlines()
            if not lines:
                continue
            header = _parse_line(lines[0], path, 1)
            difference = _header_difference(header.get("header"), self.header)
            if difference:
                raise ValueError(f"{path} holds predictions of another evaluation ({difference}); choose another "
                                 "predictions file, or start over with --overwrite-predictions")
            for number, line in enumerate(lines[1:], start=2):
                if line.strip():
                    record = _parse_line(line, path, number)
                    records[record["index"]] = record
        return records

    def open(self) -> None:
        """Start appending to this process's file (a new file gets the header)."""
        self.own_path.parent.mkdir(parents=True, exist_ok=True)
        if self.own_path.is_file():
            _drop_partial_last_line(self.own_path)
        fresh = not self.own_path.is_file() or self.own_path.stat().st_size == 0
        self._file = self.own_path.open("a", encoding="utf-8")
        if fresh:
            self._write({"header": self.header})

    def append(self, record: dict) -> None:
        self._write(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def merge(self, records: list[dict]) -> None:
        """Main process, at the end: rewrite ``path`` with every person in order; remove the parts."""
        temporary = self.path.with_name(f"{self.path.name}.merging")
        with temporary.open("w", encoding="utf-8") as file:
            for record in [{"header": self.header}, *records]:
                file.write(json.dumps(record) + "\n")
        os.replace(temporary, self.path)
        for path in self.files():
            if path != self.path:
                path.unlink()

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def _parse_line(line: str, path: Path, number: int) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {number}: not a predictions line ({error}); remove that line to resume, "
                         "or start over with --overwrite-predictions") from None


def _header_difference(found: dict | None, expected: dict) -> str | None:
    """What makes ``found`` another evaluation than ``expected``, or None; the checkpoint's path does not
    (its content, ``checkpoint_sha256``, does)."""
    if not isinstance(found, dict):
        return "no header line"
    # both ways: a key only one side has (e.g. decoding options beyond the paper's reading) differs too
    keys = [key for key in {**found, **expected} if key not in RECORDED_ONLY and found.get(key) != expected.get(key)]
    if "checkpoint_sha256" in keys:
        return "the checkpoint's files changed since they were written"
    return "different " + ", ".join(keys) if keys else None


def _drop_partial_last_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)
