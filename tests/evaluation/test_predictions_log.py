"""The predictions log's merge: the ranks' parts, each a few runs of increasing index (one per command that
wrote it), become one file by index, every item once, read as streams."""

from __future__ import annotations

import json

from locllm.evaluation.distributed import Ranks
from locllm.evaluation.predictions_log import PredictionLog

HEADER = {"format": "test/1", "checkpoint": "here"}


def _write(path, indices, cut=False):
    lines = [{"header": HEADER}, *({"index": i, "answer": f"a{i}"} for i in indices)]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    path.write_text(text + ('{"index": 99, "ans' if cut else ""))


def test_parts_written_by_several_runs_merge_by_index_once_each(tmp_path):
    path = tmp_path / "predictions.jsonl"
    _write(tmp_path / "predictions.jsonl.rank0", [0, 2, 4, 1])  # a run of 2 ranks, then one of 3 after a kill
    _write(tmp_path / "predictions.jsonl.rank1", [3, 5, 8, 7], cut=True)  # killed mid-line
    _write(tmp_path / "predictions.jsonl.rank2", [6, 5])  # 5 twice: a part that outlived an earlier merge
    log = PredictionLog(path, HEADER, Ranks(0, 3))
    assert log.finished(keep_records=False) == dict.fromkeys(range(9))
    log.merge()
    header, *records = [json.loads(line) for line in path.read_text().splitlines()]
    assert header == {"header": HEADER}
    assert [r["index"] for r in records] == list(range(9)) and [r["answer"] for r in records][:2] == ["a0", "a1"]
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"]


def test_the_checkpoint_path_is_recorded_only(tmp_path):
    path = tmp_path / "predictions.jsonl"
    _write(path, [0, 1])
    moved = PredictionLog(path, {**HEADER, "checkpoint": "elsewhere"}, Ranks())
    assert list(moved.finished()) == [0, 1]
