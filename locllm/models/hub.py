"""A checkpoint named by a folder or by a Hugging Face Hub repo id (``org/name``), as transformers users expect."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError

# The keywords transformers' ``from_pretrained`` (and its Auto classes) take to find a model's files; each means
# here what it means there. ``proxies`` is passed on as transformers does (huggingface_hub >= 1 ignores it with a
# warning: proxies are set for the whole process, e.g. HTTPS_PROXY).
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies", "subfolder")


def resolve_pretrained(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                       force_download: bool = False, local_files_only: bool = False, token: str | bool | None = None,
                       revision: str | None = None, proxies: dict[str, str] | None = None,
                       subfolder: str = "") -> Path:
    """The local folder of a checkpoint: ``name_or_path`` itself (``/ subfolder``) if it exists, else the snapshot
    of the Hub repo it names, downloaded or (``local_files_only``, ``HF_HUB_OFFLINE=1``, or no network) taken from
    the cache (``cache_dir``, default ``HF_HOME``), at ``revision``.

    As in transformers, the Hub keywords do nothing for a local folder. A name that is neither is one
    FileNotFoundError saying so.
    """
    path = Path(name_or_path)
    if path.exists():
        return _inside(path, subfolder, str(name_or_path))
    hub = {"cache_dir": cache_dir, "force_download": force_download, "local_files_only": local_files_only,
           "token": token, "revision": revision}
    if proxies is not None:
        hub["proxies"] = proxies
    if subfolder:
        hub["allow_patterns"] = [f"{subfolder.strip('/')}/*"]
    try:
        snapshot = Path(snapshot_download(str(name_or_path), **hub))
    except (HFValidationError, OSError) as err:  # a bad id; not cached offline; no such repo (HTTP errors are OSErrors)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(f"{name_or_path}: no such folder, and not a Hugging Face Hub repo id found online or "
                                f"in the local cache ({reason})") from None
    return _inside(snapshot, subfolder, str(name_or_path))


def _inside(folder: Path, subfolder: str, name: str) -> Path:
    if not subfolder:
        return folder
    inner = folder / subfolder
    if not inner.is_dir():
        raise FileNotFoundError(f"{name} has no subfolder {subfolder!r}")
    return inner


__all__ = ["HUB_KWARGS", "resolve_pretrained"]
