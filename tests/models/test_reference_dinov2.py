"""The reference DINOv2 key table: a tower written in the reference's names loads back identical."""

import torch

from locllm.models.reference_dinov2 import convert_reference_dinov2_state_dict, load_reference_dinov2


def _reference_dinov2_state_dict(hf_state):
    """Write a Dinov2Model state dict back in the reference's (timm-style, fused qkv) names."""
    ref = {}
    for key, value in hf_state.items():
        if key.startswith("encoder.layer."):
            parts = key.split(".")
            layer, rest = parts[2], ".".join(parts[3:])
            if rest.startswith("attention.k_proj") or rest.startswith("attention.v_proj"):
                continue
            if rest.startswith("attention.q_proj"):
                kind = rest.rsplit(".", 1)[1]
                ref[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
                    [hf_state[f"encoder.layer.{layer}.attention.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")]
                )
                continue
            table = {"attention.o_proj": "attn.proj", "layer_scale1.lambda1": "ls1.gamma",
                     "layer_scale2.lambda1": "ls2.gamma"}
            for ours, theirs in table.items():
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours):]
            ref[f"blocks.{layer}.{rest}"] = value
        else:
            table = {"embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
                     "embeddings.position_embeddings": "pos_embed",
                     "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
                     "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
                     "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
            ref[table[key]] = value
    return ref


def test_reference_dinov2_file_loads_with_identical_outputs(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                          image_size=56, layer_norm_eps=1e-6)
    direct = Dinov2Model(config).eval()
    with torch.no_grad():
        for p in direct.parameters():
            p.normal_(std=0.2)
    ref_state = _reference_dinov2_state_dict(direct.state_dict())
    assert "blocks.0.attn.qkv.weight" in ref_state and ref_state["blocks.0.attn.qkv.weight"].shape == (96, 32)
    torch.save(ref_state, tmp_path / "dinov2_tiny.pth")
    loaded = load_reference_dinov2(tmp_path / "dinov2_tiny.pth", num_attention_heads=2).eval()
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels).last_hidden_state,
                                   direct(pixel_values=pixels).last_hidden_state)
    assert set(convert_reference_dinov2_state_dict(ref_state)) == set(direct.state_dict())
    # Hugging Face loading keywords mean what they mean to Dinov2Model.from_pretrained.
    cast = load_reference_dinov2(tmp_path / "dinov2_tiny.pth", num_attention_heads=2, dtype=torch.bfloat16,
                                 device_map="cpu", attn_implementation="eager")
    assert cast.config._attn_implementation == "eager"
    assert {p.dtype for p in cast.parameters()} == {torch.bfloat16}
