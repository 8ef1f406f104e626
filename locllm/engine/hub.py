"""A checkpoint named by a folder or by a Hugging Face Hub repo id (``org/name``), as transformers users expect."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError


def resolve_pretrained(name_or_path: str | Path) -> Path:
    """The local folder of a checkpoint: ``name_or_path`` itself if it exists, else the snapshot of the Hub repo
    it names, downloaded or (``HF_HUB_OFFLINE=1``, or no network) taken from the local cache (``HF_HOME``).

    A name that is neither is one FileNotFoundError saying so.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    try:
        return Path(snapshot_download(str(name_or_path)))
    except (HFValidationError, OSError) as err:  # a bad id; not cached offline; no such repo (HTTP errors are OSErrors)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(f"{name_or_path}: no such folder, and not a Hugging Face Hub repo id found online or "
                                f"in the local cache ({reason})") from None
