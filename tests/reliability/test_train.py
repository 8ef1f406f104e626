"""Fault injection for ``locllm train``: bad config and annotation files, resumes with changed settings or
inputs, damaged checkpoints, interruptions (Ctrl-C, SIGTERM, death while a checkpoint is written).

Each test states the guarantee it checks. Runs are tiny (see tests/training/test_trainer.py): a tiny model
on 8 SynthPose crops, 2 steps per epoch.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from locllm.cli import main
from locllm.data.synth import generate_synthpose
from locllm.models.processing_locllm import DESCRIPTIONS_FILE
from locllm.training import checkpoint as ckpt
from locllm.training import trainer
from locllm.training.config import dump_config, load_config
from locllm.training.trainer import train


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_synthpose(root, num_images=8, seed=1, size=64, persons=1, fmt="coco", difficulty="easy",
                       val_fraction=0.0)
    return root


def _raw_config(synth, output_dir, annotation=None) -> dict:
    return {
        "output_dir": str(output_dir),
        "model": {"size": "tiny", "tokenizer": "char", "lora_dropout": 0.1},
        "data": {"datasets": [{"type": "coco", "annotation_file": str(annotation or synth / "annotations/train.json"),
                               "image_root": str(synth / "images")}], "num_workers": 0},
        "prompt": {"with_description": False, "max_rounds": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 1, "batch_size": 4, "micro_batch_size": 2, "max_steps": 4},
        "checkpoint": {"every_steps": 2, "keep_last": 3},
        "logging": {"progress_bar": False, "tensorboard": False, "every_steps": 1},
    }


def _config(synth, output_dir, *overrides, annotation=None):
    return load_config(base=_raw_config(synth, output_dir, annotation), overrides=list(overrides))


def _config_file(synth, tmp_path, name="train.yaml", annotation=None) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(_raw_config(synth, tmp_path / "run", annotation)))
    return path


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("locllm train")]
    assert len(err) == 1, err
    return err[0]


def _die_after_checkpoint(monkeypatch, step, how=KeyboardInterrupt):
    """The run is interrupted right after the checkpoint of ``step`` is complete."""
    save = trainer._save_checkpoint

    def save_then_die(*args):
        folder = save(*args)
        if folder.name == ckpt.checkpoint_name(step):
            if how is signal.SIGTERM:
                os.kill(os.getpid(), signal.SIGTERM)
            raise how()
        return folder

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_die)


def _trained(folder):
    return load_file(Path(folder) / "trained.safetensors")


@pytest.fixture(scope="module")
def interrupted(synth, tmp_path_factory):
    """A run interrupted after its step-2 checkpoint (of 4): its output_dir."""
    output_dir = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.MonkeyPatch.context() as patch:
        _die_after_checkpoint(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(_config(synth, output_dir))
    return output_dir


# ------------------------------------------------------------------ config files


@pytest.mark.parametrize("content, expected", [
    (b"", "missing required keys"),
    (b"optim: {lr: [1e-3\n", "not a readable YAML config"),
    (b"\xff\xfe\x00binary\x00", "not a readable YAML config"),
    (b"- a\n- b\n", "a config is a mapping"),
    (b'{"images": [], "annotations": []}', "unknown keys"),
    (b"output_dir: x\nmodel: {tokenizer: char}\ndata: {datasets: [{type: coco}]}\noptim: {lr: fast}\n",
     "optim.lr must be a number"),
], ids=["empty", "corrupt-yaml", "binary", "foreign-list", "foreign-coco-json", "wrong-type"])
def test_bad_config_file_is_one_line(tmp_path, capsys, content, expected):
    """An empty, corrupt, binary, foreign or mistyped config: exit 1 and one line naming the file and the
    problem, before anything is built."""
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    assert main(["train", str(path)]) == 1
    line = _one_line(capsys)
    assert str(path) in line and expected in line


def test_missing_config_file_is_one_line(tmp_path, capsys):
    """A missing config: one line naming it, exit 1."""
    assert main(["train", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml" in _one_line(capsys)


@pytest.mark.parametrize("content", [b"", b'{"images": [', b"[1, 2]"], ids=["empty", "truncated", "foreign"])
def test_bad_annotation_file_names_the_dataset_entry(synth, tmp_path, content):
    """A dataset's annotation file that is empty, truncated or foreign stops training before the first step
    with the config entry and the file named."""
    annotation = tmp_path / "ann.json"
    annotation.write_bytes(content)
    with pytest.raises(ValueError, match=r"data\.datasets\.0 \(coco\): .*ann\.json cannot be read"):
        train(_config(synth, tmp_path / "run", annotation=annotation))
    assert not ckpt.list_checkpoints(tmp_path / "run")


# ------------------------------------------------------------------ resume with other settings or inputs


@pytest.mark.parametrize("overrides, keys", [
    (["optim.lr=0.01"], ["optim.lr"]),
    (["model.lora_r=4"], ["model.lora_r"]),
    (["optim.lr=0.01", "model.lora_r=4", "optim.max_steps=6"], ["optim.lr", "model.lora_r", "optim.max_steps"]),
], ids=["lr", "lora_r", "three"])
def test_resume_with_changed_settings_is_refused(synth, interrupted, overrides, keys):
    """``--resume`` with settings that change what the run computes refuses before any work, listing every
    differing setting with both values and the two ways on; nothing is written."""
    before = sorted(p.name for p in ckpt.list_checkpoints(interrupted))
    config = _config(synth, interrupted, *overrides)
    with pytest.raises(ValueError) as error:
        train(config, resume=ckpt.latest_checkpoint(interrupted))
    message = str(error.value)
    assert "\n" not in message and all(key in message for key in keys)
    assert "model.init_from=" in message and "train_config.yaml" in message
    assert sorted(p.name for p in ckpt.list_checkpoints(interrupted)) == before


def test_resume_with_changed_annotation_content_is_refused(synth, tmp_path):
    """The training data changed between interruption and resume (same path, other content): refused, as
    the replayed data order would no longer be the run's."""
    annotation = tmp_path / "train.json"
    annotation.write_bytes((synth / "annotations/train.json").read_bytes())
    config = _config(synth, tmp_path / "run", annotation=annotation)
    with pytest.MonkeyPatch.context() as patch:
        _die_after_checkpoint(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(config)
    data = json.loads(annotation.read_text())
    data["annotations"] = data["annotations"][:-1]
    annotation.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"data\.datasets\.0\.annotation_file \(content, sha256\)"):
        train(config, resume=ckpt.latest_checkpoint(config.output_dir))


def test_resume_applies_and_states_bookkeeping_settings(synth, tmp_path, caplog):
    """Settings that only say how the run is recorded (logging, checkpoint cadence, output_dir) are applied
    and stated on resume; the weights equal an uninterrupted run's, and the new checkpoint's
    train_config.yaml records exactly the values used."""
    full = train(_config(synth, tmp_path / "full"))
    config = _config(synth, tmp_path / "run")
    with pytest.MonkeyPatch.context() as patch:
        _die_after_checkpoint(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(config)
    changed = _config(synth, tmp_path / "moved", "checkpoint.keep_last=1", "logging.every_steps=5")
    with caplog.at_level("INFO", logger="locllm.training.resume"):
        resumed = train(changed, resume=ckpt.latest_checkpoint(config.output_dir))
    stated = caplog.text
    assert "checkpoint.keep_last: 3 -> 1" in stated and "logging.every_steps: 1 -> 5" in stated
    assert "output_dir" in stated
    for key, value in _trained(full.checkpoint).items():
        assert torch.equal(value, _trained(resumed.checkpoint)[key]), key
    recorded = yaml.safe_load((resumed.checkpoint / "train_config.yaml").read_text())
    assert recorded["checkpoint"]["keep_last"] == 1 and recorded["optim"]["lr"] == 1e-3
    dump_config(changed, tmp_path / "expected.yaml")
    assert recorded == yaml.safe_load((tmp_path / "expected.yaml").read_text())


@pytest.mark.parametrize("damage, expected", [
    (lambda folder: (folder / "train_config.yaml").unlink(), "has no train_config.yaml"),
    (lambda folder: (folder / "train_config.yaml").write_text("optim: [\n"), "not readable YAML"),
    (lambda folder: (folder / "training_state.json").write_text('{"global_step": 2'), "not a training state"),
], ids=["no-config", "corrupt-config", "corrupt-state"])
def test_damaged_checkpoint_refuses_to_resume(synth, tmp_path, interrupted, damage, expected):
    """A checkpoint whose config or training state is missing or damaged is refused with one line naming it
    and the way on (another checkpoint), never resumed at a guessed position."""
    import shutil

    output_dir = tmp_path / "run"
    shutil.copytree(interrupted, output_dir)
    folder = ckpt.latest_checkpoint(output_dir)
    damage(folder)
    config = _config(synth, interrupted)  # the run's own settings
    with pytest.raises((ValueError, FileNotFoundError), match=expected) as error:
        train(config, resume=folder)
    assert str(folder) in str(error.value) and "\n" not in str(error.value)


def test_resume_from_a_folder_that_is_no_checkpoint(synth, tmp_path, capsys):
    """--resume DIR naming something that is not a checkpoint: one line, exit 1."""
    config_file = _config_file(synth, tmp_path)
    assert main(["train", str(config_file), "--resume", str(tmp_path)]) == 1
    assert "not a training checkpoint" in _one_line(capsys)


# ------------------------------------------------------------------ interruption


@pytest.mark.slow
def test_death_while_a_checkpoint_is_written_loses_only_that_checkpoint(synth, tmp_path, monkeypatch):
    """Killed while the step-4 checkpoint is written: its half-written folder is never taken for a
    checkpoint, the step-2 one is intact, and resuming from it ends with the uninterrupted run's weights."""
    full = train(_config(synth, tmp_path / "full"))
    config = _config(synth, tmp_path / "run")
    export = DESCRIPTIONS_FILE

    with monkeypatch.context() as patch:
        from locllm.models import LocLLMForKeypointLocalization

        save = LocLLMForKeypointLocalization.save_pretrained

        def die_in_step_4(self, folder, *args, **kwargs):
            save(self, folder, *args, **kwargs)
            if Path(folder).name.startswith(ckpt.checkpoint_name(4)):
                raise KeyboardInterrupt  # the weights are written, the rest of the checkpoint is not
        patch.setattr(LocLLMForKeypointLocalization, "save_pretrained", die_in_step_4)
        with pytest.raises(KeyboardInterrupt):
            train(config)
    half = ckpt.temporary_checkpoint_dir(config.output_dir, 4)
    assert half.is_dir() and not (half / export).exists()
    assert [p.name for p in ckpt.list_checkpoints(config.output_dir)] == [ckpt.checkpoint_name(2)]
    resumed = train(config, resume=ckpt.latest_checkpoint(config.output_dir))
    assert not half.exists()
    for key, value in _trained(full.checkpoint).items():
        assert torch.equal(value, _trained(resumed.checkpoint)[key]), key


def test_sigterm_says_how_to_resume_and_the_command_works(synth, tmp_path, monkeypatch, capsys):
    """SIGTERM (a scheduler's stop) after a checkpoint: exit 130 and one line naming the checkpoint and the
    exact command that continues it (with the --set overrides); that command then finishes the run."""
    config_file = _config_file(synth, tmp_path)
    with monkeypatch.context() as patch:
        _die_after_checkpoint(patch, 2, signal.SIGTERM)
        assert main(["train", str(config_file), "--set", "optim.lr=0.002"]) == 130
    line = _one_line(capsys)
    assert ckpt.checkpoint_name(2) in line
    assert f"`locllm train {config_file} --set optim.lr=0.002 --resume`" in line
    assert main(["train", str(config_file), "--set", "optim.lr=0.002", "--resume"]) == 0
    assert ckpt.latest_checkpoint(tmp_path / "run").name == ckpt.checkpoint_name(4)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back


def test_ctrl_c_before_the_first_checkpoint(synth, tmp_path, monkeypatch, capsys):
    """Ctrl-C before any checkpoint: exit 130 and one line saying nothing was kept and what to run."""
    config_file = _config_file(synth, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "_optimizer_step", interrupted)
    assert main(["train", str(config_file)]) == 130
    assert "before it wrote a checkpoint: run the same command again" in _one_line(capsys)
