"""What ties a predictions file to a checkpoint: the content of the files its answers come from, not its path.

A checkpoint whose weights were replaced at the same path answers differently; a predictions file written
with the old weights must not be resumed with the new ones (two models' answers in one metric), while the
same checkpoint moved or copied elsewhere may be.
"""

from __future__ import annotations

from pathlib import Path

from ..models.modeling_base import files_sha256

# What a training checkpoint holds for resuming training only: it does not change a single answer.
TRAINING_ONLY = ("optimizer.bin", "scheduler.bin", "training_state.json", "train_config.yaml", "input_files.json")


def checkpoint_sha256(folder: str | Path | None) -> str | None:
    """A short sha256 over the names and contents of the checkpoint's files (weights, config, tokenizer,
    descriptions; not its training state), or None when ``folder`` is not a folder.

    Every byte is read (about 1-2 s per GB): exact where a size-and-date check is not, and small next to the
    evaluation of the same weights.
    """
    if folder is None or not Path(folder).is_dir():
        return None
    folder = Path(folder)
    return files_sha256(folder, sorted(p for p in folder.rglob("*") if p.is_file() and _answers_depend_on(p.name)))


def _answers_depend_on(name: str) -> bool:
    return name not in TRAINING_ONLY and not name.startswith("random_states_")
