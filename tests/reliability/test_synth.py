"""``locllm synth`` under faults, beyond tests/data/test_synth.py (which checks that an earlier data set is
refused, replaced whole with --overwrite, and that an interrupted run leaves nothing): the command's exit
codes and lines, and that a failed replacement keeps the earlier data set."""

import pytest

from locllm.cli import main
from locllm.data.synth import generate

from .conftest import disk_full, fail_writes, leftovers, one_line_error


def synth(out, *args) -> int:
    return main(["synth", "--out", str(out), "--num-images", "3", "--seed", "1", "--workers", "1", "--size", "64",
                 *map(str, args)])


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_interrupted_synth_is_exit_130_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Ctrl-C while images are rendered: exit 130, one line, no data set and no temporary folder."""
    def interrupt(job):
        raise KeyboardInterrupt
    monkeypatch.setattr(generate, "_render_image", interrupt)
    assert synth(tmp_path / "s") == 130
    assert "interrupted" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fault", ["interrupt", "disk_full"])
def test_failed_replacement_keeps_the_earlier_data_set(tmp_path, monkeypatch, capsys, fault):
    """--overwrite that fails while an annotation file is written (a full disk, a Ctrl-C): the earlier data
    set is intact, byte for byte, and no temporary folder is left."""
    out = tmp_path / "s"
    assert synth(out) == 0
    before = snapshot(out)
    fail_writes(monkeypatch, KeyboardInterrupt() if fault == "interrupt" else disk_full(), matching=".json")
    assert synth(out, "--overwrite") == (130 if fault == "interrupt" else 1)
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    """--out naming a file: refused in one line, the file untouched."""
    out = tmp_path / "s"
    out.write_text("mine")
    assert synth(out, "--overwrite") == 1
    assert "is a file" in one_line_error(capsys.readouterr().err) and out.read_text() == "mine"


def test_existing_contact_sheet_is_refused_before_any_work(tmp_path, capsys):
    """An existing --contact-sheet without --overwrite: refused, and no data set was written."""
    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"mine")
    assert synth(tmp_path / "s", "--contact-sheet", sheet) == 1
    assert "--overwrite" in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "s").exists() and sheet.read_bytes() == b"mine"
