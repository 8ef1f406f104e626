"""Reading weight files: ``.safetensors``, or torch's ``.pth`` / ``.bin`` with ``weights_only=True`` (no pickled
code runs). A file that is corrupt, truncated, empty or not a tensor file is one ``ValueError`` naming the
file, the problem and the fix; a pickle holding anything but tensors is refused, never loaded."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


def load_tensor_file(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of one weight file; ``mmap``: page a torch file in as it is used (a 7B state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: re-save or re-download it")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # no refused class or function: bytes no pickle is made of
            raise ValueError(f"{path} is not a readable torch file (corrupt, truncated or of another format); "
                             "re-save or re-download it") from None
        # torch's message suggests weights_only=False, i.e. running the file's code: never.
        raise ValueError(f"{path} holds non-tensor objects (pickled Python) and is not loaded: only tensor files "
                         "are read; re-save its state dict with torch.save or safetensors") from None
    except (SafetensorError, RuntimeError, EOFError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable {path.suffix or 'weight'} file (corrupt, truncated or of "
                         f"another format: {first_line}); re-save or re-download it") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict ({{name: tensor}}): re-save the model's state_dict()")
    return state
