"""``locllm import-reference`` under faults: an earlier import is never overwritten without --overwrite,
replaced as a whole with it, and a failed or interrupted import leaves nothing that loads."""

import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from locllm.cli import main
from locllm.models import TRAINED_WEIGHTS, LocLLMForKeypointLocalization

from ..convert.test_import_reference import _reference_state_dict, _write_reference_checkpoint
from .conftest import FILE_FAULTS, code_pickle, disk_full, leftovers, one_line_error


@pytest.fixture(scope="module")
def state():
    return _reference_state_dict()


@pytest.fixture
def src(state, tmp_path):
    return _write_reference_checkpoint(tmp_path / "ref", state)


def fail_tokenizer_save(monkeypatch, error: BaseException) -> None:
    """The tokenizer, written after the weights, fails half-way (a full disk, a Ctrl-C)."""
    def failing_save(self, folder, *args, **kwargs):
        (Path(folder) / "tokenizer.json").write_text('{"half": ')
        raise error
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", failing_save)


def import_reference(src, out, *args) -> int:
    return main(["import-reference", str(src), str(out), *map(str, args)])


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def constants(tmp_path):
    path = tmp_path / "constants.py"
    path.write_text("KeypointLocationDescription = {'nose': 'The nose is in the middle of the face.'}\n")
    return path


def test_earlier_import_is_refused_and_kept(src, tmp_path, constants, capsys):
    """Item 7: an OUT holding an earlier import is refused before any work and left byte for byte."""
    out = tmp_path / "ours"
    assert import_reference(src, out, "--descriptions", constants) == 0
    before = snapshot(out)
    assert import_reference(src, out) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "not empty" in line and "--overwrite" in line and str(out) in line
    assert snapshot(out) == before


def test_overwrite_replaces_the_earlier_import_as_a_whole(src, tmp_path, constants):
    """With --overwrite the earlier import's descriptions.json does not survive into the new one."""
    out = tmp_path / "ours"
    assert import_reference(src, out, "--descriptions", constants) == 0
    assert (out / "descriptions.json").is_file()
    assert import_reference(src, out, "--overwrite") == 0
    assert not (out / "descriptions.json").exists() and leftovers(tmp_path) == []
    LocLLMForKeypointLocalization.from_pretrained(out)


def test_out_that_is_a_file_is_refused(src, tmp_path, capsys):
    """OUT naming a file: refused, the file untouched."""
    out = tmp_path / "ours"
    out.write_text("mine")
    assert import_reference(src, out, "--overwrite") == 1
    assert "is a file" in one_line_error(capsys.readouterr().err) and out.read_text() == "mine"


@pytest.mark.parametrize("fault", ["interrupt", "disk_full"])
def test_failed_import_leaves_nothing_that_loads(src, tmp_path, monkeypatch, capsys, fault):
    """Ctrl-C or a full disk while the tokenizer (the last file) is written: no OUT, no temporary."""
    fail_tokenizer_save(monkeypatch, KeyboardInterrupt() if fault == "interrupt" else disk_full())
    out = tmp_path / "ours"
    assert import_reference(src, out) == (130 if fault == "interrupt" else 1)
    assert not out.exists() and leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_earlier_import(src, tmp_path, monkeypatch):
    """A replacement that fails half-way leaves the earlier import as it was."""
    out = tmp_path / "ours"
    assert import_reference(src, out) == 0
    before = snapshot(out)
    fail_tokenizer_save(monkeypatch, disk_full())
    assert import_reference(src, out, "--overwrite") == 1
    assert snapshot(out) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
def test_damaged_reference_weights_are_one_line(src, tmp_path, capsys, fault):
    """A truncated, empty or garbage pytorch_model.bin: one line naming it; no OUT."""
    FILE_FAULTS[fault](src / "pytorch_model.bin")
    assert import_reference(src, tmp_path / "ours") == 1
    assert "pytorch_model.bin" in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "ours").exists()


def test_reference_weights_holding_code_are_not_unpickled(src, tmp_path, capsys):
    """A pytorch_model.bin whose pickle would run code: refused as non-tensor objects; the code never runs."""
    marker = tmp_path / "PWNED"
    code_pickle(src / "pytorch_model.bin", marker)
    assert import_reference(src, tmp_path / "ours") == 1
    line = one_line_error(capsys.readouterr().err)
    assert "holds non-tensor objects" in line and "weights_only" not in line and not marker.exists()


def test_damaged_dinov2_file_is_one_line(src, tmp_path, capsys):
    """A truncated DINOv2 .pth that the config names: one line naming it."""
    FILE_FAULTS["truncated"](src / "dinov2_tiny.pth")
    assert import_reference(src, tmp_path / "ours") == 1
    assert "dinov2_tiny.pth" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("config", ["{", "", json.dumps({"model_type": "llama"})])
def test_bad_reference_config_is_one_line(src, tmp_path, capsys, config):
    """A malformed, empty or foreign config.json in SRC: one line naming the problem; no OUT."""
    (src / "config.json").write_text(config)
    assert import_reference(src, tmp_path / "ours") == 1
    line = one_line_error(capsys.readouterr().err)
    assert "config.json" in line or "not a reference LocLLM config" in line
    assert not (tmp_path / "ours").exists()


def test_missing_weights_in_src_is_one_line(src, tmp_path, capsys):
    """SRC without weights: one line naming SRC."""
    (src / "pytorch_model.bin").unlink()
    assert import_reference(src, tmp_path / "ours") == 1
    assert "no pytorch_model*.bin" in one_line_error(capsys.readouterr().err)


def test_an_import_loads_and_has_every_file(src, tmp_path):
    """The control case: a clean import is complete (weights, config, tokenizer) and loads."""
    out = tmp_path / "ours"
    assert import_reference(src, out) == 0
    assert {TRAINED_WEIGHTS, "config.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
