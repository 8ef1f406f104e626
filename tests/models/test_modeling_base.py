"""The shared model base: Auto-class dispatch, Hugging Face keywords of from_pretrained / save_pretrained."""

import inspect
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

import locllm
from locllm.models import (
    BASE_WEIGHTS,
    TRAINED_WEIGHTS,
    CLIPBaselineConfig,
    CLIPBaselineForKeypointHeatmaps,
    LocLLMConfig,
    LocLLMForKeypointLocalization,
)
from locllm.models.configuration_clip_baseline import clip_baseline_config
from locllm.models.tiny import locllm_config

DEMO = Path(locllm.__file__).parent / "assets" / "demo"


def _locllm_inputs(config):
    torch.manual_seed(0)
    ids = torch.tensor([[1, 5] + [config.image_token_id] * config.num_image_tokens + [7, 8, 9]])
    return ids, torch.randn(1, 3, config.image_size, config.image_size)


def _clip_inputs(config):
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, config.image_size, config.image_size)
    ids = torch.tensor([[3, 9, 11, 2], [3, 12, 2, 0]])
    return {"pixel_values": pixels, "input_ids": ids, "attention_mask": (ids != 0).long()}


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    model = CLIPBaselineForKeypointHeatmaps(clip_baseline_config("tiny"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)  # make LoRA matter
    model.save_pretrained(folder)
    return folder


def test_auto_classes_load_the_demo_as_locllm():
    assert type(AutoConfig.from_pretrained(DEMO)) is LocLLMConfig
    auto = AutoModel.from_pretrained(DEMO).eval()
    own = LocLLMForKeypointLocalization.from_pretrained(DEMO).eval()
    assert type(auto) is LocLLMForKeypointLocalization
    ids, pixels = _locllm_inputs(own.config)
    with torch.no_grad():
        torch.testing.assert_close(auto(input_ids=ids, pixel_values=pixels).logits,
                                   own(input_ids=ids, pixel_values=pixels).logits, rtol=0, atol=0)


def test_auto_classes_load_a_clip_baseline(clip_checkpoint):
    assert type(AutoConfig.from_pretrained(clip_checkpoint)) is CLIPBaselineConfig
    auto = AutoModel.from_pretrained(clip_checkpoint).eval()
    own = CLIPBaselineForKeypointHeatmaps.from_pretrained(clip_checkpoint).eval()
    assert type(auto) is CLIPBaselineForKeypointHeatmaps
    inputs = _clip_inputs(own.config)
    with torch.no_grad():
        torch.testing.assert_close(auto(**inputs).heatmaps, own(**inputs).heatmaps, rtol=0, atol=0)


def test_registration_is_idempotent():
    AutoConfig.register(LocLLMConfig.model_type, LocLLMConfig, exist_ok=True)
    AutoModel.register(LocLLMConfig, LocLLMForKeypointLocalization, exist_ok=True)
    assert type(AutoModel.from_config(locllm_config("tiny", vocab_size=100))) is LocLLMForKeypointLocalization


def test_hugging_face_keywords_reach_the_bases(clip_checkpoint):
    model = LocLLMForKeypointLocalization.from_pretrained(DEMO, dtype="bfloat16", device_map="cpu",
                                                          attn_implementation="eager")
    assert model.language_model.config._attn_implementation == "eager"
    assert model.vision_tower.config._attn_implementation == "eager"
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} <= {torch.float32}
    clip = AutoModel.from_pretrained(clip_checkpoint, dtype=torch.bfloat16)
    assert clip.clip.text_model.embeddings.token_embedding.weight.dtype == torch.bfloat16
    assert clip.head.layers[-1].weight.dtype == torch.float32


def test_every_keyword_the_auto_classes_name_is_accepted(tmp_path, monkeypatch):
    """Each keyword transformers' Auto classes put in their from_pretrained signature (the Hub keywords: cache_dir,
    force_download, ...) is passed, with a value of its own, and accepted: a new transformers release that adds
    one fails here first. The model class is given the keywords the Auto class sends, not a list of ours."""
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    named = [p for p in inspect.signature(_BaseAutoModelClass.from_pretrained).parameters.values()
             if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in
                                              ("cls", "pretrained_model_name_or_path"))]
    assert {"cache_dir", "force_download", "local_files_only", "token", "revision", "proxies", "subfolder"} <= {
        p.name for p in named}
    (tmp_path / "outer").mkdir()
    shutil.copytree(DEMO, tmp_path / "outer" / "demo")
    values = {"cache_dir": tmp_path / "cache", "force_download": True, "local_files_only": True, "token": False,
              "revision": "main", "proxies": {"https": "http://127.0.0.1:9"}, "subfolder": "demo", "config": None}
    unknown = [p.name for p in named if p.name not in values]
    assert not unknown, f"transformers' Auto classes take new keywords {unknown}: give them a meaning here"
    received = {}
    own = LocLLMForKeypointLocalization.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        received.update(kwargs)
        return own(cls, *args, **kwargs)

    monkeypatch.setattr(LocLLMForKeypointLocalization, "from_pretrained", classmethod(recording))
    model = AutoModel.from_pretrained(tmp_path / "outer", **values)
    assert type(model) is LocLLMForKeypointLocalization
    assert {"cache_dir", "force_download", "local_files_only", "proxies", "subfolder", "_from_auto"} <= set(received)
    reference = LocLLMForKeypointLocalization.from_pretrained(DEMO, torch_dtype=torch.float32)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[key], rtol=0, atol=0)


@pytest.mark.parametrize("keyword, value", [
    ("use_safetensors", False), ("weights_only", False), ("gguf_file", "model.gguf"), ("variant", "fp16"),
    ("from_tf", True), ("output_loading_info", True), ("state_dict", {}), ("load_in_4bit", True),
    ("adapter_kwargs", {"_adapter_model_path": "somewhere"}),
])
def test_a_keyword_without_meaning_here_is_refused_only_when_it_asks_for_something(keyword, value):
    default = {"use_safetensors": True, "weights_only": True, "adapter_kwargs": {}, "from_tf": False,
               "output_loading_info": False, "load_in_4bit": False}.get(keyword)
    LocLLMForKeypointLocalization.from_pretrained(DEMO, **{keyword: default})
    with pytest.raises(TypeError, match=f"does not support {keyword}=.*leave it out"):
        LocLLMForKeypointLocalization.from_pretrained(DEMO, **{keyword: value})


def test_unsupported_keywords_are_refused(tmp_path):
    with pytest.raises(TypeError, match="does not support no_such_keyword"):
        LocLLMForKeypointLocalization.from_pretrained(DEMO, no_such_keyword=1)
    with pytest.raises(TypeError, match="not both"):
        LocLLMForKeypointLocalization.from_pretrained(DEMO, dtype="float32", torch_dtype="float32")
    with pytest.raises(TypeError, match="does not support load_in_8bit"):
        LocLLMForKeypointLocalization.from_pretrained(DEMO, load_in_8bit=True)
    with pytest.raises(TypeError, match="does not support quantization_config"):
        AutoModel.from_pretrained(DEMO, quantization_config={"load_in_4bit": True})
    with pytest.raises(ValueError, match="one device"):
        LocLLMForKeypointLocalization.from_pretrained(DEMO, device_map="auto")
    with pytest.raises(TypeError, match="not both"):
        LocLLMForKeypointLocalization.from_pretrained(DEMO, device="cpu", device_map="cpu")
    with pytest.raises(TypeError, match="config must be a LocLLMConfig"):
        LocLLMForKeypointLocalization.from_pretrained(DEMO, config=clip_baseline_config("tiny"))
    model = CLIPBaselineForKeypointHeatmaps(clip_baseline_config("tiny"))
    with pytest.raises(TypeError, match="does not support max_shard_size, push_to_hub"):
        model.save_pretrained(tmp_path, max_shard_size="1GB", push_to_hub=True)
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path, safe_serialization=False)
    model.save_pretrained(tmp_path / "other", is_main_process=False)
    assert not (tmp_path / "other").exists()


def test_clip_baseline_merged_export_matches(clip_checkpoint, tmp_path):
    model = CLIPBaselineForKeypointHeatmaps.from_pretrained(clip_checkpoint).eval()
    model.save_pretrained(tmp_path, merge=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BASE_WEIGHTS, "config.json"]
    merged = CLIPBaselineForKeypointHeatmaps.from_pretrained(tmp_path).eval()
    assert not merged.config.lora_vision and merged.trained_state_dict().keys() == {
        k for k in model.trained_state_dict() if "lora_" not in k}
    inputs = _clip_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).heatmaps, model(**inputs).heatmaps)
    assert (Path(clip_checkpoint) / TRAINED_WEIGHTS).is_file()


def test_keywords_reach_a_base_loaded_from_its_folder(tmp_path):
    from transformers import LlamaForCausalLM

    config = locllm_config("tiny", vocab_size=100)
    LlamaForCausalLM(config.text_config).save_pretrained(tmp_path / "llm")
    config.text_model_name_or_path = str(tmp_path / "llm")
    LocLLMForKeypointLocalization.from_bases(config).save_pretrained(tmp_path / "ckpt")
    model = LocLLMForKeypointLocalization.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16, device_map="cpu",
                                                          attn_implementation="eager")
    assert model.language_model.config._attn_implementation == "eager"
    assert model.language_model.model.norm.weight.dtype == torch.bfloat16
    assert model.projector.weight.dtype == torch.float32
    assert "attn_implementation" not in (tmp_path / "ckpt" / "config.json").read_text()
