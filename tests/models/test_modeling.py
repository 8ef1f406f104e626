import pytest
import torch

from locllm.models import LocLLMForKeypointLocalization
from locllm.models.tiny import locllm_config


def _tiny(**overrides):
    torch.manual_seed(0)
    return LocLLMForKeypointLocalization(locllm_config("tiny", vocab_size=100, **overrides))


def _batch(model, rows=2):
    n = model.config.num_image_tokens
    image = model.config.image_token_id
    ids = torch.tensor([[1, 5] + [image] * n + [7, 8, 9, 10], [0, 1] + [image] * n + [7, 8, 9, 10]][:rows])
    pixels = torch.randn(rows, 3, model.config.image_size, model.config.image_size)
    labels = ids.clone()
    labels[:, :-3] = -100
    return ids, pixels, labels


def test_forward_loss_backward_reach_only_trained_weights():
    model = _tiny()
    ids, pixels, labels = _batch(model)
    out = model(input_ids=ids, pixel_values=pixels, labels=labels)
    assert out.logits.shape == (2, ids.shape[1], 100)
    out.loss.backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("vision_tower" in n and "lora_A" in n for n in trained)
    assert any("language_model" in n and "lora_B" in n for n in trained)
    assert "projector.weight" in trained
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []
    # LoRA B starts at zero, so only A's of LoRA get no gradient in the first step; B and projector do.
    assert model.projector.weight.grad.abs().sum() > 0


def test_lora_starts_as_identity():
    model = _tiny()
    ids, pixels, _ = _batch(model)
    with torch.no_grad():
        before = model(input_ids=ids, pixel_values=pixels).logits
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.zero_()
        after = model(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(before, after)


def test_image_token_count_is_checked():
    model = _tiny()
    ids, pixels, _ = _batch(model)
    with pytest.raises(ValueError, match="image tokens"):
        model(input_ids=ids[:, 3:], pixel_values=pixels)
    with pytest.raises(ValueError, match="images were given"):
        model(input_ids=ids, pixel_values=pixels[:1])
    broken = ids.clone()
    broken[0, 10] = 5
    broken[0, -1] = model.config.image_token_id
    with pytest.raises(ValueError, match="consecutive"):
        model(input_ids=broken, pixel_values=pixels)


def test_precomputed_features_equal_pixels():
    model = _tiny().eval()
    ids, pixels, _ = _batch(model)
    with torch.no_grad():
        a = model(input_ids=ids, pixel_values=pixels).logits
        b = model(input_ids=ids, image_features=model.get_image_features(pixels)).logits
    torch.testing.assert_close(a, b)


def test_save_load_round_trip_identical_logits(tmp_path):
    model = _tiny().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)  # make LoRA matter
    model.save_pretrained(tmp_path)
    loaded = LocLLMForKeypointLocalization.from_pretrained(tmp_path).eval()
    ids, pixels, _ = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits,
                                   loaded(input_ids=ids, pixel_values=pixels).logits, rtol=0, atol=0)


def test_merged_export_matches(tmp_path):
    model = _tiny().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    model.save_pretrained(tmp_path, merge=True)
    merged = LocLLMForKeypointLocalization.from_pretrained(tmp_path).eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    ids, pixels, _ = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits,
                                   merged(input_ids=ids, pixel_values=pixels).logits, rtol=1e-4, atol=1e-5)


def test_checkpoint_with_base_paths_holds_only_trained_weights(tmp_path):
    from transformers import LlamaForCausalLM

    config = locllm_config("tiny", vocab_size=100)
    LlamaForCausalLM(config.text_config).save_pretrained(tmp_path / "llm")
    config.text_model_name_or_path = str(tmp_path / "llm")
    model = LocLLMForKeypointLocalization.from_bases(config)
    with torch.no_grad():
        model.language_model.model.layers[0].self_attn.q_proj.lora_B.default.weight.normal_()
    model.save_pretrained(tmp_path / "ckpt")
    from safetensors.torch import load_file

    base = load_file(tmp_path / "ckpt" / "base.safetensors")
    assert base and all(k.startswith("vision_tower.") for k in base)
    loaded = LocLLMForKeypointLocalization.from_pretrained(tmp_path / "ckpt").eval()
    ids, pixels, _ = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(input_ids=ids, pixel_values=pixels).logits,
                                   loaded(input_ids=ids, pixel_values=pixels).logits)


def test_paper_size_trainable_parameters_on_meta_device():
    config = locllm_config("paper")
    with torch.device("meta"):
        model = LocLLMForKeypointLocalization(config)
    vision_lora = 24 * 2 * (1024 * 8 + 8 * 1024)
    text_lora = 32 * 2 * (4096 * 8 + 8 * 4096)
    projector = 1024 * 4096 + 4096
    assert model.trainable_parameter_count() == vision_lora + text_lora + projector == 9_179_136
    # The paper's "8.7M" is this count in units of 2**20 (9,179,136 / 1,048,576 = 8.75).
    assert abs(model.trainable_parameter_count() / 2**20 - 8.75) < 0.01
    assert model.config.num_image_tokens == 256


@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_other_vision_towers_and_language_models(tower, tmp_path):
    """CLIP and SigLIP towers and a Qwen2 LM plug in with no code of their own."""
    from transformers import CLIPVisionConfig, Qwen2Config, SiglipVisionConfig

    from locllm.models import LocLLMConfig

    vision_class = CLIPVisionConfig if tower == "clip" else SiglipVisionConfig
    vision = vision_class(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          image_size=56, patch_size=14)
    text = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=100)
    config = LocLLMConfig(vision_config=vision, text_config=text, image_size=56, image_token_id=100)
    torch.manual_seed(0)
    model = LocLLMForKeypointLocalization(config)
    assert any("vision_tower" in n and "lora_A" in n for n, p in model.named_parameters() if p.requires_grad)
    ids, pixels, labels = _batch(model)
    out = model(input_ids=ids, pixel_values=pixels, labels=labels)
    assert model.get_image_features(pixels).shape == (2, 16, 64)
    out.loss.backward()
    model.save_pretrained(tmp_path)
    loaded = LocLLMForKeypointLocalization.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(input_ids=ids, pixel_values=pixels).logits,
                                   loaded(input_ids=ids, pixel_values=pixels).logits)
