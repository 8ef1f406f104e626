"""Checkpoint loading under damaged, foreign and hostile files: every one is one line naming the file, no
pickled code ever runs, and torch's hint to turn ``weights_only`` off is never passed on."""

import json
import shutil

import pytest
import torch

from locllm.cli import main
from locllm.data.tensor_files import load_tensor_file
from locllm.models import BASE_WEIGHTS, TRAINED_WEIGHTS

from .conftest import FILE_FAULTS, code_pickle, foreign_safetensors, one_line_error, raw_code_pickle


@pytest.fixture
def copy(checkpoint, tmp_path):
    return shutil.copytree(checkpoint, tmp_path / "checkpoint")


def predict(checkpoint, image) -> int:
    return main(["predict", str(image), "--checkpoint", str(checkpoint), "--device", "cpu"])


@pytest.mark.parametrize("weights", [TRAINED_WEIGHTS, BASE_WEIGHTS])
@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
def test_damaged_weights_are_one_line_naming_the_file(copy, image, capsys, weights, fault):
    """A truncated, empty or garbage weight file: one line naming it, with the fix; exit 1."""
    FILE_FAULTS[fault](copy / weights)
    assert predict(copy, image) == 1
    line = one_line_error(capsys.readouterr().err)
    assert str(copy / weights) in line and "re-" in line


def test_pickle_in_place_of_safetensors_is_not_unpickled(copy, image, tmp_path, capsys):
    """A torch pickle holding code, named trained.safetensors: refused, the code never runs."""
    marker = tmp_path / "PWNED"
    code_pickle(copy / TRAINED_WEIGHTS, marker)
    assert predict(copy, image) == 1
    assert TRAINED_WEIGHTS in one_line_error(capsys.readouterr().err)
    assert not marker.exists()


def test_foreign_safetensors_is_one_line(copy, image, capsys):
    """Another model's safetensors: one line saying the checkpoint does not match, with the unexpected keys."""
    foreign_safetensors(copy / TRAINED_WEIGHTS)
    assert predict(copy, image) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "does not match" in line and "bert.embeddings" in line


def test_missing_trained_weights_are_named(copy, image, capsys):
    """A checkpoint folder without trained.safetensors (an interrupted copy): one line naming the file."""
    (copy / TRAINED_WEIGHTS).unlink()
    assert predict(copy, image) == 1
    assert f"has no {TRAINED_WEIGHTS}" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("config", ["{bad json", "", json.dumps({"model_type": "bert"}), None])
def test_bad_config_is_one_line(copy, image, capsys, config):
    """A malformed, empty, foreign or missing config.json: one line naming the checkpoint."""
    if config is None:
        (copy / "config.json").unlink()
    else:
        (copy / "config.json").write_text(config)
    assert predict(copy, image) == 1
    assert str(copy) in one_line_error(capsys.readouterr().err)


def test_missing_checkpoint_folder_is_one_line(tmp_path, image, capsys):
    """A checkpoint path that does not exist: one line naming it."""
    assert predict(tmp_path / "no_such_checkpoint", image) == 1
    assert "no_such_checkpoint" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("make", [code_pickle, raw_code_pickle])
def test_torch_files_with_code_are_refused_without_the_weights_only_hint(tmp_path, make):
    """A .pth / .bin pickle holding code: 'holds non-tensor objects ... not loaded', the code never runs,
    and the message never suggests weights_only=False."""
    marker = tmp_path / "PWNED"
    path = make(tmp_path / "model.bin", marker)
    with pytest.raises(ValueError) as raised:
        load_tensor_file(path)
    message = str(raised.value)
    assert "model.bin" in message and "weights_only" not in message and not marker.exists()
    if make is code_pickle:
        assert "holds non-tensor objects" in message


@pytest.mark.parametrize("suffix", [".bin", ".pth", ".safetensors"])
@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
def test_damaged_tensor_files_are_one_value_error(tmp_path, suffix, fault):
    """Every weight format, truncated, empty or garbage: a ValueError naming the file and the fix."""
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        foreign_safetensors(path)
    else:
        torch.save({"weight": torch.arange(1000.0)}, path)
    FILE_FAULTS[fault](path)
    with pytest.raises(ValueError, match=rf"weights\{suffix} .*re-save or re-download"):
        load_tensor_file(path)


def test_torch_file_that_is_not_a_state_dict_is_refused(tmp_path):
    """A weights-only torch file holding no {name: tensor} mapping is refused, not half-used."""
    path = tmp_path / "numbers.pth"
    torch.save({"epoch": 3, "weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a state dict"):
        load_tensor_file(path)
