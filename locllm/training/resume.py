"""What ``--resume`` may change: the settings and input files a resumed run is checked against.

A checkpoint holds the optimizer's moments, the schedule's position, the data order and the trained
weights of the run that wrote it, all made under that run's settings. A resumed run that used other values
for any of them would neither be that run nor the one its new config describes (a new ``optim.lr`` is
overwritten by the restored schedule, a new ``model.lora_r`` by the restored weights), while its
checkpoints' ``train_config.yaml`` would record the new values as if they had been used. So a resume
refuses every difference, except the few settings that only say how the run is recorded (``output_dir``,
``logging.*``, ``checkpoint.*``, ``data.num_workers``): those are applied and stated. The same holds for
the content of the input files (annotations, keypoint tables): a resume over changed data is refused.

    inputs = input_fingerprints(config)              # once, when the run starts: what it reads
    check_resume(config, checkpoint_folder, inputs)  # raises ValueError naming every difference, and the fix
    write_input_fingerprints(inputs, folder)         # beside train_config.yaml in every checkpoint
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml
from huggingface_hub.utils.sha import sha_fileobj

from .config import TrainConfig, config_to_yaml_dict

logger = logging.getLogger(__name__)

SAVED_CONFIG = "train_config.yaml"
INPUT_FINGERPRINTS = "input_files.json"
# Settings that change how a run is recorded, not what it computes: a resume applies them.
APPLIED_ON_RESUME = ("output_dir", "logging.", "checkpoint.", "data.num_workers")
# Dataset arguments that name an input file whose content the run depends on.
INPUT_FILE_ARGUMENTS = ("annotation_file", "keypoints", "ground_truth_file")


def check_resume(config: TrainConfig, checkpoint: str | Path, inputs: dict[str, str]) -> list[str]:
    """Refuse to resume ``checkpoint`` with settings or input files (``inputs``: :func:`input_fingerprints`)
    that differ from its run's.

    Returns the applied differences as ``"key: old -> new"`` (also logged); raises ``ValueError`` with one
    line listing every refused one and how to proceed.
    """
    checkpoint = Path(checkpoint)
    saved_path = checkpoint / SAVED_CONFIG
    if not saved_path.is_file():
        raise FileNotFoundError(f"{checkpoint} has no {SAVED_CONFIG}: it is not a training checkpoint to resume")
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{saved_path}: not readable YAML ({_first_line(error)}); resume from another "
                         "checkpoint (--resume DIR)") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{saved_path}: not a training config; resume from another checkpoint (--resume DIR)")
    differences = _differences(_flatten(saved), _flatten(config_to_yaml_dict(config)))
    applied = [d for d in differences if d[0].startswith(APPLIED_ON_RESUME)]
    refused = [d for d in differences if d not in applied]
    refused += _changed_inputs(checkpoint, inputs)
    if refused:
        listed = "; ".join(f"{key}: {old!r} in the checkpoint, {new!r} now" for key, old, new in refused)
        raise ValueError(f"--resume {checkpoint}: the run continued was made with other settings or inputs "
                         f"({listed}). Resume with the checkpoint's values (its {SAVED_CONFIG}), or start a new "
                         f"run from its weights: --set model.init_from={checkpoint} with another output_dir")
    notes = [f"{key}: {old!r} -> {new!r}" for key, old, new in applied]
    for note in notes:
        logger.info("resuming with a changed setting (applied): %s", note)
    return notes


def write_input_fingerprints(inputs: dict[str, str], folder: str | Path) -> None:
    """Record the run's :func:`input_fingerprints` in a checkpoint, for :func:`check_resume`."""
    (Path(folder) / INPUT_FINGERPRINTS).write_text(json.dumps(inputs, indent=2) + "\n")


def _changed_inputs(checkpoint: Path, now: dict[str, str]) -> list[tuple[str, str, str]]:
    path = checkpoint / INPUT_FINGERPRINTS
    if not path.is_file():  # written by a version that did not record them
        logger.warning("%s has no %s: the input files cannot be checked against the run's", checkpoint,
                       INPUT_FINGERPRINTS)
        return []
    saved = json.loads(path.read_text())
    return [(f"{key} (content, sha256)", saved[key][:12], (now.get(key) or "missing")[:12])
            for key in saved if now.get(key) != saved[key]]


def input_fingerprints(config: TrainConfig) -> dict[str, str]:
    """``{"data.datasets.0.annotation_file": sha256 of its content}`` for every named input file."""
    fingerprints = {}
    for i, dataset in enumerate(config.data.datasets):
        for name in INPUT_FILE_ARGUMENTS:
            value = dataset.args.get(name)
            if isinstance(value, str) and Path(value).is_file():
                fingerprints[f"data.datasets.{i}.{name}"] = _file_sha256(value)
    return fingerprints


def _file_sha256(path: str | Path) -> str:
    with Path(path).open("rb") as file:
        return sha_fileobj(file).hex()  # read in 1 MB chunks: a large file never sits in memory


def _flatten(value, prefix: str = "") -> dict:
    """Nested dicts and lists -> ``{"optim.lr": 0.001, "data.datasets.0.type": "coco", ...}``."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def _differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    keys = list(saved) + [key for key in current if key not in saved]
    return [(key, saved.get(key), current.get(key)) for key in keys if saved.get(key) != current.get(key)]


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
