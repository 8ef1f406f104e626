"""The resumable predictions file of a run over many items (an evaluation's persons, a data set's images): a
header line, then one JSON line per item, each carrying its ``index``.

Each line is flushed as soon as its item is answered; a rerun with the same file asks only the items the
file lacks (a line cut by the interruption is dropped). A file written with another header (another data
set, checkpoint content, decoding or set of items) is never resumed. Several processes (see
:mod:`.distributed`) each write ``<file>.rank<r>``; the main process merges them into the file at the end,
reading the parts as streams, so that neither the merge nor the resume holds more than one line at a time
beyond the indices already answered.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from pathlib import Path

from ..data.outputs import write_atomically
from .distributed import Ranks

PREDICTIONS_FORMAT = "locllm-eval-predictions/1"
RECORDED_ONLY = ("checkpoint",)  # header entries that say where, not what: they may differ on resume


class PredictionLog:
    """The predictions file: a header line, then one JSON line per item, each flushed when written.

    One process writes ``path``; with several, rank ``r`` writes ``path.rank<r>`` and the main process
    merges everything into ``path`` at the end (:meth:`merge`). ``run`` names what wrote it and ``start_over``
    the command-line flag that discards an earlier file, both for the refusal to resume another run's file.
    """

    def __init__(self, path: str | Path, header: dict, ranks: Ranks, *, run: str = "evaluation",
                 start_over: str = "--overwrite-predictions"):
        self.path = Path(path)
        self.header = json.loads(json.dumps(header))  # as it reads back from the file (tuples are lists)
        self.run, self.start_over = run, start_over
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

    def finished(self, keep_records: bool = True) -> dict[int, dict | None]:
        """The items already answered, by index, from every file (checked against the header); with
        ``keep_records=False`` only which ones (every value None), for runs too large to hold their records."""
        return {record["index"]: record if keep_records else None
                for path in self.files() for _, record in self._lines(path)}

    def _lines(self, path: Path) -> Iterator[tuple[int, dict]]:
        """``(byte offset, record)`` of every complete item line of ``path``, after checking its header. A last
        line without its newline was cut by an interruption: it is left out (and its item asked again)."""
        with path.open("rb") as file:
            offset, number = 0, 0
            for line in file:
                number += 1
                if not line.endswith(b"\n"):
                    return
                if number == 1:
                    difference = _header_difference(self._parse(line, path, 1).get("header"), self.header)
                    if difference:
                        raise ValueError(f"{path} holds predictions of another {self.run} ({difference}); choose another "
                                         f"file, or start over with {self.start_over}")
                elif line.strip():
                    yield offset, self._parse(line, path, number)
                offset += len(line)

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

    def merge(self) -> None:
        """Main process, after every rank closed its file: rewrite ``path`` with every item once, by index;
        remove the parts. Each file is a few runs of increasing indices (one per run of the command that
        wrote it); the runs are merged as streams, so the merge holds one line per run."""
        files = self.files()
        runs = [run for path in files for run in self._runs(path)]

        def write(temporary: Path) -> None:  # a full disk or an interruption leaves every file as it was
            with temporary.open("w", encoding="utf-8") as file:
                file.write(json.dumps({"header": self.header}) + "\n")
                last = None
                for index, line in heapq.merge(*runs):
                    if index != last:  # a part that outlived an earlier merge repeats lines the merged file has
                        file.write(line)
                        last = index

        write_atomically(self.path, write)
        for path in files:
            if path != self.path:
                path.unlink()

    def _runs(self, path: Path) -> list[Iterator[tuple[int, str]]]:
        """``path``'s lines as runs of increasing index, each a stream of ``(index, line)``."""
        starts, previous = [], None
        for offset, record in self._lines(path):
            if previous is None or record["index"] < previous:
                starts.append(offset)
            previous = record["index"]
        return [self._run(path, start, end) for start, end in zip(starts, [*starts[1:], None], strict=True)]

    def _run(self, path: Path, start: int, end: int | None) -> Iterator[tuple[int, str]]:
        with path.open("rb") as file:
            file.seek(start)
            while end is None or file.tell() < end:
                line = file.readline()
                if not line.endswith(b"\n"):
                    return
                if line.strip():
                    yield self._parse(line, path, 0)["index"], line.decode("utf-8")

    def _parse(self, line: bytes, path: Path, number: int) -> dict:
        try:
            return json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            where = f", line {number}" if number else ""
            raise ValueError(f"{path}{where}: not a predictions line ({error}); remove that line to resume, "
                             f"or start over with {self.start_over}") from None

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def resume(log: PredictionLog | None, overwrite: bool, ranks: Ranks, keep_records: bool = True) -> dict[int, dict | None]:
    """The items the log already holds, by index (none when starting over: ``overwrite`` removes its files);
    every rank calls it, the main process removes."""
    if log is not None and overwrite and ranks.is_main:
        log.remove()
    ranks.barrier()  # nobody reads before the main process has removed the old files
    finished = log.finished(keep_records) if log is not None else {}
    ranks.barrier()  # nobody appends before everybody has read
    return finished


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
