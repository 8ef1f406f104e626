"""Training checkpoints: written atomically, read without unpickling arbitrary objects.

    OUTPUT_DIR/checkpoints/step-0001000/
        config.json, trained.safetensors, [base.safetensors]   the model (``save_pretrained``): loadable
        tokenizer files                                        as is by ``from_pretrained`` and ``locllm eval``
        train_config.yaml                                      the resolved training config
        training_state.pt                                      optimizer, scheduler, step, data position
        rng_state_rank{R}.pt                                   python / numpy / torch RNG of process R

A checkpoint is written into ``step-0001000.tmp`` and renamed when complete, so a crash never leaves a
half-written ``step-*`` folder; the ``keep_last`` newest complete ones are kept. Everything is read with
``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"step-(\d+)")
TRAINING_STATE = "training_state.pt"


@dataclass
class DataPosition:
    """Where the run is in its data: the next optimizer step is step ``step_in_epoch`` of ``epoch``."""

    epoch: int
    step_in_epoch: int
    sampler_seed: int


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


def begin_checkpoint(output_dir: str | Path, global_step: int) -> Path:
    """A fresh temporary folder for the checkpoint of ``global_step`` (main process only)."""
    temporary = temporary_checkpoint_dir(output_dir, global_step)
    if temporary.exists():
        shutil.rmtree(temporary)  # left over by a run that died while writing
    temporary.mkdir(parents=True)
    return temporary


def temporary_checkpoint_dir(output_dir: str | Path, global_step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"{checkpoint_name(global_step)}.tmp"


def finish_checkpoint(temporary: Path, keep_last: int) -> Path:
    """Rename the complete temporary folder into place, then drop all but the ``keep_last`` newest."""
    final = temporary.with_name(temporary.name.removesuffix(".tmp"))
    if final.exists():
        shutil.rmtree(final)  # the same step written again after a resume
    temporary.rename(final)
    for old in list_checkpoints(final.parent.parent)[:-keep_last]:
        shutil.rmtree(old)
    return final


def save_training_state(folder: Path, optimizer, scheduler, global_step: int, position: DataPosition,
                        world_size: int) -> None:
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "global_step": global_step,
            "epoch": position.epoch,
            "step_in_epoch": position.step_in_epoch,
            "sampler_seed": position.sampler_seed,
            "world_size": world_size,
        },
        folder / TRAINING_STATE,
    )


def load_training_state(folder: Path) -> dict:
    path = Path(folder) / TRAINING_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a training checkpoint (no {TRAINING_STATE})")
    return torch.load(path, weights_only=True)


def save_rng_state(folder: Path, rank: int) -> None:
    """This process's random number generators (LoRA dropout draws from torch's)."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's key array as a tensor: weights_only loading accepts tensors, not numpy arrays
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, folder / f"rng_state_rank{rank}.pt")


def load_rng_state(folder: Path, rank: int) -> bool:
    """Restore this process's generators; False when the checkpoint has none for ``rank``."""
    path = Path(folder) / f"rng_state_rank{rank}.pt"
    if not path.is_file():
        return False
    state = torch.load(path, weights_only=True)
    random.setstate(_as_tuples(state["python"]))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    return True


def _as_tuples(value):
    """random.setstate needs the nested tuples it gave (a round trip may turn them into lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
