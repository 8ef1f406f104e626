"""What a training checkpoint holds, and the one thing accelerate does not do for it: write it atomically.

    OUTPUT_DIR/checkpoints/step-0001000/
        config.json, trained.safetensors, [base.safetensors]   the model (``save_pretrained``): loadable
        tokenizer files, descriptions.json                      as is by ``from_pretrained`` and ``locllm eval``
        train_config.yaml                                      the resolved training config
        training_state.json                                    step and data position (plain JSON)
        optimizer.bin, scheduler.bin, random_states_{R}.pkl    ``Accelerator.save_state`` (tensors and plain
                                                               values, read with ``torch.load(weights_only=True)``)

accelerate's own ``ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)`` writes straight
into the final ``checkpoint_<i>`` folder and deletes the oldest checkpoint *before* writing the new one,
so a run killed while saving leaves a half-written folder and one complete checkpoint fewer. Here a
checkpoint is written into ``step-0001000.tmp`` and renamed when complete, and only then are all but
the ``keep_last`` newest complete ones deleted.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"step-(\d+)")
TRAINING_STATE = "training_state.json"


@dataclass
class TrainingState:
    """Where the run is: ``global_step`` steps done; the next one is step ``step_in_epoch`` of ``epoch``."""

    global_step: int
    epoch: int
    step_in_epoch: int
    sampler_seed: int
    world_size: int  # processes that wrote the checkpoint (each saved its own RNG state)

    def save(self, folder: Path) -> None:
        (Path(folder) / TRAINING_STATE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> TrainingState:
        path = Path(folder) / TRAINING_STATE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a training checkpoint (no {TRAINING_STATE})")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
            raise ValueError(f"{path}: not a training state ({error}); resume from another checkpoint "
                             "(--resume DIR)") from None


def checkpoint_name(global_step: int) -> str:
    return f"step-{global_step:07d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.fullmatch(p.name)
             and (p / TRAINING_STATE).is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.fullmatch(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path:
    found = list_checkpoints(output_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint to resume from in {Path(output_dir) / 'checkpoints'}")
    return found[-1]


def temporary_checkpoint_dir(output_dir: str | Path, global_step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"{checkpoint_name(global_step)}.tmp"


def begin_checkpoint(output_dir: str | Path, global_step: int) -> Path:
    """A fresh temporary folder for the checkpoint of ``global_step`` (main process only)."""
    temporary = temporary_checkpoint_dir(output_dir, global_step)
    if temporary.exists():
        shutil.rmtree(temporary)  # left over by a run that died while writing
    temporary.mkdir(parents=True)
    return temporary


def finish_checkpoint(temporary: Path, keep_last: int) -> Path:
    """Rename the complete temporary folder into place, then drop all but the ``keep_last`` newest."""
    final = temporary.with_name(temporary.name.removesuffix(".tmp"))
    if final.exists():
        shutil.rmtree(final)  # the same step written again after a resume
    temporary.rename(final)
    for old in list_checkpoints(final.parent.parent)[:-keep_last]:
        shutil.rmtree(old)
    return final
